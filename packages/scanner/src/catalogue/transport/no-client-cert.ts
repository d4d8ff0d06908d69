import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.no-client-cert',
  'No client certificate',
  'critical',
  ['CWE-306'],
  'TLS without a client certificate: the perimeter-only assumption that whoever reaches the port may call it.',
  (c) => [c.noCertificate],
);
