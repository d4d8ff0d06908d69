/**
 * The drill, as `npm run drill` runs it: Lockstep stops every attack, and the perimeter-only shop
 * lets at least a, b, c and d through, and h, i and j against the Python shipping service (the drill
 * would prove nothing if the "before" were safe).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { runDrill, table } from '../drill/drill.ts';

it('Lockstep stops every attack the perimeter-only shop lets through', async () => {
  const { results, lockstepHeld } = await runDrill();
  console.log(table(results));
  assert.deepEqual(
    results.map((result) => result.id),
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'],
  );
  for (const result of results) {
    assert.equal(result.outcomes.lockstep?.through, false, `${result.id}: ${JSON.stringify(result.outcomes.lockstep)}`);
    assert.ok(result.outcomes.lockstep?.evidence, `${result.id} has evidence`);
  }
  for (const id of ['a', 'b', 'c', 'd', 'h', 'i', 'j'])
    assert.equal(
      results.find((result) => result.id === id)?.outcomes['perimeter-only']?.through,
      true,
      `perimeter-only lets ${id} through`,
    );
  assert.equal(lockstepHeld, true);
  const expected = {
    a: 'LOCKSTEP_ERR_PEER_CERT_MISSING',
    b: 'LOCKSTEP_ERR_DENIED',
    c: 'LOCKSTEP_ERR_PEER_CERT_MISSING',
    d: 'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
    e: 'LOCKSTEP_ERR_DENIED',
    f: 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED',
    g: 'payments DRIFT',
    // The Python service behind its sidecar: the sidecar's guard refuses, shipping.py never sees the call.
    h: 'LOCKSTEP_ERR_PEER_CERT_MISSING',
    i: 'LOCKSTEP_ERR_TXN_TOKEN_MISSING',
    j: 'LOCKSTEP_ERR_DENIED',
  };
  for (const [id, evidence] of Object.entries(expected))
    assert.match(
      String(results.find((result) => result.id === id)?.outcomes.lockstep?.evidence),
      new RegExp(evidence),
      id,
    );
});

it('is also `lockstep drill`: the CLI lists it', () => {
  const cli = fileURLToPath(new URL('../../../packages/cli/bin/lockstep.js', import.meta.url));
  const help = spawnSync(process.execPath, [cli, 'help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /lockstep drill/);
});
