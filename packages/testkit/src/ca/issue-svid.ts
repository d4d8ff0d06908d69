import { issueCertificate } from './issue-cert.ts';
import type { CertificateSigner, IssuedCert } from './issue-cert.ts';
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS } from '@lockstep/identity';
import { serviceSpiffeId } from './spiffe-id.ts';

export interface IssueSvidOptions {
  /** The workload name: the SVID is for spiffe://<trust domain>/svc/<service>. */
  readonly service: string;
  /**
   * Default 3600 (the DESIGN's 1 h SVID lifetime). At most 86 340: with the minute the certificate
   * is backdated, an SVID lives at most 24 h (the X509-SVID rules' default maximum).
   */
  readonly ttlSeconds?: number;
}

const BACKDATE_MS = 60_000;
const MAX_TTL_SECONDS = DEFAULT_MAX_SVID_LIFETIME_SECONDS - BACKDATE_MS / 1000;

export interface Svid extends IssuedCert {
  readonly spiffeId: string;
}

/**
 * A well-formed X.509-SVID that passes every X509-SVID leaf rule of @lockstep/identity: one URI SAN,
 * CA=false, critical key usage digitalSignature, serverAuth + clientAuth, at most 24 h.
 */
export async function issueSvid(
  signer: CertificateSigner,
  trustDomain: string,
  options: IssueSvidOptions,
): Promise<Svid> {
  const spiffeId = serviceSpiffeId(trustDomain, options.service);
  const ttlSeconds = options.ttlSeconds ?? 3600;
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TypeError(
      `ttlSeconds must be a positive number of seconds up to ${MAX_TTL_SECONDS} ` +
        `(an SVID lives at most 24 h); got ${ttlSeconds}. ` +
        'For a longer-lived certificate use issueCert({ uris, notAfter }).',
    );
  }
  const now = Date.now();
  const issued = await issueCertificate(signer, {
    uris: [spiffeId],
    subject: `CN=${options.service}`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + ttlSeconds * 1000),
  });
  return { spiffeId, ...issued };
}
