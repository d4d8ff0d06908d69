/**
 * The control plane's own actions in the audit trail: every event on `lockstep:control-plane:admin`
 * (each admin API call, allowed or refused, with the caller's SPIFFE ID; each policy change, applied
 * or refused) is appended to the trail as an event of the source `spiffe://<td>/lockstep/control-plane`,
 * through the same `appendAudit` the collector uses for a guard's batches. So `lockstep audit verify`
 * and the checkpointer cover it like any guard.
 *
 * Appends run one at a time, in the order the events were recorded (one stream per process, numbered
 * from 1). A failed append stays queued and is retried, loudly; a retried batch is stored once (the
 * store skips stream positions it holds). Only a full queue drops events, and the drop count travels
 * with every later batch, so `audit verify` reports them as missing. `close()` writes what is queued.
 *
 * The channel is the process's: one recorder per process, as `lockstep control-plane` runs (two
 * control planes started in one process would each record the other's events too).
 */
import { randomBytes } from 'node:crypto';
import type { DecisionEvent } from '@lockstep/guard';
import {
  controlPlaneSpiffeId, subscribeAdminActions, type AuditEntry, type ControlPlaneStore,
} from '@lockstep/control-plane';

const BATCH = 500;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

export interface AdminTrailOptions {
  readonly store: ControlPlaneStore;
  readonly trustDomain: string;
  /** A failed append (it is retried) or a dropped event: say it loudly. Default: stderr. */
  readonly onError?: (message: string) => void;
  /** Events waiting for the store at most (default 10 000); beyond, new events are dropped and counted. */
  readonly maxQueued?: number;
}

export interface AdminTrail {
  /** `spiffe://<td>/lockstep/control-plane`: the source the events are stored under. */
  readonly source: string;
  /** Appends an event of the control plane's own (e.g. the policy in force at start), in order with the rest. */
  record(event: DecisionEvent): void;
  /** Resolves once every event recorded so far is stored (waits through retries). */
  flush(): Promise<void>;
  /** Stops listening, then writes what is queued — one last attempt, reported when it fails. */
  close(): Promise<void>;
}

export function recordAdminTrail(options: AdminTrailOptions): AdminTrail {
  const { store } = options;
  const source = controlPlaneSpiffeId(options.trustDomain);
  const onError = options.onError ?? ((message: string) => process.stderr.write(`lockstep: ${message}\n`));
  const maxQueued = options.maxQueued ?? 10_000;
  // One stream per process: a restart starts a new one, so positions never collide.
  const stream = `control-plane-${randomBytes(8).toString('hex')}`;
  const queue: AuditEntry[] = [];
  let streamSeq = 0;
  let dropped = 0;
  let draining: Promise<void> | null = null;
  let retryDelay = RETRY_MIN_MS;
  let retryTimer: NodeJS.Timeout | null = null;
  let closed = false;

  function record(event: DecisionEvent): void {
    if (queue.length >= maxQueued) {
      dropped += 1;
      onError(`admin event DROPPED (${event.action ?? event.method} by ${event.caller ?? 'nobody'}): ${queue.length} `
        + `events wait for the audit trail already; ${dropped} dropped so far (audit verify reports them as missing)`);
      return;
    }
    streamSeq += 1;
    queue.push({ stream, streamSeq, event: JSON.stringify(event), txn: event.txn });
    if (!closed) drain();
  }

  /** Appends the oldest queued batch; true when it was stored. */
  async function appendOnce(): Promise<boolean> {
    const batch = queue.slice(0, BATCH);
    try {
      await store.appendAudit(source, { stream, dropped, entries: batch }, Date.now());
    } catch (error) {
      onError(`the audit trail could not take ${queue.length} admin event${queue.length === 1 ? '' : 's'} `
        + `(${(error as Error).message}); they stay queued${closed ? '' : `, next try in ${retryDelay / 1000} s`}`);
      return false;
    }
    queue.splice(0, batch.length);
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
          retryTimer = setTimeout(() => { retryTimer = null; drain(); }, retryDelay);
          retryTimer.unref();
          retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
        }
        return;
      }
    })().finally(() => { draining = null; });
    return draining;
  }

  const unsubscribe = subscribeAdminActions(record);

  return {
    source,
    record,
    async flush() {
      // A batch leaves the queue only once stored; while a retry is pending, wait for it.
      while (queue.length > 0 && !closed) await (draining ?? new Promise((resolve) => setTimeout(resolve, 50)));
      await draining;
    },
    async close() {
      closed = true;
      unsubscribe();
      if (retryTimer !== null) clearTimeout(retryTimer);
      retryTimer = null;
      await draining;
      if (queue.length > 0) await drain();
      if (queue.length > 0) {
        onError(`${queue.length} admin event${queue.length === 1 ? '' : 's'} never reached the audit trail: `
          + 'the store refused them until shutdown');
      }
    },
  };
}
