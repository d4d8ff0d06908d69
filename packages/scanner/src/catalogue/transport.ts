/**
 * Transport attacks, at every endpoint: certificates a guard must refuse in step 1, and plain HTTP.
 * Each is sent with a genuine Txn-Token, so a guard that accepted the certificate answers with a
 * later step's refusal (the scanner is permitted nowhere) — which is how the scanner tells.
 */
import type { Answer, Credential } from '../send.ts';
import { attempt, NIST, OWASP, type Attack, type EndpointTarget, type Plan, type ScanContext, type Target } from './attack.ts';

function onEndpoint(target: Target, plan: (target: EndpointTarget) => Omit<Plan, 'target'>): Plan[] {
  if (target.kind !== 'endpoint') return [];
  if (target.unreachable !== null) return [{ target: target.endpoint, attempts: [], enforcedBy: 'transport', inconclusive: target.unreachable }];
  return [{ target: target.endpoint, ...plan(target) }];
}

function certificateAttack(id: string, title: string, severity: Attack['severity'], cwe: string[], description: string, credentials: (context: ScanContext) => Credential[]): Attack {
  return {
    id, title, category: 'transport', severity, cwe, owasp: OWASP.api2, nist: NIST.authentication, description,
    enforced: 'Refused by the transport step (401 LOCKSTEP_ERR_PEER_*) or in the TLS handshake.',
    on: 'endpoint',
    plan: (target, context) => onEndpoint(target, (endpoint) => ({ attempts: credentials(context).map((via) => attempt(endpoint, context, { via })), enforcedBy: 'transport' })),
  };
}

export const transportAttacks: readonly Attack[] = [
  certificateAttack('transport.no-client-cert', 'No client certificate', 'critical', ['CWE-306'],
    'TLS without a client certificate: the perimeter-only assumption that whoever reaches the port may call it.', (c) => [c.noCertificate]),
  certificateAttack('transport.foreign-ca', 'Certificate from a foreign CA', 'critical', ['CWE-295'],
    'A well-formed SVID with the scanner\'s SPIFFE ID, issued by a CA the trust bundle does not hold.', (c) => [c.foreignCa]),
  certificateAttack('transport.expired-cert', 'Expired certificate', 'high', ['CWE-298'],
    'An SVID from the real CA whose validity ended an hour ago.', (c) => [c.probeCertificates.expired]),
  certificateAttack('transport.not-yet-valid-cert', 'Not-yet-valid certificate', 'medium', ['CWE-298'],
    'An SVID from the real CA valid only from an hour from now.', (c) => [c.probeCertificates['not-yet-valid']]),
  certificateAttack('transport.two-uri-sans', 'Two URI SANs', 'high', ['CWE-295'],
    'An SVID from the real CA carrying two SPIFFE IDs; an X.509-SVID has exactly one.', (c) => [c.probeCertificates['two-uri-sans']]),
  certificateAttack('transport.no-uri-san', 'No URI SAN', 'high', ['CWE-295'],
    'A certificate from the real CA with a DNS name and no SPIFFE ID.', (c) => [c.probeCertificates['no-uri-san']]),
  certificateAttack('transport.lookalike-trust-domain', 'Lookalike trust domain', 'critical', ['CWE-295', 'CWE-346'],
    'Certificates from the real CA naming spiffe://<td>.evil/… and spiffe://evil<td>/…: a prefix or suffix match would take them for ours.',
    (c) => [c.probeCertificates['lookalike-suffix'], c.probeCertificates['lookalike-prefix']]),
  certificateAttack('transport.trust-domain-encoding', 'Mis-encoded trust domain', 'high', ['CWE-180', 'CWE-295'],
    'Certificates from the real CA naming the trust domain upper-cased and percent-encoded: it must be compared as written, never normalised first.',
    (c) => [c.probeCertificates['upper-case-trust-domain'], c.probeCertificates['percent-encoded-trust-domain']]),
  {
    id: 'transport.plaintext', title: 'Plain HTTP to the service port', category: 'transport', severity: 'critical', cwe: ['CWE-319'],
    owasp: OWASP.api8, nist: NIST.communication,
    description: 'A plain HTTP request (no TLS) to every registered port, as a caller inside the perimeter would send it.',
    enforced: 'No HTTP answer (the TLS port closes the connection) or the guard\'s LOCKSTEP_ERR_TLS_HANDSHAKE.',
    on: 'endpoint',
    // Needs no reachable guard: a port that answers plain HTTP is the finding.
    plan: (target, context) => target.kind !== 'endpoint' ? [] : [{
      target: target.endpoint,
      attempts: [attempt(target, context, { via: 'plaintext', headers: [['x-user', 'lockstep-scan']] })],
      enforcedBy: 'transport',
      enforced: (answer: Answer) => answer.status === null || answer.code === 'LOCKSTEP_ERR_TLS_HANDSHAKE',
    }],
  },
];
