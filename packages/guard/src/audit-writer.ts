/**
 * The audit writer: takes records out of the ring (audit-ring.ts), turns them into JSON lines and
 * appends them to the audit file, or to the newest segment of a journal. It runs on a thread of its
 * own (audit-worker.ts), or on the request thread when asked (`thread: 'inline'`, for tests and for a
 * platform without worker threads); the code is the same.
 *
 * Lines are written whole and in the order they were recorded. A write that fails (disk full, I/O
 * error) is not tried again: the events of its lines that did not reach the file whole are counted as
 * dropped and reported, and the line it may have cut short is ended before the next write, so that it
 * cannot swallow the next line (a reader sees it, does not parse it, and counts it itself). In a
 * journal, a segment that reaches its size is closed and the next one started; while `count` segments
 * exist (the reader deletes a segment once it has shipped it), events are dropped before they are
 * written, and counted.
 */
import { closeSync, existsSync, fchmodSync, fstatSync, openSync, readSync, writeSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import {
  CONTEXT,
  CONTEXT_HEADER,
  EVENT,
  EVENT_HEADER,
  LINE,
  LINE_HEADER,
  OUT_OF_BAND,
  PAD,
  READ,
  WRITE,
  CONTEXTS_KEPT,
  type ContextBytes,
  type OutOfBandRecord,
  type RingMemory,
} from './audit-ring.ts';

export function journalSegmentPath(dir: string, segment: number): string {
  return join(dir, `journal-${segment}.jsonl`);
}

/**
 * Opens `file` for appending (mode 0600, even if it existed with a looser mode) and returns its fd and
 * size. A last line torn by a crash is ended first, so that it cannot swallow the next line written.
 */
export function openForAppend(file: string): { fd: number; size: number } {
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
 * Where a writer starts: the file (or, for a journal, its segments). The recording side has opened it
 * once already, so that a path that cannot be written fails when the sink is created; the writer opens
 * it again on its own thread (a file descriptor belongs to the thread that opened it).
 */
export interface WriterStart {
  /** The audit file, or the journal's directory. */
  readonly path: string;
  readonly journal?: {
    readonly bytes: number;
    readonly count: number;
    readonly oldest: number;
    readonly current: number;
    /** Bytes already in the current segment. */
    readonly written: number;
  };
  /** The request-id prefix of the recording process. */
  readonly requestIdPrefix: string;
}

/** What the writer tells the recording side. */
export type WriterNews =
  | { readonly type: 'dropped'; readonly count: number; readonly error?: string }
  | { readonly type: 'flushed'; readonly id: number }
  | { readonly type: 'closed' };

/** What the recording side tells the writer. */
export type WriterCommand =
  OutOfBandRecord | { readonly type: 'flush'; readonly id: number; readonly upTo: number } | { readonly type: 'close' };

/**
 * A context as the pieces of a line around the event's own fields:
 * `{"time":"<iso>` HEAD `<seq>` MIDDLE `<latency>,"traceId":<trace>` SUFFIX `}`.
 */
interface Context {
  /** `","service":<service>,"requestId":"<prefix>-` */
  readonly head: Uint8Array;
  /** `"<middle>,"latencyMs":` */
  readonly middle: Uint8Array;
  /** `<suffix>}\n` */
  readonly suffix: Uint8Array;
  readonly bytes: number;
}

const CHUNK = 64 * 1024;
const SPARE_CHUNKS = 4;
const TIME = Buffer.from('{"time":"');
const TRACE_ID = Buffer.from(',"traceId":');
const NULL = Buffer.from('null');
// Everything of a line but its context: time, id, latency, trace id and the punctuation.
const LINE_OVERHEAD = 192;

export interface RingWriter {
  /** Takes out and writes everything the ring holds. */
  drain(): void;
  /** Takes out and encodes everything the ring holds; writes only full chunks. */
  encode(): void;
  command(command: WriterCommand): void;
  /** Writes what is left and closes the file (the process is exiting, or the sink closing). */
  finish(): void;
  readonly closed: boolean;
  /** Records are left in the ring after a drain: one waits for its message (a record too large for it). */
  readonly waitsForMessage: boolean;
}

export function createRingWriter(memory: RingMemory, start: WriterStart, tell: (news: WriterNews) => void): RingWriter {
  const control = new Int32Array(memory.control);
  const bytes = Buffer.from(memory.data);
  const words = new Uint32Array(memory.data);
  const doubles = new Float64Array(memory.data);
  const mask = memory.data.byteLength - 1;
  const journal = start.journal;
  let fd = openForAppend(journal === undefined ? start.path : journalSegmentPath(start.path, journal.current)).fd;
  let current = journal?.current ?? 0;
  let oldest = journal?.oldest ?? 0;
  // Bytes of the current segment: written, pending, and in `chunk`.
  let written = journal?.written ?? 0;
  let read = Atomics.load(control, READ);
  const contexts = new Map<number, Context>();
  const outOfBand = new Map<number, OutOfBandRecord>();
  const flushes: { id: number; upTo: number }[] = [];
  let closed = false;
  // A write failed: the file's last line may be cut short. Ended before the next write.
  let mayBeTorn = false;

  // Lines not yet written, in chunks, and how many events they are.
  const pending: { buffer: Buffer; events: number }[] = [];
  // Chunks already written, for reuse: the writes are synchronous, so a written chunk is free again.
  const spare: Buffer[] = [];
  const freshChunk = (length = CHUNK): Buffer =>
    length <= CHUNK ? (spare.pop() ?? Buffer.allocUnsafe(CHUNK)) : Buffer.allocUnsafe(length);
  let chunk = freshChunk();
  let used = 0;
  let usedEvents = 0;
  // Once per drain, a full journal looks on disk for segments its reader has deleted.
  let lookedOnDisk = false;

  let lastMs = Number.NaN;
  let lastIso = '';

  function room(length: number): void {
    if (used + length <= chunk.length) return;
    if (used > 0) pending.push({ buffer: chunk.subarray(0, used), events: usedEvents });
    chunk = freshChunk(length);
    used = 0;
    usedEvents = 0;
  }

  /** Appends the pending lines to the file; counts and reports what did not reach it whole. */
  function writePending(): void {
    if (used > 0) {
      pending.push({ buffer: chunk.subarray(0, used), events: usedEvents });
      chunk = freshChunk();
      used = 0;
      usedEvents = 0;
    }
    if (pending.length === 0) return;
    const buffers = pending.map((part) => part.buffer);
    const events = pending.reduce((sum, part) => sum + part.events, 0);
    pending.length = 0;
    let done = 0;
    let failure: Error | null = null;
    try {
      if (mayBeTorn) {
        endTornLine(fd);
        mayBeTorn = false;
      }
      const rest = buffers.slice();
      while (rest.length > 0) {
        let left = writevSync(fd, rest);
        done += left;
        while (rest.length > 0 && left >= (rest[0] as Buffer).length) left -= (rest.shift() as Buffer).length;
        if (rest.length > 0) rest[0] = (rest[0] as Buffer).subarray(left);
      }
    } catch (error) {
      failure = error as Error;
    }
    const recycle = () => {
      for (const { buffer, byteOffset } of buffers) {
        if (buffer.byteLength === CHUNK && byteOffset === 0 && spare.length < SPARE_CHUNKS)
          spare.push(Buffer.from(buffer, 0, CHUNK));
      }
    };
    if (failure === null) return recycle();
    mayBeTorn = true;
    const { whole, torn } = linesIn(buffers, done);
    recycle();
    const lost = events - whole - (torn ? 1 : 0);
    tell({
      type: 'dropped',
      count: lost,
      error:
        `${failure.message}: ${lost} of ${events} events are not in ${start.path} (counted as dropped)` +
        `${torn ? '; one is there cut short (its reader counts it)' : ''}`,
    });
  }

  /**
   * Before a line of a journal: starts the next segment when the current one is full, unless `count`
   * segments exist already (the reader has not shipped the oldest yet): then false.
   */
  function roomInJournal(): boolean {
    if (journal === undefined || written < journal.bytes) return true;
    if (current + 1 - oldest >= journal.count && !lookedOnDisk) {
      lookedOnDisk = true;
      while (oldest < current && !existsSync(journalSegmentPath(start.path, oldest))) oldest += 1;
    }
    if (current + 1 - oldest >= journal.count) return false;
    // A reader that sees segment n+1 knows that segment n is complete: it is written first. The next
    // segment is opened before the current one is closed, so that a failure leaves `fd` the writer's.
    writePending();
    const next = openForAppend(journalSegmentPath(start.path, current + 1)).fd;
    closeSync(fd);
    fd = next;
    // A line cut short in the segment left behind: its reader skips it when it moves on.
    mayBeTorn = false;
    current += 1;
    written = 0;
    return true;
  }

  function isoOf(ms: number): string {
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    return lastIso;
  }

  function addContext(id: number, parts: ContextBytes): void {
    const head = Buffer.from(`","service":${parts.service},"requestId":"${start.requestIdPrefix}-`);
    const middle = Buffer.from(`"${parts.middle},"latencyMs":`);
    const suffix = Buffer.from(`${parts.suffix}}\n`);
    contexts.set(id, { head, middle, suffix, bytes: head.length + middle.length + suffix.length });
    // Numbers are 32-bit in the ring: the one to forget wraps with them.
    contexts.delete((id - CONTEXTS_KEPT) >>> 0);
  }

  /** Writes an ASCII string byte by byte (short ones: cheaper than a call into the runtime). */
  function ascii(text: string): void {
    for (let i = 0; i < text.length; i++) chunk[used++] = text.charCodeAt(i);
  }

  function addLine(line: Buffer | string, length: number): void {
    room(length + 1);
    const before = used;
    used += typeof line === 'string' ? chunk.write(line, used, 'utf8') : line.copy(chunk, used);
    chunk[used++] = 0x0a;
    usedEvents += 1;
    written += used - before;
  }

  let dropped = 0;
  function addEvent(at: number): void {
    const word = at >>> 2;
    const double = at >>> 3;
    const context = contexts.get(words[word + 2] as number);
    if (context === undefined) {
      // Never: the producer names only contexts the writer still holds. Counted, not written wrong.
      dropped += 1;
      return;
    }
    room(LINE_OVERHEAD + context.bytes);
    const before = used;
    const latency = Math.round((doubles[double + 4] as number) * 1000) / 1000;
    chunk.set(TIME, used);
    used += TIME.length;
    ascii(isoOf(doubles[double + 3] as number));
    chunk.set(context.head, used);
    used += context.head.length;
    // The request id's number in base 36, as requestIdOf writes it.
    ascii((doubles[double + 2] as number).toString(36));
    chunk.set(context.middle, used);
    used += context.middle.length;
    ascii(Number.isFinite(latency) ? String(latency) : '0');
    chunk.set(TRACE_ID, used);
    used += TRACE_ID.length;
    const traceLength = words[word + 3] as number;
    if (traceLength === 0) {
      chunk.set(NULL, used);
      used += NULL.length;
    } else {
      chunk[used++] = 0x22;
      chunk.set(bytes.subarray(at + EVENT_HEADER, at + EVENT_HEADER + traceLength), used);
      used += traceLength;
      chunk[used++] = 0x22;
    }
    chunk.set(context.suffix, used);
    used += context.suffix.length;
    usedEvents += 1;
    written += used - before;
  }

  /** Takes out records until the ring is empty or a record's message has not arrived yet. */
  function takeOut(): void {
    const end = Atomics.load(control, WRITE);
    lookedOnDisk = false;
    while (read !== end) {
      const at = read & mask;
      const length = words[at >>> 2] as number;
      const kind = words[(at >>> 2) + 1];
      if (kind === OUT_OF_BAND) {
        const seq = words[(at >>> 2) + 2] as number;
        const record = outOfBand.get(seq);
        if (record === undefined) break;
        outOfBand.delete(seq);
        if (record.type === 'context') addContext(record.id, record.parts);
        else if (roomInJournal()) addLine(record.line, Buffer.byteLength(record.line));
        else dropped += 1;
      } else if (kind === CONTEXT) {
        const word = at >>> 2;
        const service = words[word + 3] as number;
        const middle = words[word + 4] as number;
        const suffix = words[word + 5] as number;
        let offset = at + CONTEXT_HEADER;
        const part = (size: number) => bytes.toString('utf8', offset, (offset += size));
        addContext(words[word + 2] as number, { service: part(service), middle: part(middle), suffix: part(suffix) });
      } else if (kind === EVENT) {
        if (roomInJournal()) addEvent(at);
        else dropped += 1;
      } else if (kind === LINE) {
        const size = words[(at >>> 2) + 2] as number;
        if (roomInJournal()) addLine(bytes.subarray(at + LINE_HEADER, at + LINE_HEADER + size), size);
        else dropped += 1;
      } else if (kind !== PAD) {
        throw new Error(`audit ring: unknown record kind ${kind} at ${at}`);
      }
      read = (read + length) | 0;
    }
    // The lines are copied out: the producer may reuse the room now.
    Atomics.store(control, READ, read);
  }

  function drain(): void {
    if (closed) return;
    takeOut();
    writePending();
    tellNews();
  }

  /**
   * Takes out and encodes what the ring holds, but writes only chunks that are full: small batches
   * encoded often, written together (`drain` writes the rest).
   */
  function encode(): void {
    if (closed) return;
    takeOut();
    if (pending.length > 0) {
      const partial = used > 0 ? { buffer: chunk, used, usedEvents } : null;
      // writePending() also writes the chunk being filled; keep it for later.
      used = 0;
      usedEvents = 0;
      chunk = freshChunk();
      writePending();
      if (partial !== null) {
        chunk = partial.buffer;
        used = partial.used;
        usedEvents = partial.usedEvents;
      }
    }
    tellNews();
  }

  function tellNews(): void {
    if (dropped > 0) {
      tell({ type: 'dropped', count: dropped });
      dropped = 0;
    }
    for (let i = 0; i < flushes.length;) {
      const flush = flushes[i] as { id: number; upTo: number };
      if (((read - flush.upTo) | 0) >= 0) {
        flushes.splice(i, 1);
        tell({ type: 'flushed', id: flush.id });
      } else i += 1;
    }
  }

  /**
   * Runs a step; a step that throws (a segment that cannot be opened, a bug) leaves the writer closed
   * and its file closed, never half-way: nothing is written after, and the recording side is told.
   */
  function step(work: () => void): void {
    if (closed) return;
    try {
      work();
    } catch (error) {
      closed = true;
      try {
        closeSync(fd);
      } catch {
        // Already closed: nothing else to release.
      }
      throw error;
    }
  }

  function finish(): void {
    step(() => {
      drain();
      closed = true;
      closeSync(fd);
    });
  }

  return {
    drain: () => step(drain),
    encode: () => step(encode),
    finish,
    command(command) {
      if (command.type === 'context' || command.type === 'line') {
        outOfBand.set(command.seq, command);
        return;
      }
      if (command.type === 'flush') {
        // A closed writer has written all it will: the flush is answered at once.
        if (closed) return tell({ type: 'flushed', id: command.id });
        flushes.push({ id: command.id, upTo: command.upTo });
        return step(drain);
      }
      finish();
      tell({ type: 'closed' });
    },
    get closed() {
      return closed;
    },
    get waitsForMessage() {
      return !closed && read !== Atomics.load(control, WRITE);
    },
  };
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
