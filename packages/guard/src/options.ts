/**
 * Guard options: validated once at start-up, then frozen. A bad option refuses to start with a
 * message that says what to write instead. Unsafe switches (dry run) are explicit and logged loudly.
 */
import { GuardConfigError } from './errors.ts';
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS, isValidTrustDomain } from '@lockstep/identity';
import type { JsonWebKeySet } from './txn-keys.ts';

export interface SvidPem {
  /** PEM of the leaf certificate, optionally followed by intermediates. */
  cert: string;
  /** PEM of the private key (PKCS#8). */
  key: string;
}

/**
 * Static keys, or a JWKS URL fetched and refreshed: `url`, or `urls` — the same JWKS on each replica
 * of the control plane, asked in turn (the one that answered last first).
 */
export type TxnTokenKeyOptions =
  | { jwks: JsonWebKeySet }
  | { url: string; refreshSeconds?: number; cooldownSeconds?: number }
  | { urls: readonly string[]; refreshSeconds?: number; cooldownSeconds?: number };

/**
 * The monitor's collector: `url`, or `urls` — the collector on each replica of the control plane,
 * asked in turn.
 */
export type AuditCollectorOptions = ({ url: string } | { urls: readonly string[] }) & {
  spoolDir: string;
  maxSpoolBytes?: number;
};

export interface GuardLogger {
  info(message: string, fields?: object): void;
  warn(message: string, fields?: object): void;
  error(message: string, fields?: object): void;
}

export interface GuardOptions {
  /** This service's name: the Cedar resource `Lockstep::Service::"<service>"` and `/svc/<service>` of its SPIFFE ID. */
  service: string;
  trustDomain: string;
  /** PEM of the CA certificates that issue SVIDs (the trust bundle). */
  trustBundle: string;
  svid: SvidPem;
  txnTokenKeys: TxnTokenKeyOptions;
  policy: {
    /** Public keys (JWKS) that sign policy bundles. */
    keys: JsonWebKeySet;
    /** A signed bundle (compact JWS). Without one the guard answers 503 until `setPolicyBundle`. */
    bundle?: string;
  };
  /** `enforce` (default) or `dry-run`: would-be denials are let through and audited. Unsafe. */
  mode?: 'enforce' | 'dry-run';
  /**
   * Where decision events go: a JSON-lines file, and/or the monitor's collector over mTLS (batched,
   * compressed). The collector is fed from a file — `file` when there is one, else a journal in
   * `spoolDir` — from where its last acknowledged batch ended, so that an event on disk reaches the
   * monitor also after a crash. `spoolDir` belongs to one guard process (it is locked);
   * `maxSpoolBytes` (default 64 MiB) bounds the journal in `spoolDir`, never `file`, which Lockstep
   * does not delete or truncate.
   *
   * `writer`: where decision lines are encoded and written; either way a request only copies a few
   * numbers into a ring. `inline` (default): on the request thread, in batches in the event loop's
   * spare turns. `thread`: on a worker thread of the guard's own, which frees the event loop of the
   * encoding but costs ~17 MB and, measured on 2 cores, more CPU in all (docs/performance-notes.md).
   */
  audit?: { file?: string; collector?: AuditCollectorOptions; writer?: 'thread' | 'inline' };
  /** Prometheus metrics (`guard.metrics()`), counted from the start. Default false: no cost when unused. */
  metrics?: boolean;
  limits?: { bodyBytes?: number; headerBytes?: number; txnTokenBytes?: number };
  txnToken?: { maxLifetimeSeconds?: number; clockSkewSeconds?: number };
  /**
   * The X509-SVID leaf rules' one setting: the longest lifetime (notAfter − notBefore) of an SVID a
   * peer may present. Default 86 400 (24 h); it can only be lowered.
   */
  svidRules?: { maxLifetimeSeconds?: number };
  /**
   * The verified-token and decision caches, bounded in entries and in estimated bytes (each entry
   * charged for its text at 2 bytes a character plus what it holds besides). Defaults: 10,000 entries
   * each, 8 MiB of tokens (about 2,800 tokens of 600 characters), 4 MiB of decisions.
   */
  cache?: { tokens?: number; decisions?: number; tokenBytes?: number; decisionBytes?: number };
  logger?: GuardLogger;
}

