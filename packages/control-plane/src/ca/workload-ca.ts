/**
 * The workload CA: a root and an intermediate (ECDSA P-256) that issue X.509-SVIDs. Keys live in a
 * key vault (ca-storage.ts: a key directory in today's layout, or one document `ca.json` shared by
 * replicas); on first start with nothing there it creates them and says so (dev material, loudly).
 * The trust bundle holds the roots only; leaves are issued by the intermediate and carry it in their
 * chain.
 *
 * Root rotation, in two steps an administrator triggers (admin API / `lockstep ca rotate`):
 *
 *   prepare   a new root + intermediate are created (<keyDir>/next/); the bundle carries both
 *             roots and is pushed to every guard (stream) and handed out at every join and renewal.
 *             Nothing is signed by the new CA yet.
 *   activate  once every workload has the two-root bundle (one SVID lifetime after prepare at the
 *             latest), the new CA signs from now on. The old root stays in the bundle for
 *             `retireAfterMs` (default 25 h: longer than any SVID it issued lives), then drops out.
 *             The old private keys are overwritten; only its certificate is kept.
 *
 * Replicas sharing a vault share the CA. Each step is a compare-and-set write: when another replica
 * wrote first, the step reloads and checks the phase again (a rotation prepared twice at once is one
 * rotation; the second is refused as when prepared already). A change another replica wrote is
 * loaded and told to the `onBundleChange` listeners, as this replica's own steps are.
 *
 * A join token pins the bundle of its day: tokens created before a bundle change are refused and
 * must be created again.
 */
import { createPrivateKey, type KeyObject, type webcrypto } from 'node:crypto';
import { trustDomainId } from '@lockstep/identity';
import { hashTrustBundle } from '@lockstep/workload';
import { x509 } from '../lib/x509.ts';
import {
  caStorageFor,
  fileCaStorage,
  type CaKeys,
  type CaState,
  type CaStorage,
  type RetiringRoot,
} from './ca-storage.ts';
import { oneAtATime, parseKeyDocument } from './key-document.ts';
import type { KeyVault } from './key-vault.ts';

interface WorkloadCaCommonOptions {
  /** e.g. "shop.test". */
  readonly trustDomain: string;
  /** Called once when the CA created new keys instead of loading them. */
  readonly onCreated?: (message: string) => void;
  /** Told when a change another replica wrote cannot be loaded; the CA keeps what it has. Default: stderr. */
  readonly onError?: (error: Error) => void;
  /** How long a rotated-out root stays in the bundle (default 25 h, more than the longest SVID lifetime). */
  readonly retireAfterMs?: number;
  readonly now?: () => number;
}

export type WorkloadCaOptions = WorkloadCaCommonOptions &
  (
    | {
        /** Where the CA keeps its keys and certificates (0700; key files 0600). */
        readonly keyDir: string;
      }
    | {
        /** The key vault: a file vault keeps today's layout in its directory; a shared one, `ca.json`. */
        readonly vault: KeyVault;
      }
  );

export interface RootStatus {
  readonly role: 'current' | 'next' | 'retiring';
  readonly subject: string;
  readonly serial: string;
  readonly notAfter: string;
  /** For a retiring root: when it leaves the bundle. */
  readonly retiresAt?: string;
}

export interface RootRotation {
  /** `prepared`: a next root is in the bundle, waiting for `activateNextRoot`. */
  readonly phase: 'stable' | 'prepared';
  readonly roots: readonly RootStatus[];
}

