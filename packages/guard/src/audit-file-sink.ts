/**
 * A JSON-lines file sink for decision events: a subscriber of `lockstep:guard:decision` that queues
 * events, encodes them in small batches into an in-memory chunk, and appends whole chunks to the
 * file when they are full and every `flushMs`. Chunks hold whole lines and are appended one after the
 * other, never two at once, so a reader sees complete lines in order: the network sink tails this
 * file and ships what it reads (see network-sink.ts).
 *
 * With `segments`, `path` is a directory and the sink writes a bounded journal instead: segments
 * `journal-<n>.jsonl` of about `segments.bytes` each. The reader deletes a segment once it has shipped
 * all of it; while `segments.count` segments exist, events are dropped before they are written, and
 * counted (`dropped`).
 *
 * A write that fails (disk full, I/O error) is not tried again: the events of its chunks that did not
 * reach the file whole are counted in `dropped`, reported, and the line it may have cut short is ended
 * before the next write, so that it cannot swallow the next line (a reader sees it, does not parse
 * it, and counts it itself).
 *
 * `close()` flushes what is buffered.
 */
import {
  closeSync,
  existsSync,
  fchmodSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  writeSync,
  writev,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { decisionLineBound, subscribeDecisions, writeDecisionLine, type DecisionEvent } from './steps/audit.ts';

export interface AuditSink {
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * Events that are not in the file: the journal was full, or a write failed. A line cut short by a
   * failed write is not counted here: it is in the file, and its reader counts it.
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
}

const SEGMENT_NAME = /^journal-([1-9][0-9]{0,14})\.jsonl$/;

export function journalSegmentPath(dir: string, segment: number): string {
  return join(dir, `journal-${segment}.jsonl`);
}

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

/**
 * Opens `file` for appending (mode 0600, even if it existed with a looser mode) and returns its fd and
 * size. A last line torn by a crash is ended first, so that it cannot swallow the next line written.
 */
function openForAppend(file: string): { fd: number; size: number } {
  const fd = openSync(file, 'a+', 0o600);
  fchmodSync(fd, 0o600);
  endTornLine(fd);
  return { fd, size: fstatSync(fd).size };
}

/** Ends the file's last line if it is cut short (by a crash, or a failed write). */
function endTornLine(fd: number): void {
  const size = fstatSync(fd).size;
  if (size === 0) return;
  const last = Buffer.alloc(1);
  readSync(fd, last, 0, 1, size - 1);
  if (last[0] !== 0x0a) writeSync(fd, '\n');
}

/**
 * Appends `chunks` in one system call (more if the kernel takes only part of them). Resolves with the
 * bytes written, and the error that stopped it before the end (then the last line may be cut short).
 */
function appendAll(fd: number, chunks: readonly Buffer[]): Promise<{ written: number; error: Error | null }> {
  return new Promise((resolve) => {
    let total = 0;
    const next = (rest: Buffer[]): void => {
      writev(fd, rest, null, (error, written) => {
        if (error !== null) return resolve({ written: total, error });
        total += written;
        let left = written;
        while (rest.length > 0 && left >= (rest[0] as Buffer).length) left -= (rest.shift() as Buffer).length;
        if (rest.length === 0) return resolve({ written: total, error: null });
        rest[0] = (rest[0] as Buffer).subarray(left);
        next(rest);
      });
    };
    next([...chunks]);
  });
}

/** How many of the lines in `chunks` the first `written` bytes hold whole, and whether one is cut short. */
function linesIn(chunks: readonly Buffer[], written: number): { whole: number; torn: boolean } {
  let whole = 0;
  let left = written;
  let lastByte = 0x0a;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, Math.min(left, chunk.length));
    for (let at = part.indexOf(0x0a); at >= 0; at = part.indexOf(0x0a, at + 1)) whole += 1;
    if (part.length > 0) lastByte = part[part.length - 1] as number;
    left -= part.length;
    if (left === 0) break;
  }
  return { whole, torn: lastByte !== 0x0a };
}

/** A chunk of whole lines, and how many events they are. */
interface Chunk {
  readonly bytes: Buffer;
  readonly events: number;
}

