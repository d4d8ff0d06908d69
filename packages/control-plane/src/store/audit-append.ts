/**
 * The part of appending to the audit trail that both stores share: given the source's head and what
 * is stored of the stream, work out which entries are new, their positions and hashes, and the
 * stream's new bookkeeping. The stores run it inside their own transaction.
 */
import { auditEventHash, auditTxnOf, GENESIS } from './audit-chain.ts';
import type { AuditAppend, AuditBatch, AuditEntry } from './store.ts';

export interface PlannedRow {
  readonly seq: number;
  readonly entry: AuditEntry;
  readonly txn: string | null;
  readonly prevHash: string;
  readonly hash: string;
}

/** What is stored of a stream between batches. */
export interface StreamState {
  readonly lastStreamSeq: number;
  readonly gaps: number;
  readonly dropped: number;
  readonly written: number;
  readonly closedAt: number | null;
}

export interface AppendPlan {
  readonly rows: readonly PlannedRow[];
  readonly result: AuditAppend;
  /** The stream's bookkeeping after the batch. */
  readonly stream: StreamState;
}

export function planAppend(
  source: string,
  head: { seq: number; hash: string } | null,
  stream: StreamState | null,
  /** The text stored at a position of the batch's stream, or null. */
  stored: (streamSeq: number) => string | null,
  batch: AuditBatch,
  receivedAt: number,
): AppendPlan {
  let seq = head?.seq ?? 0;
  let hash = head?.hash ?? GENESIS;
  let last = stream?.lastStreamSeq ?? 0;
  let gaps = stream?.gaps ?? 0;
  const seen = new Set<number>();
  const rows: PlannedRow[] = [];
  const ranges: [number, number][] = [];
  let duplicates = 0;
  const conflicts: number[] = [];
  for (const entry of batch.entries) {
    if (seen.has(entry.streamSeq)) {
      duplicates += 1;
      continue;
    }
    const already = stored(entry.streamSeq);
    if (already !== null) {
      // A retried batch stores nothing twice. A position taken by another text is no retry: someone
      // wrote an event there first, and the sender's is the one that cannot be stored.
      if (already === entry.event) duplicates += 1;
      else conflicts.push(entry.streamSeq);
      continue;
    }
    seen.add(entry.streamSeq);
    if (entry.streamSeq > last + 1) {
      ranges.push([last + 1, entry.streamSeq - 1]);
      gaps += entry.streamSeq - last - 1;
    } else if (entry.streamSeq <= last) {
      // A late arrival fills a gap reported earlier.
      gaps = Math.max(0, gaps - 1);
    }
    last = Math.max(last, entry.streamSeq);
    seq += 1;
    const next = auditEventHash({
      source,
      seq,
      prevHash: hash,
      stream: batch.stream,
      streamSeq: entry.streamSeq,
      receivedAt,
      event: entry.event,
    });
    rows.push({ seq, entry, txn: auditTxnOf(entry.event), prevHash: hash, hash: next });
    hash = next;
  }
  // The sender's counters only ever rise (a retried older batch must not lower them); `written` stays
  // 0 for a sender that does not report it. A stream once closed stays closed at the time it was.
  const written = Math.max(stream?.written ?? 0, batch.written ?? 0);
  const dropped = Math.max(stream?.dropped ?? 0, batch.dropped);
  const closedAt = stream?.closedAt ?? (batch.final === true ? receivedAt : null);
  const next = { lastStreamSeq: last, gaps, dropped, written, closedAt };
  return {
    rows,
    stream: next,
    result: {
      accepted: rows.length,
      duplicates,
      conflicts,
      base: head ?? { seq: 0, hash: GENESIS },
      head: { seq, hash },
      gaps: ranges,
      stream: next,
    },
  };
}
