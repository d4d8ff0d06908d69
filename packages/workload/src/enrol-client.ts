/**
 * The workload side of enrolment. `joinControlPlane` generates the workload's key (it never leaves
 * the process), fetches the trust bundle, accepts it only if it matches the hash pinned in the join
 * token, then talks to the control plane over TLS verified against that bundle and checked to be
 * the control plane's own SPIFFE ID — so a first connection to an impostor sends it nothing.
 * `renewWithControlPlane` does the same with the current SVID over mTLS.
 */
import { X509Certificate, type webcrypto } from 'node:crypto';
import { readX509Svid, SvidError, workloadId } from '@lockstep/identity';
import { Agent, request } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { EnrolmentError, type EnrolmentErrorCode } from './errors.ts';
import { hashTrustBundle, readJoinToken } from './join-token.ts';
import { x509 } from './x509.ts';

export interface WorkloadCredentials {
  readonly spiffeId: string;
  /** Leaf + intermediate, PEM. */
  readonly chainPem: string;
  /** PKCS#8 PEM; generated here, never sent. */
  readonly keyPem: string;
  readonly bundlePem: string;
  readonly expiresAt: Date;
}

/** The control plane's own refusal codes (its README's catalogue), passed on as they are. */
const CONTROL_PLANE_CODE = /^LOCKSTEP_CP_[A-Z_]{1,60}$/;

export async function joinControlPlane(options: {
  url: string;
  trustDomain: string;
  joinToken: string;
  service: string;
}): Promise<WorkloadCredentials> {
  const token = readJoinToken(options.joinToken);
  if (token === null) {
    throw new EnrolmentError(
      'LOCKSTEP_ENROL_TOKEN_MALFORMED',
      'not a Lockstep join token (ljt1.<bundle hash>.<secret>): ' +
        `create one for this service with \`lockstep join-token create ${options.service}\``,
    );
  }
  const bundlePem = await fetchPinnedBundle(options.url, token.bundleHash);
  const keys = await generateKeys();
  const csr = await csrFor(keys);
  const body = await post(
    options.url,
    '/v1/join',
    { joinToken: options.joinToken, service: options.service, csr },
    { ca: bundlePem },
    options.trustDomain,
  );
  return credentials(body, keys, options.trustDomain, workloadId(options.trustDomain, options.service));
}

export async function renewWithControlPlane(options: {
  url: string;
  trustDomain: string;
  current: { chainPem: string; keyPem: string };
  bundlePem: string;
}): Promise<WorkloadCredentials> {
  const keys = await generateKeys();
  const csr = await csrFor(keys);
  const body = await post(
    options.url,
    '/v1/renew',
    { csr },
    { ca: options.bundlePem, cert: options.current.chainPem, key: options.current.keyPem },
    options.trustDomain,
  );
  const current = currentSpiffeId(options.current.chainPem, options.trustDomain);
  return credentials(body, keys, options.trustDomain, current);
}

/** A renewal is for the identity the workload already has: read from its current leaf's DER. */
function currentSpiffeId(chainPem: string, trustDomain: string): string {
  try {
    return readX509Svid(new X509Certificate(chainPem).raw, { trustDomain }).spiffeId;
  } catch (error) {
    const reason = error instanceof SvidError ? `${error.code}: ${error.detail}` : (error as Error).message;
    const message =
      `the current certificate is not an SVID of ${trustDomain} (${reason}); ` + 'join again with a join token';
    throw new EnrolmentError('LOCKSTEP_ENROL_SVID', message);
  }
}

/**
 * The one unverified TLS connection: it only reads the bundle, and the bundle is used only if its
 * hash is the one the join token carries.
 */
async function fetchPinnedBundle(url: string, pinned: string): Promise<string> {
  const agent = new Agent({ connect: { rejectUnauthorized: false } });
  try {
    const response = await request(new URL('/v1/bundle', url), {
      dispatcher: agent,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const text = await response.body.text();
    if (response.statusCode !== 200)
      throw new EnrolmentError('LOCKSTEP_ENROL_BUNDLE', `GET /v1/bundle answered ${response.statusCode}`);
    const certificates = x509.PemConverter.decode(text).map((der) => new x509.X509Certificate(der));
    if (
      certificates.length === 0 ||
      hashTrustBundle(certificates.map((certificate) => new Uint8Array(certificate.rawData))) !== pinned
    ) {
      throw new EnrolmentError(
        'LOCKSTEP_ENROL_BUNDLE_MISMATCH',
        "the control plane's trust bundle does not match the one pinned in the join token: refusing to send it anything (wrong URL, or someone in the middle)",
      );
    }
    return text;
  } finally {
    await agent.close();
  }
}

async function post(
  url: string,
  path: string,
  payload: unknown,
  tls: { ca: string; cert?: string; key?: string },
  trustDomain: string,
): Promise<Record<string, unknown>> {
  const agent = controlPlaneAgent(trustDomain, tls);
  try {
    const response = await request(new URL(path, url), {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const body = (await response.body.json()) as Record<string, unknown>;
    if (response.statusCode !== 200) {
      const code =
        typeof body.error === 'string' && CONTROL_PLANE_CODE.test(body.error)
          ? (body.error as EnrolmentErrorCode)
          : 'LOCKSTEP_ENROL_FAILED';
      const message = `${path} refused (${response.statusCode} ${String(body.error)}): ${String(body.message ?? '')}`;
      throw new EnrolmentError(code, message, response.statusCode);
    }
    return body;
  } finally {
    await agent.close();
  }
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
}

async function csrFor(keys: webcrypto.CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return csr.toString('pem');
}

/**
 * The issued SVID is used only if it is one: the X509-SVID leaf rules read from its DER, for the
 * identity this workload asked for and the control plane named, and for the key generated here.
 */
async function credentials(
  body: Record<string, unknown>,
  keys: webcrypto.CryptoKeyPair,
  trustDomain: string,
  expected: string,
): Promise<WorkloadCredentials> {
  const chainPem = String(body.svid);
  const leaf = issuedLeaf(chainPem);
  const issued = issuedSpiffeId(leaf, trustDomain);
  if (issued !== expected || body.spiffeId !== expected) {
    const named = JSON.stringify(body.spiffeId);
    const message =
      `the control plane issued a certificate for ${issued} and named ${named}; ` +
      `this workload asked for ${expected}`;
    throw new EnrolmentError('LOCKSTEP_ENROL_SVID', message);
  }
  const ours = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
  if (!ours.equals(leaf.publicKey.export({ type: 'spki', format: 'der' })))
    throw new EnrolmentError(
      'LOCKSTEP_ENROL_SVID',
      'the issued certificate is not for the key this workload generated',
    );
  return {
    spiffeId: expected,
    chainPem,
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    bundlePem: String(body.bundle),
    expiresAt: new Date(String(body.expiresAt)),
  };
}

function issuedLeaf(chainPem: string): X509Certificate {
  try {
    return new X509Certificate(chainPem);
  } catch {
    throw new EnrolmentError('LOCKSTEP_ENROL_SVID', "the control plane's answer holds no readable PEM certificate");
  }
}

function issuedSpiffeId(leaf: X509Certificate, trustDomain: string): string {
  try {
    return readX509Svid(leaf.raw, { trustDomain }).spiffeId;
  } catch (error) {
    if (!(error instanceof SvidError)) throw error;
    const message = `the issued certificate is not an X509-SVID of ${trustDomain}: ${error.code}: ${error.detail}`;
    throw new EnrolmentError('LOCKSTEP_ENROL_SVID', message);
  }
}
