/**
 * `lockstep audit verify`: walks every source's chain and every checkpoint, and says what is wrong
 * and where:
 *
 *   modified    an event whose hash no longer covers its text
 *   deleted     a position missing from the chain (or, after the last event, one a checkpoint saw)
 *   reordered   an event that does not chain to the one stored before it
 *   missing     stream positions the sender numbered but that never arrived; events it dropped
 *   forged      a checkpoint whose signature does not verify, or that disagrees with the chain
 */
import type { JSONWebKeySet } from 'jose';
import { auditEntryHash, GENESIS, type ControlPlaneStore } from '@lockstep/control-plane';
import { verifiedCheckpoint } from './checkpoints.ts';

export type ProblemKind = 'modified' | 'deleted' | 'reordered' | 'missing' | 'forged';

export interface Problem {
  readonly kind: ProblemKind;
  readonly source: string;
  /** Chain position (or stream position for `missing`), when one applies. */
  readonly seq?: number;
  readonly detail: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly sources: readonly { readonly source: string; readonly events: number; readonly checkpoints: number; readonly lastCheckpointAt: number | null }[];
  readonly problems: readonly Problem[];
}

const PAGE = 1_000;

export async function verifyTrail(store: ControlPlaneStore, jwks: JSONWebKeySet): Promise<VerifyReport> {
  const problems: Problem[] = [];
  const checkpoints = await store.auditCheckpoints();
  const sources = new Set([...(await store.auditHeads()).map((head) => head.source), ...checkpoints.map((checkpoint) => checkpoint.source)]);
  const summary: { source: string; events: number; checkpoints: number; lastCheckpointAt: number | null }[] = [];

  for (const source of [...sources].sort()) {
    // Walk the chain: positions 1, 2, 3 … each hashing its text and chaining to the one before.
    const hashAt = new Map<number, string>();
    let expected = 1;
    let previousHash = GENESIS;
    let count = 0;
    for (let after = 0; ;) {
      const page = await store.auditEvents(source, after, PAGE);
      if (page.length === 0) break;
      for (const event of page) {
        count += 1;
        if (event.seq !== expected) {
          problems.push({ kind: 'deleted', source, seq: expected, detail: event.seq - expected === 1 ? `event ${expected} is missing from the chain` : `events ${expected}–${event.seq - 1} are missing from the chain` });
        } else if (event.prevHash !== previousHash) {
          problems.push({ kind: 'reordered', source, seq: event.seq, detail: `event ${event.seq} does not chain to the event stored before it (moved, or one before it was replaced)` });
        }
        if (auditEntryHash(source, event.seq, event.prevHash, event.event) !== event.hash) {
          problems.push({ kind: 'modified', source, seq: event.seq, detail: `event ${event.seq} was changed after it was recorded (its hash no longer matches its content)` });
        }
        hashAt.set(event.seq, event.hash);
        previousHash = event.hash;
        expected = event.seq + 1;
      }
      after = (page[page.length - 1] as { seq: number }).seq;
    }
    const last = expected - 1;

    // Checkpoints: signed by the control plane, and matching the chain at their position.
    const own = checkpoints.filter((checkpoint) => checkpoint.source === source);
    for (const checkpoint of own) {
      const claims = await verifiedCheckpoint(checkpoint, jwks);
      const when = new Date(checkpoint.at).toISOString();
      if (claims === null || claims.source !== source || claims.seq !== checkpoint.seq || claims.hash !== checkpoint.hash || claims.at !== checkpoint.at) {
        problems.push({ kind: 'forged', source, seq: checkpoint.seq, detail: `the checkpoint of ${when} is not signed by the audit key, or its fields were changed` });
        continue;
      }
      if (claims.seq > last) {
        problems.push({ kind: 'deleted', source, seq: claims.seq, detail: `the checkpoint of ${when} saw ${claims.seq} events; only ${last} are stored: events ${last + 1}–${claims.seq} were deleted` });
      } else if (claims.seq > 0 && hashAt.get(claims.seq) !== claims.hash) {
        problems.push({ kind: 'modified', source, seq: claims.seq, detail: `the chain up to event ${claims.seq} differs from what the checkpoint of ${when} signed: it was rewritten` });
      }
    }
    summary.push({ source, events: count, checkpoints: own.length, lastCheckpointAt: own.length === 0 ? null : Math.max(...own.map((checkpoint) => checkpoint.at)) });
  }

  // What the senders numbered but never delivered, and what they dropped.
  for (const stream of await store.auditStreams()) {
    if (stream.gaps > 0) problems.push({ kind: 'missing', source: stream.source, detail: `stream ${stream.stream}: ${stream.gaps} event${stream.gaps === 1 ? '' : 's'} never arrived (positions skipped up to ${stream.lastStreamSeq})` });
    if (stream.dropped > 0) problems.push({ kind: 'missing', source: stream.source, detail: `stream ${stream.stream}: the sender dropped ${stream.dropped} event${stream.dropped === 1 ? '' : 's'} (its spool was full)` });
  }
  return { ok: problems.length === 0, sources: summary, problems };
}