export interface WorkloadCa {
  readonly trustDomain: string;
  /** The trust bundle: the root certificates, PEM (current, next, retiring). */
  readonly bundlePem: string;
  /** SHA-256 of the bundle's DER certificates in order, base64url: what a join token pins. */
  readonly bundleHash: string;
  /** The intermediate certificate, PEM: appended to every leaf. */
  readonly intermediatePem: string;
  /** @internal the signer, for issueSvidFromCsr (the key as WebCrypto and as node:crypto KeyObject). */
  readonly signer: CaSigner;
  readonly now: () => number;
  rootRotation(): RootRotation;
  /** Creates the next root and adds it to the bundle. Refused when one is prepared already. */
  prepareRootRotation(): Promise<RootRotation>;
  /** The prepared root signs from now on; the old one retires. Refused when none is prepared. */
  activateNextRoot(): Promise<RootRotation>;
  /** Called after the bundle or the signer changed, here or in another replica. Returns an unsubscribe. */
  onBundleChange(listener: () => void): () => void;
  /** Stops following other replicas' changes (the vault's watch). */
  close(): void;
}

export interface CaSigner {
  readonly cert: x509.X509Certificate;
  readonly privateKey: webcrypto.CryptoKey;
  readonly keyObject: KeyObject;
}

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
const YEAR_MS = 365 * 86_400_000;
/** Steps lost in a row to other replicas' writes before giving up. */
const MAX_ATTEMPTS = 10;

interface LoadedCa {
  /** What it was loaded from (without the root's private key). */
  readonly keys: CaKeys;
  readonly root: x509.X509Certificate;
  readonly intermediatePem: string;
  /** One object per CA: issue-svid caches per signer. */
  readonly signer: CaSigner;
}

export class RootRotationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RootRotationError';
  }
}

