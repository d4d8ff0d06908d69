/**
 * The ring between the request thread and an audit writer's thread (audit-writer.ts): shared memory
 * that the request thread appends compact records to and the writer reads, in order, one producer and
 * one consumer. A decision costs the request thread a few stores: the number of its context, its
 * request number, its time, its latency and its trace id. A context (what the events of one
 * transaction's requests to one route share: caller, user, route, decision, policies…) is encoded
 * once, when it first appears, and then named by its number.
 *
 * Records are 8-byte aligned and never wrap: one that does not fit before the end of the ring is
 * preceded by padding to the end. A record too large for the ring (a context or a line of more than a
 * quarter of it) goes as a message, and the ring holds its place in the order.
 *
 * When the ring is full, records wait in a bounded list here, in order, and go into the ring as the
 * writer frees room; when that list is full too, events are dropped and counted (`dropped`). A request
 * never waits for the writer.
 */
import type { Admission } from './pipeline.ts';
import {
  contextJson,
  decisionEventOf,
  decisionToJson,
  type DecisionContext,
  type DecisionEvent,
  type DecisionRecorder,
} from './steps/audit.ts';
import { traceIdOf } from './trace-context.ts';

/**
 * Words of the control array (an Int32Array over its own SharedArrayBuffer). The producer's and the
 * writer's positions sit on cache lines of their own (64 bytes apart), so that each side's stores do
 * not take the other's line away at every record.
 */
export const WRITE = 0; // bytes the producer has committed (mod 2^32)
export const READ = 16; // bytes the writer has taken out (mod 2^32)
export const WAKE = 32; // bumped to wake the writer
export const STATE = 33; // RUNNING, or EXITING when the process exits: the writer writes all and acknowledges
export const EXIT_ACK = 34;
export const CONTROL_WORDS = 48;
export const RUNNING = 0;
export const EXITING = 1;

/** Record kinds (the second word of a record; the first is its length in bytes). */
export const PAD = 0;
export const CONTEXT = 1;
export const EVENT = 2;
export const LINE = 3;
export const OUT_OF_BAND = 4;

/** Byte offsets inside records. */
export const EVENT_HEADER = 40;
export const CONTEXT_HEADER = 24;
export const LINE_HEADER = 16;

/** How many contexts the writer remembers: a context older than the last this many is sent again. */
export const CONTEXTS_KEPT = 4096;
export const TRACE_ID_LENGTH = 32;

export const DEFAULT_RING_BYTES = 1 << 20;
/** Records that may wait for room in a full ring before events are dropped. */
export const DEFAULT_WAITING_LIMIT = 65_536;

/** A record that went as a message instead of through the ring (see OUT_OF_BAND). */
export type OutOfBandRecord =
  | { readonly type: 'context'; readonly seq: number; readonly id: number; readonly parts: ContextBytes }
  | { readonly type: 'line'; readonly seq: number; readonly line: string };

export interface ContextBytes {
  readonly service: string;
  readonly middle: string;
  readonly suffix: string;
}

export interface RingMemory {
  readonly control: SharedArrayBuffer;
  readonly data: SharedArrayBuffer;
}

export function createRingMemory(bytes: number = DEFAULT_RING_BYTES): RingMemory {
  if (!Number.isInteger(Math.log2(bytes)) || bytes < 4096 || bytes > 1 << 30)
    throw new RangeError(`the audit ring's size must be a power of two from 4 KiB to 1 GiB, not ${bytes}`);
  return { control: new SharedArrayBuffer(CONTROL_WORDS * 4), data: new SharedArrayBuffer(bytes) };
}

const align = (bytes: number) => (bytes + 7) & ~7;

/** What the producer remembers of a context, to tell whether the next admission shares it. */
interface KnownContext {
  readonly id: number;
  readonly service: string;
  readonly via: string | undefined;
  readonly caller: string | null;
  readonly sub: string | null;
  readonly txn: string | null;
  readonly method: string;
  readonly route: Admission['route'];
  readonly allowed: boolean;
  readonly policyIdsCopy: readonly string[];
  readonly policyVersion: string | null;
  readonly reason: string;
  readonly dryRun: boolean;
  readonly probe: boolean;
  readonly prober: string | null;
  readonly probeAs: string | null;
  readonly probeRequester: string | null;
}

