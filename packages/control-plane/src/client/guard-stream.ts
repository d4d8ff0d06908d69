/**
 * Keeps a guard in step with the control plane: subscribes to `/v1/stream` over mTLS with the
 * workload's SVID, hands every policy bundle to `guard.setPolicyBundle` (which verifies its signature
 * and never goes back to an older one), every revocation to `guard.revoke` and a changed trust
 * bundle (root rotation) to `guard.setTrustBundle`, and every lift (a revocation taken back: its own
 * `lift` event, which guards that predate lifts ignore) to `guard.lift`. Reconnects on its own
 * and resumes from the last revocation it saw; while the stream is down it also polls the ETag'd
 * bundle and the revocation list (or only polls, with `transport: 'poll'`). Fail-static: while the
 * control plane is away the guard keeps enforcing what it has.
 */
import { EventSource, request } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import type { RevocationKind } from '../store/store.ts';

/** What the stream drives: a Lockstep guard, or anything with the same four methods. */
export interface StreamTarget {
  setPolicyBundle(jws: string): Promise<unknown>;
  revoke(revocation: { kind: RevocationKind; value: string }): void;
  /** A revocation taken back by an administrator (`lockstep revoke --lift`). */
  lift(revocation: { kind: RevocationKind; value: string }): void;
  setTrustBundle(pem: string): void;
}

export type StreamEvent =
  | { readonly kind: 'connected' }
  | { readonly kind: 'disconnected' }
  | { readonly kind: 'policy'; readonly version: string }
  | { readonly kind: 'policy-refused'; readonly reason: string }
  /** The trust bundle changed (a root rotation step); the guard has it already. */
  | { readonly kind: 'trust-bundle'; readonly bundle: string }
  | { readonly kind: 'revocation'; readonly seq: number; readonly revocation: { kind: RevocationKind; value: string } }
  | { readonly kind: 'lift'; readonly seq: number; readonly revocation: { kind: RevocationKind; value: string } };

export interface GuardStreamOptions {
  readonly url: string;
  readonly trustDomain: string;
  /** The workload's SVID chain and key, and the trust bundle. */
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly target: StreamTarget;
  readonly onEvent?: (event: StreamEvent) => void;
  /**
   * `stream` (default): server-sent events, with GETs every `pollMs` while the stream is down;
   * `poll`: GETs only, for networks that do not let a long-lived response through.
   */
  readonly transport?: 'stream' | 'poll';
  /** Default 5 s. */
  readonly pollMs?: number;
}

export interface GuardStream {
  /** The last revocation position applied. */
  readonly position: number;
  close(): Promise<void>;
}

const KINDS = new Set<RevocationKind>(['sub', 'txn', 'spiffeId', 'kid']);
/**
 * Asks `GET /v1/revocations` for lifted entries too. Without it the control plane leaves them out,
 * since a guard of the previous version would apply them as revocations.
 */
const LIFTS_HEADER = 'lockstep-revocation-lifts';

/** A revocation feed entry as the control plane sends it (`lifted` set when it was taken back). */
interface FeedEntry {
  readonly seq: number;
  readonly kind: RevocationKind;
  readonly value: string;
  readonly lifted?: unknown;
}

