/**
 * Txn-Token verification keys: a static JWKS, or a JWKS URL refreshed in the background with the
 * last known good set kept when a refresh fails (a control-plane outage must not stop verification
 * with keys we already trust). Only ES256 public keys (EC P-256) with a `kid` are ever accepted.
 * With several URLs (the control plane's replicas) each fetch asks them in turn.
 */
import type { webcrypto } from 'node:crypto';
import { controlPlaneEndpoints } from '@lockstep/identity';
import { importJWK, type JWK } from 'jose';
import { request, type Dispatcher } from 'undici';
import { GuardConfigError } from './errors.ts';

export type VerificationKey = webcrypto.CryptoKey;

export interface TxnKeySource {
  /** The key for `kid`, or undefined. Synchronous: the hot path never waits on the network. */
  get(kid: string): VerificationKey | undefined;
  /** Fetch again now (rate limited); resolves when done. Static sources resolve at once. */
  refresh(): Promise<void>;
  /** Every key id currently trusted. */
  kids(): string[];
  close(): void;
  /** The connection pool a remote source fetches with (closed by the guard). */
  readonly dispatcher?: Dispatcher;
}

export interface JsonWebKeySet {
  keys: JWK[];
}

export async function importKeySet(jwks: unknown, origin: string): Promise<Map<string, VerificationKey>> {
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray((jwks as JsonWebKeySet).keys)) {
    throw new GuardConfigError(`${origin}: expected a JWKS object { "keys": [ … ] }`);
  }
  const keys = new Map<string, VerificationKey>();
  for (const jwk of (jwks as JsonWebKeySet).keys) {
    if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') continue;
    if (jwk.alg !== undefined && jwk.alg !== 'ES256') continue;
    if (jwk.use !== undefined && jwk.use !== 'sig') continue;
    if (typeof jwk.kid !== 'string' || jwk.kid === '') {
      throw new GuardConfigError(`${origin}: every Txn-Token verification key needs a "kid"`);
    }
    if ('d' in jwk) {
      throw new GuardConfigError(
        `${origin}: key ${jwk.kid} contains a private part ("d"); give the guard public keys only`,
      );
    }
    keys.set(jwk.kid, (await importJWK({ ...jwk, alg: 'ES256' }, 'ES256')) as VerificationKey);
  }
  return keys;
}

export async function createStaticKeySource(jwks: unknown): Promise<TxnKeySource> {
  const keys = await importKeySet(jwks, 'txnTokenKeys.jwks');
  if (keys.size === 0)
    throw new GuardConfigError(
      'txnTokenKeys.jwks holds no ES256 (EC P-256) key: add the Txn-Token Service public keys',
    );
  return { get: (kid) => keys.get(kid), refresh: async () => {}, kids: () => [...keys.keys()], close() {} };
}

export interface RemoteKeyOptions {
  /** The JWKS URL; or `urls`, the same JWKS on each replica of the control plane. One of the two. */
  url?: string;
  /** Asked in turn, the one that answered last first: the set fails only when every URL does. */
  urls?: readonly string[];
  dispatcher?: Dispatcher;
  refreshSeconds: number;
  /** Minimum seconds between two fetches triggered by unknown `kid`s. */
  cooldownSeconds: number;
  onError?: (error: Error) => void;
}

export async function createRemoteKeySource(options: RemoteKeyOptions): Promise<TxnKeySource> {
  const single = options.urls === undefined;
  if (single === (options.url === undefined))
    throw new TypeError('createRemoteKeySource takes either url: "https://…/jwks" or urls: [...], not both');
  // Each URL as given (guard options validated them); the set keeps the one that answered last first.
  const endpoints = controlPlaneEndpoints(options.urls ?? [options.url as string]);
  let keys = new Map<string, VerificationKey>();
  let lastFetch = 0;
  let inFlight: Promise<void> | null = null;

  async function fetchFrom(url: string): Promise<void> {
    const response = await request(url, {
      ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
      headersTimeout: 5_000,
      bodyTimeout: 5_000,
    });
    if (response.statusCode !== 200) {
      await response.body.dump();
      throw new Error(`JWKS ${url} answered ${response.statusCode}`);
    }
    const fresh = await importKeySet(await response.body.json(), url);
    if (fresh.size === 0) throw new Error(`JWKS ${url} holds no ES256 key; keeping the last known good set`);
    keys = fresh;
  }

  /** Every URL in turn until one serves a key set: a GET of public keys, harmless to ask again anywhere. */
  async function fetchOnce(): Promise<void> {
    lastFetch = Date.now();
    const failures: string[] = [];
    for (const url of endpoints.order()) {
      try {
        await fetchFrom(url);
        endpoints.ok(url);
        return;
      } catch (error) {
        endpoints.failed(url);
        if (single) throw error;
        failures.push(`${url}: ${(error as Error).message}`);
      }
    }
    throw new Error(failures.join('; '));
  }

  function refresh(): Promise<void> {
    if (inFlight) return inFlight;
    if (Date.now() - lastFetch < options.cooldownSeconds * 1000) return Promise.resolve();
    inFlight = fetchOnce()
      .catch((error: Error) => options.onError?.(error))
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  }

  await fetchOnce().catch((error: Error) => {
    const from = single ? `from ${options.url}` : 'from any of its URLs';
    const check = single ? 'txnTokenKeys.url' : 'txnTokenKeys.urls';
    throw new GuardConfigError(
      `could not load the Txn-Token JWKS ${from}: ${error.message}. Check ${check} and that the control plane is reachable.`,
    );
  });
  const timer = setInterval(() => {
    lastFetch = 0;
    void refresh();
  }, options.refreshSeconds * 1000);
  timer.unref();

  return {
    get: (kid) => keys.get(kid),
    refresh,
    kids: () => [...keys.keys()],
    close: () => clearInterval(timer),
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
  };
}