export interface ResolvedOptions {
  readonly service: string;
  readonly trustDomain: string;
  readonly trustBundle: string;
  readonly svid: Readonly<SvidPem>;
  readonly txnTokenKeys: Readonly<TxnTokenKeyOptions>;
  readonly policy: { readonly keys: JsonWebKeySet; readonly bundle: string | undefined };
  readonly mode: 'enforce' | 'dry-run';
  readonly auditFile: string | undefined;
  readonly auditWriter: 'thread' | 'inline';
  readonly metrics: boolean;
  readonly auditCollector:
    | { readonly urls: readonly string[]; readonly spoolDir: string; readonly maxSpoolBytes: number | undefined }
    | undefined;
  readonly limits: { readonly bodyBytes: number; readonly headerBytes: number; readonly txnTokenBytes: number };
  readonly txnToken: { readonly maxLifetimeSeconds: number; readonly clockSkewSeconds: number };
  readonly svidRules: { readonly maxLifetimeSeconds: number };
  readonly cache: {
    readonly tokens: number;
    readonly decisions: number;
    readonly tokenBytes: number;
    readonly decisionBytes: number;
  };
  readonly logger: GuardLogger;
}

const SERVICE = /^[A-Za-z0-9._-]{1,128}$/;
const MAX_SVID = DEFAULT_MAX_SVID_LIFETIME_SECONDS;
const KNOWN = [
  'service',
  'trustDomain',
  'trustBundle',
  'svid',
  'txnTokenKeys',
  'policy',
  'mode',
  'audit',
  'metrics',
  'limits',
  'txnToken',
  'svidRules',
  'cache',
  'logger',
];

function fail(message: string): never {
  throw new GuardConfigError(`Lockstep guard: ${message}`);
}

function isPem(value: unknown, label: RegExp): value is string {
  return typeof value === 'string' && label.test(value);
}

function positiveInteger(value: unknown, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    fail(`${name} must be an integer between 1 and ${max}, e.g. ${fallback}`);
  return value;
}

/** Refuses a non-object or an unknown member of a nested option (a typo must not silently keep a default). */
function knownKeys(value: unknown, name: string, known: readonly string[]): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(`${name} must be an object with ${known.join(', ')}`);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) fail(`unknown option "${name}.${key}"; known: ${known.join(', ')}`);
  }
}

function frozenJwks(value: unknown, name: string): JsonWebKeySet {
  if (typeof value !== 'object' || value === null || !Array.isArray((value as JsonWebKeySet).keys))
    fail(`${name} must be a JWKS: { keys: [ { kty, crv, x, y, kid, … } ] }`);
  const keys = (value as JsonWebKeySet).keys.map((key) => Object.freeze(structuredClone(key)));
  return Object.freeze({ keys: Object.freeze(keys) as JsonWebKeySet['keys'] });
}

/** A list of URLs: an array of at least one string. */
function urlList(value: unknown, name: string, example: string): unknown[] {
  if (!Array.isArray(value) || value.length === 0)
    fail(`${name} must be a list of one or more https URLs, e.g. ["${example}"]`);
  return value as unknown[];
}

