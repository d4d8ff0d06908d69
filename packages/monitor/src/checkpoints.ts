/**
 * The checkpoint chain: at a fixed cadence (default 60 s; also in silence), one link signed with the
 * control plane's audit key. Each link names the digest of the link before it and carries what
 * changed since: the head (position, hash) of every source whose chain grew, and the counters of
 * every stream whose bookkeeping moved. Folding the links from n = 1 gives, for any moment, what the
 * trail held: no source, event, stream counter or link can disappear or roll back without breaking
 * a signature or a digest, and a trail cut short after a link no longer matches it.
 *
 *   link n = JWS { v: 2, n, at, every, kind: start|tick|stop, prev: sha256(link n-1) | GENESIS,
 *                  resumed (start only), legacy (n = 1 only), sources, streams, incidents }
 *
 * The checkpointer never signs a regression: before each link it compares the store with what it
 * signed, and a source whose chain was cut or rewritten, or a counter that went down, becomes a
 * signed *incident* (and an alert) instead of a new head. It keeps the newest link it signed in a
 * head file beside the audit key, so that a store rolled back while it was down is found when it
 * starts (the first link after a start says what it resumed from).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  base64url,
  CompactSign,
  compactVerify,
  createLocalJWKSet,
  decodeProtectedHeader,
  type JSONWebKeySet,
} from 'jose';
import {
  GENESIS,
  type AuditAppend,
  type AuditChainLink,
  type AuditCheckpoint,
  type AuditStream,
  type ControlPlaneStore,
  type KeyRing,
} from '@lockstep/control-plane';

export const CHAIN_TYP = 'lockstep-audit-chain+jws';
/** The head file's name in the key directory. */
export const AUDIT_HEAD_FILE = 'audit-head.json';
/** The legacy per-source checkpoints (before the chain). */
export const CHECKPOINT_TYP = 'lockstep-audit-checkpoint+jws';

/** [source, position, hash] */
export type SourceHead = readonly [string, number, string];
/** [source, stream, lastStreamSeq, dropped, written, closedAt, firstSeen, lastSeen] */
export type StreamCounters = readonly [string, string, number, number, number, number | null, number, number];

export interface Incident {
  readonly kind:
    | 'source-deleted'
    | 'truncated'
    | 'rewritten'
    | 'stream-deleted'
    | 'counter-lowered'
    | 'rolled-back'
    | 'forged-event';
  readonly source?: string;
  readonly stream?: string;
  readonly detail: string;
}

export interface ChainClaims {
  readonly v: 2;
  readonly n: number;
  readonly at: number;
  /** The cadence promised: the next link comes within this (plus grace). */
  readonly every: number;
  readonly kind: 'start' | 'tick' | 'stop';
  /** SHA-256 (hex) of the previous link's JWS; GENESIS for n = 1. */
  readonly prev: string;
  /** start only: the newest link this monitor had signed before it started, from its head file (null: it knew none). */
  readonly resumed?: { readonly n: number; readonly digest: string } | null;
  /** n = 1 only: each source's last v1-hashed position. */
  readonly legacy?: readonly (readonly [string, number])[];
  readonly sources: readonly SourceHead[];
  readonly streams: readonly StreamCounters[];
  readonly incidents: readonly Incident[];
}

/** How late a link may be before the chain counts as stale (or as having a gap). */
export function lateAfter(every: number): number {
  return every + Math.max(every / 2, 30_000);
}

export function linkDigest(jws: string): string {
  return createHash('sha256').update(jws).digest('hex');
}

/** The bytes a link's signature covers besides its header: the claims as JSON, in this order. */
export function chainPayload(claims: ChainClaims): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(claims));
}

export async function signLink(keys: KeyRing, claims: ChainClaims): Promise<AuditChainLink> {
  const key = keys.current();
  const jws = await new CompactSign(chainPayload(claims))
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: CHAIN_TYP })
    .sign(key.privateKey);
  return { n: claims.n, at: claims.at, jws };
}

/** A link's claims when its signature verifies with `jwks`, else null. */
export async function verifiedLink(jws: string, jwks: JSONWebKeySet): Promise<ChainClaims | null> {
  try {
    const { payload, protectedHeader } = await compactVerify(jws, createLocalJWKSet(jwks), { algorithms: ['ES256'] });
    if (protectedHeader.typ !== CHAIN_TYP) return null;
    const claims = JSON.parse(new TextDecoder().decode(payload)) as ChainClaims;
    return claims.v === 2 ? claims : null;
  } catch {
    return null;
  }
}

