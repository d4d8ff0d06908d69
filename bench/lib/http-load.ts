/**
 * The HTTPS load generator for bench/control-plane.ts, run as its own process so that the server
 * under test keeps its core: reads a job (JSON file named on the command line), sends every body
 * once over `connections` mTLS keep-alive connections, and prints { count, elapsedMs } as JSON.
 */
import { readFileSync } from 'node:fs';
import { Pool } from 'undici';

interface Job {
  readonly url: string;
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly path: string;
  readonly contentType: string;
  readonly bodies: readonly string[];
  readonly warmup: readonly string[];
  readonly expected: number;
  readonly connections: number;
}

const job = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as Job;
const pool = new Pool(job.url, {
  connections: job.connections,
  connect: { ...job.tls, checkServerIdentity: () => undefined },
});

async function send(body: string): Promise<void> {
  const response = await pool.request({
    method: 'POST',
    path: job.path,
    headers: { 'content-type': job.contentType },
    body,
  });
  const text = await response.body.text();
  if (response.statusCode !== job.expected)
    throw new Error(`${job.path} answered ${response.statusCode}: ${text.slice(0, 200)}`);
}

async function run(bodies: readonly string[]): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: job.connections }, async () => {
      while (next < bodies.length) await send(bodies[next++] as string);
    }),
  );
  return performance.now() - started;
}

await run(job.warmup);
process.send?.({ phase: 'measuring' });
const elapsedMs = await run(job.bodies);
await pool.close();
process.stdout.write(`${JSON.stringify({ count: job.bodies.length, elapsedMs })}\n`);
