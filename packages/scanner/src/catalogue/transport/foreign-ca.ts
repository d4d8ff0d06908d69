import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.foreign-ca',
  'Certificate from a foreign CA',
  'critical',
  ['CWE-295'],
  "A well-formed SVID with the scanner's SPIFFE ID, issued by a CA the trust bundle does not hold.",
  (c) => [c.foreignCa],
);
