/**
 * A rotating set of ES256 signing keys (Txn-Tokens, the identity provider's tokens, audit
 * checkpoints): the document `<name>-keys.json` of the key vault (a file of that name, 0600, in a key
 * directory). Three roles:
 *
 *   current    signs now
 *   next       published already, signs after the next rotation — verifiers that refresh their
 *              JWKS have it before the first token signed with it arrives
 *   previous   published until `retainMs` after it stopped signing (the longest lifetime of a token
 *              it signed), then dropped
 *
 * `rotate()` makes next current, current previous and creates a new next. Keys' `kid` is the RFC 7638
 * thumbprint.
 *
 * Replicas sharing a vault share the ring. A rotation is a compare-and-set write on the generation
 * this replica holds: when another replica wrote first, it reloads and rotates what it finds, so two
 * rotations at once are applied in turn and the ring stays one current and one next key. A change
 * another replica wrote (the vault's watch) is loaded and told to the `onRotate` listeners, as this
 * replica's own rotations are. Lag is harmless: a next key is published before it signs and a
 * previous one is kept.
 */
import {
  calculateJwkThumbprint,
  exportJWK,
  importJWK,
  importPKCS8,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import { documentPlace, oneAtATime, parseKeyDocument, readOrCreate } from './key-document.ts';
import { KeyFileError } from './key-files.ts';
import { toKeyVault, type KeyVault } from './key-vault.ts';
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
  /** The key that signed until this change. */
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
  /** Called after every rotation, this replica's or another's; returns an unsubscribe. */
  onRotate(listener: (rotation: Rotation) => void): () => void;
  /** Stops following other replicas' changes (the vault's watch). */
  close(): void;
}

export interface KeyRingOptions {
  /** How long a retired key stays published: at least the longest lifetime of what it signed. */
  readonly retainMs: number;
  /** Told when keys are created (first start): development material, said loudly by the caller. */
  readonly onCreated?: (message: string) => void;
  /** Told when a change another replica wrote cannot be loaded; the ring keeps the keys it has. Default: stderr. */
  readonly onError?: (error: Error) => void;
  readonly now?: () => number;
}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
/** Rotations lost in a row to other replicas' writes before giving up (each loss is someone else's progress). */
const MAX_ATTEMPTS = 10;

