/**
 * A control plane reached at several URLs (its replicas): which one to ask first, and whether a failure
 * is an outage — ask the next — or an answer, which another replica would give too. Every client of
 * the control plane asks here: the workload agent, its stream and heartbeat, the guard's key source
 * and audit sink.
 *
 * Any replica will do, because TLS checks the control plane's SPIFFE ID, never a host name. Nothing
 * is ever dropped from the order: when every replica failed, every one is still tried, those in
 * backoff last.
 */

export interface ControlPlaneEndpoints {
  /** Every URL, as given (trimmed, duplicates removed), in the order given. */
  readonly urls: readonly string[];
  /**
   * The order to try them in now: the one that answered last, then the others in the order given —
   * rotated by a hash of `spreadKey` — and those in backoff last, the one out of backoff soonest first.
   */
  order(): string[];
  /** `url` answered: it is tried first from now on, and leaves backoff. */
  ok(url: string): void;
  /** `url` gave no answer, or not the control plane's: backoff 1 s, doubling to 30 s, with jitter. */
  failed(url: string): void;
}

export interface ControlPlaneEndpointsOptions {
  /**
   * Rotates the list by a hash of this key (e.g. the instance's host name), so that a fleet given the
   * same list spreads over the replicas. Default: none, the list's own order.
   */
  readonly spreadKey?: string;
  /** The clock and the jitter, for tests. */
  readonly now?: () => number;
  readonly random?: () => number;
}

const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;

/**
 * The endpoints of `spec`: one URL, a comma-separated list, or an array of either. Only https URLs:
 * a control plane spoken to in the clear could be anyone. A TypeError says what to write instead.
 */
export function controlPlaneEndpoints(
  spec: string | readonly string[],
  options: ControlPlaneEndpointsOptions = {},
): ControlPlaneEndpoints {
  const urls = parseUrls(spec);
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const shift = options.spreadKey === undefined ? 0 : hash(options.spreadKey) % urls.length;
  const preferred = [...urls.slice(shift), ...urls.slice(0, shift)];
  const backoff = new Map<string, { failures: number; until: number }>();
  let lastGood: string | null = null;

  return {
    urls,
    order() {
      const at = now();
      const resting = (url: string) => (backoff.get(url)?.until ?? 0) > at;
      const ready = preferred.filter((url) => !resting(url));
      const waiting = preferred
        .filter(resting)
        .sort((a, b) => (backoff.get(a)?.until ?? 0) - (backoff.get(b)?.until ?? 0));
      const first = lastGood !== null && ready.includes(lastGood) ? [lastGood] : [];
      return [...first, ...ready.filter((url) => url !== lastGood), ...waiting];
    },
    ok(url) {
      if (!urls.includes(url)) return;
      backoff.delete(url);
      lastGood = url;
    },
    failed(url) {
      if (!urls.includes(url)) return;
      const failures = (backoff.get(url)?.failures ?? 0) + 1;
      const delay = Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (failures - 1));
      backoff.set(url, { failures, until: now() + delay / 2 + (random() * delay) / 2 });
      if (lastGood === url) lastGood = null;
    },
  };
}

function parseUrls(spec: string | readonly string[]): string[] {
  const given = typeof spec === 'string' ? [spec] : Array.isArray(spec) ? (spec as readonly unknown[]) : null;
  if (given === null || !given.every((item) => typeof item === 'string')) {
    throw new TypeError(
      'the control plane URL must be a string or a list of strings, e.g. "https://cp-0:8443,https://cp-1:8443" ' +
        `or ["https://cp-0:8443", "https://cp-1:8443"]; got ${JSON.stringify(spec)}`,
    );
  }
  const urls: string[] = [];
  const seen = new Set<string>();
  for (const item of (given as string[]).flatMap((text) => text.split(','))) {
    const text = item.trim();
    if (text === '') continue;
    const url = URL.parse(text);
    if (url === null) throw new TypeError(`${JSON.stringify(text)} is not a URL: write the control plane's https URL`);
    if (url.protocol !== 'https:') {
      throw new TypeError(
        `the control plane URL must use https, e.g. https://${url.host || 'control-plane:8443'}; got ${JSON.stringify(text)}`,
      );
    }
    if (seen.has(url.href)) continue;
    seen.add(url.href);
    urls.push(text);
  }
  if (urls.length === 0)
    throw new TypeError(`no control plane URL in ${JSON.stringify(spec)}: give one, e.g. "https://control-plane:8443"`);
  return urls;
}

