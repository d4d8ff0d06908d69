import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sampleReport } from '../../test/sample-report.ts';
import type { AttackResult } from '../types.ts';
import { findingsOf, formatDuration, scanMatrix, serviceNames } from './matrix.ts';

describe('scanMatrix', () => {
  it('groups attacks by category in catalogue order and gives each service a cell', () => {
    const matrix = scanMatrix(sampleReport());
    assert.deepEqual(matrix.services, ['gateway', 'orders', 'payments', 'catalog']);
    assert.deepEqual(
      matrix.groups.map((group) => [group.category, group.rows.map((row) => row.attack.id)]),
      [
        ['transport', ['tls.no-client-cert', 'tls.foreign-ca']],
        ['txn-token', ['txn.alg-none', 'txn.expired']],
        ['authorization', ['authz.wrong-caller']],
        ['input', ['input.oversized-body', 'input.unknown-field']],
      ],
    );
  });

  it("shows the worst outcome over a service's targets: weak, then inconclusive, then enforced, then skipped", () => {
    const report = sampleReport();
    const one = (outcomes: AttackResult['outcome'][]) => {
      const template = report.results[0] as AttackResult;
      const results = outcomes.map((outcome, i) => ({ ...template, target: `t${i}`, outcome }));
      return scanMatrix({ ...report, results }).groups[0]?.rows[0]?.cells[0];
    };
    assert.equal(one(['enforced', 'weak', 'inconclusive', 'skipped']), 'weak');
    assert.equal(one(['enforced', 'inconclusive', 'skipped']), 'inconclusive');
    assert.equal(one(['skipped', 'enforced']), 'enforced');
    assert.equal(one(['skipped']), 'skipped');
    assert.equal(one([]), 'skipped', 'no attempt at all: not applicable');
  });

  it('refuses a result whose attack the report does not list', () => {
    const report = sampleReport();
    const results = [{ ...(report.results[0] as AttackResult), attack: 'no.such-attack' }];
    assert.throws(() => scanMatrix({ ...report, results }), { name: 'TypeError', message: /no\.such-attack/ });
  });
});

describe('findingsOf', () => {
  it('lists one outcome, most severe first, otherwise in report order', () => {
    const weak = findingsOf(sampleReport(), 'weak').map(
      ({ result, attack }) => `${attack.severity} ${result.service} ${result.attack}`,
    );
    assert.deepEqual(weak, [
      'critical orders txn.alg-none',
      'medium orders input.unknown-field',
      'medium payments txn.expired',
    ]);
  });
});

describe('serviceNames', () => {
  it('names the registered services, then services only results mention', () => {
    const report = sampleReport();
    const results = [...report.results, { ...(report.results[0] as AttackResult), service: 'shadow' }];
    assert.deepEqual(serviceNames({ ...report, results }), ['gateway', 'orders', 'payments', 'catalog', 'shadow']);
  });
});

describe('formatDuration', () => {
  it('reads at a glance', () => {
    assert.deepEqual(
      [formatDuration(340.4), formatDuration(4_250), formatDuration(125_000)],
      ['340 ms', '4.3 s', '2 min 5 s'],
    );
  });
});
