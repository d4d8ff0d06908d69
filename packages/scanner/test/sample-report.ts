/**
 * A realistic scan of the shop for the reporter tests: four services, attacks in all four
 * categories, every outcome, and evidence carrying what a hostile service could send back —
 * markup, quotes, an escape sequence, a NUL, a bidi override, a lone surrogate.
 */
import type { AttackInfo, AttackResult, Outcome, ScanReport, ScannedService } from '../src/types.ts';

/** Evidence no reporter may pass through as is. */
export const HOSTILE_EVIDENCE =
  'sent POST /orders with body {"note":"<img src=x onerror=alert(1)>"} & \'quoted\' → 201 Created; echoed \u0000NUL \u001b[31mRED\u001b[0m \u202egnp.exe\u202c \ud800 (request id r-7f3a)';

const services: ScannedService[] = [
  {
    name: 'gateway',
    spiffeId: 'spiffe://shop.test/svc/gateway',
    endpoints: ['127.0.0.1:4100'],
    routes: 6,
    source: 'registry',
  },
  {
    name: 'orders',
    spiffeId: 'spiffe://shop.test/svc/orders',
    endpoints: ['127.0.0.1:4101'],
    routes: 4,
    source: 'registry',
  },
  {
    name: 'payments',
    spiffeId: 'spiffe://shop.test/svc/payments',
    endpoints: ['127.0.0.1:4102', '[::1]:4102'],
    routes: 3,
    source: 'registry',
  },
  { name: 'catalog', spiffeId: null, endpoints: ['127.0.0.1:4103'], routes: 2, source: 'manifest' },
];

const attacks: AttackInfo[] = [
  {
    id: 'tls.no-client-cert',
    title: 'TLS handshake without a client certificate',
    category: 'transport',
    severity: 'critical',
    cwe: ['CWE-295'],
    owasp: 'API2:2023 Broken Authentication',
    nist: 'Service-to-service authentication (mTLS)',
    description: 'Opens a TLS connection to the endpoint and presents no client certificate.',
    enforced: 'The handshake is refused, or every request is refused with 401 LOCKSTEP_ERR_NO_PEER_CERT.',
  },
  {
    id: 'tls.foreign-ca',
    title: 'Client certificate from a foreign CA',
    category: 'transport',
    severity: 'high',
    cwe: ['CWE-295', 'CWE-296'],
    owasp: 'API2:2023 Broken Authentication',
    nist: 'Service-to-service authentication (mTLS)',
    description: 'Presents an SVID for a registered service, signed by a CA outside the trust bundle.',
    enforced: 'The handshake fails with an unknown-CA alert.',
  },
  {
    id: 'txn.alg-none',
    title: 'Txn-Token with alg "none"',
    category: 'txn-token',
    severity: 'critical',
    cwe: ['CWE-347'],
    owasp: 'API2:2023 Broken Authentication',
    nist: 'Token-based authorization',
    description: 'Sends a well-formed Txn-Token with an unsigned header (alg none) over a valid mTLS connection.',
    enforced: '401 with reason LOCKSTEP_ERR_TXN_INVALID from the txn-token step.',
  },
  {
    id: 'txn.expired',
    title: 'Expired Txn-Token',
    category: 'txn-token',
    severity: 'medium',
    cwe: ['CWE-613'],
    owasp: null,
    nist: 'Token-based authorization',
    description: 'Replays a correctly signed Txn-Token whose exp is in the past.',
    enforced: '401 with reason LOCKSTEP_ERR_TXN_EXPIRED.',
  },
  {
    id: 'authz.wrong-caller',
    title: 'Route called by a service the policy does not name',
    category: 'authorization',
    severity: 'high',
    cwe: ['CWE-285', 'CWE-863'],
    owasp: 'API5:2023 Broken Function Level Authorization',
    nist: 'Policy-based access control',
    description: 'Calls each route with a valid SVID and Txn-Token of a service no policy permits for it.',
    enforced: '403 with reason LOCKSTEP_ERR_FORBIDDEN from the authorize step.',
  },
  {
    id: 'input.oversized-body',
    title: 'Body larger than the route allows',
    category: 'input',
    severity: 'low',
    cwe: ['CWE-770'],
    owasp: 'API4:2023 Unrestricted Resource Consumption',
    nist: null,
    description: "Sends a JSON body one byte over the route's limit.",
    enforced: '413 before the handler runs.',
  },
  {
    id: 'input.unknown-field',
    title: 'Unknown field in a JSON body',
    category: 'input',
    severity: 'medium',
    cwe: ['CWE-20', 'CWE-915'],
    owasp: 'API3:2023 Broken Object Property Level Authorization',
    nist: null,
    description: "Adds a field the route's schema does not declare.",
    enforced: '400 with reason LOCKSTEP_ERR_INVALID_INPUT from the validate step.',
  },
];

