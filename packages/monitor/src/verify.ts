/**
 * `lockstep audit verify`: walks the checkpoint chain, every source's chain of events and every
 * stream's bookkeeping, and says what is wrong and where:
 *
 *   modified    an event, a derived column or a stream's counters changed after they were recorded
 *   deleted     events, a whole source, a stream's bookkeeping or checkpoints (links) that are gone
 *   reordered   an event that does not chain to the one stored before it
 *   forged      a link (or legacy checkpoint) not signed by the audit key, or not chained to the one before
 *   tampered    an incident the checkpointer found and signed (a rewrite, a cut, a rollback)
 *   stale       the newest link is older than its cadence allows: the monitor is down, or newer links were deleted
 *   gap         links missing from the cadence, and the monitor that resumed cannot vouch for the one before
 *   missing     events a sender numbered or dropped but that never arrived
 *   unclean     a stream whose sender died without closing it: what it numbered but never delivered
 *
 * What verify proves, and what it cannot, is in docs/operations.md.
 */
import type { JSONWebKeySet } from 'jose';
import {
  AUDIT_STREAM_SILENCE_MS,
  auditEntryHash,
  auditEventHash,
  auditTxnOf,
  GENESIS,
  type AuditChainLink,
  type ControlPlaneStore,
} from '@lockstep/control-plane';
import {
  counterRegression,
  countersOf,
  emptyFold,
  foldLink,
  lateAfter,
  linkDigest,
  streamKey,
  verifiedCheckpoint,
  verifiedLink,
  type ChainClaims,
} from './checkpoints.ts';

export type ProblemKind =
  'modified' | 'deleted' | 'reordered' | 'forged' | 'tampered' | 'stale' | 'gap' | 'missing' | 'unclean';

export interface Problem {
  readonly kind: ProblemKind;
  /** The source (a SPIFFE ID), or `checkpoint chain`. */
  readonly source: string;
  /** Chain position (or link number for the checkpoint chain), when one applies. */
  readonly seq?: number;
  readonly detail: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly sources: readonly { readonly source: string; readonly events: number; readonly checkpointed: number }[];
  readonly chain: {
    readonly links: number;
    readonly newest: { readonly n: number; readonly at: number; readonly kind: ChainClaims['kind'] } | null;
  };
  /** Events newer than the newest link: stored, chained, but not yet signed. */
  readonly unsigned: number;
  readonly problems: readonly Problem[];
  /** What is not wrong but worth knowing (a clean stop, a restart, events not yet checkpointed). */
  readonly notes: readonly string[];
}

export interface VerifyOptions {
  /** The time to judge freshness at (default: now): for a stopped system or a backup. */
  readonly asOf?: number;
  /** A link kept outside the store (`lockstep audit checkpoint`): the trail must extend it. */
  readonly against?: string;
  /** The newest link the monitor signed, from its head file beside the audit key: the store must hold it. */
  readonly head?: {
    readonly n: number;
    readonly digest: string;
    readonly file: string;
    readonly chain?: string | null;
  };
}

