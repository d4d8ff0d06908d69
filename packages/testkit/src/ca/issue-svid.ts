import { issueCertificate } from './issue-cert.ts';
import type { CertificateSigner, IssuedCert } from './issue-cert.ts';
import { serviceSpiffeId } from './spiffe-id.ts';

export interface IssueSvidOptions {
  /** The workload name: the SVID is for spiffe://<trust domain>/svc/<service>. */
  readonly service: string;
  /** Default 3600 (the DESIGN's 1 h SVID lifetime). */
  readonly ttlSeconds?: number;
}

export interface Svid extends IssuedCert {
  readonly spiffeId: string;
}

/** A well-formed X.509-SVID: one URI SAN, CA=false, digitalSignature, serverAuth + clientAuth. */
export async function issueSvid(signer: CertificateSigner, trustDomain: string, options: IssueSvidOptions): Promise<Svid> {
  const spiffeId = serviceSpiffeId(trustDomain, options.service);
  const ttlSeconds = options.ttlSeconds ?? 3600;
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) throw new TypeError(`ttlSeconds must be a positive number of seconds; got ${ttlSeconds}`);
  const issued = await issueCertificate(signer, {
    uris: [spiffeId],
    subject: `CN=${options.service}`,
    notAfter: new Date(Date.now() + ttlSeconds * 1000),
  });
  return { spiffeId, ...issued };
}
