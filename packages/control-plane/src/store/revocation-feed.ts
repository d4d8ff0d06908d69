/**
 * Revocations as a feed: written to the store, then announced to every open stream of this process.
 * Streams also re-read the store from their last position every second, which carries revocations
 * made through another replica (PostgreSQL LISTEN/NOTIFY can make that instant later).
 */
import type { ControlPlaneStore, RevocationRecord } from './store.ts';

export interface RevocationFeed {
  revoke(entry: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord>;
  onRevocation(listener: (entry: RevocationRecord) => void): () => void;
  close(): Promise<void>;
}

/**
 * Where the store can tell (PostgreSQL LISTEN/NOTIFY), revocations added by other replicas are read
 * and announced as soon as they are notified; streams ignore what they have already sent.
 */
export async function createRevocationFeed(store: ControlPlaneStore): Promise<RevocationFeed> {
  const listeners = new Set<(entry: RevocationRecord) => void>();
  const announce = (record: RevocationRecord) => { for (const listener of listeners) listener(record); };
  let seen = 0;
  let reading: Promise<void> = Promise.resolve();
  const readNew = () => {
    reading = reading.then(async () => {
      for (const record of await store.revocationsSince(seen)) {
        seen = Math.max(seen, record.seq);
        announce(record);
      }
    }).catch(() => {});
  };
  const stopWatching = store.watchRevocations ? await store.watchRevocations(readNew) : async () => {};
  // Start from the current end of the feed: streams catch up from their own position.
  seen = (await store.revocationsSince(0)).reduce((max, record) => Math.max(max, record.seq), 0);
  return {
    async revoke(entry) {
      const record = await store.addRevocation(entry);
      announce(record);
      return record;
    },
    onRevocation(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: stopWatching,
  };
}
