import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Log } from 'sarif';
import { sampleReport } from '../../test/sample-report.ts';
import { sarifErrors, validateSarif } from '../../test/schemas/validate.ts';
import { renderSarif } from './sarif.ts';

function assertValidSarif(document: unknown): void {
  assert.deepEqual(sarifErrors(document), [], 'SARIF schema violations');
}

function parse(text: string): Log {
  return JSON.parse(text) as Log;
}

describe('renderSarif', () => {
  it('is valid against the SARIF 2.1.0 schema', () => {
    assertValidSarif(parse(renderSarif(sampleReport())));
    assertValidSarif(parse(renderSarif(sampleReport({ exitCode: 2 }))));
    assertValidSarif(
      parse(
        renderSarif(
          sampleReport({ results: [], summary: { enforced: 0, weak: 0, inconclusive: 0, skipped: 0 }, exitCode: 0 }),
        ),
      ),
    );
  });

  it('the validator rejects broken SARIF (so the check above can fail)', () => {
    const text = renderSarif(sampleReport());
    const log = parse(text);
    const noDriverName = JSON.parse(text) as { runs: { tool: { driver: Record<string, unknown> } }[] };
    delete noDriverName.runs[0]?.tool.driver['name'];
    assert.equal(validateSarif(noDriverName), false);
    const badLevel = JSON.parse(text) as { runs: { results: Record<string, unknown>[] }[] };
    const result = badLevel.runs[0]?.results[0];
    assert.ok(result);
    result['level'] = 'fatal';
    assert.equal(validateSarif(badLevel), false);
    assert.equal(validateSarif({ ...log, version: '2.0.0' }), false);
    assert.equal(validateSarif({ ...log, surprise: true }), false);
  });

  it('has one rule per attack, with the standards as tags and a GitHub security-severity', () => {
    const report = sampleReport();
    const driver = parse(renderSarif(report)).runs[0]?.tool.driver;
    assert.equal(driver?.name, 'lockstep-scan');
    assert.equal(driver.version, '0.1.0');
    assert.ok(driver.informationUri);
    const rules = driver.rules ?? [];
    assert.deepEqual(
      rules.map((rule) => rule.id),
      report.attacks.map((attack) => attack.id),
    );
    const algNone = rules.find((rule) => rule.id === 'txn.alg-none');
    assert.equal(algNone?.name, 'TxnAlgNone');
    assert.equal(algNone.shortDescription?.text, 'Txn-Token with alg "none"');
    assert.match(algNone.fullDescription?.text ?? '', /unsigned header/);
    assert.match(algNone.help?.text ?? '', /^Enforced when: 401/);
    assert.equal(algNone.defaultConfiguration?.level, 'error');
    assert.equal(algNone.properties?.['security-severity'], '9.5');
    const tags = algNone.properties?.tags ?? [];
    for (const tag of [
      'security',
      'CWE-347',
      'external/cwe/cwe-347',
      'OWASP API2:2023 Broken Authentication',
      'NIST SP 800-204 Token-based authorization',
    ]) {
      assert.ok(tags.includes(tag), `missing tag ${tag}`);
    }
    const severities = Object.fromEntries(
      rules.map((rule) => [rule.id, [rule.properties?.['security-severity'], rule.defaultConfiguration?.level]]),
    );
    assert.deepEqual(severities['tls.foreign-ca'], ['8.0', 'error']);
    assert.deepEqual(severities['txn.expired'], ['5.5', 'warning']);
    assert.deepEqual(severities['input.oversized-body'], ['3.0', 'warning']);
  });

  it('reports only the weak results, located logically at service/target', () => {
    const report = sampleReport();
    const run = parse(renderSarif(report)).runs[0];
    const results = run?.results ?? [];
    const weak = report.results.filter((result) => result.outcome === 'weak');
    assert.equal(results.length, weak.length);
    for (const [i, result] of results.entries()) {
      const source = weak[i];
      assert.ok(source);
      assert.equal(result.ruleId, source.attack);
      assert.equal(run?.tool.driver.rules?.[result.ruleIndex ?? -1]?.id, source.attack);
      assert.deepEqual(result.locations?.[0]?.logicalLocations?.[0], {
        name: source.target,
        fullyQualifiedName: `${source.service}/${source.target}`,
        kind: 'resource',
      });
      assert.equal(result.properties?.['service'], source.service);
    }
    assert.deepEqual(
      results.map((result) => result.level),
      ['error', 'warning', 'warning'],
    );
    assert.equal(results[0]?.message.text, 'alg none Txn-Token → 200 OK with the order body');
  });

  it('writes control characters in evidence as visible escapes', () => {
    const text = renderSarif(sampleReport());
    const hostile = parse(text).runs[0]?.results?.find((result) => result.ruleId === 'input.unknown-field');
    const message = hostile?.message.text ?? '';
    assert.match(message, /\\x00NUL \\x1b\[31mRED/);
    assert.match(message, /\\u\{202e\}gnp\.exe/);
    assert.match(message, /<img src=x onerror=alert\(1\)>/, 'markup stays text: SARIF messages are plain text');
    assert.doesNotMatch(text, /\\u0000|\\u001b|\\ud800/);
  });

  it('fingerprints a finding by service, target and attack: stable across runs, distinct per finding', () => {
    const fingerprints = (text: string) =>
      (parse(text).runs[0]?.results ?? []).map((result) => result.partialFingerprints?.['lockstepTarget/v1']);
    const first = fingerprints(renderSarif(sampleReport()));
    const later = fingerprints(
      renderSarif(sampleReport({ runId: 'another-run', startedAt: '2026-03-15T00:00:00.000Z' })),
    );
    assert.deepEqual(first, later);
    assert.equal(new Set(first).size, first.length);
    for (const fingerprint of first) assert.match(fingerprint ?? '', /^[0-9a-f]{64}$/);
  });

  it('records the invocation: not successful when checks could not run; each reason, then each inconclusive attempt, as notifications', () => {
    const report = sampleReport();
    const invocation = parse(renderSarif(report)).runs[0]?.invocations?.[0];
    assert.equal(invocation?.executionSuccessful, false);
    assert.equal(invocation.exitCode, 1);
    assert.equal(invocation.startTimeUtc, report.startedAt);
    const [reason, ...notifications] = invocation.toolExecutionNotifications ?? [];
    assert.equal(reason?.level, 'error');
    assert.equal(reason?.message.text, `2 checks could not run: ${report.inconclusiveReasons[0]?.reason}`);
    assert.equal(notifications.length, report.summary.inconclusive);
    assert.equal(notifications[0]?.associatedRule?.id, 'tls.no-client-cert');
    assert.equal(notifications[0]?.associatedRule?.index, 0);
    assert.match(notifications[0]?.message.text ?? '', /^inconclusive: connect ECONNREFUSED/);
    assert.equal(notifications[0]?.locations?.[0]?.logicalLocations?.[0]?.fullyQualifiedName, 'payments/[::1]:4102');
    assert.equal(
      parse(renderSarif(sampleReport({ exitCode: 2 }))).runs[0]?.invocations?.[0]?.executionSuccessful,
      false,
    );
    const complete = sampleReport({
      results: report.results.filter((result) => result.outcome !== 'inconclusive'),
      summary: { ...report.summary, inconclusive: 0 },
      inconclusiveReasons: [],
      exitCode: 0,
    });
    assert.equal(parse(renderSarif(complete)).runs[0]?.invocations?.[0]?.executionSuccessful, true);
  });

  it('is the same text for the same report', () => {
    assert.equal(renderSarif(sampleReport()), renderSarif(sampleReport()));
  });

  it('refuses a result whose attack the report does not list', () => {
    const report = sampleReport();
    const first = report.results[0];
    assert.ok(first);
    assert.throws(() => renderSarif({ ...report, results: [{ ...first, attack: 'no.such-attack' }] }), TypeError);
  });
});
