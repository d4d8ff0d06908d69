/**
 * The audit writer's thread (see audit-file-sink.ts): drains the ring whenever it is woken, and at
 * least every `flushMs`; writes everything and acknowledges when the process exits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EXIT_ACK, EXITING, STATE, WAKE, type RingMemory } from './audit-ring.ts';
import { createRingWriter, type WriterCommand, type WriterNews, type WriterStart } from './audit-writer.ts';

interface WorkerData {
  readonly memory: RingMemory;
  readonly start: WriterStart;
  readonly flushMs: number;
}

const { memory, start, flushMs } = workerData as WorkerData;
const port = parentPort;
if (port === null) throw new Error('audit-worker.ts runs as a worker thread of an audit file sink');
const control = new Int32Array(memory.control);
const writer = createRingWriter(memory, start, (news: WriterNews) => port.postMessage(news));
port.on('message', (command: WriterCommand) => writer.command(command));

async function run(): Promise<void> {
  while (!writer.closed) {
    const wake = Atomics.load(control, WAKE);
    if (Atomics.load(control, STATE) === EXITING) {
      // A record too large for the ring comes as a message: a few turns for it to arrive.
      writer.drain();
      for (let turn = 0; turn < 100 && writer.waitsForMessage; turn++) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        writer.drain();
      }
      writer.finish();
      Atomics.store(control, EXIT_ACK, 1);
      Atomics.notify(control, EXIT_ACK);
      return;
    }
    writer.drain();
    const waited = Atomics.waitAsync(control, WAKE, wake, flushMs);
    // Messages (flushes, large records) are handled while it waits.
    if (waited.async) await waited.value;
    else await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

run().catch((error: unknown) => {
  port.postMessage({
    type: 'dropped',
    count: 0,
    error: `the audit writer stopped: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
  } satisfies WriterNews);
  throw error;
});
