/**
 * The part of appending to the audit trail that both stores share: given the source's head and what
 * is stored of the stream, work out which entries are new, their positions and hashes, and the
 * stream's new bookkeeping. The stores run it inside their own transaction.
 */
import { auditEntryHash, GENESIS } from './audit-chain.ts';
import type { AuditAppend, AuditEntry } from './store.ts';

export interface PlannedRow {
  readonly seq: number;
  readonly entry: AuditEntry;
  readonly prevHash: string;
  readonly hash: string;
}

export interface AppendPlan {
  readonly rows: readonly PlannedRow[];
  readonly result: AuditAppend;
  /** The stream's bookkeeping after the batch. */
  readonly stream: { readonly lastStreamSeq: number; readonly gaps: number };
}

export function planAppend(
  source: string,
  head: { seq: number; hash: string } | null,
  stream: { lastStreamSeq: number; gaps: number } | null,
  stored: (streamSeq: number) => boolean,
  entries: readonly AuditEntry[],
): AppendPlan {
  let seq = head?.seq ?? 0;
  let hash = head?.hash ?? GENESIS;
  let last = stream?.lastStreamSeq ?? 0;
  let gaps = stream?.gaps ?? 0;
  const seen = new Set<number>();
  const rows: PlannedRow[] = [];
  const ranges: [number, number][] = [];
  let duplicates = 0;
  for (const entry of entries) {
    if (seen.has(entry.streamSeq) || stored(entry.streamSeq)) {
      duplicates += 1;
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
    const next = auditEntryHash(source, seq, hash, entry.event);
    rows.push({ seq, entry, prevHash: hash, hash: next });
    hash = next;
  }
  return { rows, result: { accepted: rows.length, duplicates, head: { seq, hash }, gaps: ranges }, stream: { lastStreamSeq: last, gaps } };
}
