/**
 * One call to the control plane, asked of its replicas in turn (`ControlPlaneEndpoints.order()` of
 * @lockstep/identity) until one answers, within a bounded time.
 *
 * - No connection (refused, unreachable, connect timeout): the request was not sent, so the next
 *   replica is always asked.
 * - A failure after the request may have been sent (a reset, a timeout, 502/503/504, an answer that
 *   is not JSON: `isFailover`): the next replica is asked only when the request is `idempotent` —
 *   a join spends a one-time token, and sending it twice would answer "used" for a join that worked.
 * - An answer (a 4xx, a coded `LOCKSTEP_CP_…` refusal): it is the control plane's, and surfaces at once.
 *
 * The error that surfaces is the last attempt's, its class and code kept; when more than one replica
 * was asked, its message ends with the list of them and what each said.
 */
import { controlPlaneEndpoints, isFailover, type ControlPlaneEndpoints } from '@lockstep/identity';

/** Where the control plane is: one URL, a comma-separated list, a list, or a set shared with other calls. */
export type ControlPlaneUrls = string | readonly string[] | ControlPlaneEndpoints;

export interface FailoverOptions {
  /** Whether a request that may have reached a replica can be sent to another: a renewal yes, a join no. */
  readonly idempotent: boolean;
  /** The most all attempts take together. Default 10 s. */
  readonly deadlineMs?: number;
  /** The most one attempt takes. Default 5 s when there are several endpoints, else the deadline. */
  readonly attemptMs?: number;
  /** The caller's own end: it stops at once, and says nothing of the endpoint. */
  readonly signal?: AbortSignal;
  /**
   * Whether nothing was sent to `baseUrl` when its attempt failed with `error`, beyond a connection that
   * failed: a join fetches the bundle first, and sends its token only once the bundle matches its pin.
   */
  readonly sentNothing?: (error: unknown, baseUrl: string) => boolean;
}

const DEADLINE_MS = 10_000;
const ATTEMPT_MS = 5_000;
/**
 * Per connection, with several endpoints: a replica that does not complete TCP and TLS in this time is
 * left for the next. Longer than a round trip across regions, shorter than undici's 10 s; not the
 * design's 1 s, which a replica taking over a dead one's fleet (a handshake each) may well exceed.
 */
export const FAILOVER_CONNECT_TIMEOUT_MS = 2_000;

/** No connection was made: the request never left. */
const NOT_CONNECTED = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** The endpoint set of `urls`: the one given, or a new one. */
export function endpointsOf(urls: ControlPlaneUrls, spreadKey?: string): ControlPlaneEndpoints {
  if (typeof urls === 'object' && typeof (urls as Partial<ControlPlaneEndpoints>).order === 'function')
    return urls as ControlPlaneEndpoints;
  return controlPlaneEndpoints(urls as string | readonly string[], spreadKey === undefined ? {} : { spreadKey });
}

/** The connect timeout for a dispatcher to these endpoints: shorter when there is another to go to. */
export function connectTimeoutFor(endpoints: ControlPlaneEndpoints): { connectTimeoutMs?: number } {
  return endpoints.urls.length > 1 ? { connectTimeoutMs: FAILOVER_CONNECT_TIMEOUT_MS } : {};
}

