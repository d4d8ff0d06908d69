/**
 * The workload CA: a root and an intermediate (ECDSA P-256) that issue X.509-SVIDs. Keys live in a
 * private key directory; on first start with an empty directory it creates them and says so (dev
 * material, loudly). The trust bundle holds the roots only; leaves are issued by the intermediate and
 * carry it in their chain.
 *
 * Root rotation, in two steps an administrator triggers (admin API / `lockstep ca rotate`):
 *
 *   prepare   a new root + intermediate are created in <keyDir>/next/; the bundle carries both
 *             roots and is pushed to every guard (stream) and handed out at every join and renewal.
 *             Nothing is signed by the new CA yet.
 *   activate  once every workload has the two-root bundle (one SVID lifetime after prepare at the
 *             latest), the new CA signs from now on. The old root stays in the bundle for
 *             `retireAfterMs` (default 25 h: longer than any SVID it issued lives), then drops out.
 *             The old private keys are overwritten; only its certificate is kept.
 *
 * A join token pins the bundle of its day: tokens created before a bundle change are refused and
 * must be created again.
 */
import { createPrivateKey, type KeyObject, type webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { trustDomainId } from '@lockstep/identity';
import { hashTrustBundle } from '@lockstep/workload';
import { x509 } from '../lib/x509.ts';
import {
  ensurePrivateDirectory,
  KeyFileError,
  parseKeyFile,
  readPrivateFile,
  replacePrivateFile,
  writePrivateFile,
} from './key-files.ts';

export interface WorkloadCaOptions {
  /** e.g. "shop.test". */
  readonly trustDomain: string;
  /** Where the CA keeps its keys and certificates (0700; key files 0600). */
  readonly keyDir: string;
  /** Called once when the CA created new keys instead of loading them. */
  readonly onCreated?: (message: string) => void;
  /** How long a rotated-out root stays in the bundle (default 25 h, more than the longest SVID lifetime). */
  readonly retireAfterMs?: number;
  readonly now?: () => number;
}

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
  /** Called after the bundle or the signer changed. Returns an unsubscribe. */
  onBundleChange(listener: () => void): () => void;
}

export interface CaSigner {
  readonly cert: x509.X509Certificate;
  readonly privateKey: webcrypto.CryptoKey;
  readonly keyObject: KeyObject;
}

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
const YEAR_MS = 365 * 86_400_000;
const FILES = {
  rootCert: 'root.pem',
  rootKey: 'root.key.pem',
  intermediateCert: 'intermediate.pem',
  intermediateKey: 'intermediate.key.pem',
} as const;
const NEXT_DIR = 'next';
const RETIRING_FILE = 'retiring-roots.json';

interface LoadedCa {
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
  const { keyDir, trustDomain } = options;
  ensurePrivateDirectory(keyDir);
  if (![FILES.rootCert, FILES.intermediateCert, FILES.intermediateKey].some((file) => existsSync(join(keyDir, file)))) {
    await createCaFiles(trustDomain, keyDir, now());
    options.onCreated?.(
      `created a NEW workload CA for ${trustDomain} in ${keyDir} (development material: for production, provision the CA keys yourself and keep the root key offline)`,
    );
  }
  const nextDir = join(keyDir, NEXT_DIR);
  let current = await loadCa(keyDir, now());
  let next = existsSync(nextDir) ? await loadCa(nextDir, now()) : null;
  let retiring = readRetiring(keyDir);
  const listeners = new Set<() => void>();
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
    async prepareRootRotation() {
      if (next !== null)
        throw new RootRotationError(
          `a root rotation is prepared already (${nextDir}); activate it, once every workload has the new bundle`,
        );
      mkdirSync(nextDir, { mode: 0o700 });
      await createCaFiles(trustDomain, nextDir, now());
      next = await loadCa(nextDir, now());
      changed();
      return status();
    },
    async activateNextRoot() {
      if (next === null)
        throw new RootRotationError(
          'no root rotation is prepared; prepare one first, and activate it once every workload has the new bundle',
        );
      const at = now();
      retiring = [
        ...retiring.filter((entry) => entry.retiresAt > at),
        { pem: `${current.root.toString('pem')}\n`, retiresAt: at + retireAfterMs },
      ];
      replacePrivateFile(keyDir, RETIRING_FILE, `${JSON.stringify({ version: 1, roots: retiring }, null, 2)}\n`);
      // Keys first, the root certificate last: a crash in between leaves a directory that the
      // consistency check on open reports (the intermediate no longer matches the root).
      for (const file of [FILES.intermediateKey, FILES.intermediateCert, FILES.rootKey, FILES.rootCert])
        renameSync(join(nextDir, file), join(keyDir, file));
      rmdirSync(nextDir);
      current = next;
      next = null;
      changed();
      return status();
    },
    onBundleChange(listener: () => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  });
}

