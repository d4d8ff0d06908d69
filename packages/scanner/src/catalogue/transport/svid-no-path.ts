import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.svid-no-path',
  'SPIFFE ID without a path',
  'medium',
  ['CWE-295'],
  "An SVID from the real CA naming spiffe://<td> alone: the trust domain's own ID, which names no workload.",
  (c) => [c.probeCertificates['no-path']],
);