/** FNV-1a, 32 bits: the same rotation for the same key in every process. */
function hash(key: string): number {
  let value = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(key)) value = Math.imul(value ^ byte, 0x01000193) >>> 0;
  return value;
}

/** No connection, or one that broke or timed out: another replica may answer. */
const OUTAGE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ETIMEDOUT',
  'EPIPE',
  // A replica's own name that no longer resolves (a stopped pod's DNS record is removed).
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
]);
/** A gateway's or a replica's "not now": never a verdict on the caller. */
const OUTAGE_STATUS = new Set([502, 503, 504]);
const CONTROL_PLANE_CODE = /^LOCKSTEP_CP_[A-Z_]+$/;

/**
 * Whether another replica should be asked after this: an HTTP status, or an error — with its
 * `status` (or `statusCode`) when the control plane answered, and its `cause`s.
 *
 * True for no connection, a reset or a timeout (ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH,
 * ETIMEDOUT, EPIPE, ENOTFOUND, UND_ERR_CONNECT_TIMEOUT, UND_ERR_SOCKET, UND_ERR_HEADERS_TIMEOUT,
 * "socket hang up"), for 502, 503 and 504 (also a coded one: a replica starting, or cut from its
 * store), and for an answer that is not JSON (a `SyntaxError` from reading it, itself or as the cause).
 * Never for a 4xx or another coded `LOCKSTEP_CP_…` refusal: a revocation is an answer, not an outage.
 */
export function isFailover(errorOrStatus: unknown): boolean {
  if (typeof errorOrStatus === 'number') return OUTAGE_STATUS.has(errorOrStatus);
  const status = statusIn(errorOrStatus);
  if (status !== null) {
    if (status >= 400 && status < 500) return false;
    if (OUTAGE_STATUS.has(status)) return true;
  }
  const chain = causes(errorOrStatus);
  const coded = (item: Record<string, unknown>) =>
    [item.code, item.error].some((value) => typeof value === 'string' && CONTROL_PLANE_CODE.test(value));
  if (chain.some(coded)) return false;
  return chain.some(
    (item) =>
      (typeof item.code === 'string' && OUTAGE_CODES.has(item.code)) ||
      item instanceof SyntaxError ||
      (typeof item.message === 'string' && item.message.includes('socket hang up')),
  );
}

function statusIn(error: unknown): number | null {
  if (typeof error !== 'object' || error === null) return null;
  const { status, statusCode } = error as { status?: unknown; statusCode?: unknown };
  if (typeof status === 'number') return status;
  return typeof statusCode === 'number' ? statusCode : null;
}

/** The error, its causes and the errors it aggregates (a connection tried at several addresses), a few deep. */
function causes(error: unknown): Record<string, unknown>[] {
  const found: Record<string, unknown>[] = [];
  const visit = (item: unknown, depth: number) => {
    if (typeof item !== 'object' || item === null || depth > 4 || found.includes(item as Record<string, unknown>))
      return;
    found.push(item as Record<string, unknown>);
    visit((item as { cause?: unknown }).cause, depth + 1);
    const { errors } = item as { errors?: unknown };
    if (Array.isArray(errors)) for (const each of errors as unknown[]) visit(each, depth + 1);
  };
  visit(error, 0);
  return found;
}
