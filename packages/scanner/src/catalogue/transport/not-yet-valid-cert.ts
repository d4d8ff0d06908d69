import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.not-yet-valid-cert',
  'Not-yet-valid certificate',
  'medium',
  ['CWE-298'],
  'An SVID from the real CA valid only from an hour from now.',
  (c) => [c.probeCertificates['not-yet-valid']],
);