/** A record waiting for room in the ring. */
type Waiting =
  | {
      readonly kind: typeof EVENT;
      readonly context: number;
      readonly seq: number;
      readonly timeMs: number;
      readonly latencyMs: number;
      readonly traceId: string | null;
    }
  | { readonly kind: typeof CONTEXT; readonly id: number; readonly parts: ContextBytes }
  | { readonly kind: typeof LINE; readonly line: string };

export interface RingProducerOptions {
  /** Sends a record too large for the ring to the writer (its place in the ring is kept). */
  readonly sendOutOfBand: (record: OutOfBandRecord) => void;
  /** Wakes the writer (the ring is filling up, or someone waits for a flush). */
  readonly wake: () => void;

  /** Called with the count when events are dropped because the ring and the waiting list are full. */
  readonly onDropped: (count: number) => void;
  readonly waitingLimit?: number;
}

export class RingProducer implements DecisionRecorder {
  private readonly control: Int32Array;
  private readonly bytes: Buffer;
  private readonly words: Uint32Array;
  private readonly doubles: Float64Array;
  private readonly size: number;
  private readonly mask: number;
  private readonly wakeAt: number;
  private write: number;
  // The writer's position as last read: re-read only when the ring seems full.
  private readSeen: number;
  private readonly known = new Map<string, KnownContext>();
  private lastContextId = 0;
  private outOfBandSeq = 0;
  private waiting: Waiting[] = [];
  private waitingHead = 0;
  private gone = false;
  private readonly waitingLimit: number;
  private retry: NodeJS.Timeout | null = null;
  private readonly options: RingProducerOptions;

  constructor(memory: RingMemory, options: RingProducerOptions) {
    this.options = options;
    this.control = new Int32Array(memory.control);
    this.bytes = Buffer.from(memory.data);
    this.words = new Uint32Array(memory.data);
    this.doubles = new Float64Array(memory.data);
    this.size = memory.data.byteLength;
    this.mask = this.size - 1;
    this.wakeAt = this.size >>> 2;
    this.write = Atomics.load(this.control, WRITE);
    this.readSeen = Atomics.load(this.control, READ);
    this.waitingLimit = options.waitingLimit ?? DEFAULT_WAITING_LIMIT;
  }

  /** Records waiting for room in the ring (not yet visible to the writer). */
  get waitingCount(): number {
    return this.waiting.length - this.waitingHead;
  }

  /** Where the writer must have read up to for everything recorded so far (once nothing waits). */
  get position(): number {
    return this.write;
  }

  recordAdmission(service: string, via: string | undefined, admission: Admission, timeMs: number): void {
    if (this.gone) return this.options.onDropped(1);
    const context = this.contextOf(service, via, admission);
    // Its context could neither go into the ring nor wait: the event is dropped with it (counted).
    if (context < 0) return this.options.onDropped(1);
    const traceId = admission.traceparent === null ? null : traceIdOf(admission.traceparent);
    const { requestSeq: seq, latencyMs } = admission;
    // The usual case allocates nothing: straight into the ring.
    if (
      (this.waitingHead === this.waiting.length || this.moveWaiting()) &&
      this.putEvent(context, seq, timeMs, latencyMs, traceId)
    )
      return;
    if (!this.wait({ kind: EVENT, context, seq, timeMs, latencyMs, traceId })) this.options.onDropped(1);
  }

  recordEvent(event: DecisionEvent): void {
    if (this.gone) return this.options.onDropped(1);
    if (!this.put({ kind: LINE, line: decisionToJson(event) })) this.options.onDropped(1);
  }

  /** The writer is gone: from now on every decision is dropped and counted, and nothing waits. */
  kill(): void {
    this.gone = true;
    this.stop();
    this.waiting = [];
    this.waitingHead = 0;
  }

  /** Moves what waits into the ring as far as there is room; true when nothing waits any more. */
  moveWaiting(): boolean {
    while (this.waitingHead < this.waiting.length) {
      const record = this.waiting[this.waitingHead] as Waiting;
      if (!this.putRecord(record)) return false;
      this.waiting[this.waitingHead] = undefined as unknown as Waiting;
      this.waitingHead += 1;
    }
    this.waiting = [];
    this.waitingHead = 0;
    return true;
  }

