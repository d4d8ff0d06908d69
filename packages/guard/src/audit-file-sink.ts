/**
 * A JSON-lines file sink for decision events: a subscriber of `lockstep:guard:decision` that buffers
 * events and appends them in batches: the request path only encodes one line into a buffer.
 * `close()` flushes what is buffered. (The network shipper to the monitor is another subscriber.)
 */
import { createWriteStream, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { decisionToJson, subscribeDecisions } from './steps/audit.ts';

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
  // Each line is encoded into a fixed buffer as it arrives, so no event string outlives its request
  // (it dies young, which the GC handles cheaply, and no batch of strings waits to be flattened at
  // once); a full buffer goes to the stream as one write.
  const CHUNK = 32 * 1024;
  let buffer = Buffer.allocUnsafe(CHUNK);
  let used = 0;
  // Stream writes complete in order, so waiting for the last one waits for all of them.
  let pending: Promise<void> = Promise.resolve();
  const writeChunk = (chunk: Buffer | string): void => {
    pending = new Promise((resolve) => stream.write(chunk, () => resolve()));
  };
  const write = (): Promise<void> => {
    if (used > 0) {
      writeChunk(buffer.subarray(0, used));
      buffer = Buffer.allocUnsafe(CHUNK);
      used = 0;
    }
    return pending;
  };
  const append = (line: string): void => {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (used + line.length * 3 > CHUNK) void write();
    if (line.length * 3 > CHUNK) writeChunk(line);
    else used += buffer.write(line, used, 'utf8');
  };
  const timer = setInterval(() => void write(), options.flushMs ?? 200);
  timer.unref();
  const unsubscribe = subscribeDecisions((event) => {
    append(`${decisionToJson(event)}\n`);
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
