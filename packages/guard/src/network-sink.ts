/**
 * The network sink: ships decision events to the monitor's collector over mTLS, in gzip-compressed
 * batches (by size and by time), numbered within a stream (one per sink) so that the collector can
 * tell what never arrived. Nothing is lost while the collector is away: batches that cannot be sent
 * go to a spool file (bounded, in order) and are replayed oldest-first once it answers again; new
 * batches queue behind the spool. Only when the spool is full are events dropped — counted, and the
 * count travels with every later batch so that the monitor raises an alert.
 *
 * The request path only appends to an in-memory queue: back-pressure never blocks a request.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { serverSvidCheck } from '@lockstep/identity';
import { Agent, request } from 'undici';
import { subscribeDecisions, type DecisionEvent } from './steps/audit.ts';

const compress = promisify(gzip);

export interface NetworkSinkOptions {
  /** The collector, e.g. https://control-plane:8443/v1/audit/events */
  readonly url: string;
  /** The current SVID and trust bundle (read for every new connection: rotations are followed). */
  readonly tls: () => { readonly cert: string; readonly key: string; readonly ca: string };
  /** The collector's SPIFFE ID (its certificate names no host). */
  readonly serverSpiffeId: string;
  /** Ship only this service's events (a process may run more than one guard). */
  readonly service?: string;
  /** Where unsent batches wait (0700). The spool survives a restart and is replayed first. */
  readonly spoolDir: string;
  /** Default 64 MiB; beyond it, events are dropped and counted. */
  readonly maxSpoolBytes?: number;
  /** Default 500 events. */
  readonly batchSize?: number;
  /** Default 1 s: the longest an event waits before it is sent. */
  readonly flushMs?: number;
  /** Default 2 s: wait before trying an unreachable collector again. */
  readonly retryMs?: number;
  readonly onError?: (error: Error) => void;
}

export interface NetworkSinkStats {
  /** Events the collector acknowledged. */
  sent: number;
  /** Events written to the spool (in total). */
  spooled: number;
  /** Events lost because the spool was full. */
  dropped: number;
  /** Events the collector refused as invalid (never expected; logged). */
  refused: number;
}

export interface NetworkSink {
  readonly stream: string;
  readonly stats: NetworkSinkStats;
  /** Sends what is queued and replays the spool now; resolves when done (or when the collector is unreachable). */
  flush(): Promise<void>;
  /** Stops shipping; what is still queued goes to the spool. */
  close(): Promise<void>;
}

interface Batch {
  readonly stream: string;
  readonly events: { readonly seq: number; readonly event: DecisionEvent }[];
}

const SPOOL_FILE = 'spool.jsonl';

