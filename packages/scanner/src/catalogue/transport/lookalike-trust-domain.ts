import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.lookalike-trust-domain',
  'Lookalike trust domain',
  'critical',
  ['CWE-295', 'CWE-346'],
  'Certificates from the real CA naming spiffe://<td>.evil/… and spiffe://evil<td>/…: a prefix or suffix match would take them for ours.',
  (c) => [c.probeCertificates['lookalike-suffix'], c.probeCertificates['lookalike-prefix']],
);