/** `keys`: the key vault, or a key directory (today's files). */
export async function openKeyRing(keys: KeyVault | string, name: string, options: KeyRingOptions): Promise<KeyRing> {
  if (!NAME.test(name))
    throw new TypeError(`a key ring name is a short lower-case word such as "txn-token"; got ${JSON.stringify(name)}`);
  const vault = toKeyVault(keys);
  const file = `${name}-keys.json`;
  const place = documentPlace(vault, file);
  const now = options.now ?? Date.now;
  const report =
    options.onError ?? ((error: Error) => process.stderr.write(`lockstep: key ring ${name}: ${error.message}\n`));
  let legacy = false;
  const { document, created } = await readOrCreate(vault, file, async () => {
    // A single key from before rotation existed (`<name>-signing.key.pem`) becomes the current key.
    const old = await vault.read(`${name}-signing.key.pem`);
    legacy = old !== null;
    const current =
      old === null ? await generate() : await exportJWK(await importPKCS8(old.text, 'ES256', { extractable: true }));
    return serialize([
      { role: 'current', createdAt: now(), jwk: current },
      { role: 'next', createdAt: now(), jwk: await generate() },
    ]);
  });
  let ring = await parseRing(document.text, place);
  let generation = document.generation;
  if (created)
    options.onCreated?.(
      `created ${legacy ? '' : 'NEW '}${name} signing keys in ${vault.where}` +
        (legacy ? ' (the existing key is the current one)' : ' (development material)'),
    );
  const listeners = new Set<(rotation: Rotation) => void>();
  const serially = oneAtATime();

  function told(rotation: Rotation): void {
    for (const listener of listeners) listener(rotation);
  }

  /** Loads a newer generation written by another replica; tells the listeners when the keys changed. */
  async function reload(): Promise<void> {
    const found = await vault.read(file);
    if (found === null || found.generation === generation) return;
    if (found.generation < generation)
      throw new Error(
        `${place} went back from generation ${generation} to ${found.generation} (restored from an old backup, ` +
          `or rolled back?): refused, the ring keeps generation ${generation}`,
      );
    const before = ring;
    ring = await parseRing(found.text, place);
    generation = found.generation;
    const change = describeChange(before, ring);
    if (change !== null) told(change);
  }

  const stopWatching = vault.watch((changed) => {
    if (changed === file) serially(reload).catch(report);
  });

  const ordered = (): RingKey[] => {
    const cutoff = now() - options.retainMs;
    const rank: Record<Role, number> = { current: 0, next: 1, previous: 2 };
    return ring
      .filter((key) => key.role !== 'previous' || (key.retiredAt ?? 0) > cutoff)
      .sort((a, b) => rank[a.role] - rank[b.role] || (b.retiredAt ?? 0) - (a.retiredAt ?? 0));
  };

  return {
    name,
    current: () => keyWith(ring, 'current'),
    publicJwks: () => ({ keys: ordered().map((key) => key.publicJwk) }),
    privateJwks: () => ordered().map((key) => key.privateJwk),
    rotate: (at = now()) =>
      serially(async () => {
        const fresh = await load({ role: 'next', createdAt: at, jwk: await generate() });
        for (let attempt = 1; ; attempt += 1) {
          const { keys: rotated, rotation } = rotateRing(ring, fresh, at, options.retainMs);
          if (await vault.write(file, generation, serialize(rotated.map(toStored)))) {
            ring = rotated;
            generation += 1;
            told(rotation);
            return rotation;
          }
          if (attempt === MAX_ATTEMPTS)
            throw new Error(`${place} changed under ${MAX_ATTEMPTS} rotations in a row; try again`);
          // Another replica wrote first: rotate what it wrote.
          await reload();
        }
      }),
    onRotate(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: stopWatching,
  };
}

function keyWith(keys: readonly RingKey[], wanted: 'current' | 'next'): RingKey {
  return keys.find((key) => key.role === wanted) as RingKey;
}

function rotateRing(
  keys: readonly RingKey[],
  fresh: RingKey,
  at: number,
  retainMs: number,
): { keys: RingKey[]; rotation: Rotation } {
  const current = keyWith(keys, 'current');
  const next = keyWith(keys, 'next');
  const cutoff = at - retainMs;
  const kept = keys.filter((key) => key.role === 'previous' && (key.retiredAt ?? 0) > cutoff);
  const dropped = keys.filter((key) => key.role === 'previous' && (key.retiredAt ?? 0) <= cutoff).map((key) => key.kid);
  return {
    keys: [...kept, { ...current, role: 'previous', retiredAt: at }, { ...next, role: 'current' }, fresh],
    rotation: { retired: current.kid, current: next.kid, next: fresh.kid, dropped },
  };
}

/** What changed between two versions of a ring (one or more rotations by another replica); null for nothing. */
function describeChange(before: readonly RingKey[], after: readonly RingKey[]): Rotation | null {
  const kids = new Set(after.map((key) => key.kid));
  const dropped = before.filter((key) => !kids.has(key.kid)).map((key) => key.kid);
  const [current, next] = [keyWith(after, 'current').kid, keyWith(after, 'next').kid];
  if (current === keyWith(before, 'current').kid && next === keyWith(before, 'next').kid && dropped.length === 0)
    return null;
  return { retired: keyWith(before, 'current').kid, current, next, dropped };
}

function toStored(key: RingKey): StoredKey {
  return {
    role: key.role,
    createdAt: key.createdAt,
    ...(key.retiredAt === undefined ? {} : { retiredAt: key.retiredAt }),
    jwk: key.privateJwk,
  };
}

function serialize(keys: readonly StoredKey[]): string {
  return `${JSON.stringify({ version: 1, keys }, null, 2)}\n`;
}

function parseRing(text: string, place: string): Promise<RingKey[]> {
  return parseKeyDocument(place, () => Promise.all(parse(text, place).map(load)));
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
