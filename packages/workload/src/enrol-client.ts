/**
 * The workload side of enrolment. `joinControlPlane` generates the workload's key (it never leaves
 * the process), fetches the trust bundle, accepts it only if it matches the hash pinned in the join
 * token, then talks to the control plane over TLS verified against that bundle and checked to be
 * the control plane's own SPIFFE ID — so a first connection to an impostor sends it nothing.
 * `renewWithControlPlane` does the same with the current SVID over mTLS, and `recoverWithControlPlane`
 * with an SVID that expired while the control plane could not be reached.
 *
 * All take the control plane's replicas (`failover.ts`). A renewal or a recovery is asked again of the
 * next one after any outage, and of the next one too when a replica's certificate does not verify against
 * the workload's trust bundle (nothing was sent). A join spends a one-time token, so it moves on only while
 * nothing was sent: no connection, or a bundle that does not match the token's pin (a replica that has not
 * reloaded a root rotation yet, or someone in the middle: either way the token is not sent there).
 */
import { X509Certificate, type webcrypto } from 'node:crypto';
import { readX509Svid, SvidError, workloadId } from '@lockstep/identity';
import { Agent, request } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { EnrolmentError, type EnrolmentErrorCode } from './errors.ts';
import { connectTimeoutFor, endpointsOf, withFailover, type ControlPlaneUrls } from './failover.ts';
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
  /** The control plane: one URL, several (replicas, comma-separated or a list), or an endpoint set. */
  url: ControlPlaneUrls;
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
  const endpoints = endpointsOf(options.url);
  const keys = await generateSvidKeys();
  const csr = await csrFor(keys);
  const connectTimeout = connectTimeoutFor(endpoints);
  // The replicas the token was sent to: a failure at any other may go on to the next.
  const sentTo = new Set<string>();
  const body = await withFailover(
    endpoints,
    async (base, signal) => {
      const bundlePem = await fetchPinnedBundle(base, token.bundleHash, signal, connectTimeout);
      signal.throwIfAborted(); // an attempt given up on (its time is up) sends nothing
      sentTo.add(base);
      const payload = { joinToken: options.joinToken, service: options.service, csr };
      const tls = { ca: bundlePem };
      return post({ base, path: '/v1/join', payload, tls, trustDomain: options.trustDomain, signal, connectTimeout });
    },
    { idempotent: false, sentNothing: (_error, base) => !sentTo.has(base) },
  );
  return credentials(body, keys, options.trustDomain, workloadId(options.trustDomain, options.service));
}

/** What a renewal and a recovery take. */
export interface SvidExchangeOptions {
  /** The control plane: one URL, several (replicas, comma-separated or a list), or an endpoint set. */
  url: ControlPlaneUrls;
  trustDomain: string;
  /** The SVID presented in the handshake (leaf + intermediate) and its key. */
  current: { chainPem: string; keyPem: string };
  bundlePem: string;
  /**
   * The new SVID's key pair (ECDSA P-256, extractable; `generateSvidKeys`), default a fresh one. Asking
   * again after a failure — a renewal, or the recovery that follows it — give the same one: if a first
   * answer was lost, the control plane spent the SVID for that key, and serves that key again.
   */
  keys?: webcrypto.CryptoKeyPair;
}

export async function renewWithControlPlane(options: SvidExchangeOptions): Promise<WorkloadCredentials> {
  // A second SVID for the same new key, if a first answer was lost, is harmless: renewal may be sent again.
  return exchangeSvid('/v1/renew', options);
}

/**
 * A new SVID for one that expired while no control plane could be reached (`POST /v1/recover`): the
 * expired SVID is presented as the client certificate, the handshake proves its key, and the control
 * plane spends it once (any replica). It also takes one that expires within a minute. Refused with a
 * `LOCKSTEP_CP_…` code (an `EnrolmentError`) when the workload is revoked (`…_WORKLOAD_REVOKED`), the
 * SVID was spent already or is not one of this CA's (`…_RECOVERY_REFUSED`), or it expired longer ago
 * than the control plane's recovery window (`…_RECOVERY_EXPIRED`): then only a new join token helps.
 */
export async function recoverWithControlPlane(options: SvidExchangeOptions): Promise<WorkloadCredentials> {
  // Asked again of the next replica after a failure after sending, like a renewal. If the first one did
  // reach a replica and only its answer was lost, the SVID is spent there for this CSR's key: the retry,
  // with the same key, is served again. With another key it is refused (LOCKSTEP_CP_RECOVERY_REFUSED), as
  // a thief who recovered first with a copy of the old key is: this instance then joins again.
  return exchangeSvid('/v1/recover', options);
}

