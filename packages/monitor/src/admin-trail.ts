/**
 * The control plane's own actions in the audit trail, as events of the source
 * `spiffe://<td>/lockstep/control-plane`, appended through the same `appendAudit` the collector uses
 * for a guard's batches, so `lockstep audit verify` and the checkpointer cover them like any guard.
 * The trail attaches itself to the control plane's admin events (`attachAdminTrail`):
 *
 * - An administrator's call waits for `write`: the admin routes store its event before the call runs
 *   and its failure (if it fails) before the answer leaves. `write` resolves once the event is stored
 *   and rejects when the store fails or takes longer than `writeTimeoutMs` (the call is then refused);
 *   the event stays queued and is retried, so it still reaches the trail once the store answers.
 *   These events, and the policy changes, are never dropped.
 * - Refused calls (401/403: no administrator's SVID) are not waited for and are limited per source
 *   (the caller's SPIFFE ID, or its address without one): the first `perSource` of each window are
 *   written one by one, the rest counted in one summary event (`admin:refused.summary`) at the
 *   window's end. Only they are dropped when `maxQueued` of them wait already (a slow store); the drop
 *   count travels with every later batch, so `audit verify` reports them as missing.
 *
 * Appends run one at a time, in the order the events were recorded (one stream per process, numbered
 * from 1). A failed append stays queued and is retried with backoff, loudly; an administrator's call
 * tries again at once. A retried batch is stored once (the store skips stream positions it holds).
 * `close()` writes what is queued.
 *
 * The admin events are the process's: one trail per process, as `lockstep control-plane` runs (two
 * control planes started in one process would each record the other's events too).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { DecisionEvent } from '@lockstep/guard';
import {
  AUDIT_KEEP_ALIVE_MS,
  attachAdminTrail,
  controlPlaneSpiffeId,
  type AdminTrailSink,
  type AuditEntry,
  type ControlPlaneStore,
} from '@lockstep/control-plane';

const BATCH = 500;
const RETRY_MIN_MS = 500;
const KEEP_ALIVE_MS = AUDIT_KEEP_ALIVE_MS;
const RETRY_MAX_MS = 30_000;
const OTHER_SOURCES = 'other sources';

export interface RefusalLimits {
  /** Refused calls written one by one per source and window (default 30); beyond, counted. */
  readonly perSource?: number;
  /** Sources tracked per window (default 100); the calls of further sources are counted together. */
  readonly sources?: number;
  /** Default 60 s. At its end, one summary event per source with calls counted. */
  readonly windowMs?: number;
}

export interface AdminTrailOptions {
  readonly store: ControlPlaneStore;
  readonly trustDomain: string;
  /** A failed append (it is retried) or a dropped event: say it loudly. Default: stderr. */
  readonly onError?: (message: string) => void;
  /** Refused-call events waiting for the store at most (default 1 000); beyond, they are dropped and counted. */
  readonly maxQueued?: number;
  /** How long an administrator's call waits for its event to be stored before it is refused (default 10 s). */
  readonly writeTimeoutMs?: number;
  readonly refusals?: RefusalLimits;
}

export interface AdminTrail extends AdminTrailSink {
  /** `spiffe://<td>/lockstep/control-plane`: the source the events are stored under. */
  readonly source: string;
  /** Queues an event of the control plane's own (the policy in force at start); failures are said loudly. */
  record(event: DecisionEvent): void;
  /** Resolves once every event recorded so far is stored (waits through retries). */
  flush(): Promise<void>;
  /** Stops listening, then writes what is queued — one last attempt, reported when it fails. */
  close(): Promise<void>;
}

export function recordAdminTrail(options: AdminTrailOptions): AdminTrail {
  const source = controlPlaneSpiffeId(options.trustDomain);
  const onError = options.onError ?? ((message: string) => process.stderr.write(`lockstep: ${message}\n`));
  const queue = createAppendQueue(options, source, onError);
  const limiter = createRefusalLimiter(options.refusals ?? {}, queue.offer);
  const sink: AdminTrailSink = { write: queue.write, refused: limiter.offer };
  const detach = attachAdminTrail(sink);
  return {
    source,
    ...sink,
    record(event) {
      queue.write(event).catch(() => {
        // Said through onError already; the event stays queued.
      });
    },
    flush: queue.flush,
    async close() {
      detach();
      limiter.stop();
      await queue.close();
    },
  };
}

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
  readonly timer: NodeJS.Timeout;
}

