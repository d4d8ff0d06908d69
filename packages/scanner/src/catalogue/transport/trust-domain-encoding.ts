import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.trust-domain-encoding',
  'Mis-encoded trust domain',
  'high',
  ['CWE-180', 'CWE-295'],
  'Certificates from the real CA naming the trust domain upper-cased and percent-encoded: it must be compared as written, never normalised first.',
  (c) => [c.probeCertificates['upper-case-trust-domain'], c.probeCertificates['percent-encoded-trust-domain']],
);
