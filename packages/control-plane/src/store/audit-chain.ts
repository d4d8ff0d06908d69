/**
 * The audit trail's hash chain, shared by both stores and by `lockstep audit verify`: each event's
 * hash covers its source, its position, its text and the previous event's hash, so that changing,
 * removing or reordering any event breaks every hash after it.
 *
 *   hash(n) = SHA-256( "lockstep-audit-v1" | source | n | hash(n-1) | event text )   (hex)
 *
 * The first event of a source chains to GENESIS.
 */
import { createHash } from 'node:crypto';

export const GENESIS = '0'.repeat(64);

export function auditEntryHash(source: string, seq: number, prevHash: string, event: string): string {
  return createHash('sha256').update(`lockstep-audit-v1\n${source}\n${seq}\n${prevHash}\n`).update(event).digest('hex');
}
