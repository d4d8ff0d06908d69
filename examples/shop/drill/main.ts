/**
 * `npm run drill` (also `lockstep drill`): plays the attacks against the shop run perimeter-only and
 * run with Lockstep, prints the table, and exits 1 if Lockstep let any attack through.
 *
 * `npm run drill -- --ha` (also `lockstep drill ha`): the failover drill (ha.ts) on three replicas and
 * LOCKSTEP_POSTGRES_URL; one JSON line; exit 1 if a request failed, a revocation took over 1 s or
 * recovery after expiry did not go as it must; 2 without a database.
 */
import { runDrill, table } from './drill.ts';

if (process.argv.includes('--ha') || process.argv[2] === 'ha') {
  const { ENFORCED_WITHIN_MS, runHaDrill } = await import('./ha.ts');
  const postgres = process.env.LOCKSTEP_POSTGRES_URL;
  if (postgres === undefined || postgres === '') {
    process.stderr.write(
      'lockstep drill: the failover drill runs replicas on PostgreSQL: set LOCKSTEP_POSTGRES_URL=postgres://user@host:5432/database (a database of its own is created there for the run, and dropped)\n',
    );
    process.exit(2);
  }
  const durationArgument = process.argv.indexOf('--duration');
  const durationMs = durationArgument === -1 ? undefined : Number(process.argv[durationArgument + 1]) * 1000;
  const result = await runHaDrill(
    { postgres, ...(durationMs === undefined || !(durationMs > 0) ? {} : { durationMs }) },
    (line) => process.stderr.write(`  ${line}\n`),
  );
  for (const problem of result.problems.slice(0, 20)) process.stderr.write(`  problem: ${problem}\n`);
  const { problems: _problems, ...line } = result;
  process.stdout.write(`${JSON.stringify(line)}\n`);
  const held =
    result.failed === 0 &&
    result.revocationEnforcedMs !== null &&
    result.revocationEnforcedMs <= ENFORCED_WITHIN_MS &&
    result.recoveredAfterExpiry;
  process.exit(held ? 0 : 1);
}

const started = performance.now();
const { results, lockstepHeld } = await runDrill((line) => process.stderr.write(`  ${line}\n`));
process.stdout.write(`\n${table(results)}\n\n`);
const perimeterHoles = results
  .filter((result) => result.outcomes['perimeter-only']?.through)
  .map((result) => result.id);
process.stdout.write(
  `perimeter-only let through: ${perimeterHoles.join(', ') || 'nothing'}; Lockstep: ${lockstepHeld ? 'stopped every attack' : 'LET SOMETHING THROUGH'} (${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
);
process.exitCode = lockstepHeld ? 0 : 1;
