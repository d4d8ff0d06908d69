import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.no-uri-san',
  'No URI SAN',
  'high',
  ['CWE-295'],
  'A certificate from the real CA with a DNS name and no SPIFFE ID.',
  (c) => [c.probeCertificates['no-uri-san']],
);
