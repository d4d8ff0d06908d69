/**
 * A JSON-lines file sink for decision events: the guard's audit file, or (with `segments`) the
 * network sink's bounded journal. Chunks of whole lines are appended in order, never two at once, so
 * a reader sees complete lines in order: the network sink tails this file and ships what it reads
 * (see network-sink.ts).
 *
 * A request pays for a few stores into shared memory, nothing more. The sink is a recorder of its
 * service's decisions (steps/audit.ts): a pipeline hands it the admission, and it puts a compact
 * record into a ring (audit-ring.ts). The writer (audit-writer.ts) encodes the lines and writes them,
 * whenever a quarter of the ring is used and at least every `flushMs` (default 20 ms): on this thread
 * after the current I/O callbacks (`inline`, the default), or on a worker thread (audit-worker.ts).
 * A full ring never blocks a request: records wait, in order, in a bounded list; beyond it events are
 * dropped, counted in `dropped` and reported.
 *
 * Durability: what the writer has written survives a crash of the process (the network sink resumes
 * from the file). On a normal exit, even without `close()`, the writer writes everything recorded
 * before the process ends (an 'exit' hook waits up to 2 s for it). A kill -9 loses at most the last
 * `flushMs` of events, as any buffered writer would.
 *
 * With `segments`, `path` is a directory and the sink writes a bounded journal instead: segments
 * `journal-<n>.jsonl` of about `segments.bytes` each. The reader deletes a segment once it has shipped
 * all of it; while `segments.count` segments exist, events are dropped before they are written, and
 * counted (`dropped`).
 *
 * `close()` writes what is recorded and stops the writer.
 */
import { closeSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createRingMemory, EXIT_ACK, EXITING, READ, RingProducer, STATE, WAKE } from './audit-ring.ts';
import {
  createRingWriter,
  journalSegmentPath,
  openForAppend,
  type WriterCommand,
  type WriterNews,
  type WriterStart,
} from './audit-writer.ts';
import { REQUEST_ID_PREFIX } from './request-id.ts';
import { subscribeRecorder } from './steps/audit.ts';

export { journalSegmentPath } from './audit-writer.ts';

export interface AuditSink {
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * Events that are not in the file: the journal was full, a write failed, or the writer could not
   * keep up. A line cut short by a failed write is not counted here: it is in the file, and its reader
   * counts it.
   */
  readonly dropped: number;
}

export interface AuditFileSinkOptions {
  readonly flushMs?: number;
  readonly onError?: (error: Error) => void;
  /** Only this service's decisions (a process may run more than one guard). */
  readonly service?: string;
  /** Write a bounded journal of segments in the directory `path` (see above). */
  readonly segments?: { readonly bytes: number; readonly count: number };
  /**
   * Where lines are encoded and written: `inline` (default) on this thread, in batches in the event
   * loop's spare turns, or on a `worker` thread of the sink's own (see the guard's `audit.writer`).
   */
  readonly thread?: 'worker' | 'inline';
  /** The ring's size in bytes, a power of two (default 1 MiB: about 25,000 events, fewer with new contexts). */
  readonly ringBytes?: number;
  /**
   * How many records (events, and new contexts before them) may wait for room when the ring is full
   * before events are dropped (default 65,536).
   */
  readonly waitingLimit?: number;
}

