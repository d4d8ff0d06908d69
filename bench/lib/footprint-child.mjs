// What both hello-world services of bench/footprint.ts share: they listen on a free loopback port, say
// so, and answer the bench's questions over IPC. Plain JavaScript, like footprint-bare.mjs and
// footprint-guarded.mjs: a .ts file would make Node load its TypeScript stripper, which a service
// installed from the registry never does.
import { existsSync, readFileSync } from 'node:fs';
import process from 'node:process';

/**
 * RSS, V8's heap, and the process's anonymous memory, after a garbage collection (Linux: /proc/self/smaps_rollup; null elsewhere):
 * what it allocated itself, without the pages of the node binary and its libraries that RSS also counts.
 */
export function memory() {
  // After a full collection (the bench runs each service with --expose-gc): what it holds, not its garbage.
  globalThis.gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  const rollup = existsSync('/proc/self/smaps_rollup') ? readFileSync('/proc/self/smaps_rollup', 'utf8') : '';
  const anonymous = /^Anonymous:\s+(\d+) kB$/m.exec(rollup);
  return { rss, heapUsed, anonymous: anonymous === null ? null : Number(anonymous[1]) * 1024 };
}

/** Serves `server` and answers `memory`, `modules` (with --import RECORD_LOADS) and `close`; `stages` is how it got there. */
export function serveBench(server, close, stages = []) {
  server.listen(0, '127.0.0.1', () => process.send({ type: 'ready', port: server.address().port, stages }));
  process.on('message', (message) => {
    if (message.type === 'memory') {
      process.send({ type: 'memory', ...memory() });
    } else if (message.type === 'modules') {
      process.send({ type: 'modules', files: [...(globalThis[Symbol.for('lockstep.testkit.loadedFiles')] ?? [])] });
    } else if (message.type === 'close') {
      server.closeAllConnections();
      close().then(
        () => process.exit(0),
        (error) => {
          process.stderr.write(`${error.stack}\n`);
          process.exit(1);
        },
      );
    }
  });
}
