/**
 * The revoked SPIFFE IDs, held in memory and kept current from the revocation feed, so that every
 * request — a new connection or one kept alive from before the revocation — is checked at the cost of
 * one Set lookup, with no store round trip on the request path.
 *
 * How current: a revocation made through this process is in the set before the admin call that made
 * it is answered (the feed announces it synchronously after the store write). One made through
 * another replica arrives as the feed learns of it — PostgreSQL's notification at once, the feed's
 * re-read of the store within `rereadMs` (1 s) as a safety net — the same path, and the same delay,
 * as the guards' own revocation push. While the store cannot be read, entries from other replicas wait
 * (requests that need the store fail anyway); what this process already knows is kept.
 *
 * A lifted revocation (`lockstep revoke --lift`) arrives the same way and removes the SPIFFE ID again.
 */
import type { RevocationFeed } from '../store/revocation-feed.ts';
import type { ControlPlaneStore, RevocationRecord } from '../store/store.ts';

export interface RevokedCallers {
  has(spiffeId: string): boolean;
  /** Stops following the feed. */
  close(): void;
}

export async function followRevokedCallers(store: ControlPlaneStore, feed: RevocationFeed): Promise<RevokedCallers> {
  const revoked = new Set<string>();
  // The feed position each SPIFFE ID was last changed at: an older entry seen late (the stored read
  // below, racing a lift announced meanwhile) cannot undo a newer one.
  const positions = new Map<string, number>();
  const apply = (entry: RevocationRecord) => {
    if (entry.kind !== 'spiffeId' || entry.seq <= (positions.get(entry.value) ?? 0)) return;
    positions.set(entry.value, entry.seq);
    if (entry.lifted === null) revoked.add(entry.value);
    else revoked.delete(entry.value);
  };
  // Subscribe before reading what is stored: an entry announced in between is seen twice, never missed.
  const stop = feed.onRevocation(apply);
  for (const entry of await store.revocationsSince(0)) apply(entry);
  return {
    has: (spiffeId) => revoked.has(spiffeId),
    close: () => {
      stop();
    },
  };
}