  /** Stops the retry timer of a waiting list (the writer is gone). */
  stop(): void {
    if (this.retry !== null) clearInterval(this.retry);
    this.retry = null;
  }

  /** Into the ring, or to wait for room; false when it had to be dropped (the waiting list is full). */
  private put(record: Waiting): boolean {
    if (this.waitingHead < this.waiting.length && !this.moveWaiting()) return this.wait(record);
    return this.putRecord(record) || this.wait(record);
  }

  /**
   * Puts a record on the waiting list, unless the list holds `waitingLimit` records already (of every
   * kind: a new context is hundreds of bytes): then false, and the caller drops and counts its event.
   */
  private wait(record: Waiting): boolean {
    if (this.waitingCount >= this.waitingLimit) return false;
    this.waiting.push(record);
    this.options.wake();
    if (this.retry === null) {
      this.retry = setInterval(() => {
        if (this.moveWaiting()) this.stop();
        else this.options.wake();
      }, 5);
      this.retry.unref();
    }
    return true;
  }

  private putRecord(record: Waiting): boolean {
    switch (record.kind) {
      case EVENT:
        return this.putEvent(record.context, record.seq, record.timeMs, record.latencyMs, record.traceId);
      case CONTEXT:
        return this.putContext(record.id, record.parts);
      case LINE:
        return this.putLine(record.line);
    }
  }

  /**
   * The number of the context this admission's event belongs to; a new context is put in the ring
   * (or made to wait) before the event that names it.
   */
  private contextOf(service: string, via: string | undefined, admission: Admission): number {
    const caller = admission.peer?.spiffeId ?? null;
    // Claims are frozen objects without a prototype (slow properties): read once per decision.
    const claims = admission.txn?.claims;
    const txn = claims?.txn ?? null;
    const sub = claims?.sub ?? null;
    const key = txn ?? caller ?? '';
    const known = this.known.get(key);
    if (
      known !== undefined &&
      known.id > this.lastContextId - CONTEXTS_KEPT &&
      known.service === service &&
      known.via === via &&
      known.caller === caller &&
      known.txn === txn &&
      known.sub === sub &&
      known.method === admission.method &&
      known.route === admission.route &&
      known.allowed === admission.allowed &&
      known.policyVersion === admission.policyVersion &&
      known.reason === admission.reason &&
      known.dryRun === admission.dryRun &&
      known.probe === admission.probe &&
      known.prober === admission.prober &&
      known.probeAs === admission.probeAs &&
      known.probeRequester === admission.probeRequester &&
      samePolicies(known, admission.policyIds)
    ) {
      return known.id;
    }
    const id = ++this.lastContextId;
    // The event's own fields (time, id, latency, trace) are not part of the context: left empty here.
    const context: DecisionContext = decisionEventOf(service, via, admission, '', null);
    if (known === undefined && this.known.size >= CONTEXTS_KEPT) this.known.clear();
    this.known.set(key, {
      id,
      service,
      via,
      caller,
      sub,
      txn,
      method: admission.method,
      route: admission.route,
      allowed: admission.allowed,
      policyIdsCopy: [...admission.policyIds],
      policyVersion: admission.policyVersion,
      reason: admission.reason,
      dryRun: admission.dryRun,
      probe: admission.probe,
      prober: admission.prober,
      probeAs: admission.probeAs,
      probeRequester: admission.probeRequester,
    });
    if (this.put({ kind: CONTEXT, id, parts: contextJson(context) })) return id;
    // Never reached the writer: sent again with the next event that needs it.
    this.known.delete(key);
    return -1;
  }

  /** Room for `length` bytes (padding to the end first if they do not fit before it); -1 when full. */
  private reserve(length: number): number {
    const at = this.write & this.mask;
    const tail = this.size - at;
    const needed = length <= tail ? length : tail + length;
    if (needed > this.size - ((this.write - this.readSeen) >>> 0)) {
      this.readSeen = Atomics.load(this.control, READ);
      if (needed > this.size - ((this.write - this.readSeen) >>> 0)) return -1;
    }
    if (length <= tail) return at;
    this.words[at >>> 2] = tail;
    this.words[(at >>> 2) + 1] = PAD;
    this.write = (this.write + tail) | 0;
    return 0;
  }

