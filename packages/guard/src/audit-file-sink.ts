/**
 * A JSON-lines file sink for decision events: a subscriber of `lockstep:guard:decision` that buffers
 * events and appends them in batches: the request path only queues the event.
 * `close()` flushes what is buffered. (The network shipper to the monitor is another subscriber.)
 */
import { createWriteStream, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { decisionToJson, subscribeDecisions, type DecisionEvent } from './steps/audit.ts';

export interface AuditSink {
  flush(): Promise<void>;
  close(): Promise<void>;
}

export function createAuditFileSink(path: string, options: { flushMs?: number; onError?: (error: Error) => void } = {}): AuditSink {
  mkdirSync(dirname(path), { recursive: true });
  // The audit log is private even if it already existed with a looser mode.
  const fd = openSync(path, 'a', 0o600);
  fchmodSync(fd, 0o600);
  const stream = createWriteStream(path, { fd, flags: 'a' });
  stream.on('error', (error) => options.onError?.(error));
  // The request path only keeps a reference to the event; encoding happens in batches, in one tight
  // loop per flush (a few milliseconds apart), which is cheaper than interleaving it with request work.
  const CHUNK = 32 * 1024;
  let queued: DecisionEvent[] = [];
  // Stream writes complete in order, so waiting for the last one waits for all of them.
  let pending: Promise<void> = Promise.resolve();
  const writeChunk = (chunk: Buffer | string): void => {
    pending = new Promise((resolve) => stream.write(chunk, () => resolve()));
  };
  const write = (): Promise<void> => {
    if (queued.length === 0) return pending;
    const events = queued;
    queued = [];
    let buffer = Buffer.allocUnsafe(CHUNK);
    let used = 0;
    for (const event of events) {
      const line = `${decisionToJson(event)}\n`;
      // UTF-8 takes at most 3 bytes per UTF-16 code unit.
      if (used + line.length * 3 > CHUNK && used > 0) {
        writeChunk(buffer.subarray(0, used));
        buffer = Buffer.allocUnsafe(CHUNK);
        used = 0;
      }
      if (line.length * 3 > CHUNK) writeChunk(line);
      else used += buffer.write(line, used, 'utf8');
    }
    if (used > 0) writeChunk(buffer.subarray(0, used));
    return pending;
  };
  const timer = setInterval(() => void write(), options.flushMs ?? 20);
  timer.unref();
  const unsubscribe = subscribeDecisions((event) => {
    if (queued.push(event) >= 1024) void write();
  });
  return {
    flush: write,
    async close() {
      unsubscribe();
      clearInterval(timer);
      await write();
      await new Promise<void>((resolve) => stream.end(resolve));
    },
  };
}