/** A link's claims without checking its signature (the checkpointer reading its own chain). */
export function decodedLink(jws: string): ChainClaims {
  if (decodeProtectedHeader(jws).typ !== CHAIN_TYP) throw new Error('not a checkpoint chain link');
  return JSON.parse(new TextDecoder().decode(base64url.decode(jws.split('.')[1] ?? ''))) as ChainClaims;
}

/** The claims a legacy checkpoint's signature covers, or null when it does not verify with `jwks`. */
export async function verifiedCheckpoint(
  checkpoint: AuditCheckpoint,
  jwks: JSONWebKeySet,
): Promise<{ source: string; seq: number; hash: string; at: number } | null> {
  try {
    const { payload, protectedHeader } = await compactVerify(checkpoint.signature, createLocalJWKSet(jwks), {
      algorithms: ['ES256'],
    });
    if (protectedHeader.typ !== CHECKPOINT_TYP) return null;
    return JSON.parse(new TextDecoder().decode(payload)) as { source: string; seq: number; hash: string; at: number };
  } catch {
    return null;
  }
}

/** What the links up to some point say the trail held. */
export interface Fold {
  readonly sources: Map<string, { seq: number; hash: string }>;
  readonly streams: Map<string, StreamCounters>;
}

export const streamKey = (source: string, stream: string): string => `${source}\u0000${stream}`;

export function emptyFold(): Fold {
  return { sources: new Map(), streams: new Map() };
}

export function foldLink(fold: Fold, claims: ChainClaims): void {
  for (const [source, seq, hash] of claims.sources) fold.sources.set(source, { seq, hash });
  // A counter only rises: a link that signed a lower value (after an incident) lowers nothing here.
  for (const counters of claims.streams) {
    const key = streamKey(counters[0], counters[1]);
    const before = fold.streams.get(key);
    fold.streams.set(
      key,
      before === undefined
        ? counters
        : [
            counters[0],
            counters[1],
            Math.max(before[2], counters[2]),
            Math.max(before[3], counters[3]),
            Math.max(before[4], counters[4]),
            before[5] ?? counters[5],
            before[6],
            Math.max(before[7], counters[7]),
          ],
    );
  }
}

export function countersOf(row: AuditStream): StreamCounters {
  return [
    row.source,
    row.stream,
    row.lastStreamSeq,
    row.dropped,
    row.written,
    row.closedAt,
    row.firstSeen,
    row.lastSeen,
  ];
}

/** How `now` differs from `signed` in a way counters never may (they only rise; a close is final); null when it does not. */
export function counterRegression(signed: StreamCounters, now: StreamCounters): string | null {
  const names = ['', '', 'last position', 'dropped', 'written', 'closed at', 'first seen', 'last seen'];
  for (const index of [2, 3, 4, 7]) {
    if ((now[index] as number) < (signed[index] as number))
      return `${names[index]} went down from ${signed[index]} to ${now[index]}`;
  }
  if (now[6] !== signed[6]) return `first seen changed from ${signed[6]} to ${now[6]}`;
  if (signed[5] !== null && now[5] !== signed[5]) return `closed at changed from ${signed[5]} to ${now[5]}`;
  return null;
}

/** A stream as this process last appended to it. */
export interface WitnessedStream extends Omit<AuditAppend['stream'], 'gaps'> {
  readonly source: string;
  readonly stream: string;
  /** When this process last heard from the stream's sender. */
  readonly lastSeen: number;
}

/** What the witness holds at one moment (`snapshot`), to compare with the store. */
export interface WitnessSnapshot {
  /** Per source, every head this process appended (position → hash) since they were last settled. */
  readonly heads: ReadonlyMap<string, ReadonlyMap<number, string>>;
  readonly streams: ReadonlyMap<string, WitnessedStream>;
  /** Stream positions a sender delivered that were already taken by another text: [source, stream, position]. */
  readonly conflicts: readonly (readonly [string, string, number])[];
}

