/**
 * The flood for bench/edge-flood.ts, run as its own process so that the bench's users are not slowed by
 * the flooder's own work in their event loop. Reads a FloodJob (JSON, first argument), floods from one
 * loopback address with `clients` concurrent clients until `seconds` have passed or `maxRequests` were
 * sent, then reports a FloodReport over IPC and exits. Kinds:
 *   upload   what the issue saw: 1 MiB to POST /logout without a session, a fresh connection each
 *   get      anonymous GET /api/orders on keep-alive connections, as fast as they are answered
 */
import { connect } from 'node:net';
import { Agent, request } from 'undici';

export interface FloodJob {
  readonly port: number;
  readonly kind: 'upload' | 'get';
  readonly from: string;
  readonly clients: number;
  readonly seconds: number;
  readonly maxRequests: number;
}

export interface FloodReport {
  readonly sent: number;
  readonly elapsedMs: number;
  /** This process's CPU time (user + system) while flooding: the machine's cores are shared with the shop. */
  readonly cpuMicros: number;
  /** Answers by status; 0 = the connection ended before an answer was read. */
  readonly statuses: Record<string, number>;
}

const UPLOAD_BYTES = 1024 * 1024;

/** One 1 MiB POST /logout on a fresh connection; resolves with the status (0: none read). */
function upload(job: FloodJob): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: job.port, localAddress: job.from });
    let received = '';
    socket.on('connect', () => {
      socket.write(
        `POST /logout HTTP/1.1\r\nhost: localhost:${job.port}\r\ncontent-type: application/json\r\ncontent-length: ${UPLOAD_BYTES}\r\n\r\n`,
      );
      socket.end(Buffer.alloc(UPLOAD_BYTES, 0x20));
    });
    socket.on('data', (data) => {
      received += data.toString('latin1');
      if (received.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0)));
  });
}

async function flood(job: FloodJob): Promise<FloodReport> {
  const statuses: Record<string, number> = {};
  const agent = new Agent({ localAddress: job.from, connections: job.clients });
  const started = performance.now();
  const cpu = process.cpuUsage();
  const until = Date.now() + job.seconds * 1000;
  let sent = 0;
  const client = async () => {
    while (Date.now() < until && sent < job.maxRequests) {
      sent += 1;
      let status: number;
      if (job.kind === 'upload') {
        status = await upload(job);
      } else {
        const answer = await request(`http://127.0.0.1:${job.port}/api/orders`, { dispatcher: agent });
        await answer.body.dump();
        status = answer.statusCode;
      }
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: job.clients }, client));
  await agent.close();
  const used = process.cpuUsage(cpu);
  return { sent, statuses, elapsedMs: performance.now() - started, cpuMicros: used.user + used.system };
}

if (process.send !== undefined) {
  const job = JSON.parse(process.argv[2] as string) as FloodJob;
  process.send({ started: true });
  const report = await flood(job);
  process.send({ report }, () => process.exit(0));
}