const SEGMENT_NAME = /^journal-([1-9][0-9]{0,14})\.jsonl$/;
// The writer's module, next to this one: .ts when run from source, .js when installed.
const WORKER_URL = new URL(`./audit-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url);
const EXIT_WAIT_MS = 2_000;

/** The segment numbers present in `dir`, oldest first. */
export function journalSegments(dir: string): number[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .flatMap((name) => {
      const match = SEGMENT_NAME.exec(name);
      return match === null ? [] : [Number(match[1])];
    })
    .sort((a, b) => a - b);
}

// Sinks whose writers must write everything before the process exits.
const beforeExit = new Set<() => void>();
let exitHooked = false;
function writeBeforeExit(finish: () => void): () => void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const each of beforeExit) {
        try {
          each();
        } catch (error) {
          // One sink's failure must not keep the others from writing theirs.
          console.error(`lockstep: an audit writer failed at exit: ${(error as Error).message}`);
        }
      }
    });
  }
  beforeExit.add(finish);
  return () => beforeExit.delete(finish);
}

/** Opens the file (or the journal's newest segment) once here, so that a path that cannot be written fails now. */
function openStart(path: string, segments: AuditFileSinkOptions['segments']): WriterStart {
  if (segments === undefined) {
    mkdirSync(dirname(path), { recursive: true });
    closeSync(openForAppend(path).fd);
    return { path, requestIdPrefix: REQUEST_ID_PREFIX };
  }
  mkdirSync(path, { recursive: true, mode: 0o700 });
  const present = journalSegments(path);
  const current = present.at(-1) ?? 1;
  const { fd, size } = openForAppend(journalSegmentPath(path, current));
  closeSync(fd);
  return {
    path,
    journal: { bytes: segments.bytes, count: segments.count, oldest: present[0] ?? 1, current, written: size },
    requestIdPrefix: REQUEST_ID_PREFIX,
  };
}

export function createAuditFileSink(path: string, options: AuditFileSinkOptions = {}): AuditSink {
  const report = (error: Error): void => options.onError?.(error);
  const flushMs = options.flushMs ?? 20;
  const memory = createRingMemory(options.ringBytes);
  const control = new Int32Array(memory.control);
  const start = openStart(path, options.segments);

  let dropped = 0;
  let flushSeq = 0;
  const flushed = new Map<number, () => void>();
  let closedByWriter: () => void = () => {};
  // The writer has written everything and closed its file (told by the writer, or it is gone).
  let writerFinished = false;
  const writerClosed = new Promise<void>(
    (resolve) =>
      (closedByWriter = () => {
        writerFinished = true;
        resolve();
      }),
  );
  // The writer is gone (its thread failed): nothing more reaches the file; waiting flushes end.
  let gone: Error | null = null;
  const hear = (news: WriterNews): void => {
    if (news.type === 'dropped') {
      dropped += news.count;
      if (news.error !== undefined) report(new Error(news.error));
    } else if (news.type === 'flushed') {
      flushed.get(news.id)?.();
      flushed.delete(news.id);
    } else closedByWriter();
  };
  // Set once the producer exists (below); a writer cannot fail before it is started.
  let stopRecording: () => void = () => {};
  const writerGone = (error: Error): void => {
    if (gone !== null) return;
    gone = error;
    report(
      new Error(
        `the audit writer stopped (${error.message}): decisions are no longer written to ${path}; ` +
          'they are counted as dropped until the guard is restarted',
      ),
    );
    stopRecording();
    for (const resolve of flushed.values()) resolve();
    flushed.clear();
    closedByWriter();
  };

  let send: (command: WriterCommand) => void;
  let wake: () => void;
  let finishNow: () => void;
  let stopWriter: () => Promise<void>;
  if (options.thread !== 'worker') {
    // News is heard on a later turn, as from a thread.
    const writer = createRingWriter(memory, start, (news) => queueMicrotask(() => hear(news)));
    let scheduled = false;
    // Everything recorded is encoded and written in one batch every `flushMs` (or sooner, when a
    // quarter of the ring is used). In the bench's paired rounds the audit's CPU per request was a
    // third to a half of what batches of 32 cost: encoding interleaved with the requests kept taking
    // their data out of the CPU's caches. 20 ms of events at 1,000 rps take ~10 µs to write.
    const run = (step: () => void) => {
      try {
        step();
      } catch (error) {
        clearInterval(timer);
        writerGone(error as Error);
      }
    };
    const encode = () => {
      scheduled = false;
      run(() => writer.encode());
    };
    const timer = setInterval(() => run(() => writer.drain()), flushMs);
    timer.unref();
    send = (command) => run(() => writer.command(command));
    wake = () => {
      if (scheduled) return;
      scheduled = true;
      setImmediate(encode);
    };
    finishNow = () => {
      // Room for what waits is made by writing: as many turns as it takes.
      for (let turn = 0; turn < 1_000 && !producer.moveWaiting(); turn++) writer.drain();
      writer.finish();
    };
    stopWriter = async () => clearInterval(timer);
  } else {
    const worker = new Worker(WORKER_URL, {
      workerData: { memory, start, flushMs },
      // The writer allocates little; a small young generation keeps its memory small.
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
    });
    worker.unref();
    worker.on('message', hear);
    worker.on('error', writerGone);
    const exited = (code: number) => writerGone(new Error(`its thread exited with code ${code}`));
    worker.on('exit', exited);
    send = (command) => worker.postMessage(command);
    wake = () => {
      Atomics.add(control, WAKE, 1);
      Atomics.notify(control, WAKE);
    };
    finishNow = () => {
      // What waits goes into the ring as the thread frees room (each wait up to 10 ms), then the
      // thread writes everything and acknowledges.
      const until = Date.now() + EXIT_WAIT_MS;
      while (!producer.moveWaiting() && Date.now() < until) {
        wake();
        Atomics.wait(control, READ, Atomics.load(control, READ), 10);
      }
      Atomics.store(control, STATE, EXITING);
      wake();
      Atomics.wait(control, EXIT_ACK, 0, Math.max(1, until - Date.now()));
    };
    stopWriter = async () => {
      worker.off('exit', exited);
      await worker.terminate();
    };
  }

  let dropsToReport = 0;
  let dropReport: NodeJS.Timeout | null = null;
  const producer = new RingProducer(memory, {
    ...(options.waitingLimit === undefined ? {} : { waitingLimit: options.waitingLimit }),
    sendOutOfBand: (record) => send(record),
    wake,
    onDropped: (count) => {
      dropped += count;
      dropsToReport += count;
      // One report a second at most, however many are dropped.
      dropReport ??= setTimeout(() => {
        report(
          new Error(
            `${dropsToReport} decision events dropped: the audit writer for ${path} cannot keep up ` +
              '(its ring and waiting list are full); look at the disk it writes to',
          ),
        );
        dropsToReport = 0;
        dropReport = null;
      }, 1_000);
      dropReport.unref();
    },
  });
  const unsubscribe = subscribeRecorder(producer, options.service);
  stopRecording = () => producer.kill();
  const unhook = writeBeforeExit(() => {
    if (gone === null && !writerFinished) finishNow();
  });

  let closing: Promise<void> | null = null;
  // Set when the writer is told to close: it writes everything, and a flush waits for that.
  let closeSent = false;
  /** Resolves once everything recorded so far is in the file (or counted as dropped). */
  const flush = async (): Promise<void> => {
    if (closeSent) return closing ?? undefined;
    while (gone === null && !producer.moveWaiting()) {
      wake();
      await new Promise((resolve) => setTimeout(resolve, 2));
      // close() ran meanwhile: it has written everything.
      if (closeSent) return closing ?? undefined;
    }
    if (gone !== null) return;
    const id = ++flushSeq;
    const done = new Promise<void>((resolve) => flushed.set(id, resolve));
    send({ type: 'flush', id, upTo: producer.position });
    wake();
    await done;
  };

  return {
    flush,
    get dropped() {
      return dropped;
    },
    close() {
      closing ??= (async () => {
        unsubscribe();
        await flush();
        producer.stop();
        closeSent = true;
        if (gone === null) send({ type: 'close' });
        await writerClosed;
        unhook();
        await stopWriter();
        if (dropReport !== null) {
          clearTimeout(dropReport);
          report(new Error(`${dropsToReport} decision events dropped: the audit writer for ${path} could not keep up`));
        }
      })();
      return closing;
    },
  };
}