/**
 * What this process appended since the newest link: the checkpointer's live witness for the tail
 * not yet signed. Every head an append produced is kept (not only the newest: a later honest
 * append chains onto whatever the store holds, so only the earlier heads show a tail rewritten in
 * between), until a link covers it.
 */
export interface AppendWitness {
  snapshot(): WitnessSnapshot;
  /** Forgets what `snapshot` returned (a link now covers it). */
  settle(snapshot: WitnessSnapshot): void;
}

/** The most heads kept per source between two links; beyond it the oldest are forgotten. */
const WITNESS_HEADS = 10_000;

/** `store` with its appends witnessed: give the returned store to every writer of the trail. */
export function witnessAppends(store: ControlPlaneStore): { store: ControlPlaneStore; witness: AppendWitness } {
  const heads = new Map<string, Map<number, string>>();
  const streams = new Map<string, WitnessedStream>();
  let conflicts: (readonly [string, string, number])[] = [];
  const witnessed: ControlPlaneStore = {
    ...store,
    async appendAudit(source, batch, receivedAt) {
      const result = await store.appendAudit(source, batch, receivedAt);
      let own = heads.get(source);
      if (own === undefined) heads.set(source, (own = new Map()));
      if (result.accepted > 0) {
        // The head a batch was chained onto is kept as first seen: had the tail been rewritten since
        // this process appended it, the hash the store gave it now is not the one kept.
        if (!own.has(result.base.seq)) own.set(result.base.seq, result.base.hash);
        own.set(result.head.seq, result.head.hash);
        for (const seq of own.keys()) {
          if (own.size <= WITNESS_HEADS) break;
          own.delete(seq);
        }
      }
      // Appends of one stream may settle out of order: the witness keeps the furthest.
      const key = streamKey(source, batch.stream);
      const before = streams.get(key);
      const { lastStreamSeq, dropped, written, closedAt } =
        before !== undefined && before.lastStreamSeq > result.stream.lastStreamSeq ? before : result.stream;
      streams.set(key, {
        source,
        stream: batch.stream,
        lastStreamSeq,
        dropped,
        written,
        closedAt,
        lastSeen: Math.max(before?.lastSeen ?? 0, receivedAt),
      });
      for (const position of result.conflicts)
        if (conflicts.length < WITNESS_HEADS) conflicts.push([source, batch.stream, position]);
      return result;
    },
  };
  const witness: AppendWitness = {
    snapshot: () => ({
      heads: new Map([...heads].map(([source, own]) => [source, new Map(own)])),
      streams: new Map(streams),
      conflicts: [...conflicts],
    }),
    settle(taken) {
      for (const [source, own] of taken.heads) {
        const live = heads.get(source);
        for (const seq of own.keys()) live?.delete(seq);
      }
      conflicts = conflicts.filter((conflict) => !taken.conflicts.includes(conflict));
    },
  };
  return { store: witnessed, witness };
}

export interface Checkpointer {
  /** Signs a link now (the timer does it every interval); resolves to its claims. */
  checkpoint(): Promise<ChainClaims>;
  /** The newest link this checkpointer signed or found, or null. */
  newest(): AuditChainLink | null;
  /** Stops the timer and signs a last link of kind `stop` (once). */
  stop(): Promise<void>;
}

export interface CheckpointerOptions {
  readonly store: ControlPlaneStore;
  readonly keys: KeyRing;
  /** Default 60 s. */
  readonly intervalMs?: number;
  readonly now?: () => number;
  /** Where the newest signed link is remembered across restarts (beside the audit key). */
  readonly headFile?: string;
  readonly onError?: (error: Error) => void;
  /** Told of every incident, once, when it is signed. */
  readonly onIncident?: (incident: Incident) => void;
  /** What this process appended (witnessAppends): the tail after the newest link is checked against it. */
  readonly witness?: AppendWitness;
}

const PAGE = 1_000;
/** A live stream's last sight is signed again when it moved this far (keep-alives move it every 30 s). */
const LAST_SEEN_STEP_MS = 2 * 60_000;

