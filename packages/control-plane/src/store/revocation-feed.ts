/**
 * Revocations as a feed: written to the store, then announced to every open stream of this process.
 * Streams also re-read the store from their last position every second, which carries revocations
 * made through another replica (PostgreSQL LISTEN/NOTIFY can make that instant later).
 */
import type { ControlPlaneStore, RevocationRecord } from './store.ts';

export interface RevocationFeed {
  revoke(entry: Omit<RevocationRecord, 'seq'>): Promise<RevocationRecord>;
  onRevocation(listener: (entry: RevocationRecord) => void): () => void;
}

export function createRevocationFeed(store: ControlPlaneStore): RevocationFeed {
  const listeners = new Set<(entry: RevocationRecord) => void>();
  return {
    async revoke(entry) {
      const record = await store.addRevocation(entry);
      for (const listener of listeners) listener(record);
      return record;
    },
    onRevocation(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
