/**
 * Revocations as a feed: written to the store, then announced to every open stream of this process.
 * Revocations made through another replica are announced when the store notifies (PostgreSQL
 * LISTEN/NOTIFY) and, as a safety net, when the feed re-reads the store every `rereadMs` — once per
 * process, not once per connected guard. A lift (a revocation taken back) travels the same way: an
 * entry with `lifted` set, at a new position, which listeners apply by removing the value.
 *
 * The re-read is also how a replica knows it is cut off from the store: one that has not read it for
 * three re-reads (3 s by default) could be missing revocations made through the others, while its
 * streams' pings say all is well. It tells (`onStoreLost`), so that the streams end and their guards
 * move to another replica, and `storeReachable()` is false until a read succeeds again.
 */
import type { ControlPlaneStore, RevocationKind, RevocationLift, RevocationRecord } from './store.ts';

export interface RevocationFeed {
  revoke(entry: Omit<RevocationRecord, 'seq' | 'lifted'>): Promise<RevocationRecord>;
  /** Lifts what holds under (kind, value) and announces it; null when nothing holds (never revoked, or lifted already). */
  lift(kind: RevocationKind, value: string, lift: RevocationLift): Promise<RevocationRecord | null>;
  onRevocation(listener: (entry: RevocationRecord) => void): () => void;
  /** Whether the store was read successfully within the bound (three re-reads). */
  storeReachable(): boolean;
  /** Called once each time the store has not been read within the bound. */
  onStoreLost(listener: () => void): () => void;
  close(): Promise<void>;
}

/** How many re-read periods without a successful read make the store lost. */
const LOST_AFTER_REREADS = 3;

/** Streams ignore what they have already sent, so an entry announced twice costs nothing. */
export async function createRevocationFeed(store: ControlPlaneStore, rereadMs = 1_000): Promise<RevocationFeed> {
  const lostAfterMs = LOST_AFTER_REREADS * rereadMs;
  const listeners = new Set<(entry: RevocationRecord) => void>();
  const lostListeners = new Set<() => void>();
  const announce = (record: RevocationRecord) => {
    for (const listener of listeners) listener(record);
  };
  let lastReadAt = Date.now();
  let lost = false;
  const reached = () => {
    lastReadAt = Date.now();
    lost = false;
  };
  const storeReachable = () => Date.now() - lastReadAt <= lostAfterMs;
  let seen = 0;
  // One read at a time; asks made meanwhile are one more read after it. Chaining every ask instead
  // would pile one read per second behind a store that hangs, all run once it answers.
  let reading = false;
  let again = false;
  const readNew = (): void => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    void (async () => {
      do {
        again = false;
        try {
          for (const record of await store.revocationsSince(seen)) {
            seen = Math.max(seen, record.seq);
            announce(record);
          }
          reached();
        } catch {
          // The store cannot be read: the check below turns this into storeReachable() false in time.
        }
      } while (again);
      reading = false;
    })();
  };
  // Not behind the read: a read that hangs (a database that stopped answering) must not hide the outage.
  const checkReachable = () => {
    if (lost || storeReachable()) return;
    lost = true;
    for (const listener of lostListeners) listener();
  };
  const stopWatching = store.watchRevocations ? await store.watchRevocations(readNew) : async () => {};
  // Start from the current end of the feed: streams catch up from their own position.
  seen = (await store.revocationsSince(0)).reduce((max, record) => Math.max(max, record.seq), 0);
  reached();
  const reread = setInterval(() => {
    checkReachable();
    readNew();
  }, rereadMs);
  reread.unref();
  return {
    async revoke(entry) {
      const record = await store.addRevocation(entry);
      announce(record);
      return record;
    },
    async lift(kind, value, lift) {
      const record = await store.liftRevocation(kind, value, lift);
      if (record !== null) announce(record);
      return record;
    },
    onRevocation(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    storeReachable,
    onStoreLost(listener) {
      lostListeners.add(listener);
      return () => lostListeners.delete(listener);
    },
    async close() {
      clearInterval(reread);
      await stopWatching();
    },
  };
}