const PAGE = 1_000;
const CHAIN = 'checkpoint chain';
const when = (at: number) => new Date(at).toISOString();
const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? '' : 's'}`;

export async function verifyTrail(
  store: ControlPlaneStore,
  jwks: JSONWebKeySet,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const problems: Problem[] = [];
  const notes: string[] = [];
  const asOf = options.asOf ?? Date.now();

  // 1. The checkpoint chain: contiguous from 1, each link signed and naming the one before.
  const fold = emptyFold();
  /** For each source, the link that signed its head last. */
  const signedBy = new Map<string, number>();
  let legacy: Map<string, number> | null = null;
  let previous: { link: AuditChainLink; claims: ChainClaims } | null = null;
  /** Each link's digest by position: a monitor that starts vouches for one of them. */
  const digests = new Map<number, string>();
  let links = 0;
  /** When the monitor last started: silence is judged only while it has been up (its senders could reach it). */
  let upSince = asOf;
  for (let after = 0; ;) {
    const page = await store.auditLinks(after, PAGE);
    if (page.length === 0) break;
    for (const link of page) {
      links += 1;
      const expected = (previous?.link.n ?? 0) + 1;
      if (link.n !== expected) {
        problems.push({
          kind: 'deleted',
          source: CHAIN,
          seq: expected,
          detail:
            expected === 1
              ? `the chain starts at link ${link.n}: links 1–${link.n - 1} (the oldest checkpoints) were deleted`
              : `links ${expected}–${link.n - 1} are missing (deleted checkpoints, between ${when(previous?.link.at ?? 0)} and ${when(link.at)})`,
        });
      }
      const claims = await verifiedLink(link.jws, jwks);
      if (claims === null || claims.n !== link.n || claims.at !== link.at) {
        problems.push({
          kind: 'forged',
          source: CHAIN,
          seq: link.n,
          detail: `link ${link.n} (${when(link.at)}) is not signed by the audit key, or its stored position or time were changed`,
        });
        continue;
      }
      const prevDigest = previous === null ? GENESIS : linkDigest(previous.link.jws);
      if (link.n === expected && claims.prev !== prevDigest) {
        problems.push({
          kind: 'forged',
          source: CHAIN,
          seq: link.n,
          detail: `link ${link.n} does not follow the stored link ${link.n - 1}: one of them was replaced`,
        });
      }
      if (previous !== null) cadence(previous, { link, claims });
      if (claims.legacy !== undefined) legacy = new Map(claims.legacy.map(([source, through]) => [source, through]));
      for (const incident of claims.incidents) {
        problems.push({
          kind: 'tampered',
          source: incident.source ?? CHAIN,
          seq: link.n,
          detail: `found and signed at ${when(claims.at)} (link ${link.n}): ${incident.detail}`,
        });
      }
      foldLink(fold, claims);
      digests.set(link.n, linkDigest(link.jws));
      if (claims.kind === 'start') upSince = claims.at;
      for (const [source] of claims.sources) signedBy.set(source, link.n);
      previous = { link, claims };
    }
    after = (page[page.length - 1] as AuditChainLink).n;
  }
  const newest = previous;
  if (newest === null) {
    // The monitor signs a link as it starts: a trail without one was never watched, or was wiped.
    const held = (await store.auditHeads()).length > 0 ? 'the trail holds events but' : 'the trail is empty and has';
    problems.push({
      kind: 'stale',
      source: CHAIN,
      detail: `${held} no checkpoint: nothing in it is signed (the control plane never ran on this store, or every checkpoint was deleted)`,
    });
  } else if (newest.claims.kind === 'stop') {
    notes.push(
      `the monitor stopped cleanly at ${when(newest.claims.at)} (link ${newest.claims.n}); if it has run since, newer checkpoints were deleted`,
    );
  } else if (asOf - newest.claims.at > lateAfter(newest.claims.every)) {
    problems.push({
      kind: 'stale',
      source: CHAIN,
      seq: newest.claims.n,
      detail: `the newest checkpoint is link ${newest.claims.n} of ${when(newest.claims.at)}, ${Math.round((asOf - newest.claims.at) / 1000)} s before ${when(asOf)}; one comes every ${newest.claims.every / 1000} s: the monitor is down, or newer checkpoints were deleted`,
    });
  }
  if (options.against !== undefined) await against(options.against);
  if (
    options.head !== undefined &&
    typeof options.head.chain === 'string' &&
    digests.size > 0 &&
    digests.get(1) !== options.head.chain
  ) {
    notes.push(`the head file ${options.head.file} is of another trail (its link 1 differs): not compared`);
  } else if (options.head !== undefined) {
    const { n, digest, file } = options.head;
    if (digests.get(n) !== digest) {
      problems.push({
        kind: digests.has(n) ? 'forged' : 'deleted',
        source: CHAIN,
        seq: n,
        detail: digests.has(n)
          ? `link ${n} in the store is not the one the monitor signed (${file}): the chain was replaced`
          : `the monitor signed link ${n} (${file}); the store holds links up to ${newest?.link.n ?? 0}: the trail was rolled back`,
      });
    }
  }

  // 2. Every source's chain: positions 1, 2, 3 … each hashing all it stores and chaining to the one before.
  const storedLegacy = new Map((await store.auditLegacy()).map((entry) => [entry.source, entry.through]));
  if (legacy !== null) {
    const signed = legacy;
    const changed = [...new Set([...signed.keys(), ...storedLegacy.keys()])].filter(
      (source) => signed.get(source) !== storedLegacy.get(source),
    );
    for (const source of changed)
      problems.push({
        kind: 'modified',
        source,
        detail: `its last v1 position is ${storedLegacy.get(source) ?? 'absent'} in the store, ${signed.get(source) ?? 'absent'} as link 1 signed it`,
      });
  }
  const v1Through = legacy ?? storedLegacy;
  const heads = await store.auditHeads();
  const sources = new Set([...heads.map((head) => head.source), ...fold.sources.keys()]);
  const summary: { source: string; events: number; checkpointed: number }[] = [];
  const streamEvents = new Map<string, { count: number; last: number }>();
  /** The last position of each source read above: what arrives later is read again for the streams. */
  const readThrough = new Map<string, number>();
  let unsigned = 0;
  for (const source of [...sources].sort()) {
    const signed = fold.sources.get(source);
    let hashAtSigned: string | undefined;
    let expected = 1;
    let previousHash = GENESIS;
    let count = 0;
    for (let after = 0; ;) {
      const page = await store.auditEvents(source, after, PAGE);
      if (page.length === 0) break;
      for (const event of page) {
        count += 1;
        if (event.seq !== expected) {
          problems.push({
            kind: 'deleted',
            source,
            seq: expected,
            detail:
              event.seq - expected === 1
                ? `event ${expected} is missing from the chain`
                : `events ${expected}–${event.seq - 1} are missing from the chain`,
          });
        } else if (event.prevHash !== previousHash) {
          problems.push({
            kind: 'reordered',
            source,
            seq: event.seq,
            detail: `event ${event.seq} does not chain to the event stored before it (moved, or one before it was replaced)`,
          });
        }
        const hash =
          event.seq <= (v1Through.get(source) ?? 0)
            ? auditEntryHash(source, event.seq, event.prevHash, event.event)
            : auditEventHash(event);
        if (hash !== event.hash) {
          problems.push({
            kind: 'modified',
            source,
            seq: event.seq,
            detail: `event ${event.seq} was changed after it was recorded (its hash no longer matches its text, stream, stream position or arrival time)`,
          });
        }
        if (event.txn !== auditTxnOf(event.event)) {
          problems.push({
            kind: 'modified',
            source,
            seq: event.seq,
            detail: `the txn column of event ${event.seq} says ${JSON.stringify(event.txn)}; the event says ${JSON.stringify(auditTxnOf(event.event))}`,
          });
        }
        const key = streamKey(source, event.stream);
        const seen = streamEvents.get(key) ?? { count: 0, last: 0 };
        streamEvents.set(key, { count: seen.count + 1, last: Math.max(seen.last, event.streamSeq) });
        if (event.seq === signed?.seq) hashAtSigned = event.hash;
        previousHash = event.hash;
        expected = event.seq + 1;
      }
      after = (page[page.length - 1] as { seq: number }).seq;
    }
    const last = expected - 1;
    readThrough.set(source, last);
    if (signed !== undefined) {
      const by = `link ${signedBy.get(source)}`;
      if (count === 0) {
        problems.push({
          kind: 'deleted',
          source,
          seq: 1,
          detail: `the whole source is gone: ${by} signed ${plural(signed.seq, 'event')} of it`,
        });
      } else if (signed.seq > last) {
        problems.push({
          kind: 'deleted',
          source,
          seq: last + 1,
          detail: `${by} signed ${plural(signed.seq, 'event')}; only ${last} are stored: events ${last + 1}–${signed.seq} were deleted`,
        });
      } else if (hashAtSigned !== signed.hash) {
        problems.push({
          kind: 'modified',
          source,
          seq: signed.seq,
          detail: `the chain up to event ${signed.seq} differs from what ${by} signed: it was rewritten`,
        });
      }
    }
    unsigned += Math.max(0, last - (signed?.seq ?? 0));
    summary.push({ source, events: count, checkpointed: signed?.seq ?? 0 });
  }
  if (unsigned > 0)
    notes.push(
      `not yet checkpointed (${plural(unsigned, 'event')}): stored and chained, but newer than the newest signed checkpoint`,
    );

  // 3. Legacy per-source checkpoints (before the chain): signed, and matching the chain.
  for (const checkpoint of await store.auditCheckpoints()) {
    const claims = await verifiedCheckpoint(checkpoint, jwks);
    const { source } = checkpoint;
    if (
      claims === null ||
      claims.source !== source ||
      claims.seq !== checkpoint.seq ||
      claims.hash !== checkpoint.hash ||
      claims.at !== checkpoint.at
    ) {
      problems.push({
        kind: 'forged',
        source,
        seq: checkpoint.seq,
        detail: `the legacy checkpoint of ${when(checkpoint.at)} is not signed by the audit key, or its fields were changed`,
      });
      continue;
    }
    const [event] = claims.seq > 0 ? await store.auditEvents(source, claims.seq - 1, 1) : [];
    if (claims.seq > 0 && event?.seq !== claims.seq) {
      problems.push({
        kind: 'deleted',
        source,
        seq: claims.seq,
        detail: `the legacy checkpoint of ${when(claims.at)} saw ${claims.seq} events; event ${claims.seq} is gone`,
      });
    } else if (claims.seq > 0 && event?.hash !== claims.hash) {
      problems.push({
        kind: 'modified',
        source,
        seq: claims.seq,
        detail: `the chain up to event ${claims.seq} differs from what the legacy checkpoint of ${when(claims.at)} signed: it was rewritten`,
      });
    }
  }

  // 4. Streams: their bookkeeping against their events and the signed counters; then what never arrived.
  const rows = await store.auditStreams();
  const arrivedLater = new Map<string, { stream: string; streamSeq: number }[]>();
  const stored = new Set(rows.map((row) => streamKey(row.source, row.stream)));
  for (const [key, signed] of fold.streams) {
    if (!stored.has(key))
      problems.push({
        kind: 'deleted',
        source: signed[0],
        detail: `the bookkeeping of stream ${signed[1]} is gone (it was signed with ${plural(signed[4], 'event')} written, ${signed[3]} dropped)`,
      });
  }
  const judgedAt = Math.min(asOf, newest?.claims.at ?? asOf);
  const silentSince = judgedAt - upSince >= AUDIT_STREAM_SILENCE_MS ? judgedAt - AUDIT_STREAM_SILENCE_MS : -Infinity;
  for (const row of rows) {
    const events = await eventsOf(row);
    const name = `stream ${row.stream}`;
    if (row.lastStreamSeq !== events.last || row.gaps !== events.last - events.count) {
      problems.push({
        kind: 'modified',
        source: row.source,
        detail: `the bookkeeping of ${name} says last position ${row.lastStreamSeq} and ${plural(row.gaps, 'gap')}; its events say ${events.last} and ${events.last - events.count}`,
      });
    }
    const signed = fold.streams.get(streamKey(row.source, row.stream));
    const regression = signed === undefined ? null : counterRegression(signed, countersOf(row));
    if (regression !== null)
      problems.push({
        kind: 'modified',
        source: row.source,
        detail: `the counters of ${name} were changed after they were signed: ${regression}`,
      });
    // Judge by the larger of stored and signed: lowering a counter must not hide what it counts.
    const dropped = Math.max(row.dropped, signed?.[3] ?? 0);
    const written = Math.max(row.written, signed?.[4] ?? 0);
    const gaps = events.last - events.count;
    if (gaps > 0)
      problems.push({
        kind: 'missing',
        source: row.source,
        detail: `${name}: ${plural(gaps, 'event')} never arrived (positions skipped up to ${events.last})`,
      });
    if (dropped > 0)
      problems.push({
        kind: 'missing',
        source: row.source,
        detail: `${name}: the sender dropped ${plural(dropped, 'event')} (its log says why: a full journal, a torn line, a failed write, or a batch the collector refused)`,
      });
    const tail = Math.max(0, written - events.last);
    // When the sender was last heard of: as signed (the store's column could have been moved on).
    const lastSeen = signed?.[7] ?? row.lastSeen;
    if (row.closedAt !== null && tail > 0) {
      problems.push({
        kind: 'missing',
        source: row.source,
        detail: `${name}: closed at ${when(row.closedAt)} having written ${written}; events ${events.last + 1}–${written} never arrived`,
      });
    } else if (row.closedAt === null && written > 0 && lastSeen < silentSince) {
      const unclean = `${name} ended uncleanly, ${plural(tail + gaps, 'event')} unaccounted: silent since ${when(lastSeen)} without closing (its sender died and did not resume it)`;
      // Nothing it numbered is missing: the events of its last second may be in its file only.
      if (tail + gaps > 0) problems.push({ kind: 'unclean', source: row.source, detail: unclean });
      else notes.push(`${row.source}: ${unclean}; whatever it wrote in its last second may be in its audit file only`);
    }
  }
  return {
    ok: problems.length === 0,
    sources: summary,
    unsigned,
    problems,
    notes,
    chain: {
      links,
      newest: newest === null ? null : { n: newest.claims.n, at: newest.claims.at, kind: newest.claims.kind },
    },
  };

  /**
   * What the stored events say of a stream, as of when its bookkeeping was read. A live trail takes
   * events while it is verified: its bookkeeping, read after the walk above, may count some that
   * arrived since. They are read now (each source once), up to the position the bookkeeping names —
   * an event and its bookkeeping are written together, so that is exactly what it counted.
   */
  async function eventsOf(row: {
    source: string;
    stream: string;
    lastStreamSeq: number;
    gaps: number;
  }): Promise<{ count: number; last: number }> {
    const walked = streamEvents.get(streamKey(row.source, row.stream)) ?? { count: 0, last: 0 };
    if (row.lastStreamSeq === walked.last && row.gaps === walked.last - walked.count) return walked;
    let later = arrivedLater.get(row.source);
    if (later === undefined) {
      later = [];
      for (let after = readThrough.get(row.source) ?? 0; ;) {
        const page = await store.auditEvents(row.source, after, PAGE);
        if (page.length === 0) break;
        later.push(...page.map((event) => ({ stream: event.stream, streamSeq: event.streamSeq })));
        after = (page[page.length - 1] as { seq: number }).seq;
      }
      arrivedLater.set(row.source, later);
    }
    const counted = later.filter((event) => event.stream === row.stream && event.streamSeq <= row.lastStreamSeq);
    return {
      count: walked.count + counted.length,
      last: Math.max(walked.last, ...counted.map((event) => event.streamSeq)),
    };
  }

  /**
   * A pause in the cadence. Links that follow each other by number and digest hide nothing between
   * them (the store was slow, the machine slept): a note. A start after a pause is fine when the
   * monitor vouches for a link the chain still holds (its head file): else newer links may have been
   * deleted before it started — a gap.
   */
  function cadence(
    before: { link: AuditChainLink; claims: ChainClaims },
    after: { link: AuditChainLink; claims: ChainClaims },
  ): void {
    const { claims } = after;
    const { resumed } = claims;
    const known = resumed === null || resumed === undefined ? null : digests.get(resumed.n);
    const vouched = claims.kind === 'start' && resumed !== null && resumed !== undefined && known === resumed.digest;
    if (claims.kind === 'start' && resumed !== null && resumed !== undefined && !vouched) {
      problems.push({
        kind: 'tampered',
        source: CHAIN,
        seq: claims.n,
        detail:
          known === undefined
            ? `the monitor that started at ${when(claims.at)} had signed link ${resumed.n} before; the chain holds links up to ${before.link.n} only: links were deleted`
            : `the monitor that started at ${when(claims.at)} had signed another link ${resumed.n} than the chain holds: links were replaced`,
      });
    }
    if (claims.at - before.claims.at <= lateAfter(before.claims.every)) return;
    const span = `from ${when(before.claims.at)} to ${when(claims.at)}`;
    if (claims.kind !== 'start') {
      notes.push(
        `checkpoints paused ${span} (links ${before.link.n}–${claims.n} follow each other: nothing is missing between them; was the store or the monitor stalled?)`,
      );
    } else if (vouched) {
      notes.push(
        `no checkpoints ${span}: the monitor ${before.claims.kind === 'stop' ? 'was stopped' : 'was down (it did not stop cleanly)'} and resumed from link ${resumed?.n}`,
      );
    } else {
      problems.push({
        kind: 'gap',
        source: CHAIN,
        seq: claims.n,
        detail: `no checkpoints ${span} (links ${before.link.n}–${claims.n}), and the monitor that started cannot vouch for link ${before.link.n} (it has no head file, or another one): newer checkpoints may have been deleted`,
      });
    }
  }

  /** The witnessed link must be in the store, unchanged: the trail extends it. */
  async function against(jws: string): Promise<void> {
    const claims = await verifiedLink(jws.trim(), jwks);
    if (claims === null) {
      problems.push({
        kind: 'forged',
        source: CHAIN,
        detail: 'the witnessed checkpoint given with --against is not a link signed by the audit key',
      });
      return;
    }
    const [link] = await store.auditLinks(claims.n - 1, 1);
    if (link?.n !== claims.n) {
      problems.push({
        kind: 'deleted',
        source: CHAIN,
        seq: claims.n,
        detail: `the witnessed link ${claims.n} of ${when(claims.at)} is not in the store: the trail was rolled back before it`,
      });
    } else if (link.jws !== jws.trim()) {
      problems.push({
        kind: 'forged',
        source: CHAIN,
        seq: claims.n,
        detail: `link ${claims.n} in the store is not the witnessed one of ${when(claims.at)}: the chain was replaced`,
      });
    } else {
      notes.push(`the trail extends the witnessed link ${claims.n} of ${when(claims.at)}`);
    }
  }
}
