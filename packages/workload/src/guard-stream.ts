/**
 * Keeps a guard in step with the control plane: subscribes to `/v1/stream` over mTLS with the
 * workload's SVID, hands every policy bundle to `guard.setPolicyBundle` (which verifies its signature
 * and never goes back to an older one), every revocation to `guard.revoke` and a changed trust
 * bundle (root rotation) to `guard.setTrustBundle`, and every lift (a revocation taken back: its own
 * `lift` event, which guards that predate lifts ignore) to `guard.lift`. Reconnects on its own
 * and resumes from the last revocation it saw; while the stream is down it also polls the ETag'd
 * bundle and the revocation list (or only polls, with `transport: 'poll'`). Fail-static: while the
 * control plane is away the guard keeps enforcing what it has.
 *
 * With several control-plane URLs (replicas), a stream that drops moves to the next replica at once
 * and resumes there from its position (feed positions are the same on every replica); polls ask the
 * replicas in turn (`event-stream.ts`, `failover.ts`).
 */
import type { RevocationKind } from '@lockstep/guard';
import { request } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { followEventStream } from './event-stream.ts';
import { connectTimeoutFor, endpointsOf, unexpectedAnswer, withFailover, type ControlPlaneUrls } from './failover.ts';
import { REVOCATION_LIFTS_HEADER } from './protocol.ts';

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
  /**
   * The stream (with `transport: 'poll'`, the last poll) failed, and why: a network error, the control
   * plane's refusal (`GET /v1/stream answered 401 …`, e.g. a revoked workload), the end of the stream, or
   * a silence. Reported again while down only when the reason changes.
   */
  | { readonly kind: 'disconnected'; readonly reason: string }
  | { readonly kind: 'policy'; readonly version: string }
  | { readonly kind: 'policy-refused'; readonly reason: string }
  /** The trust bundle changed (a root rotation step); the guard has it already. */
  | { readonly kind: 'trust-bundle'; readonly bundle: string }
  | { readonly kind: 'revocation'; readonly seq: number; readonly revocation: { kind: RevocationKind; value: string } }
  | { readonly kind: 'lift'; readonly seq: number; readonly revocation: { kind: RevocationKind; value: string } };

export interface GuardStreamOptions {
  /** The control plane: one URL, several (replicas, comma-separated or a list), or an endpoint set. */
  readonly url: ControlPlaneUrls;
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
/** The control plane pings every 15 s (stream-route.ts): three pings missed, the connection is taken as dead. */
const STREAM_SILENCE_MS = 45_000;

/** A revocation feed entry as the control plane sends it (`lifted` set when it was taken back). */
interface FeedEntry {
  readonly seq: number;
  readonly kind: RevocationKind;
  readonly value: string;
  readonly lifted?: unknown;
}

export function connectGuardStream(options: GuardStreamOptions): GuardStream {
  // Aborts the stream and the polls on close(), connections still being set up included.
  const stop = new AbortController();
  const endpoints = endpointsOf(options.url);
  const agent = controlPlaneAgent(options.trustDomain, options.tls, stop.signal, connectTimeoutFor(endpoints));
  const notify = options.onEvent ?? (() => {});
  const pollMs = options.pollMs ?? 5_000;
  let position = 0;
  let bundle = options.tls.ca;
  let etag: string | null = null;
  let connected = false;
  let downFor: string | null = null;
  let closed = false;
  const streaming = (options.transport ?? 'stream') === 'stream';

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
    if (
      !KINDS.has(entry.kind) ||
      typeof entry.value !== 'string' ||
      !Number.isSafeInteger(entry.seq) ||
      entry.seq <= position
    )
      return;
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
  const setConnected = (now: boolean, reason = '') => {
    if (now ? connected : !connected && reason === downFor) return;
    connected = now;
    downFor = now ? null : reason;
    notify(now ? { kind: 'connected' } : { kind: 'disconnected', reason });
  };

  // The fallback: plain GETs (ETag'd bundle, revocations since the last position), of each replica in turn.
  function pollOnce(): Promise<void> {
    return withFailover(endpoints, pollAt, { idempotent: true, signal: stop.signal });
  }
  async function pollAt(base: string, signal: AbortSignal): Promise<void> {
    const response = await request(new URL('/v1/policy/bundle', base), {
      dispatcher: agent,
      signal,
      headers: etag === null ? {} : { 'if-none-match': etag },
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    if (response.statusCode === 200) {
      const announced = (await response.body.json()) as { version: string; bundle: string };
      etag = typeof response.headers.etag === 'string' ? response.headers.etag : null;
      await applyPolicy(announced);
    } else {
      await response.body.dump();
      if (response.statusCode !== 304 && response.statusCode !== 503)
        throw unexpectedAnswer(`GET /v1/policy/bundle answered ${response.statusCode}`, response.statusCode);
    }
    const feed = await request(new URL(`/v1/revocations?since=${position}`, base), {
      dispatcher: agent,
      signal,
      headers: { [REVOCATION_LIFTS_HEADER]: '1' },
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    if (feed.statusCode !== 200) {
      await feed.body.dump();
      throw unexpectedAnswer(`GET /v1/revocations answered ${feed.statusCode}`, feed.statusCode);
    }
    for (const entry of ((await feed.body.json()) as { revocations: FeedEntry[] }).revocations) {
      applyFeedEntry(entry, entry.lifted === undefined || entry.lifted === null ? 'revocation' : 'lift');
    }
  }

  let timer: NodeJS.Timeout | null = null;
  const schedulePoll = (delayMs: number) => {
    if (closed || timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      // In stream mode, polls run only while the stream is down.
      if (streaming && connected) return;
      pollOnce()
        .then(
          () => {
            if (!streaming) setConnected(true);
          },
          (error: unknown) => {
            if (!streaming && !closed) setConnected(false, (error as Error).message);
          },
        )
        .finally(() => schedulePoll(pollMs));
    }, delayMs);
    timer.unref();
  };

  const apply = new Map<string, (data: unknown) => void>([
    ['policy', (data) => void applyPolicy(data as { version: string; bundle: string })],
    ['trust-bundle', (data) => applyTrustBundle((data as { bundle?: unknown }).bundle)],
    ['revocation', (data) => applyFeedEntry(data as FeedEntry, 'revocation')],
    ['lift', (data) => applyFeedEntry(data as FeedEntry, 'lift')],
  ]);
  const following = !streaming
    ? Promise.resolve()
    : followEventStream(endpoints, '/v1/stream', {
        dispatcher: agent,
        signal: stop.signal,
        silenceMs: STREAM_SILENCE_MS,
        // Event ids are feed positions (stream-route.ts): resuming from the last one applied, by the stream
        // or by a poll while it was down, replays nothing that is already applied.
        lastEventId: () => (position === 0 ? null : String(position)),
        onOpen: () => setConnected(true),
        onMessage: (message) => apply.get(message.event ?? 'message')?.(JSON.parse(message.data)),
        onDown: (reason) => {
          setConnected(false, reason);
          schedulePoll(pollMs);
        },
      });
  if (!streaming) schedulePoll(0);
  return {
    get position() {
      return position;
    },
    async close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      stop.abort();
      await following;
      await agent.close();
    },
  };
}
