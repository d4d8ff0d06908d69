import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.two-uri-sans',
  'Two URI SANs',
  'high',
  ['CWE-295'],
  'An SVID from the real CA carrying two SPIFFE IDs; an X.509-SVID has exactly one.',
  (c) => [c.probeCertificates['two-uri-sans']],
);
