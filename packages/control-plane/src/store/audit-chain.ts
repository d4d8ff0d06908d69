/**
 * The audit trail's hash chain, shared by both stores and by `lockstep audit verify`: each event's
 * hash covers every stored column of the event (or what that column is derived from) and the
 * previous event's hash, so that changing, removing or reordering any event breaks every hash
 * after it.
 *
 *   v2: hash(n) = SHA-256( "lockstep-audit-v2\n" | JSON [source, n, hash(n-1), stream, streamSeq, receivedAt] | "\n" | event text )
 *   v1: hash(n) = SHA-256( "lockstep-audit-v1\n" | source | "\n" | n | "\n" | hash(n-1) | "\n" | event text )
 *
 * v1 did not cover where and when an event arrived; it is kept only to verify events stored before
 * the upgrade (each source's last v1 position is in `audit_legacy`, and signed by the first
 * checkpoint). The `txn` column is not hashed: it is derived from the event text (auditTxnOf), and
 * verify derives it again. The first event of a source chains to GENESIS.
 */
import { createHash } from 'node:crypto';

export const GENESIS = '0'.repeat(64);

/** What a v2 hash covers besides the event text. */
export interface AuditHashInput {
  readonly source: string;
  readonly seq: number;
  readonly prevHash: string;
  readonly stream: string;
  readonly streamSeq: number;
  readonly receivedAt: number;
  readonly event: string;
}

export function auditEventHash(input: AuditHashInput): string {
  const where = JSON.stringify([
    input.source,
    input.seq,
    input.prevHash,
    input.stream,
    input.streamSeq,
    input.receivedAt,
  ]);
  return createHash('sha256').update(`lockstep-audit-v2\n${where}\n`).update(input.event).digest('hex');
}

/** The v1 hash, for events stored before the upgrade. */
export function auditEntryHash(source: string, seq: number, prevHash: string, event: string): string {
  return createHash('sha256').update(`lockstep-audit-v1\n${source}\n${seq}\n${prevHash}\n`).update(event).digest('hex');
}

/** The transaction an event belongs to (its `txn` field), the value of the indexed `txn` column. */
export function auditTxnOf(event: string): string | null {
  try {
    const txn = (JSON.parse(event) as { txn?: unknown } | null)?.txn;
    return typeof txn === 'string' ? txn : null;
  } catch {
    return null;
  }
}

/** A sender says "still here" (an empty batch) when it has sent nothing for this long. */
export const AUDIT_KEEP_ALIVE_MS = 30_000;
/** An open stream silent for this long has ended uncleanly (its process died and did not resume it). */
export const AUDIT_STREAM_SILENCE_MS = 5 * 60_000;