/** An https URL, as its href; `why` says what the clear would risk. */
function httpsUrl(value: unknown, name: string, why: string): string {
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    fail(`${name} is not a URL: ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'https:') fail(`${name} must use https (got ${url.protocol}); ${why}`);
  return url.href;
}

/** The collector's URL, as given (events travel over mTLS). */
function collectorUrl(value: unknown, name: string): string {
  let url: URL | null = null;
  try {
    url = new URL(value as string);
  } catch {
    fail(`${name} is not a URL: ${JSON.stringify(value)}`);
  }
  if (url?.protocol !== 'https:') fail(`${name} must use https (events travel over mTLS)`);
  return value as string;
}

export const consoleLogger: GuardLogger = {
  info: (message, fields) => console.error(JSON.stringify({ level: 'info', msg: message, ...fields })),
  warn: (message, fields) => console.error(JSON.stringify({ level: 'warn', msg: message, ...fields })),
  error: (message, fields) => console.error(JSON.stringify({ level: 'error', msg: message, ...fields })),
};

export function resolveOptions(input: GuardOptions): ResolvedOptions {
  if (typeof input !== 'object' || input === null)
    fail('options must be an object: createGuard({ service, trustDomain, trustBundle, svid, txnTokenKeys, policy })');
  for (const key of Object.keys(input))
    if (!KNOWN.includes(key)) fail(`unknown option "${key}"; known options are ${KNOWN.join(', ')}`);
  if (typeof input.service !== 'string' || !SERVICE.test(input.service))
    fail(
      `service must be the service name used in its SPIFFE ID (letters, digits, . _ -), e.g. service: 'orders'; got ${JSON.stringify(input.service)}`,
    );
  if (typeof input.trustDomain !== 'string' || !isValidTrustDomain(input.trustDomain))
    fail(
      `trustDomain must be a lower-case trust domain name without scheme, e.g. trustDomain: 'shop.example'; got ${JSON.stringify(input.trustDomain)}`,
    );
  if (!isPem(input.trustBundle, /-----BEGIN CERTIFICATE-----/))
    fail(
      'trustBundle must be the PEM text of the CA certificate(s), e.g. trustBundle: readFileSync("bundle.pem", "utf8")',
    );
  if (
    typeof input.svid !== 'object' ||
    input.svid === null ||
    !isPem(input.svid.cert, /-----BEGIN CERTIFICATE-----/) ||
    !isPem(input.svid.key, /-----BEGIN (EC |)PRIVATE KEY-----/)
  ) {
    fail('svid must be { cert: <PEM certificate chain>, key: <PEM private key> } — the X.509-SVID of this service');
  }
  const keys = input.txnTokenKeys as Record<string, unknown> | undefined;
  const given = typeof keys === 'object' && keys !== null ? ['jwks', 'url', 'urls'].filter((key) => key in keys) : [];
  if (keys === undefined || given.length !== 1) {
    fail(
      'txnTokenKeys must be either { jwks: { keys: [...] } } (static public keys) or { url: "https://…/jwks" } ' +
        '(fetched, last known good kept), or { urls: [...] } (the same JWKS on each replica of the control plane)',
    );
  }
  let txnTokenKeys: TxnTokenKeyOptions;
  if (given[0] !== 'jwks') {
    const clear = 'keys fetched in the clear could be replaced by anyone on the path';
    let source: { url: string } | { urls: readonly string[] };
    if (given[0] === 'url') {
      knownKeys(keys, 'txnTokenKeys', ['url', 'refreshSeconds', 'cooldownSeconds']);
      source = { url: httpsUrl(keys.url, 'txnTokenKeys.url', clear) };
    } else {
      knownKeys(keys, 'txnTokenKeys', ['urls', 'refreshSeconds', 'cooldownSeconds']);
      const example = 'https://control-plane:8443/v1/txn-token/jwks.json';
      const urls = urlList(keys.urls, 'txnTokenKeys.urls', example);
      source = { urls: Object.freeze(urls.map((url, index) => httpsUrl(url, `txnTokenKeys.urls[${index}]`, clear))) };
    }
    txnTokenKeys = Object.freeze({
      ...source,
      refreshSeconds: positiveInteger(keys.refreshSeconds, 'txnTokenKeys.refreshSeconds', 300, 86_400),
      cooldownSeconds: positiveInteger(keys.cooldownSeconds, 'txnTokenKeys.cooldownSeconds', 10, 3_600),
    });
  } else {
    knownKeys(keys, 'txnTokenKeys', ['jwks']);
    txnTokenKeys = Object.freeze({ jwks: frozenJwks(keys.jwks, 'txnTokenKeys.jwks') });
  }
  if (
    typeof input.policy !== 'object' ||
    input.policy === null ||
    typeof input.policy.keys !== 'object' ||
    input.policy.keys === null ||
    !Array.isArray(input.policy.keys.keys)
  ) {
    fail('policy must be { keys: <JWKS of the policy signing keys>, bundle?: <signed bundle JWS> }');
  }
  knownKeys(input.policy, 'policy', ['keys', 'bundle']);
  if (input.policy.bundle !== undefined && typeof input.policy.bundle !== 'string')
    fail('policy.bundle must be the compact JWS text of a signed policy bundle');
  const mode = input.mode ?? 'enforce';
  if (mode !== 'enforce' && mode !== 'dry-run')
    fail(`mode must be 'enforce' or 'dry-run'; got ${JSON.stringify(mode)}`);
  if (input.metrics !== undefined && typeof input.metrics !== 'boolean') fail('metrics must be true or false');
  knownKeys(input.audit, 'audit', ['file', 'collector', 'writer']);
  const auditWriter = input.audit?.writer ?? 'inline';
  if (auditWriter !== 'thread' && auditWriter !== 'inline')
    fail(
      `audit.writer must be 'inline' (the default) or 'thread' (a worker thread); got ${JSON.stringify(auditWriter)}`,
    );
  const collector = input.audit?.collector as (Record<string, unknown> & { spoolDir?: unknown }) | undefined;
  let collectorUrls: readonly string[] = [];
  if (collector !== undefined) {
    if (typeof collector !== 'object' || collector === null)
      fail('audit.collector must be { url: "https://…/v1/audit/events", spoolDir: "<directory>" }');
    knownKeys(collector, 'audit.collector', ['url', 'urls', 'spoolDir', 'maxSpoolBytes']);
    if ('url' in collector === 'urls' in collector)
      fail(
        'audit.collector must have either url: "https://…/v1/audit/events" or urls: [...] (the collector on each ' +
          'replica of the control plane)',
      );
    collectorUrls =
      'url' in collector
        ? [collectorUrl(collector.url, 'audit.collector.url')]
        : urlList(collector.urls, 'audit.collector.urls', 'https://control-plane:8443/v1/audit/events').map(
            (url, index) => collectorUrl(url, `audit.collector.urls[${index}]`),
          );
    if (typeof collector.spoolDir !== 'string' || collector.spoolDir === '')
      fail("audit.collector.spoolDir must be a directory of this guard's own, where shipping resumes after a restart");
    if (
      collector.maxSpoolBytes !== undefined &&
      (!Number.isSafeInteger(collector.maxSpoolBytes) || (collector.maxSpoolBytes as number) < 1024)
    )
      fail('audit.collector.maxSpoolBytes must be a whole number of bytes ≥ 1024');
  }
  knownKeys(input.limits, 'limits', ['bodyBytes', 'headerBytes', 'txnTokenBytes']);
  knownKeys(input.txnToken, 'txnToken', ['maxLifetimeSeconds', 'clockSkewSeconds']);
  knownKeys(input.svidRules, 'svidRules', ['maxLifetimeSeconds']);
  knownKeys(input.cache, 'cache', ['tokens', 'decisions', 'tokenBytes', 'decisionBytes']);
  if (input.audit?.file !== undefined && typeof input.audit.file !== 'string')
    fail('audit.file must be a path for the JSON-lines audit log');
  const txnToken = {
    maxLifetimeSeconds: positiveInteger(input.txnToken?.maxLifetimeSeconds, 'txnToken.maxLifetimeSeconds', 300, 300),
    clockSkewSeconds: positiveInteger(input.txnToken?.clockSkewSeconds, 'txnToken.clockSkewSeconds', 30, 30),
  };
  const resolved: ResolvedOptions = {
    service: input.service,
    trustDomain: input.trustDomain,
    trustBundle: input.trustBundle,
    svid: Object.freeze({ cert: input.svid.cert, key: input.svid.key }),
    txnTokenKeys,
    // Copied and frozen: a caller mutating its own object later must not add a trusted key.
    policy: Object.freeze({ keys: frozenJwks(input.policy.keys, 'policy.keys'), bundle: input.policy.bundle }),
    mode,
    auditFile: input.audit?.file,
    auditWriter,
    metrics: input.metrics === true,
    auditCollector:
      collector === undefined
        ? undefined
        : Object.freeze({
            urls: Object.freeze([...collectorUrls]),
            spoolDir: collector.spoolDir as string,
            maxSpoolBytes: collector.maxSpoolBytes as number | undefined,
          }),
    limits: Object.freeze({
      bodyBytes: positiveInteger(input.limits?.bodyBytes, 'limits.bodyBytes', 1024 * 1024),
      headerBytes: positiveInteger(input.limits?.headerBytes, 'limits.headerBytes', 16 * 1024, 1024 * 1024),
      txnTokenBytes: positiveInteger(input.limits?.txnTokenBytes, 'limits.txnTokenBytes', 8 * 1024, 64 * 1024),
    }),
    txnToken: Object.freeze(txnToken),
    svidRules: Object.freeze({
      // 24 h is the ceiling as well as the default: a longer-lived SVID defeats rotation.
      maxLifetimeSeconds: positiveInteger(
        input.svidRules?.maxLifetimeSeconds,
        'svidRules.maxLifetimeSeconds',
        MAX_SVID,
        MAX_SVID,
      ),
    }),
    cache: Object.freeze({
      tokens: positiveInteger(input.cache?.tokens, 'cache.tokens', 10_000),
      decisions: positiveInteger(input.cache?.decisions, 'cache.decisions', 10_000),
      tokenBytes: positiveInteger(input.cache?.tokenBytes, 'cache.tokenBytes', 8 * 1024 * 1024),
      decisionBytes: positiveInteger(input.cache?.decisionBytes, 'cache.decisionBytes', 4 * 1024 * 1024),
    }),
    logger: input.logger ?? consoleLogger,
  };
  return Object.freeze(resolved);
}
