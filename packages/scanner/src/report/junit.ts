/**
 * The JUnit XML report, for CI test tabs: one suite per service, one test case per attempt
 * (attack × target). A weak link is a failure, an inconclusive attempt an error (the test could not
 * run to a verdict, with the reason), a not-applicable one skipped. Follows the Jenkins JUnit schema (`junit-4.xsd`,
 * the one JUnit 5 validates its own reports against): the skip reason is the text of `<skipped>`,
 * which takes no attributes there, and `<testsuites>` carries no skipped count.
 */
import type { AttackInfo, AttackResult, ScanReport, ScannedService } from '../types.ts';
import { attackOf, attacksById, serviceNames } from './matrix.ts';
import { printable } from './printable.ts';

const XML_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&apos;',
};

export function renderJunit(report: ScanReport): string {
  const attacks = attacksById(report);
  const registered = new Map(report.services.map((service) => [service.name, service]));
  const suites = serviceNames(report).map((name) => {
    const results = report.results.filter((result) => result.service === name);
    return suite(
      report,
      name,
      registered.get(name),
      results.map((result) => ({ result, attack: attackOf(attacks, result) })),
    );
  });
  const tests = report.results.length;
  const { weak, inconclusive } = countOutcomes(report.results);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites${attributes({ name: `${report.tool.name} ${report.trustDomain}`, tests, failures: weak, errors: inconclusive, time: seconds(report.durationMs) })}>`,
    ...suites.flat(),
    '</testsuites>',
    '',
  ].join('\n');
}

function suite(
  report: ScanReport,
  name: string,
  service: ScannedService | undefined,
  cases: readonly { result: AttackResult; attack: AttackInfo }[],
): string[] {
  const results = cases.map(({ result }) => result);
  const { weak, inconclusive, skipped } = countOutcomes(results);
  const time = results.reduce((sum, result) => sum + result.durationMs, 0);
  const properties: Record<string, string> = {
    'lockstep.runId': report.runId,
    'lockstep.trustDomain': report.trustDomain,
    'lockstep.scanner': report.scanner,
  };
  if (service !== undefined) {
    if (service.spiffeId !== null) properties['lockstep.spiffeId'] = service.spiffeId;
    properties['lockstep.endpoints'] = service.endpoints.join(' ');
    properties['lockstep.routes'] = String(service.routes);
    properties['lockstep.source'] = service.source;
  }
  return [
    `  <testsuite${attributes({ name, tests: results.length, failures: weak, errors: inconclusive, skipped, time: seconds(time), timestamp: report.startedAt })}>`,
    '    <properties>',
    ...Object.entries(properties).map(([key, value]) => `      <property${attributes({ name: key, value })}/>`),
    '    </properties>',
    ...cases.flatMap(({ result, attack }) => testCase(result, attack)),
    '  </testsuite>',
  ];
}

function testCase(result: AttackResult, attack: AttackInfo): string[] {
  const open = `    <testcase${attributes({ name: `${result.attack} ${result.target}`, classname: `lockstep.scan.${result.service}`, time: seconds(result.durationMs) })}`;
  switch (result.outcome) {
    case 'enforced':
      return [`${open}/>`];
    case 'weak':
      return [
        `${open}>`,
        `      <failure${attributes({ message: `weak (${attack.severity}): ${attack.title}`, type: attack.id })}>${text(result.evidence)}</failure>`,
        '    </testcase>',
      ];
    case 'inconclusive':
      return [
        `${open}>`,
        `      <error${attributes({ message: `inconclusive: ${result.evidence}`, type: attack.id })}/>`,
        '    </testcase>',
      ];
    case 'skipped':
      return [`${open}>`, `      <skipped>${text(result.evidence)}</skipped>`, '    </testcase>'];
  }
}

function countOutcomes(results: readonly AttackResult[]): { weak: number; inconclusive: number; skipped: number } {
  const count = (outcome: AttackResult['outcome']) => results.filter((result) => result.outcome === outcome).length;
  return { weak: count('weak'), inconclusive: count('inconclusive'), skipped: count('skipped') };
}

function seconds(ms: number): string {
  return (ms / 1_000).toFixed(3);
}

function attributes(values: Readonly<Record<string, string | number>>): string {
  return Object.entries(values)
    .map(([name, value]) => ` ${name}="${text(String(value))}"`)
    .join('');
}

/** Escaped for both text and attribute values; `printable` has already removed what XML 1.0 forbids. */
function text(value: string): string {
  return printable(value).replace(/[&<>"']/g, (char) => XML_ESCAPES[char] ?? char);
}
