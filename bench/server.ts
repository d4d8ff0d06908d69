/**
 * One server under test in a process of its own, so that the variants do not share a heap, a JIT
 * state or garbage: the bench sends { variant, world, auditFile }, this answers { origin } once
 * listening, on { cpu } answers its CPU, memory and request count so far (a CpuSample), and on
 * { close } closes, answers { auditLines } and exits.
 */
import { startVariant, type ServerWorld, type Variant } from './lib/servers.ts';

type Command =
  { type: 'start'; variant: Variant; world: ServerWorld; auditFile: string } | { type: 'cpu' } | { type: 'close' };

const send = (message: unknown) => process.send?.(message);
let server: Awaited<ReturnType<typeof startVariant>> | null = null;

// A bench that dies (Ctrl-C, a kill) leaves no server behind holding its port and its CPU.
process.on('disconnect', () => process.exit());

process.on('message', (command: Command) => {
  if (command.type === 'cpu') {
    const { user, system } = process.cpuUsage();
    const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage();
    send({
      type: 'cpu',
      atMs: performance.now(),
      cpuMicros: user + system,
      mainActiveMicros: performance.eventLoopUtilization().active * 1000,
      requests: server?.requests() ?? 0,
      memory: {
        rssBytes: rss,
        heapUsedBytes: heapUsed,
        externalBytes: external,
        arrayBuffersBytes: arrayBuffers,
        // ru_maxrss: kibibytes on Linux.
        maxRssBytes: process.resourceUsage().maxRSS * 1024,
      },
    });
  } else if (command.type === 'start') {
    startVariant(command.variant, command.world, command.auditFile).then(
      (started) => {
        server = started;
        send({ type: 'listening', origin: started.origin });
      },
      (error: Error) => {
        send({ type: 'failed', message: error.stack ?? error.message });
        process.exit(1);
      },
    );
  } else if (server !== null) {
    const running = server;
    running.close().then(
      () => {
        send({ type: 'closed', auditLines: running.auditLines() });
        process.disconnect();
      },
      (error: Error) => {
        send({ type: 'failed', message: error.stack ?? error.message });
        process.exit(1);
      },
    );
  }
});
