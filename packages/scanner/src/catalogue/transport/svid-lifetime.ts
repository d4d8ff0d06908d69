import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.svid-lifetime',
  'SVID lifetime over the maximum',
  'medium',
  ['CWE-298'],
  'An SVID from the real CA with ten years from notBefore to notAfter (it still expires within the hour): a guard ' +
    'bounds the lifetime it accepts (24 h by default), so a stolen long-lived SVID is not good for years.',
  (c) => [c.probeCertificates['lifetime-over-max']],
);