function result(
  service: string,
  attack: string,
  target: string,
  outcome: Outcome,
  evidence: string,
  status: number | null,
  reason: string | null,
): AttackResult {
  return {
    attack,
    service,
    target,
    outcome,
    evidence,
    status,
    reason,
    requestId: status === null ? null : `r-${service}-${attack}`,
    durationMs: 12.5,
  };
}

const results: AttackResult[] = [
  result(
    'gateway',
    'tls.no-client-cert',
    '127.0.0.1:4100',
    'enforced',
    'no client certificate → handshake refused (certificate required alert)',
    null,
    null,
  ),
  result(
    'gateway',
    'tls.foreign-ca',
    '127.0.0.1:4100',
    'enforced',
    'foreign-CA SVID → handshake refused (unknown CA)',
    null,
    null,
  ),
  result(
    'gateway',
    'txn.alg-none',
    'GET /products',
    'skipped',
    'the gateway is the edge: it mints Txn-Tokens, it does not take them',
    null,
    null,
  ),
  result(
    'gateway',
    'authz.wrong-caller',
    'GET /products',
    'enforced',
    'caller payments → 403 LOCKSTEP_ERR_FORBIDDEN',
    403,
    'LOCKSTEP_ERR_FORBIDDEN',
  ),
  result('gateway', 'input.oversized-body', 'GET /products', 'skipped', 'route takes no body', null, null),
  result(
    'orders',
    'tls.no-client-cert',
    '127.0.0.1:4101',
    'enforced',
    'no client certificate → handshake refused',
    null,
    null,
  ),
  result('orders', 'tls.foreign-ca', '127.0.0.1:4101', 'enforced', 'foreign-CA SVID → handshake refused', null, null),
  result(
    'orders',
    'txn.alg-none',
    'GET /orders/:id',
    'weak',
    'alg none Txn-Token → 200 OK with the order body',
    200,
    null,
  ),
  result(
    'orders',
    'txn.alg-none',
    'POST /orders',
    'enforced',
    'alg none Txn-Token → 401 LOCKSTEP_ERR_TXN_INVALID',
    401,
    'LOCKSTEP_ERR_TXN_INVALID',
  ),
  result(
    'orders',
    'txn.expired',
    'GET /orders/:id',
    'enforced',
    'expired Txn-Token → 401 LOCKSTEP_ERR_TXN_EXPIRED',
    401,
    'LOCKSTEP_ERR_TXN_EXPIRED',
  ),
  result('orders', 'input.unknown-field', 'POST /orders', 'weak', HOSTILE_EVIDENCE, 201, null),
  result(
    'payments',
    'tls.no-client-cert',
    '127.0.0.1:4102',
    'enforced',
    'no client certificate → handshake refused',
    null,
    null,
  ),
  result(
    'payments',
    'tls.no-client-cert',
    '[::1]:4102',
    'inconclusive',
    'connect ECONNREFUSED [::1]:4102: no answer, no control request passed',
    null,
    null,
  ),
  result(
    'payments',
    'txn.expired',
    'POST /payments',
    'weak',
    'expired Txn-Token (exp 10 min ago) → 202 Accepted',
    202,
    null,
  ),
  result(
    'payments',
    'authz.wrong-caller',
    'POST /payments',
    'enforced',
    'caller catalog → 403 LOCKSTEP_ERR_FORBIDDEN',
    403,
    'LOCKSTEP_ERR_FORBIDDEN',
  ),
  result(
    'payments',
    'input.oversized-body',
    'POST /payments',
    'enforced',
    '1 MiB + 1 byte body → 413',
    413,
    'LOCKSTEP_ERR_BODY_TOO_LARGE',
  ),
  result(
    'catalog',
    'tls.no-client-cert',
    '127.0.0.1:4103',
    'enforced',
    'no client certificate → handshake refused',
    null,
    null,
  ),
  result(
    'catalog',
    'authz.wrong-caller',
    'GET /items',
    'inconclusive',
    'control request with the permitted caller got 503 too: cannot tell refusal from outage',
    503,
    null,
  ),
  result('catalog', 'input.unknown-field', 'GET /items', 'skipped', 'route takes no body', null, null),
];

function count(outcome: Outcome): number {
  return results.filter((r) => r.outcome === outcome).length;
}

export function sampleReport(overrides: Partial<ScanReport> = {}): ScanReport {
  return {
    tool: { name: 'lockstep-scan', version: '0.1.0' },
    runId: 'scan-20260314T101500Z-3f2a',
    trustDomain: 'shop.test',
    scanner: 'spiffe://shop.test/scanner/ci',
    startedAt: '2026-03-14T10:15:00.000Z',
    finishedAt: '2026-03-14T10:15:04.250Z',
    durationMs: 4250,
    services,
    attacks,
    results,
    summary: {
      enforced: count('enforced'),
      weak: count('weak'),
      inconclusive: count('inconclusive'),
      skipped: count('skipped'),
    },
    inconclusiveReasons: [
      { reason: "an answer that is not the guard's (each result shows it)", results: count('inconclusive') },
    ],
    exitCode: 1,
    ...overrides,
  };
}