/** The ordered appends of one stream: `write` waits for its event, `offer` may drop (and count) one. */
function createAppendQueue(options: AdminTrailOptions, source: string, onError: (message: string) => void) {
  const { store } = options;
  const maxQueued = options.maxQueued ?? 1_000;
  const writeTimeoutMs = options.writeTimeoutMs ?? 10_000;
  // One stream per process: a restart starts a new one, so positions never collide.
  const stream = `control-plane-${randomBytes(8).toString('hex')}`;
  const queue: AuditEntry[] = [];
  const waiters = new Map<number, Waiter>();
  let streamSeq = 0;
  let dropped = 0;
  let draining: Promise<void> | null = null;
  let retryDelay = RETRY_MIN_MS;
  let retryTimer: NodeJS.Timeout | null = null;
  let closed = false;
  let lastAppend = Date.now();
  // A stream silent for long looks ended (verify: "ended uncleanly"): say "still here" meanwhile.
  const keepAlive = setInterval(() => {
    if (queue.length > 0 || draining !== null || Date.now() - lastAppend < KEEP_ALIVE_MS) return;
    store.appendAudit(source, { stream, dropped, written: streamSeq, entries: [] }, Date.now()).then(
      () => {
        lastAppend = Date.now();
      },
      () => {},
    );
  }, KEEP_ALIVE_MS / 2);
  keepAlive.unref();

  function enqueue(event: DecisionEvent): number {
    streamSeq += 1;
    queue.push({ streamSeq, event: JSON.stringify(event) });
    return streamSeq;
  }

  function settle(seq: number, error?: Error): void {
    const waiter = waiters.get(seq);
    if (waiter === undefined) return;
    waiters.delete(seq);
    clearTimeout(waiter.timer);
    if (error === undefined) waiter.resolve();
    else waiter.reject(error);
  }

  function write(event: DecisionEvent): Promise<void> {
    if (closed) return Promise.reject(new Error('the audit trail is closed'));
    const seq = enqueue(event);
    const stored = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          settle(
            seq,
            new Error(
              `the audit trail did not store the event within ` +
                `${writeTimeoutMs / 1000} s (a slow or blocked store)`,
            ),
          ),
        writeTimeoutMs,
      );
      timer.unref();
      waiters.set(seq, { resolve, reject, timer });
    });
    // An administrator waits: try now rather than at the next backoff step.
    if (retryTimer !== null) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    void drain();
    return stored;
  }

  /** A refused call's event: queued when there is room, else dropped and counted. */
  function offer(event: DecisionEvent): void {
    if (closed) return;
    if (queue.length >= maxQueued) {
      dropped += 1;
      // Once, then every hundredth: a flood must not flood the log too.
      if (dropped === 1 || dropped % 100 === 0) {
        onError(
          `refused-call admin event DROPPED (${event.action ?? event.method} by ${event.caller ?? 'nobody'}): ` +
            `${queue.length} events wait for the audit trail already; ${dropped} dropped so far ` +
            '(audit verify reports them as missing)',
        );
      }
      return;
    }
    enqueue(event);
    void drain();
  }

  /** Appends the oldest queued batch; true when it was stored. */
  async function appendOnce(): Promise<boolean> {
    const batch = queue.slice(0, BATCH);
    try {
      await store.appendAudit(source, { stream, dropped, written: streamSeq, entries: batch }, Date.now());
      lastAppend = Date.now();
    } catch (error) {
      const { message } = error as Error;
      onError(
        `the audit trail could not take ${queue.length} admin event${queue.length === 1 ? '' : 's'} ` +
          `(${message}); they stay queued${closed ? '' : `, next try in ${retryDelay / 1000} s`}`,
      );
      // Whoever waits is told now; the events stay queued and are retried.
      for (const seq of [...waiters.keys()]) settle(seq, new Error(`the audit trail could not store it: ${message}`));
      return false;
    }
    queue.splice(0, batch.length);
    for (const entry of batch) settle(entry.streamSeq);
    retryDelay = RETRY_MIN_MS;
    return true;
  }

  function drain(): Promise<void> {
    if (draining !== null || retryTimer !== null) return draining ?? Promise.resolve();
    draining = (async () => {
      while (queue.length > 0) {
        if (await appendOnce()) continue;
        if (!closed) {
          // Retried later: new events queue behind the failed ones, in order.
          retryTimer = setTimeout(() => {
            retryTimer = null;
            void drain();
          }, retryDelay);
          retryTimer.unref();
          retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
        }
        return;
      }
    })().finally(() => {
      draining = null;
    });
    return draining;
  }

  return {
    write,
    offer,
    async flush() {
      // A batch leaves the queue only once stored; while a retry is pending, wait for it.
      while (queue.length > 0 && !closed) await (draining ?? new Promise((resolve) => setTimeout(resolve, 50)));
      await draining;
    },
    async close() {
      closed = true;
      clearInterval(keepAlive);
      if (retryTimer !== null) clearTimeout(retryTimer);
      retryTimer = null;
      await draining;
      if (queue.length > 0) await drain();
      if (queue.length > 0) {
        onError(
          `${queue.length} admin event${queue.length === 1 ? '' : 's'} never reached the audit trail: ` +
            'the store refused them until shutdown',
        );
      } else {
        // A clean end: verify knows nothing of this stream is missing.
        await store
          .appendAudit(source, { stream, dropped, written: streamSeq, final: true, entries: [] }, Date.now())
          .catch(() => {});
      }
      for (const seq of [...waiters.keys()]) settle(seq, new Error('the audit trail closed before storing it'));
    },
  };
}