/** A new SVID's key pair: ECDSA P-256, generated here, never sent. */
export async function generateSvidKeys(): Promise<webcrypto.CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
}

/**
 * TLS codes of a server certificate that does not chain to the trust bundle: a CA this workload does not
 * know. Not its expiry, nor a wrong SPIFFE ID: those are a replica's problem, not the CA's.
 */
const UNTRUSTED_SERVER = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
]);

/** `{ csr }` for `options.keys` (else a fresh key) to `path`, presenting the current SVID: the new SVID, of the same identity. */
async function exchangeSvid(
  path: '/v1/renew' | '/v1/recover',
  options: SvidExchangeOptions,
): Promise<WorkloadCredentials> {
  const endpoints = endpointsOf(options.url);
  const current = currentSpiffeId(options.current.chainPem, options.trustDomain);
  const keys = options.keys ?? (await generateSvidKeys());
  const csr = await csrFor(keys);
  const tls = { ca: options.bundlePem, cert: options.current.chainPem, key: options.current.keyPem };
  const call = { path, payload: { csr }, tls, trustDomain: options.trustDomain };
  const connectTimeout = connectTimeoutFor(endpoints);
  // The replicas whose certificate did not verify: nothing was sent there, the next one is asked.
  const untrusted = new Set<string>();
  let body: Record<string, unknown>;
  try {
    body = await withFailover(
      endpoints,
      async (base, signal) => {
        try {
          return await post({ ...call, base, signal, connectTimeout });
        } catch (error) {
          if (untrustedServer(error) !== null) untrusted.add(base);
          throw error;
        }
      },
      { idempotent: true, sentNothing: (error) => untrustedServer(error) !== null },
    );
  } catch (error) {
    const code = untrustedServer(error);
    if (code === null || !endpoints.urls.every((url) => untrusted.has(url))) throw error;
    throw new EnrolmentError(
      'LOCKSTEP_ENROL_CA_CHANGED',
      "the control plane's CA changed while this workload was away (a root rotation it missed): no replica " +
        `presents a certificate its trust bundle verifies (${code}); join again with a new join token. ` +
        (error as Error).message,
      null,
      { cause: error },
    );
  }
  return credentials(body, keys, options.trustDomain, current);
}

/** The TLS code of a server certificate that does not chain to the bundle, in `error` or its causes; else null. */
function untrustedServer(error: unknown): string | null {
  for (let item = error, depth = 0; typeof item === 'object' && item !== null && depth < 5; depth += 1) {
    const { code, cause } = item as { code?: unknown; cause?: unknown };
    if (typeof code === 'string' && UNTRUSTED_SERVER.has(code)) return code;
    item = cause;
  }
  return null;
}

/**
 * A renewal or a recovery is for the identity the workload already has: read from its current leaf's DER,
 * at no particular time (an expired SVID recovers).
 */
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
async function fetchPinnedBundle(
  url: string,
  pinned: string,
  signal: AbortSignal,
  { connectTimeoutMs }: { connectTimeoutMs?: number },
): Promise<string> {
  const timeout = connectTimeoutMs === undefined ? {} : { timeout: connectTimeoutMs };
  const agent = new Agent({ connect: { rejectUnauthorized: false, ...timeout } });
  try {
    const response = await request(new URL('/v1/bundle', url), {
      dispatcher: agent,
      signal,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const text = await response.body.text();
    if (response.statusCode !== 200) {
      const message = `GET /v1/bundle answered ${response.statusCode}`;
      throw new EnrolmentError('LOCKSTEP_ENROL_BUNDLE', message, response.statusCode);
    }
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

/** One POST to the control plane at `base`, over TLS checked against its SPIFFE ID; its JSON answer, or a refusal. */
async function post(call: {
  base: string;
  path: string;
  payload: unknown;
  tls: { ca: string; cert?: string; key?: string };
  trustDomain: string;
  signal: AbortSignal;
  connectTimeout: { connectTimeoutMs?: number };
}): Promise<Record<string, unknown>> {
  const { base: url, path, payload, tls, trustDomain, signal, connectTimeout } = call;
  const agent = controlPlaneAgent(trustDomain, tls, undefined, connectTimeout);
  try {
    const response = await request(new URL(path, url), {
      method: 'POST',
      dispatcher: agent,
      signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    const text = await response.body.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch (error) {
      // Not the control plane's answer: a proxy in between, whose upstream did not answer.
      const message = `${path} answered ${response.statusCode} with no JSON: is that URL the control plane?`;
      throw new EnrolmentError('LOCKSTEP_ENROL_FAILED', message, response.statusCode, { cause: error });
    }
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