export function connectGuardStream(options: GuardStreamOptions): GuardStream {
  const agent = controlPlaneAgent(options.trustDomain, options.tls);
  const notify = options.onEvent ?? (() => {});
  const pollMs = options.pollMs ?? 5_000;
  let position = 0;
  let bundle = options.tls.ca;
  let etag: string | null = null;
  let connected = false;
  let closed = false;

  const applyPolicy = async (announced: { version: string; bundle: string }) => {
    try {
      await options.target.setPolicyBundle(announced.bundle);
      notify({ kind: 'policy', version: announced.version });
    } catch (error) {
      notify({ kind: 'policy-refused', reason: `${announced.version}: ${(error as Error).message}` });
    }
  };
  // Entries come only from the control plane (TLS pinned to the bundle, its SPIFFE ID checked); each
  // position is applied once, in order, so an old entry replayed cannot undo a newer lift or revocation.
  const applyFeedEntry = (entry: FeedEntry, as: 'revocation' | 'lift') => {
    if (!KINDS.has(entry.kind) || typeof entry.value !== 'string' || !Number.isSafeInteger(entry.seq) || entry.seq <= position) return;
    const revocation = { kind: entry.kind, value: entry.value };
    if (as === 'lift') options.target.lift(revocation);
    else options.target.revoke(revocation);
    position = entry.seq;
    notify({ kind: as, seq: entry.seq, revocation });
  };
  const applyTrustBundle = (pem: unknown) => {
    if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----') || pem === bundle) return;
    bundle = pem;
    options.target.setTrustBundle(pem);
    notify({ kind: 'trust-bundle', bundle: pem });
  };
  const setConnected = (now: boolean) => {
    if (now === connected) return;
    connected = now;
    notify({ kind: now ? 'connected' : 'disconnected' });
  };

  // The fallback: plain GETs (ETag'd bundle, revocations since the last position).
  async function pollOnce(): Promise<void> {
    const response = await request(new URL('/v1/policy/bundle', options.url), { dispatcher: agent, headers: etag === null ? {} : { 'if-none-match': etag }, headersTimeout: 10_000, bodyTimeout: 10_000 });
    if (response.statusCode === 200) {
      const announced = await response.body.json() as { version: string; bundle: string };
      etag = typeof response.headers.etag === 'string' ? response.headers.etag : null;
      await applyPolicy(announced);
    } else {
      await response.body.dump();
      if (response.statusCode !== 304 && response.statusCode !== 503) throw new Error(`GET /v1/policy/bundle answered ${response.statusCode}`);
    }
    const feed = await request(new URL(`/v1/revocations?since=${position}`, options.url), {
      dispatcher: agent, headers: { [LIFTS_HEADER]: '1' }, headersTimeout: 10_000, bodyTimeout: 10_000,
    });
    if (feed.statusCode !== 200) {
      await feed.body.dump();
      throw new Error(`GET /v1/revocations answered ${feed.statusCode}`);
    }
    for (const entry of (await feed.body.json() as { revocations: FeedEntry[] }).revocations) {
      applyFeedEntry(entry, entry.lifted === undefined || entry.lifted === null ? 'revocation' : 'lift');
    }
  }

  let timer: NodeJS.Timeout | null = null;
  const schedulePoll = (delayMs: number) => {
    if (closed || timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      // In stream mode, polls run only while the stream is down.
      if (source !== null && connected) return;
      pollOnce().then(() => { if (source === null) setConnected(true); }, () => { if (source === null) setConnected(false); }).finally(() => schedulePoll(pollMs));
    }, delayMs);
    timer.unref();
  };

  let source: EventSource | null = null;
  if ((options.transport ?? 'stream') === 'stream') {
    source = new EventSource(new URL('/v1/stream', options.url), { dispatcher: agent });
    source.onopen = () => setConnected(true);
    source.onerror = () => {
      setConnected(false);
      schedulePoll(pollMs);
    };
    source.addEventListener('policy', (message) => void applyPolicy(JSON.parse(String((message as MessageEvent).data)) as { version: string; bundle: string }));
    source.addEventListener('trust-bundle', (message) => applyTrustBundle((JSON.parse(String((message as MessageEvent).data)) as { bundle?: unknown }).bundle));
    const entryOf = (message: Event) => JSON.parse(String((message as MessageEvent).data)) as FeedEntry;
    source.addEventListener('revocation', (message) => applyFeedEntry(entryOf(message), 'revocation'));
    source.addEventListener('lift', (message) => applyFeedEntry(entryOf(message), 'lift'));
  } else {
    schedulePoll(0);
  }
  return {
    get position() {
      return position;
    },
    async close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      source?.close();
      await agent.close();
    },
  };
}
