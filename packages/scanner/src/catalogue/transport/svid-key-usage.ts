import { certificateAttack } from './define.ts';

export default certificateAttack(
  'transport.svid-key-usage',
  'Key usage outside the X509-SVID rules',
  'high',
  ['CWE-295'],
  'SVIDs from the real CA (CA=false) with keyCertSign, with cRLSign, with no key usage, and with a non-critical key ' +
    'usage: X509-SVID §4.3 asks for a critical key usage with digitalSignature and never a signing one on a leaf.',
  (c) => [
    c.probeCertificates['key-cert-sign'],
    c.probeCertificates['crl-sign'],
    c.probeCertificates['no-key-usage'],
    c.probeCertificates['key-usage-not-critical'],
  ],
);
