/**
 * The workload CA: a root and an intermediate (ECDSA P-256) that issue X.509-SVIDs. Keys live in a
 * private key directory; on first start with an empty directory it creates them and says so (dev
 * material, loudly). The trust bundle holds the roots only; leaves are issued by the intermediate and
 * carry it in their chain.
 */
import { createHash, type webcrypto } from 'node:crypto';
import { x509 } from '../lib/x509.ts';
import { ensurePrivateDirectory, readPrivateFile, writePrivateFile } from './key-files.ts';

export interface WorkloadCaOptions {
  /** e.g. "shop.test". */
  readonly trustDomain: string;
  /** Where the CA keeps its keys and certificates (0700; key files 0600). */
  readonly keyDir: string;
  /** Called once when the CA created new keys instead of loading them. */
  readonly onCreated?: (message: string) => void;
  readonly now?: () => number;
}

export interface WorkloadCa {
  readonly trustDomain: string;
  /** The trust bundle: the root certificates, PEM. */
  readonly bundlePem: string;
  /** SHA-256 of the bundle's DER certificates in order, base64url: what a join token pins. */
  readonly bundleHash: string;
  /** The intermediate certificate, PEM: appended to every leaf. */
  readonly intermediatePem: string;
  /** @internal the signer, for issueSvidFromCsr. */
  readonly signer: { readonly cert: x509.X509Certificate; readonly privateKey: webcrypto.CryptoKey };
  readonly now: () => number;
}

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
const YEAR_MS = 365 * 86_400_000;
const FILES = { rootCert: 'root.pem', rootKey: 'root.key.pem', intermediateCert: 'intermediate.pem', intermediateKey: 'intermediate.key.pem' } as const;

export async function openWorkloadCa(options: WorkloadCaOptions): Promise<WorkloadCa> {
  const now = options.now ?? Date.now;
  ensurePrivateDirectory(options.keyDir);
  const read = () => ({
    rootPem: readPrivateFile(options.keyDir, FILES.rootCert),
    intermediatePem: readPrivateFile(options.keyDir, FILES.intermediateCert),
    intermediateKeyPem: readPrivateFile(options.keyDir, FILES.intermediateKey),
  });
  let files = read();
  const present = Object.values(files).filter((value) => value !== null).length;
  if (present === 0) {
    await createCaFiles(options.trustDomain, options.keyDir, now());
    options.onCreated?.(`created a NEW workload CA for ${options.trustDomain} in ${options.keyDir} (development material: for production, provision the CA keys yourself and keep the root key offline)`);
    files = read();
  }
  const { rootPem, intermediatePem, intermediateKeyPem } = files;
  if (rootPem === null || intermediatePem === null || intermediateKeyPem === null) {
    throw new TypeError(`the CA key directory ${options.keyDir} is incomplete: it needs ${FILES.rootCert}, ${FILES.intermediateCert} and ${FILES.intermediateKey}. Restore the missing files, or move the directory away to create a new CA (every workload must then re-join).`);
  }

  const root = new x509.X509Certificate(rootPem);
  const intermediate = new x509.X509Certificate(intermediatePem);
  if (!(await intermediate.verify({ publicKey: root.publicKey, date: new Date(now()) }))) {
    throw new TypeError(`${FILES.intermediateCert} in ${options.keyDir} is not signed by ${FILES.rootCert}, or is outside its validity`);
  }
  const privateKey = await crypto.subtle.importKey('pkcs8', pemBody(intermediateKeyPem), ECDSA_P256, false, ['sign']);
  const bundlePem = root.toString('pem') + '\n';
  return Object.freeze({
    trustDomain: options.trustDomain,
    bundlePem,
    bundleHash: hashBundle([root]),
    intermediatePem: intermediate.toString('pem') + '\n',
    signer: Object.freeze({ cert: intermediate, privateKey }),
    now,
  });
}

/** SHA-256 over the DER of every certificate of a bundle, in order; base64url. */
export function hashBundle(certificates: readonly x509.X509Certificate[]): string {
  const hash = createHash('sha256');
  for (const certificate of certificates) hash.update(new Uint8Array(certificate.rawData));
  return hash.digest('base64url');
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

async function caExtensions(trustDomain: string, subjectKey: webcrypto.CryptoKey, issuerKey: webcrypto.CryptoKey, pathLength: number): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(subjectKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerKey),
    // X.509-SVID §4.1: a signing certificate may carry the trust domain's SPIFFE ID.
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]),
  ];
}

/** 16 random bytes with the top bit clear: a positive serial number with 127 bits of entropy. */
export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] as number) & 0x7f | 0x01;
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
