/**
 * A JSON-lines file sink for decision events: a subscriber of `lockstep:guard:decision` that buffers
 * events and appends them in batches, so the request path only pushes a string onto an array.
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
  // One growing string: appending is cheap (V8 builds a rope) and it is flattened once, on write.
  let batch = '';
  let count = 0;
  // Stream writes complete in order, so waiting for the last one waits for all of them.
  let pending: Promise<void> = Promise.resolve();
  const write = (): Promise<void> => {
    if (count > 0) {
      const chunk = batch;
      batch = '';
      count = 0;
      pending = new Promise((resolve) => stream.write(chunk, () => resolve()));
    }
    return pending;
  };
  const timer = setInterval(() => void write(), options.flushMs ?? 200);
  timer.unref();
  const unsubscribe = subscribeDecisions((event) => {
    batch += `${decisionToJson(event)}\n`;
    if (++count >= 512) void write();
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
