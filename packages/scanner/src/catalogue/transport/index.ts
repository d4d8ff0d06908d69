/** The transport attacks, in catalogue order. */
import type { Attack } from '../attack.ts';
import noClientCert from './no-client-cert.ts';
import foreignCa from './foreign-ca.ts';
import expiredCert from './expired-cert.ts';
import notYetValidCert from './not-yet-valid-cert.ts';
import twoUriSans from './two-uri-sans.ts';
import noUriSan from './no-uri-san.ts';
import lookalikeTrustDomain from './lookalike-trust-domain.ts';
import trustDomainEncoding from './trust-domain-encoding.ts';
import svidKeyUsage from './svid-key-usage.ts';
import svidNoPath from './svid-no-path.ts';
import svidLifetime from './svid-lifetime.ts';
import plaintext from './plaintext.ts';
import frameworkAutoAnswer from './framework-auto-answer.ts';

export const transportAttacks: readonly Attack[] = [
  noClientCert,
  foreignCa,
  expiredCert,
  notYetValidCert,
  twoUriSans,
  noUriSan,
  lookalikeTrustDomain,
  trustDomainEncoding,
  svidKeyUsage,
  svidNoPath,
  svidLifetime,
  plaintext,
  frameworkAutoAnswer,
];