export function createAuditFileSink(path: string, options: AuditFileSinkOptions = {}): AuditSink {
  const { segments, service } = options;
  const report = (error: Error): void => options.onError?.(error);
  // The file (or the journal's newest segment) that writes go to; replaced only between two writes.
  let fd: number;
  // The journal's live segments are `oldest`…`current`; `written` bytes of `current` are committed.
  let current = 0;
  let oldest = 0;
  let written = 0;
  let dropped = 0;
  if (segments === undefined) {
    mkdirSync(dirname(path), { recursive: true });
    fd = openForAppend(path).fd;
  } else {
    mkdirSync(path, { recursive: true, mode: 0o700 });
    const present = journalSegments(path);
    oldest = present[0] ?? 1;
    current = present.at(-1) ?? 1;
    ({ fd, size: written } = openForAppend(journalSegmentPath(path, current)));
  }
  // Writes, rotations and the final close run one after the other, in order; chunks that queue up
  // while a write is under way go together in the next one.
  const steps: (Chunk | (() => void))[] = [];
  let running = false;
  // A write failed: the file's last line may be cut short. Ended before the next write.
  let mayBeTorn = false;
  // Resolves once every step queued so far is done.
  let pending: Promise<void> = Promise.resolve();
  /** Appends `chunks`; the events that did not reach the file are counted in `dropped`. */
  const append = async (chunks: readonly Chunk[]): Promise<void> => {
    const bytes = chunks.map((chunk) => chunk.bytes);
    const events = chunks.reduce((sum, chunk) => sum + chunk.events, 0);
    let result: { written: number; error: Error | null };
    try {
      if (mayBeTorn) {
        endTornLine(fd);
        mayBeTorn = false;
      }
      result = await appendAll(fd, bytes);
    } catch (error) {
      result = { written: 0, error: error as Error };
    }
    if (result.error === null) return;
    mayBeTorn = true;
    const { whole, torn } = linesIn(bytes, result.written);
    const lost = events - whole - (torn ? 1 : 0);
    dropped += lost;
    report(
      new Error(
        `${result.error.message}: ${lost} of ${events} events are not in ${path} (counted as dropped)` +
          `${torn ? '; one is there cut short (its reader counts it)' : ''}`,
      ),
    );
  };
  const run = async (): Promise<void> => {
    try {
      while (steps.length > 0) {
        const chunks: Chunk[] = [];
        while (steps.length > 0 && typeof steps[0] !== 'function') chunks.push(steps.shift() as Chunk);
        if (chunks.length > 0) {
          await append(chunks);
          continue;
        }
        try {
          (steps.shift() as () => void)();
        } catch (error) {
          report(error as Error);
        }
      }
    } finally {
      running = false;
    }
  };
  const enqueue = (step: Chunk | (() => void)): void => {
    steps.push(step);
    if (running) return;
    running = true;
    pending = run();
  };

  // The request path only queues the event. Encoding happens in small batches right after the
  // current I/O callbacks (setImmediate), in one tight loop: measured in a running server, encoding
  // each event during its request cost about three times as much CPU as the same work batched, and
  // batches of 128 made one request in a hundred wait for the batch (light-load p99 +0.2 ms);
  // 32 events take ~50 µs, shorter than the gap between two requests of one connection.
  const CHUNK = 64 * 1024;
  const BATCH = 32;
  let queued: DecisionEvent[] = [];
  let buffer = Buffer.allocUnsafe(CHUNK);
  let used = 0;
  // The events encoded into `buffer` so far.
  let usedEvents = 0;
  const writeChunk = (): void => {
    const chunk = { bytes: buffer.subarray(0, used), events: usedEvents };
    buffer = Buffer.allocUnsafe(CHUNK);
    written += used;
    used = 0;
    usedEvents = 0;
    enqueue(chunk);
  };

  /**
   * Starts the next segment, unless `segments.count` exist already (the reader has not shipped the
   * oldest yet): then false. Looks on disk for deleted segments only when `look` is set.
   */
  const nextSegment = (config: NonNullable<AuditFileSinkOptions['segments']>, look: boolean): boolean => {
    if (current + 1 - oldest >= config.count && look) {
      while (oldest < current && !existsSync(journalSegmentPath(path, oldest))) oldest += 1;
    }
    if (current + 1 - oldest >= config.count) return false;
    if (used > 0) writeChunk();
    current += 1;
    written = 0;
    const segment = current;
    // The new segment appears only after every write to the previous one is done: a reader that
    // sees segment n+1 knows that segment n is complete.
    enqueue(() => {
      closeSync(fd);
      // A line cut short in the segment left behind: its reader skips it when it moves on.
      mayBeTorn = false;
      fd = openForAppend(journalSegmentPath(path, segment)).fd;
    });
    return true;
  };

  let flushScheduled = false;
  const encode = (): void => {
    flushScheduled = false;
    const events = queued;
    queued = [];
    let look = true;
    for (const event of events) {
      if (segments !== undefined && written + used >= segments.bytes && !nextSegment(segments, look)) {
        // Full: dropped here, before it is written, and counted (one look on disk per batch).
        look = false;
        dropped += 1;
        continue;
      }
      let end = writeDecisionLine(event, buffer, used);
      if (end < 0) {
        if (used > 0) writeChunk();
        // A line longer than a chunk (hostile route or policy names) gets a buffer of its own size.
        const bound = decisionLineBound(event);
        if (bound > buffer.length) buffer = Buffer.allocUnsafe(bound);
        end = writeDecisionLine(event, buffer, 0);
      }
      used = end;
      usedEvents += 1;
    }
  };
  /** Encodes what is queued and writes the current chunk; resolves when everything is on disk. */
  const flush = (): Promise<void> => {
    encode();
    if (used > 0) writeChunk();
    return pending;
  };
  const timer = setInterval(() => void flush(), options.flushMs ?? 20);
  timer.unref();
  const unsubscribe = subscribeDecisions((event) => {
    // A process may run more than one guard: each file holds its own service's decisions.
    if (service !== undefined && event.service !== service) return;
    if (queued.push(event) >= BATCH && !flushScheduled) {
      flushScheduled = true;
      setImmediate(encode);
    }
  });
  let closing: Promise<void> | null = null;
  return {
    flush,
    get dropped() {
      return dropped;
    },
    close() {
      closing ??= (async () => {
        unsubscribe();
        clearInterval(timer);
        await flush();
        enqueue(() => closeSync(fd));
        await pending;
      })();
      return closing;
    },
  };
}