/**
 * Refused calls per source and window: the first `perSource` pass one by one, the rest are counted
 * and summed up in one event per source when the window ends (and at `stop`).
 */
function createRefusalLimiter(limits: RefusalLimits, emit: (event: DecisionEvent) => void) {
  const perSource = limits.perSource ?? 30;
  const sources = limits.sources ?? 100;
  const windowMs = limits.windowMs ?? 60_000;
  const tallies = new Map<string, { calls: number; last: DecisionEvent }>();
  const timer = setInterval(endWindow, windowMs);
  timer.unref();

  function endWindow(): void {
    for (const [source, tally] of tallies) {
      const counted = source === OTHER_SOURCES ? tally.calls : tally.calls - perSource;
      if (counted > 0) emit(refusalSummary(source, counted, tally.last, { perSource, sources, windowMs }));
    }
    tallies.clear();
  }

  return {
    offer(event: DecisionEvent, source: string): void {
      const key = tallies.has(source) || tallies.size < sources ? source : OTHER_SOURCES;
      const tally = tallies.get(key) ?? { calls: 0, last: event };
      tallies.set(key, tally);
      tally.calls += 1;
      tally.last = event;
      if (key !== OTHER_SOURCES && tally.calls <= perSource) emit(event);
    },
    stop(): void {
      clearInterval(timer);
      endWindow();
    },
  };
}

/** One event for `counted` refused calls of a source that were not written one by one. */
function refusalSummary(
  source: string,
  counted: number,
  last: DecisionEvent,
  limits: Required<RefusalLimits>,
): DecisionEvent {
  const seconds = limits.windowMs / 1000;
  const calls = `${counted} refused call${counted === 1 ? '' : 's'}`;
  const resource =
    source === OTHER_SOURCES
      ? `${calls} from sources beyond the first ${limits.sources} within ${seconds} s`
      : `${calls} from ${source} beyond the first ${limits.perSource} within ${seconds} s`;
  return {
    time: new Date().toISOString(),
    service: 'control-plane',
    requestId: randomUUID(),
    caller: source === last.caller ? last.caller : null,
    sub: null,
    txn: null,
    method: 'SUMMARY',
    route: '/v1/admin/*',
    action: 'admin:refused.summary',
    resource,
    decision: 'deny',
    policyIds: [],
    policyVersion: null,
    reason: last.reason,
    dryRun: false,
    latencyMs: 0,
    traceId: null,
  };
}