  private commit(length: number): void {
    let before = (this.write - this.readSeen) >>> 0;
    // Past a quarter of the ring as last seen: see how far the writer has really come.
    if (before >= this.wakeAt) {
      this.readSeen = Atomics.load(this.control, READ);
      before = (this.write - this.readSeen) >>> 0;
    }
    this.write = (this.write + length) | 0;
    Atomics.store(this.control, WRITE, this.write);
    if (before < this.wakeAt && before + length >= this.wakeAt) this.options.wake();
  }

  private putEvent(context: number, seq: number, timeMs: number, latencyMs: number, traceId: string | null): boolean {
    const length = traceId === null ? EVENT_HEADER : EVENT_HEADER + TRACE_ID_LENGTH;
    const at = this.reserve(length);
    if (at < 0) return false;
    const word = at >>> 2;
    const double = at >>> 3;
    this.words[word] = length;
    this.words[word + 1] = EVENT;
    this.words[word + 2] = context;
    this.words[word + 3] = traceId === null ? 0 : TRACE_ID_LENGTH;
    this.doubles[double + 2] = seq;
    this.doubles[double + 3] = timeMs;
    this.doubles[double + 4] = latencyMs;
    // A trace id is 32 lower-case hex digits (traceIdOf checked it): one byte each, stored here
    // rather than through a call into the runtime.
    if (traceId !== null) {
      const bytes = this.bytes;
      const from = at + EVENT_HEADER;
      for (let i = 0; i < TRACE_ID_LENGTH; i++) bytes[from + i] = traceId.charCodeAt(i);
    }
    this.commit(length);
    return true;
  }

  private putContext(id: number, parts: ContextBytes): boolean {
    const service = Buffer.byteLength(parts.service);
    const middle = Buffer.byteLength(parts.middle);
    const suffix = Buffer.byteLength(parts.suffix);
    const length = align(CONTEXT_HEADER + service + middle + suffix);
    if (length > this.size >>> 2) return this.putOutOfBand({ type: 'context', seq: 0, id: id >>> 0, parts });
    const at = this.reserve(length);
    if (at < 0) return false;
    const word = at >>> 2;
    this.words[word] = length;
    this.words[word + 1] = CONTEXT;
    this.words[word + 2] = id;
    this.words[word + 3] = service;
    this.words[word + 4] = middle;
    this.words[word + 5] = suffix;
    let offset = at + CONTEXT_HEADER;
    offset += this.bytes.write(parts.service, offset, service, 'utf8');
    offset += this.bytes.write(parts.middle, offset, middle, 'utf8');
    this.bytes.write(parts.suffix, offset, suffix, 'utf8');
    this.commit(length);
    return true;
  }

  private putLine(line: string): boolean {
    const bytes = Buffer.byteLength(line);
    const length = align(LINE_HEADER + bytes);
    if (length > this.size >>> 2) return this.putOutOfBand({ type: 'line', seq: 0, line });
    const at = this.reserve(length);
    if (at < 0) return false;
    const word = at >>> 2;
    this.words[word] = length;
    this.words[word + 1] = LINE;
    this.words[word + 2] = bytes;
    this.bytes.write(line, at + LINE_HEADER, bytes, 'utf8');
    this.commit(length);
    return true;
  }

  /** The record goes as a message; the ring keeps its place with a small record naming it. */
  private putOutOfBand(record: OutOfBandRecord): boolean {
    const at = this.reserve(16);
    if (at < 0) return false;
    const seq = ++this.outOfBandSeq;
    this.options.sendOutOfBand({ ...record, seq });
    const word = at >>> 2;
    this.words[word] = 16;
    this.words[word + 1] = OUT_OF_BAND;
    this.words[word + 2] = seq;
    this.commit(16);
    return true;
  }
}

/** The context's policy ids are the admission's: the same array, unchanged since, or equal ones. */
function samePolicies(known: KnownContext, policyIds: readonly string[]): boolean {
  const copy = known.policyIdsCopy;
  if (copy.length !== policyIds.length) return false;
  for (let i = 0; i < copy.length; i++) if (copy[i] !== policyIds[i]) return false;
  return true;
}
