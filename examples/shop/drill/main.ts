/**
 * `npm run drill` (also `lockstep drill`): plays the attacks against the shop run perimeter-only and
 * run with Lockstep, prints the table, and exits 1 if Lockstep let any attack through.
 */
import { runDrill, table } from './drill.ts';

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
