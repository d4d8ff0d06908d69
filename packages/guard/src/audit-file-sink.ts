/**
 * A JSON-lines file sink for decision events: a subscriber of `lockstep:guard:decision` that buffers
 * events and appends them in batches, so the request path only pushes a string onto an array.
 * `close()` flushes what is buffered. (The network shipper to the monitor is another subscriber.)
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { subscribeDecisions } from './steps/audit.ts';

export interface AuditSink {
  flush(): Promise<void>;
  close(): Promise<void>;
}

export function createAuditFileSink(path: string, options: { flushMs?: number; onError?: (error: Error) => void } = {}): AuditSink {
  mkdirSync(dirname(path), { recursive: true });
  const stream = createWriteStream(path, { flags: 'a', mode: 0o600 });
  stream.on('error', (error) => options.onError?.(error));
  let lines: string[] = [];
  const write = (): Promise<void> => {
    if (lines.length === 0) return Promise.resolve();
    const chunk = lines.join('');
    lines = [];
    return new Promise((resolve) => stream.write(chunk, () => resolve()));
  };
  const timer = setInterval(() => void write(), options.flushMs ?? 200);
  timer.unref();
  const unsubscribe = subscribeDecisions((event) => {
    lines.push(`${JSON.stringify(event)}\n`);
    if (lines.length >= 512) void write();
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
