import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Answer, Attempt } from '../../send.ts';
import type { EndpointTarget, ScanContext } from '../attack.ts';
import frameworkAutoAnswer, { decidedByGuard, UNPARSABLE_METHOD } from './framework-auto-answer.ts';

const noCertificate = { name: 'no-certificate' };
const scanner = { name: 'scanner', cert: "the scanner's SVID", key: 'its key' };
const context = { noCertificate, scanner, tokens: { a: 'token-a' } } as unknown as ScanContext;
const target: EndpointTarget = {
  kind: 'endpoint',
  endpoint: '127.0.0.1:4102',
  method: 'GET',
  path: '/orders/x',
  inconclusive: null,
  service: { name: 'orders', spiffeId: null, endpoints: ['127.0.0.1:4102'], routes: [], source: 'registry' },
};
const answer = (status: number | null, code: string | null = null): Answer => ({
  status,
  code,
  requestId: null,
  probeAdmitted: false,
  error: status === null ? 'ECONNRESET' : null,
});

describe('transport.framework-auto-answer', () => {
  const [plan] = frameworkAutoAnswer.plan(target, context);
  const attempts = plan?.attempts ?? [];
  const sent = (method: string): Attempt => attempts.find((candidate) => candidate.method === method) as Attempt;

  it('asks what frameworks answer on their own, each without a certificate or a token (the unparsable line as the scanner)', () => {
    const asked = attempts.map((candidate) => `${candidate.method} ${candidate.path}`);
    assert.deepEqual(asked, [
      'OPTIONS /orders/x',
      'OPTIONS *',
      'HEAD /orders/x',
      'TRACE /orders/x',
      'PROPFIND /orders/x',
      `${UNPARSABLE_METHOD} /orders/x`,
      'GET /lockstep-scan-undeclared',
    ]);
    for (const candidate of attempts) {
      // Node refuses the line before any identity is read; with the scanner's SVID the guard records it as a probe.
      assert.equal(candidate.via, candidate.method === UNPARSABLE_METHOD ? scanner : noCertificate, candidate.method);
      assert.ok(!candidate.headers.some(([name]) => name === 'txn-token'), `${candidate.method}: no token`);
    }
  });

  it("counts only the guard's refusal of an unauthenticated caller as enforced", () => {
    const options = sent('OPTIONS');
    assert.equal(decidedByGuard(answer(401, 'LOCKSTEP_ERR_PEER_CERT_MISSING'), options), true);
    assert.equal(decidedByGuard(answer(null), options), true, 'refused in the TLS handshake');
    assert.equal(decidedByGuard(answer(200), options), false, "Express's router: 200 Allow: GET, HEAD");
    assert.equal(decidedByGuard(answer(204), options), false);
    assert.equal(decidedByGuard(answer(404), sent('GET')), false, "a framework's 404");
    assert.equal(decidedByGuard(answer(405), sent('TRACE')), false);
    assert.equal(
      decidedByGuard(answer(404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN'), sent('GET')),
      false,
      'a route lookup before authentication lets outsiders enumerate routes',
    );
    assert.equal(decidedByGuard(answer(400, 'LOCKSTEP_ERR_INPUT_INVALID'), options), false);
  });

  it("takes the guard's 400 for a request line Node cannot parse, and nothing else for it", () => {
    const unparsable = sent(UNPARSABLE_METHOD);
    assert.equal(decidedByGuard(answer(400, 'LOCKSTEP_ERR_INPUT_INVALID'), unparsable), true);
    assert.equal(
      decidedByGuard(answer(404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN'), unparsable),
      true,
      'a guard that did parse it still decided it',
    );
    assert.equal(decidedByGuard(answer(400), unparsable), false, "Node's own bare 400");
    assert.equal(decidedByGuard(answer(501), unparsable), false);
  });
});
