/**
 * A rotating set of ES256 signing keys (Txn-Tokens, the identity provider's tokens), kept in the
 * private key directory as `<name>-keys.json` (0600). Three roles:
 *
 *   current    signs now
 *   next       published already, signs after the next rotation — verifiers that refresh their
 *              JWKS have it before the first token signed with it arrives
 *   previous   published until `retainMs` after it stopped signing (the longest lifetime of a token
 *              it signed), then dropped
 *
 * `rotate()` makes next current, current previous and creates a new next; the file is replaced
 * atomically. Keys' `kid` is the RFC 7638 thumbprint. One process owns the file: replicas on
 * PostgreSQL each keep their own ring (their JWKS differ; guards fetch the JWKS by URL and refetch on
 * an unknown `kid`).
 */
import { join } from 'node:path';
import {
  calculateJwkThumbprint,
  exportJWK,
  importJWK,
  importPKCS8,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import {
  ensurePrivateDirectory,
  KeyFileError,
  parseKeyFile,
  readPrivateFile,
  replacePrivateFile,
} from './key-files.ts';
import type { SigningKey } from './signing-key.ts';

type Role = 'current' | 'next' | 'previous';

interface StoredKey {
  readonly role: Role;
  readonly createdAt: number;
  /** When it stopped signing (previous keys only). */
  readonly retiredAt?: number;
  /** The private JWK. */
  readonly jwk: JWK;
}

interface RingKey extends SigningKey {
  readonly role: Role;
  readonly createdAt: number;
  readonly retiredAt?: number;
  readonly privateJwk: JWK;
}

export interface Rotation {
  readonly retired: string;
  readonly current: string;
  readonly next: string;
  readonly dropped: readonly string[];
}

export interface KeyRing {
  readonly name: string;
  /** The key that signs now. */
  current(): SigningKey;
  /** Public keys of current, next and retained previous keys, current first: what verifiers get. */
  publicJwks(): JSONWebKeySet;
  /** Private JWKs in the same order (for a library that signs with the first, like oidc-provider). */
  privateJwks(): JWK[];
  rotate(now?: number): Promise<Rotation>;
  /** Called after every rotation; returns an unsubscribe. */
  onRotate(listener: (rotation: Rotation) => void): () => void;
}

export interface KeyRingOptions {
  /** How long a retired key stays published: at least the longest lifetime of what it signed. */
  readonly retainMs: number;
  /** Told when keys are created (first start): development material, said loudly by the caller. */
  readonly onCreated?: (message: string) => void;
  readonly now?: () => number;
}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;

export async function openKeyRing(keyDir: string, name: string, options: KeyRingOptions): Promise<KeyRing> {
  if (!NAME.test(name))
    throw new TypeError(`a key ring name is a short lower-case word such as "txn-token"; got ${JSON.stringify(name)}`);
  ensurePrivateDirectory(keyDir);
  const file = `${name}-keys.json`;
  const now = options.now ?? Date.now;
  let keys: RingKey[];
  const stored = readPrivateFile(keyDir, file);
  if (stored === null) {
    // A single key from before rotation existed (`<name>-signing.key.pem`) becomes the current key.
    const legacy = readPrivateFile(keyDir, `${name}-signing.key.pem`);
    const current =
      legacy === null ? await generate() : await exportJWK(await importPKCS8(legacy, 'ES256', { extractable: true }));
    keys = [
      await load({ role: 'current', createdAt: now(), jwk: current }),
      await load({ role: 'next', createdAt: now(), jwk: await generate() }),
    ];
    save();
    options.onCreated?.(
      `created ${legacy === null ? 'NEW ' : ''}${name} signing keys in ${keyDir}${legacy === null ? ' (development material)' : ' (the existing key is the current one)'}`,
    );
  } else {
    keys = await parseKeyFile(keyDir, file, () => Promise.all(parse(stored, join(keyDir, file)).map(load)));
  }
  const listeners = new Set<(rotation: Rotation) => void>();

  function save(): void {
    const body: StoredKey[] = keys.map((key) => ({
      role: key.role,
      createdAt: key.createdAt,
      ...(key.retiredAt === undefined ? {} : { retiredAt: key.retiredAt }),
      jwk: key.privateJwk,
    }));
    replacePrivateFile(keyDir, file, `${JSON.stringify({ version: 1, keys: body }, null, 2)}\n`);
  }

  const ordered = (): RingKey[] => {
    const cutoff = now() - options.retainMs;
    const rank: Record<Role, number> = { current: 0, next: 1, previous: 2 };
    return keys
      .filter((key) => key.role !== 'previous' || (key.retiredAt ?? 0) > cutoff)
      .sort((a, b) => rank[a.role] - rank[b.role] || (b.retiredAt ?? 0) - (a.retiredAt ?? 0));
  };

  return {
    name,
    current: () => keys.find((key) => key.role === 'current') as RingKey,
    publicJwks: () => ({ keys: ordered().map((key) => key.publicJwk) }),
    privateJwks: () => ordered().map((key) => key.privateJwk),
    async rotate(at = now()) {
      const current = keys.find((key) => key.role === 'current') as RingKey;
      const next = keys.find((key) => key.role === 'next') as RingKey;
      const fresh = await load({ role: 'next', createdAt: at, jwk: await generate() });
      const cutoff = at - options.retainMs;
      const dropped = keys
        .filter((key) => key.role === 'previous' && (key.retiredAt ?? 0) <= cutoff)
        .map((key) => key.kid);
      keys = [
        ...keys.filter((key) => key.role === 'previous' && (key.retiredAt ?? 0) > cutoff),
        { ...current, role: 'previous', retiredAt: at },
        { ...next, role: 'current' },
        fresh,
      ];
      save();
      const rotation = { retired: current.kid, current: next.kid, next: fresh.kid, dropped };
      for (const listener of listeners) listener(rotation);
      return rotation;
    },
    onRotate(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

async function generate(): Promise<JWK> {
  const { privateKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  return exportJWK(privateKey);
}

async function load(stored: StoredKey): Promise<RingKey> {
  const { kty, crv, x, y, d } = stored.jwk;
  if (kty !== 'EC' || crv !== 'P-256' || !x || !y || !d)
    throw new TypeError('a key ring holds P-256 private keys only');
  const publicPart = { kty, crv, x, y };
  const kid = await calculateJwkThumbprint(publicPart);
  const privateKey = (await importJWK({ kty, crv, x, y, d }, 'ES256')) as CryptoKey;
  return {
    role: stored.role,
    createdAt: stored.createdAt,
    ...(stored.retiredAt === undefined ? {} : { retiredAt: stored.retiredAt }),
    kid,
    privateKey,
    publicJwk: { ...publicPart, kid, alg: 'ES256', use: 'sig' },
    privateJwk: { kty, crv, x, y, d, kid, alg: 'ES256', use: 'sig' },
  };
}

function parse(text: string, where: string): StoredKey[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new KeyFileError(where, 'not JSON (its keys sign live tokens)');
  }
  const keys = (body as { version?: unknown; keys?: unknown }).keys;
  if ((body as { version?: unknown }).version !== 1 || !Array.isArray(keys))
    throw new KeyFileError(where, 'not a Lockstep key ring (version 1)');
  const roles = keys.map((key: StoredKey) => key.role);
  if (roles.filter((role) => role === 'current').length !== 1 || roles.filter((role) => role === 'next').length !== 1) {
    throw new KeyFileError(where, 'it must hold exactly one current and one next key');
  }
  return keys as StoredKey[];
}