/** Every `intervalMs`, one signed link; the first right away (kind `start`). */
export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const { store } = options;
  const now = options.now ?? Date.now;
  const every = options.intervalMs ?? 60_000;
  const fold = emptyFold();
  let newest: AuditChainLink | null = null;
  let loaded = false;
  let started = false;
  let stopped: Promise<void> | null = null;
  /**
   * Conditions that last (a source or stream still gone, a counter still low) are found again at
   * every link: each is signed once. A rewrite or a cut is signed every time it happens: the link
   * signs the store as it is after it, so that the next one is judged from there.
   */
  const reported = new Set<string>();
  /** The digest of link 1: the trail's name in the head file. */
  let firstDigest: string | null = null;
  const LASTING: readonly Incident['kind'][] = ['source-deleted', 'stream-deleted', 'counter-lowered'];
  const incidentKey = (incident: Incident) => `${incident.kind}\u0000${incident.detail}`;
  const alreadySigned = (incident: Incident) => LASTING.includes(incident.kind) && reported.has(incidentKey(incident));

  async function load(): Promise<void> {
    fold.sources.clear();
    fold.streams.clear();
    firstDigest = null;
    reported.clear();
    newest = null;
    for (let after = 0; ;) {
      const page = await store.auditLinks(after, PAGE);
      if (page.length === 0) break;
      for (const link of page) {
        const claims = decodedLink(link.jws);
        if (link.n === 1) firstDigest = linkDigest(link.jws);
        foldLink(fold, claims);
        for (const incident of claims.incidents) reported.add(incidentKey(incident));
        newest = link;
      }
      after = (page[page.length - 1] as AuditChainLink).n;
    }
    loaded = true;
  }

  function readHead(): { n: number; digest: string } | null {
    if (options.headFile === undefined) return null;
    try {
      const head = JSON.parse(readFileSync(options.headFile, 'utf8')) as { n?: unknown; digest?: unknown };
      return typeof head.n === 'number' && typeof head.digest === 'string' ? { n: head.n, digest: head.digest } : null;
    } catch {
      return null;
    }
  }

  function writeHead(link: AuditChainLink): void {
    if (options.headFile === undefined) return;
    mkdirSync(dirname(options.headFile), { recursive: true, mode: 0o700 });
    const temporary = `${options.headFile}.${process.pid}.tmp`;
    // `chain`: the digest of link 1, which names the trail (a head file of another trail is not compared).
    writeFileSync(
      temporary,
      `${JSON.stringify({ n: link.n, digest: linkDigest(link.jws), at: link.at, chain: firstDigest })}\n`,
      { mode: 0o600, flush: true },
    );
    renameSync(temporary, options.headFile);
  }

  /** Whether the store still holds what the head file says this monitor signed last. */
  async function rollbackSince(head: { n: number; digest: string }): Promise<Incident | null> {
    const [link] = await store.auditLinks(head.n - 1, 1);
    const newestN = newest?.n ?? 0;
    if (link?.n === head.n && linkDigest(link.jws) === head.digest) return null;
    const detail =
      link?.n === head.n
        ? `link ${head.n} in the store is not the one this monitor signed: the checkpoint chain was replaced`
        : `this monitor signed link ${head.n} before it stopped; the store's chain ends at ${newestN}: links ${newestN + 1}–${head.n} were deleted (the trail was rolled back)`;
    return { kind: 'rolled-back', detail };
  }

  /**
   * What changed since the newest link, and what must not have: a signed head cut or rewritten, a
   * head this process appended no longer in the store, a counter lowered, a position taken by a
   * forged event. Each is an incident; the link then signs the store as it is now (the incident
   * stays in the chain), so that what comes later is judged from there and signed again.
   */
  async function compare(
    incidents: Incident[],
    seen: WitnessSnapshot | null,
    at: number,
  ): Promise<{ sources: SourceHead[]; streams: StreamCounters[] }> {
    // The witness first: whatever it holds, the store held already when it is read below.
    const heads = new Map((await store.auditHeads()).map((head) => [head.source, head]));
    for (const [source, signed] of fold.sources) {
      const head = heads.get(source);
      if (head === undefined) {
        incidents.push({
          kind: 'source-deleted',
          source,
          detail: `every event of ${source} is gone; ${signed.seq} were signed`,
        });
      } else if (head.seq < signed.seq) {
        incidents.push({
          kind: 'truncated',
          source,
          detail: `${source} holds ${head.seq} events; ${signed.seq} were signed: events ${head.seq + 1}–${signed.seq} were deleted`,
        });
      } else if ((await store.auditHashesAt(source, [signed.seq])).get(signed.seq) !== signed.hash) {
        incidents.push({
          kind: 'rewritten',
          source,
          detail: `the chain of ${source} up to event ${signed.seq} differs from what was signed: it was rewritten`,
        });
      }
    }
    // The tail not yet signed: is every head this process appended still there, unchanged?
    for (const [source, appended] of seen?.heads ?? []) {
      if (appended.size === 0 || incidents.some((incident) => incident.source === source)) continue;
      const stored = await store.auditHashesAt(
        source,
        [...appended.keys()].filter((seq) => seq > 0),
      );
      const missing = [...appended.keys()].filter((seq) => seq > 0 && !stored.has(seq));
      const changed = [...appended]
        .filter(([seq, hash]) => seq > 0 && stored.has(seq) && stored.get(seq) !== hash)
        .map(([seq]) => seq);
      if (missing.length > 0) {
        incidents.push({
          kind: 'truncated',
          source,
          detail: `${source} holds ${heads.get(source)?.seq ?? 0} events; this monitor appended up to ${Math.max(...missing)}: events were deleted before they were checkpointed`,
        });
      } else if (changed.length > 0) {
        incidents.push({
          kind: 'rewritten',
          source,
          detail: `the chain of ${source} up to event ${Math.min(...changed)} is not what this monitor appended: it was rewritten before it was checkpointed`,
        });
      }
    }
    // One incident per stream and link, however many positions: a sender cannot flood the chain.
    const taken = new Map<string, { source: string; stream: string; positions: number[] }>();
    for (const [source, stream, position] of seen?.conflicts ?? []) {
      const entry = taken.get(streamKey(source, stream)) ?? { source, stream, positions: [] };
      entry.positions.push(position);
      taken.set(streamKey(source, stream), entry);
    }
    for (const { source, stream, positions } of taken.values()) {
      const span =
        positions.length === 1
          ? `position ${positions[0]}`
          : `${positions.length} positions (${Math.min(...positions)}–${Math.max(...positions)})`;
      incidents.push({
        kind: 'forged-event',
        source,
        stream,
        detail: `stream ${stream} of ${source}: the sender delivered ${span} that the store already held with other events, so its own could not be stored (events were forged in the store, or the sender re-sent them changed)`,
      });
    }
    const sources: SourceHead[] = [];
    for (const [source, head] of heads) {
      const signed = fold.sources.get(source);
      if (signed?.seq !== head.seq || signed.hash !== head.hash) sources.push([source, head.seq, head.hash]);
    }

    const rows = new Map(
      (await store.auditStreams()).map((row) => [streamKey(row.source, row.stream), countersOf(row)]),
    );
    for (const [key, signed] of fold.streams) {
      if (!rows.has(key))
        incidents.push({
          kind: 'stream-deleted',
          source: signed[0],
          stream: signed[1],
          detail: `the bookkeeping of stream ${signed[1]} of ${signed[0]} is gone`,
        });
    }
    for (const [key, witnessed] of seen?.streams ?? []) {
      const row = rows.get(key);
      const { source, stream } = witnessed;
      const lowered =
        row === undefined
          ? 'its bookkeeping is gone'
          : row[2] < witnessed.lastStreamSeq || row[3] < witnessed.dropped || row[4] < witnessed.written
            ? `its counters went down from last ${witnessed.lastStreamSeq}, dropped ${witnessed.dropped}, written ${witnessed.written} (as appended) to ${row[2]}, ${row[3]}, ${row[4]}`
            : witnessed.closedAt !== null && row[5] !== witnessed.closedAt
              ? 'its close was undone'
              : null;
      if (lowered !== null)
        incidents.push({
          kind: 'counter-lowered',
          source,
          stream,
          detail: `stream ${stream} of ${source}: ${lowered} since it was appended`,
        });
      // When the sender was last heard of is what this process (or a replica, as signed) saw, not
      // what the store says: a dead stream must not be kept alive by a moved column.
      const heard = Math.max(witnessed.lastSeen, fold.streams.get(key)?.[7] ?? 0);
      if (row !== undefined && row[7] > heard)
        rows.set(key, [row[0], row[1], row[2], row[3], row[4], row[5], row[6], heard]);
    }
    for (const [key, row] of rows) {
      if (seen?.streams.has(key) === true) continue;
      // A stream this process did not hear from: its last sight stays as signed (a replica that
      // hears it signs it), or, new, no later than now. The store's column alone keeps nothing alive.
      const signed = fold.streams.get(key);
      const heard = signed === undefined ? Math.min(row[7], at) : signed[7];
      if (row[7] !== heard) rows.set(key, [row[0], row[1], row[2], row[3], row[4], row[5], row[6], heard]);
    }
    const streams: StreamCounters[] = [];
    for (const [key, counters] of rows) {
      const signed = fold.streams.get(key);
      const regression = signed === undefined ? null : counterRegression(signed, counters);
      if (regression !== null) {
        incidents.push({
          kind: 'counter-lowered',
          source: counters[0],
          stream: counters[1],
          detail: `stream ${counters[1]} of ${counters[0]}: ${regression}`,
        });
      }
      // A live stream's last sight moves with every keep-alive: signed again only every LAST_SEEN_STEP_MS.
      const moved =
        signed === undefined ||
        counters.some((value, index) => index !== 7 && value !== signed[index]) ||
        counters[7] - signed[7] >= LAST_SEEN_STEP_MS;
      if (regression === null && moved) streams.push(counters);
    }
    return { sources, streams };
  }

  async function sign(kind: ChainClaims['kind'], attempt = 1): Promise<ChainClaims> {
    if (!loaded) await load();
    const seen = options.witness?.snapshot() ?? null;
    const found: Incident[] = [];
    let resumed: { n: number; digest: string } | null = null;
    if (kind === 'start') {
      const head = readHead();
      resumed = head;
      if (head !== null) {
        const rollback = await rollbackSince(head);
        if (rollback !== null) found.push(rollback);
      }
    }
    const at = Math.max(now(), newest?.at ?? 0);
    const changes = await compare(found, seen, at);
    // Something found again at the next link (a source still gone, a counter still low) is signed once.
    const incidents = found.filter((incident) => !alreadySigned(incident));
    const n = (newest?.n ?? 0) + 1;
    const claims: ChainClaims = {
      v: 2,
      n,
      at,
      every,
      kind,
      prev: newest === null ? GENESIS : linkDigest(newest.jws),
      ...(kind === 'start' ? { resumed } : {}),
      ...(n === 1
        ? { legacy: (await store.auditLegacy()).map((entry) => [entry.source, entry.through] as const) }
        : {}),
      sources: changes.sources,
      streams: changes.streams,
      incidents,
    };
    const link = await signLink(options.keys, claims);
    try {
      await store.appendAuditLink(link);
    } catch (error) {
      // Another replica sharing the store signed this position first: its link stands. This one
      // folds the chain again and signs the next position, with what its own witness found.
      await load();
      const taken = newest as AuditChainLink | null;
      if (taken !== null && taken.n >= n && attempt < 10) return sign(kind, attempt + 1);
      throw error;
    }
    foldLink(fold, claims);
    newest = link;
    if (n === 1) firstDigest = linkDigest(link.jws);
    if (seen !== null) options.witness?.settle(seen);
    for (const incident of incidents) {
      reported.add(incidentKey(incident));
      options.onIncident?.(incident);
    }
    try {
      writeHead(link);
    } catch (error) {
      options.onError?.(
        new Error(
          `the audit head file ${options.headFile} cannot be written (${(error as Error).message}); a rollback of the store while the monitor is down will not be found at its next start`,
        ),
      );
    }
    return claims;
  }

  // One link at a time, in order.
  let queue: Promise<unknown> = Promise.resolve();
  const enqueue = (kind: ChainClaims['kind']): Promise<ChainClaims> => {
    const next = queue.then(() => sign(started ? kind : 'start'));
    started = true;
    queue = next.catch(() => {});
    return next;
  };
  enqueue('start').catch((error: Error) => options.onError?.(error));
  const timer = setInterval(() => void enqueue('tick').catch((error: Error) => options.onError?.(error)), every);
  timer.unref();

  return {
    checkpoint: () => enqueue('tick'),
    newest: () => newest,
    stop() {
      stopped ??= (async () => {
        clearInterval(timer);
        await enqueue('stop').catch((error: Error) =>
          options.onError?.(new Error(`the last audit checkpoint failed: ${error.message}`)),
        );
      })();
      return stopped;
    },
  };
}
