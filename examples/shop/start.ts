/**
 * `npm start`: the whole reference system on this machine — control plane, gateway, orders,
 * inventory, payments, and shipping (Python: `python3` 3.9+ on PATH, or LOCKSTEP_PYTHON; standard
 * library only, behind the Lockstep sidecar) — with embedded defaults (SQLite and development keys
 * under .lockstep/, or LOCKSTEP_HOME, also read as LOCKSTEP_DATA_DIR; six ports from
 * LOCKSTEP_PORT_BASE, default 8440). With LOCKSTEP_POSTGRES_URL the store is PostgreSQL, and
 * LOCKSTEP_REPLICAS=3 runs three control-plane replicas on it (launch.ts).
 * Prints one line with `ready` when a valid policy is in force and every service answers; exits 1
 * with the reason when that cannot be. Then it keeps them running: a process that dies is said so
 * and restarted (launch.ts, supervise.ts); if the control plane cannot be kept running, it stops
 * every service and exits 1, naming the control plane's log. Ctrl-C stops everything.
 */
import { startShop } from './launch.ts';

const started = performance.now();
const say = (line: string) => process.stdout.write(`${line}\n`);
try {
  const shop = await startShop({
    onProgress: (line) => say(`  ${line}`),
    onWarning: (line) => say(`  ⚠ ${line}`),
    onSupervision: (line) => say(`  ⚠ ${line}`),
    onFailed: (reason) => {
      process.stderr.write(`lockstep shop: ${reason}\n`);
      process.exit(1);
    },
  });
  say(
    `ready in ${((performance.now() - started) / 1000).toFixed(1)} s: the shop is at ${shop.urls.gateway} — sign in as alice or bob (passwords in ${shop.usersFile}); dashboard ${shop.urls.controlPlane}/dashboard (as ops); logs in ${shop.dataDir}/logs. Ctrl-C stops everything.`,
  );
  if (shop.replicas.length > 1)
    say(
      `  control-plane replicas: ${shop.replicas.join(', ')} (one database, one CA; services fail over between them)`,
    );
  say('  (the sign-in page is served by the control plane with the development CA: your browser warns about it once)');
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    say('stopping…');
    shop.stop().then(
      () => {
        say('stopped');
        process.exit(0);
      },
      (error: Error) => {
        process.stderr.write(`stopping failed: ${error.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} catch (error) {
  process.stderr.write(`lockstep shop: could not start: ${(error as Error).message}\n`);
  process.exit(1);
}