/** `attempt(baseUrl, signal)` against each endpoint in turn, as the module's comment says. */
export async function withFailover<T>(
  endpoints: ControlPlaneEndpoints,
  attempt: (baseUrl: string, signal: AbortSignal) => Promise<T>,
  options: FailoverOptions,
): Promise<T> {
  const deadlineMs = options.deadlineMs ?? DEADLINE_MS;
  const attemptMs = options.attemptMs ?? (endpoints.urls.length > 1 ? ATTEMPT_MS : deadlineMs);
  const deadline = Date.now() + deadlineMs;
  const tried: { url: string; error: unknown }[] = [];
  let note = '';
  for (const base of endpoints.order()) {
    if (options.signal?.aborted) throw options.signal.reason;
    const left = deadline - Date.now();
    if (left <= 0 && tried.length > 0) {
      note = `; the deadline of ${deadlineMs} ms passed`;
      break;
    }
    const timeoutMs = Math.max(1, Math.min(attemptMs, left));
    const timer = new AbortController();
    const timeout = setTimeout(() => timer.abort(attemptTimeout(base, timeoutMs)), timeoutMs);
    const signal = options.signal === undefined ? timer.signal : AbortSignal.any([options.signal, timer.signal]);
    // Raced, not only signalled: undici sees an abort only once the connection is up (nodejs/undici#386),
    // so an attempt stuck connecting would otherwise hold the caller until undici's own connect timeout.
    // An abandoned attempt fails with the signal's reason (the timeout, or the caller's), not an error of its own.
    const abandon = abandoned(signal);
    try {
      const running = attempt(base, signal);
      running.catch(() => {}); // abandoned by the race: its end is no news
      const value = await Promise.race([running, abandon.promise]);
      endpoints.ok(base);
      return value;
    } catch (error) {
      if (options.signal?.aborted) throw error;
      tried.push({ url: base, error });
      const unsent = notConnected(error) || options.sentNothing?.(error, base) === true;
      const outage = timer.signal.aborted || isFailover(error);
      // An answer (a refusal) says the endpoint is up, and another would say the same: no mark, no next.
      if (unsent || outage) endpoints.failed(base);
      if (!unsent && !(outage && options.idempotent)) throw surfaced(error, tried, note);
    } finally {
      clearTimeout(timeout);
      abandon.stop();
    }
  }
  throw surfaced(tried.at(-1)?.error, tried, note);
}

/** The failure was making the connection: nothing was sent. */
function notConnected(error: unknown): boolean {
  for (let item = error, depth = 0; typeof item === 'object' && item !== null && depth < 5; depth += 1) {
    const { code, cause } = item as { code?: unknown; cause?: unknown };
    if (typeof code === 'string' && NOT_CONNECTED.has(code)) return true;
    item = cause;
  }
  return false;
}

/** An answer other than the one wanted, with its status, so that `isFailover` can judge it. */
export function unexpectedAnswer(message: string, status: number, cause?: unknown): Error & { status: number } {
  return Object.assign(new Error(message, cause === undefined ? {} : { cause }), { status });
}

/**
 * Rejects with the signal's reason once it aborts; `stop()` takes its listener off again. A signal that
 * depends on a long-lived caller's (`AbortSignal.any`) is kept alive while it has a listener: without
 * `stop()`, every call would leave one behind for as long as the caller's signal lives.
 */
function abandoned(signal: AbortSignal): { readonly promise: Promise<never>; stop(): void } {
  let stop = () => {};
  const promise = new Promise<never>((_resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    stop = () => signal.removeEventListener('abort', onAbort);
  });
  promise.catch(() => {}); // raced by the caller; a rejection after the race is no news
  return { promise, stop };
}

/** Why an attempt was abandoned: a timeout, which `isFailover` takes as an outage. */
function attemptTimeout(base: string, ms: number): Error {
  return Object.assign(new Error(`${base} gave no answer within ${ms} ms`), {
    name: 'TimeoutError',
    code: 'ETIMEDOUT',
  });
}

/** The last error, its message ending with the endpoints asked when there were several. */
function surfaced(error: unknown, tried: readonly { url: string; error: unknown }[], note: string): unknown {
  if (tried.length < 2 && note === '') return error;
  const earlier = tried.slice(0, -1).map(({ url, error: failure }) => `${url} (${shortReason(failure)})`);
  const last = tried.at(-1)?.url ?? '';
  const list = `tried ${[...earlier, earlier.length === 0 ? last : `then ${last}`].join(', ')}${note}`;
  if (error instanceof Error) {
    error.message = `${error.message} [${list}]`;
    return error;
  }
  return new Error(`${String(error)} [${list}]`, { cause: error });
}

function shortReason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.length > 160 ? `${text.slice(0, 157)}…` : text;
}