export async function openWorkloadCa(options: WorkloadCaOptions): Promise<WorkloadCa> {
  const now = options.now ?? Date.now;
  const retireAfterMs = options.retireAfterMs ?? 25 * 3_600_000;
  const { trustDomain } = options;
  const report =
    options.onError ?? ((error: Error) => process.stderr.write(`lockstep: workload CA: ${error.message}\n`));
  const storage = 'vault' in options ? caStorageFor(options.vault) : fileCaStorage(options.keyDir);
  let stored = await storage.load();
  if (stored === null) {
    const state: CaState = { current: await createCa(trustDomain, now()), next: null, retiring: [] };
    if (await storage.save(-1, state)) {
      stored = { generation: 0, state };
      options.onCreated?.(
        `created a NEW workload CA for ${trustDomain} in ${storage.where} (development material: for production, ` +
          'provision the CA keys yourself and keep the root key offline)',
      );
    } else {
      // Another replica created it first: use theirs.
      stored = await storage.load();
      if (stored === null) throw new Error(`the workload CA in ${storage.where} was created, but cannot be read`);
    }
  }
  let generation = stored.generation;
  let current = await loadCa(storage, 'current', stored.state.current, now());
  let next = stored.state.next === null ? null : await loadCa(storage, 'next', stored.state.next, now());
  let retiring: readonly RetiringRoot[] = stored.state.retiring;
  const listeners = new Set<() => void>();
  const serially = oneAtATime();
  let memo: { bundlePem: string; bundleHash: string; until: number } | null = null;

  function bundle(): { bundlePem: string; bundleHash: string } {
    const at = now();
    if (memo !== null && at < memo.until) return memo;
    const live = retiring.filter((entry) => entry.retiresAt > at);
    const roots = [
      current.root,
      ...(next === null ? [] : [next.root]),
      ...live.map((entry) => new x509.X509Certificate(entry.pem)),
    ];
    memo = {
      bundlePem: roots.map((root) => `${root.toString('pem')}\n`).join(''),
      bundleHash: hashBundle(roots),
      until: Math.min(Number.POSITIVE_INFINITY, ...live.map((entry) => entry.retiresAt)),
    };
    return memo;
  }

  function changed(): void {
    memo = null;
    for (const listener of listeners) listener();
  }

  function status(): RootRotation {
    const describe = (root: x509.X509Certificate, role: RootStatus['role'], retiresAt?: number): RootStatus => ({
      role,
      subject: root.subject,
      serial: root.serialNumber,
      notAfter: root.notAfter.toISOString(),
      ...(retiresAt === undefined ? {} : { retiresAt: new Date(retiresAt).toISOString() }),
    });
    const at = now();
    return {
      phase: next === null ? 'stable' : 'prepared',
      roots: [
        describe(current.root, 'current'),
        ...(next === null ? [] : [describe(next.root, 'next')]),
        ...retiring
          .filter((entry) => entry.retiresAt > at)
          .map((entry) => describe(new x509.X509Certificate(entry.pem), 'retiring', entry.retiresAt)),
      ],
    };
  }

  /** Loads a newer generation written by another replica; tells the listeners when the bundle or signer changed. */
  async function reload(): Promise<void> {
    const found = await storage.load();
    if (found === null || found.generation === generation) return;
    if (found.generation < generation)
      throw new Error(
        `${storage.where} went back from generation ${generation} to ${found.generation} (restored from an old ` +
          `backup, or rolled back?): refused, the CA keeps generation ${generation}`,
      );
    const at = now();
    // The same intermediate keeps its LoadedCa, so its signer stays the same object.
    const reuse = (which: 'current' | 'next', keys: CaKeys) =>
      [current, next].find((ca) => ca !== null && sameCa(ca.keys, keys)) ?? loadCa(storage, which, keys, at);
    const loadedCurrent = await reuse('current', found.state.current);
    const loadedNext = found.state.next === null ? null : await reuse('next', found.state.next);
    const same =
      loadedCurrent === current &&
      loadedNext === next &&
      JSON.stringify(found.state.retiring) === JSON.stringify(retiring);
    current = loadedCurrent;
    next = loadedNext;
    retiring = found.state.retiring;
    generation = found.generation;
    if (!same) changed();
  }

  /** Writes `state` as the next generation; on a conflict, reloads and answers false (the caller checks again). */
  async function write(state: CaState, attempt: number): Promise<boolean> {
    if (await storage.save(generation, state)) {
      generation += 1;
      return true;
    }
    if (attempt === MAX_ATTEMPTS)
      throw new RootRotationError(`${storage.where} changed under ${MAX_ATTEMPTS} attempts in a row; try again`);
    await reload();
    return false;
  }

  const stopWatching = storage.watch(() => {
    serially(reload).catch(report);
  });

  return Object.freeze({
    trustDomain,
    get bundlePem() {
      return bundle().bundlePem;
    },
    get bundleHash() {
      return bundle().bundleHash;
    },
    get intermediatePem() {
      return current.intermediatePem;
    },
    get signer() {
      return current.signer;
    },
    now,
    rootRotation: status,
    prepareRootRotation: () =>
      serially(async () => {
        let prepared: { keys: CaKeys; loaded: LoadedCa } | null = null;
        for (let attempt = 1; ; attempt += 1) {
          if (next !== null)
            throw new RootRotationError(
              `a root rotation is prepared already (${storage.place('next')}); ` +
                'activate it, once every workload has the new bundle',
            );
          if (prepared === null) {
            const keys = await createCa(trustDomain, now());
            prepared = { keys, loaded: await loadCa(storage, 'next', keys, now()) };
          }
          if (await write({ current: current.keys, next: prepared.keys, retiring }, attempt)) {
            next = prepared.loaded;
            changed();
            return status();
          }
        }
      }),
    activateNextRoot: () =>
      serially(async () => {
        for (let attempt = 1; ; attempt += 1) {
          if (next === null)
            throw new RootRotationError(
              'no root rotation is prepared; prepare one first, and activate it once every workload has the new bundle',
            );
          const at = now();
          const stillRetiring = [
            ...retiring.filter((entry) => entry.retiresAt > at),
            { pem: `${current.root.toString('pem')}\n`, retiresAt: at + retireAfterMs },
          ];
          if (await write({ current: next.keys, next: null, retiring: stillRetiring }, attempt)) {
            retiring = stillRetiring;
            current = next;
            next = null;
            changed();
            return status();
          }
        }
      }),
    onBundleChange(listener: () => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close: stopWatching,
  });
}

function sameCa(a: CaKeys, b: CaKeys): boolean {
  return (
    a.rootPem === b.rootPem && a.intermediatePem === b.intermediatePem && a.intermediateKeyPem === b.intermediateKeyPem
  );
}

async function loadCa(storage: CaStorage, which: 'current' | 'next', keys: CaKeys, now: number): Promise<LoadedCa> {
  const root = await parseKeyDocument(storage.place(which, 'rootPem'), () => new x509.X509Certificate(keys.rootPem));
  const intermediate = await parseKeyDocument(
    storage.place(which, 'intermediatePem'),
    () => new x509.X509Certificate(keys.intermediatePem),
  );
  if (!(await intermediate.verify({ publicKey: root.publicKey, date: new Date(now) })))
    throw new TypeError(storage.unsignedIntermediate(which));
  const { privateKey, keyObject } = await parseKeyDocument(storage.place(which, 'intermediateKeyPem'), async () => ({
    privateKey: await crypto.subtle.importKey('pkcs8', pemBody(keys.intermediateKeyPem), ECDSA_P256, false, ['sign']),
    keyObject: createPrivateKey(keys.intermediateKeyPem),
  }));
  return {
    keys: { rootPem: keys.rootPem, intermediatePem: keys.intermediatePem, intermediateKeyPem: keys.intermediateKeyPem },
    root,
    intermediatePem: `${intermediate.toString('pem')}\n`,
    signer: Object.freeze({ cert: intermediate, privateKey, keyObject }),
  };
}

/** SHA-256 over the DER of every certificate of a bundle, in order; base64url: what a join token pins. */
export function hashBundle(certificates: readonly x509.X509Certificate[]): string {
  return hashTrustBundle(certificates.map((certificate) => new Uint8Array(certificate.rawData)));
}

/** A new root and intermediate; the root's private key is returned for a key directory to keep (root.key.pem). */
async function createCa(trustDomain: string, now: number): Promise<CaKeys> {
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 10 * YEAR_MS) };
  const rootKeys = await crypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify']);
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [`Lockstep root (${trustDomain})`] }, { O: ['Lockstep'] }],
    keys: rootKeys,
    ...validity,
    signingAlgorithm: ECDSA_SHA256,
    extensions: await caExtensions(trustDomain, rootKeys.publicKey, rootKeys.publicKey, 1),
  });
  const intermediateKeys = await crypto.subtle.generateKey(ECDSA_P256, true, ['sign', 'verify']);
  const intermediate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [`Lockstep workload CA (${trustDomain})`] }, { O: ['Lockstep'] }],
    issuer: root.subjectName,
    publicKey: intermediateKeys.publicKey,
    signingKey: rootKeys.privateKey,
    notBefore: validity.notBefore,
    notAfter: new Date(now + 5 * YEAR_MS),
    signingAlgorithm: ECDSA_SHA256,
    extensions: await caExtensions(trustDomain, intermediateKeys.publicKey, rootKeys.publicKey, 0),
  });
  return {
    rootKeyPem: await pkcs8Pem(rootKeys.privateKey),
    rootPem: `${root.toString('pem')}\n`,
    intermediateKeyPem: await pkcs8Pem(intermediateKeys.privateKey),
    intermediatePem: `${intermediate.toString('pem')}\n`,
  };
}

async function caExtensions(
  trustDomain: string,
  subjectKey: webcrypto.CryptoKey,
  issuerKey: webcrypto.CryptoKey,
  pathLength: number,
): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(subjectKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerKey),
    // X.509-SVID §4.1: a signing certificate may carry the trust domain's SPIFFE ID.
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(trustDomain) }]),
  ];
}

/** 16 random bytes with the top bit clear: a positive serial number with 127 bits of entropy. */
export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  return `${x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY')}\n`;
}

function pemBody(pem: string): Uint8Array {
  const [der] = x509.PemConverter.decode(pem);
  if (der === undefined) throw new TypeError('key file holds no PEM block');
  return new Uint8Array(der);
}
