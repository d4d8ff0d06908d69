import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.expired-cert',
  'Expired certificate',
  'high',
  ['CWE-298'],
  'An SVID from the real CA whose validity ended an hour ago.',
  (c) => [c.probeCertificates.expired],
);
