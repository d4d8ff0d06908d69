import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sampleReport } from '../../test/sample-report.ts';
import type { AttackInfo, AttackResult, ScanReport } from '../types.ts';
import { renderTerminal } from './terminal.ts';

const ESC = '\u001b';

/** Six services, forty attacks with long ids, three targets each: the size the layout is made for. */
function fullScan(): ScanReport {
  const base = sampleReport();
  const services = ['gateway', 'orders', 'payments', 'catalog', 'inventory-service', 'notifications'].map(
    (name) => ({ ...base.services[0], name }) as ScanReport['services'][number],
  );
  const categories = ['transport', 'txn-token', 'authorization', 'input'] as const;
  const attacks: AttackInfo[] = Array.from({ length: 40 }, (_, i) => ({
    ...(base.attacks[0] as AttackInfo),
    id: `${categories[i % 4]}.attack-${i}`,
    title: `A rather long attack title that will not fit in the title column ${i}`,
    category: categories[i % 4] ?? 'input',
  }));
  const results: AttackResult[] = services.flatMap((service) =>
    attacks.flatMap((attack, i) =>
      ['GET /a', 'POST /b/:id', '127.0.0.1:4100'].map((target) => ({
        ...(base.results[0] as AttackResult),
        service: service.name,
        attack: attack.id,
        target,
        outcome: i === 3 ? 'weak' : 'enforced',
        evidence: 'x'.repeat(300),
      })),
    ),
  );
  return {
    ...base,
    services,
    attacks,
    results,
    summary: { enforced: 600, weak: 18, inconclusive: 100, skipped: 2 },
    durationMs: 125_000,
    exitCode: 1,
  };
}

function columns(line: string): number {
  return [...line].length;
}

describe('renderTerminal', () => {
  it('writes no escape sequence without colour, not even one the evidence carried', () => {
    const text = renderTerminal(sampleReport(), { color: false });
    assert.ok(!text.includes(ESC));
    assert.ok(text.includes('\\x1b[31mRED\\x1b[0m'), "the evidence's own escapes are shown, not obeyed");
    // eslint-disable-next-line no-control-regex -- the point: no control character but newline reaches the terminal
    assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  });

  it("colours only with colour on, and still never passes the evidence's escapes through", () => {
    const text = renderTerminal(sampleReport(), { color: true });
    assert.ok(text.includes(`${ESC}[31;1m✗${ESC}[0m`));
    // Every escape in the output is one of ours: an SGR sequence.
    assert.equal(
      text
        .split(ESC)
        .slice(1)
        .every((rest) => /^\[[0-9;]+m/.test(rest)),
      true,
    );
    assert.ok(text.includes('\\x1b[31mRED'));
  });

  it('shows every service and every weak finding with its evidence', () => {
    const report = sampleReport();
    const text = renderTerminal(report, { color: false });
    const header = text.split('\n').find((line) => line.trimStart().startsWith('Attack')) ?? '';
    for (const service of report.services) assert.ok(header.includes(service.name), service.name);
    const weak = text.slice(text.indexOf('Weak links (3)'), text.indexOf('Inconclusive (2)'));
    for (const result of report.results.filter((r) => r.outcome === 'weak')) {
      assert.ok(weak.includes(result.attack), result.attack);
      assert.ok(weak.includes(`    target    ${result.service}  ${result.target}\n`), result.target);
    }
    assert.ok(
      weak.includes(
        [
          '  ✗ critical  txn.alg-none  Txn-Token with alg "none"',
          '    target    orders  GET /orders/:id',
          '    evidence  alg none Txn-Token → 200 OK with the order body',
        ].join('\n'),
      ),
    );
    assert.match(
      text,
      /Inconclusive \(2\)\n {2}\? critical {2}tls\.no-client-cert {2}TLS handshake without a client certificate\n {4}target {4}payments {2}\[::1\]:4102\n/,
    );
  });

  it('says each reason checks could not run once, with a count, instead of listing every check it stopped', () => {
    const base = sampleReport();
    const reason = 'test user a (ann, roles customer) is revoked, so no check that acts as it can run';
    const results = base.results.map((result) =>
      result.outcome === 'inconclusive' ? { ...result, evidence: reason } : result,
    );
    const text = renderTerminal(
      { ...base, results, inconclusiveReasons: [{ reason, results: 2 }], exitCode: 2 },
      { color: false },
    );
    assert.ok(!text.includes('Inconclusive (2)'), 'no list of checks the reason already explains');
    assert.match(
      text,
      /\nWhy the scan is inconclusive \(1 reason\)\n {2}\? 2 checks {2}test user a \(ann, roles customer\) is revoked, so no check/,
    );
    assert.equal(text.split(reason).length, 2, 'the reason once');
    assert.match(text.trimEnd().split('\n').at(-1) ?? '', /exit 2: inconclusive$/);
  });

  it('puts a mark in every cell of the matrix, the worst outcome over the targets', () => {
    const line =
      renderTerminal(sampleReport(), { color: false })
        .split('\n')
        .find((l) => l.startsWith('  tls.no-client-cert')) ?? '';
    assert.deepEqual(line.match(/[✓✗?–]/g), ['✓', '✓', '?', '✓']);
    const algNone =
      renderTerminal(sampleReport(), { color: false })
        .split('\n')
        .find((l) => l.startsWith('  txn.alg-none')) ?? '';
    assert.deepEqual(algNone.match(/[✓✗?–]/g), ['–', '✗', '–', '–']);
  });

  it('ends with a summary line: counts, size, duration, exit code', () => {
    const lines = renderTerminal(sampleReport(), { color: false }).trimEnd().split('\n');
    assert.equal(
      lines.at(-1),
      'Summary: 11 enforced, 3 weak, 2 inconclusive, 3 skipped; 4 services × 7 attacks in 4.3 s; exit 1: weak link',
    );
  });

  it('fits 120 columns for six services and forty attacks', () => {
    const text = renderTerminal(fullScan(), { color: false });
    const long = text.split('\n').filter((line) => columns(line) > 120);
    assert.deepEqual(long, []);
    assert.ok(text.includes('Title'), 'there is room for a (truncated) title column');
    assert.match(text, /inventory-s… /);
  });

  it('gives up the title column first when the services are many', () => {
    const base = fullScan();
    const services = Array.from(
      { length: 8 },
      (_, i) => ({ ...base.services[0], name: `service-number-${i}` }) as ScanReport['services'][number],
    );
    const text = renderTerminal({ ...base, services, results: [] }, { color: false });
    assert.ok(!text.includes('Title'));
  });
});
