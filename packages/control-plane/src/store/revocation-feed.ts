/**
 * Revocations as a feed: written to the store, then announced to every open stream of this process.
 * Revocations made through another replica are announced when the store notifies (PostgreSQL
 * LISTEN/NOTIFY) and, as a safety net, when the feed re-reads the store every `rereadMs` — once per
 * process, not once per connected guard. A lift (a revocation taken back) travels the same way: an
 * entry with `lifted` set, at a new position, which listeners apply by removing the value.
 */
import type { ControlPlaneStore, RevocationKind, RevocationLift, RevocationRecord } from './store.ts';

export interface RevocationFeed {
  revoke(entry: Omit<RevocationRecord, 'seq' | 'lifted'>): Promise<RevocationRecord>;
  /** Lifts what holds under (kind, value) and announces it; null when nothing holds (never revoked, or lifted already). */
  lift(kind: RevocationKind, value: string, lift: RevocationLift): Promise<RevocationRecord | null>;
  onRevocation(listener: (entry: RevocationRecord) => void): () => void;
  close(): Promise<void>;
}

/** Streams ignore what they have already sent, so an entry announced twice costs nothing. */
export async function createRevocationFeed(store: ControlPlaneStore, rereadMs = 1_000): Promise<RevocationFeed> {
  const listeners = new Set<(entry: RevocationRecord) => void>();
  const announce = (record: RevocationRecord) => {
    for (const listener of listeners) listener(record);
  };
  let seen = 0;
  let reading: Promise<void> = Promise.resolve();
  const readNew = () => {
    reading = reading
      .then(async () => {
        for (const record of await store.revocationsSince(seen)) {
          seen = Math.max(seen, record.seq);
          announce(record);
        }
      })
      .catch(() => {});
  };
  const stopWatching = store.watchRevocations ? await store.watchRevocations(readNew) : async () => {};
  // Start from the current end of the feed: streams catch up from their own position.
  seen = (await store.revocationsSince(0)).reduce((max, record) => Math.max(max, record.seq), 0);
  const reread = setInterval(readNew, rereadMs);
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
    async close() {
      clearInterval(reread);
      await stopWatching();
    },
  };
}