export function createNetworkSink(options: NetworkSinkOptions): NetworkSink {
  const stream = randomBytes(9).toString('base64url');
  const stats: NetworkSinkStats = { sent: 0, spooled: 0, dropped: 0, refused: 0 };
  const batchSize = options.batchSize ?? 500;
  const maxSpool = options.maxSpoolBytes ?? 64 * 1024 * 1024;
  const spoolPath = join(options.spoolDir, SPOOL_FILE);
  let queue: { seq: number; event: DecisionEvent }[] = [];
  let seq = 0;
  let closed = false;
  let working: Promise<void> | null = null;
  let spoolBytes: number | null = null;
  let agent: { cert: string; dispatcher: Agent } | null = null;
  let backoffUntil = 0;
  let closing: Promise<void> | null = null;

  const unsubscribe = subscribeDecisions((event) => {
    if (closed || (options.service !== undefined && event.service !== options.service)) return;
    queue.push({ seq: ++seq, event });
    if (queue.length === batchSize) kick();
  });
  const timer = setInterval(() => kick(), options.flushMs ?? 1_000);
  timer.unref();

  // The collector is known by its SPIFFE ID, read from its certificate's DER like every identity.
  const collectorIdentity = serverSvidCheck(options.serverSpiffeId, { hint: 'it is not the audit collector' });

  function dispatcher(): Agent {
    const material = options.tls();
    if (agent?.cert !== material.cert) {
      void agent?.dispatcher.close();
      agent = {
        cert: material.cert,
        dispatcher: new Agent({
          connect: {
            ...material,
            checkServerIdentity: collectorIdentity,
          },
        }),
      };
    }
    return agent.dispatcher;
  }

  /** true: acknowledged (or refused for good); false: try again later. */
  async function send(batch: Batch): Promise<boolean> {
    const body = await compress(Buffer.from(JSON.stringify({ stream: batch.stream, dropped: stats.dropped, events: batch.events })));
    try {
      const response = await request(options.url, {
        method: 'POST', dispatcher: dispatcher(), body,
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        headersTimeout: 10_000, bodyTimeout: 10_000,
      });
      const text = await response.body.text();
      if (response.statusCode === 200) {
        stats.sent += batch.events.length;
        return true;
      }
      if (response.statusCode >= 400 && response.statusCode < 500 && response.statusCode !== 401 && response.statusCode !== 408 && response.statusCode !== 429) {
        // The collector will never take this batch: keeping it would block everything behind it.
        stats.refused += batch.events.length;
        options.onError?.(new Error(`the collector refused ${batch.events.length} events (${response.statusCode}): ${text.slice(0, 300)}`));
        return true;
      }
      options.onError?.(new Error(`the collector answered ${response.statusCode}; keeping the batch`));
      return false;
    } catch (error) {
      options.onError?.(new Error(`the collector is unreachable (${(error as Error).message}); spooling`));
      return false;
    }
  }

  async function currentSpoolBytes(): Promise<number> {
    if (spoolBytes === null) spoolBytes = await stat(spoolPath).then((info) => info.size, () => 0);
    return spoolBytes;
  }

  async function spool(batch: Batch): Promise<void> {
    const line = `${JSON.stringify(batch)}\n`;
    if ((await currentSpoolBytes()) + Buffer.byteLength(line) > maxSpool) {
      stats.dropped += batch.events.length;
      options.onError?.(new Error(`the spool is full (${maxSpool} bytes): ${batch.events.length} events dropped`));
      return;
    }
    await mkdir(options.spoolDir, { recursive: true, mode: 0o700 });
    await appendFile(spoolPath, line, { mode: 0o600 });
    spoolBytes = (await currentSpoolBytes()) + Buffer.byteLength(line);
    stats.spooled += batch.events.length;
  }

  /** Replays the spool oldest-first; true when it is empty afterwards. */
  async function replay(): Promise<boolean> {
    if ((await currentSpoolBytes()) === 0) return true;
    const lines = (await readFile(spoolPath, 'utf8')).split('\n').filter(Boolean);
    let done = 0;
    for (const line of lines) {
      let batch: Batch;
      try {
        batch = JSON.parse(line) as Batch;
      } catch {
        done += 1; // a torn last line from a crash: nothing to send
        continue;
      }
      if (!(await send(batch))) break;
      done += 1;
    }
    const rest = lines.slice(done);
    const text = rest.length === 0 ? '' : `${rest.join('\n')}\n`;
    const temporary = `${spoolPath}.${process.pid}.tmp`;
    await writeFile(temporary, text, { mode: 0o600 });
    await rename(temporary, spoolPath);
    spoolBytes = Buffer.byteLength(text);
    return rest.length === 0;
  }

  async function work(): Promise<void> {
    const retryMs = options.retryMs ?? 2_000;
    // Keep order: the spool is replayed before anything new is sent, and while it holds anything,
    // new batches join it behind. A failed attempt backs off; waiting does not extend the wait.
    let reachable = false;
    if (Date.now() >= backoffUntil) {
      reachable = await replay();
      if (!reachable) backoffUntil = Date.now() + retryMs;
    }
    while (queue.length > 0) {
      const events = queue.slice(0, batchSize);
      queue = queue.slice(events.length);
      const batch: Batch = { stream, events };
      if (reachable) {
        if (await send(batch)) continue;
        reachable = false;
        backoffUntil = Date.now() + retryMs;
      }
      await spool(batch);
    }
  }

  // One round at a time; a round takes everything queued (sent, or spooled while the collector is away).
  function kick(): Promise<void> {
    if (working !== null) return working;
    working = work().catch((error: Error) => options.onError?.(error)).finally(() => { working = null; });
    return working;
  }

  return {
    stream,
    stats,
    async flush() {
      backoffUntil = 0;
      await working;
      await kick();
    },
    close() {
      closing ??= shutDown();
      return closing;
    },
  };

  async function shutDown(): Promise<void> {
    closed = true;
    clearInterval(timer);
    unsubscribe();
    await working;
    // One last attempt (unless the collector is known to be away); what cannot be sent stays in the
    // spool for the next start.
    await work().catch((error: Error) => options.onError?.(error));
    await agent?.dispatcher.close();
  }
}