async function loadCa(dir: string, now: number): Promise<LoadedCa> {
  ensurePrivateDirectory(dir);
  const rootPem = readPrivateFile(dir, FILES.rootCert);
  const intermediatePem = readPrivateFile(dir, FILES.intermediateCert);
  const intermediateKeyPem = readPrivateFile(dir, FILES.intermediateKey);
  if (rootPem === null || intermediatePem === null || intermediateKeyPem === null) {
    throw new TypeError(
      `the CA key directory ${dir} is incomplete: it needs ${FILES.rootCert}, ${FILES.intermediateCert} and ${FILES.intermediateKey}. Restore the missing files, or move the directory away to create a new CA (every workload must then re-join).`,
    );
  }
  const root = await parseKeyFile(dir, FILES.rootCert, () => new x509.X509Certificate(rootPem));
  const intermediate = await parseKeyFile(dir, FILES.intermediateCert, () => new x509.X509Certificate(intermediatePem));
  if (!(await intermediate.verify({ publicKey: root.publicKey, date: new Date(now) }))) {
    throw new TypeError(
      `${FILES.intermediateCert} in ${dir} is not signed by ${FILES.rootCert}, or is outside its validity. If a root rotation was interrupted, finish moving the files of ${join(dir, NEXT_DIR)} into ${dir}, or restore the directory from a backup.`,
    );
  }
  const { privateKey, keyObject } = await parseKeyFile(dir, FILES.intermediateKey, async () => ({
    privateKey: await crypto.subtle.importKey('pkcs8', pemBody(intermediateKeyPem), ECDSA_P256, false, ['sign']),
    keyObject: createPrivateKey(intermediateKeyPem),
  }));
  return {
    root,
    intermediatePem: `${intermediate.toString('pem')}\n`,
    signer: Object.freeze({ cert: intermediate, privateKey, keyObject }),
  };
}

function readRetiring(keyDir: string): { pem: string; retiresAt: number }[] {
  const text = readPrivateFile(keyDir, RETIRING_FILE);
  if (text === null) return [];
  let parsed: { version?: number; roots?: { pem: string; retiresAt: number }[] };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (error) {
    throw new KeyFileError(join(keyDir, RETIRING_FILE), `not JSON (${(error as Error).message})`);
  }
  if (parsed.version !== 1 || !Array.isArray(parsed.roots))
    throw new KeyFileError(join(keyDir, RETIRING_FILE), 'not a Lockstep retiring-roots file (version 1)');
  return parsed.roots;
}

/** SHA-256 over the DER of every certificate of a bundle, in order; base64url: what a join token pins. */
export function hashBundle(certificates: readonly x509.X509Certificate[]): string {
  return hashTrustBundle(certificates.map((certificate) => new Uint8Array(certificate.rawData)));
}

async function createCaFiles(trustDomain: string, keyDir: string, now: number): Promise<void> {
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
  writePrivateFile(keyDir, FILES.rootKey, await pkcs8Pem(rootKeys.privateKey));
  writePrivateFile(keyDir, FILES.rootCert, root.toString('pem') + '\n');
  writePrivateFile(keyDir, FILES.intermediateKey, await pkcs8Pem(intermediateKeys.privateKey));
  writePrivateFile(keyDir, FILES.intermediateCert, intermediate.toString('pem') + '\n');
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
