import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { controlPlaneEndpoints, isFailover } from './endpoints.ts';

const A = 'https://cp-0.shop.test:8443';
const B = 'https://cp-1.shop.test:8443';
const C = 'https://cp-2.shop.test:8443';

/** Endpoints on a clock of the test's own; jitter at its middle unless told. */
function withClock(spec: string | readonly string[], options: { spreadKey?: string; random?: () => number } = {}) {
  let time = 1_000_000;
  const endpoints = controlPlaneEndpoints(spec, { random: () => 0.5, ...options, now: () => time });
  return {
    endpoints,
    advance(ms: number) {
      time += ms;
    },
  };
}

describe('controlPlaneEndpoints', () => {
  it('takes one URL, a comma-separated list or an array of either, trimmed and without duplicates', () => {
    assert.deepEqual(controlPlaneEndpoints(A).urls, [A]);
    assert.deepEqual(controlPlaneEndpoints(` ${A}, ${B} ,,${C},`).urls, [A, B, C]);
    assert.deepEqual(controlPlaneEndpoints([A, `${B},${C}`, A]).urls, [A, B, C]);
    assert.deepEqual(controlPlaneEndpoints([`${A}/`, A]).urls, [`${A}/`], 'the same URL spelt twice is one');
  });

  it('refuses what is not an https URL, saying what to write', () => {
    const refused = (spec: unknown, fragment: RegExp) =>
      assert.throws(
        () => controlPlaneEndpoints(spec as string),
        (error: unknown) => error instanceof TypeError && fragment.test(error.message),
      );
    refused('http://cp:8443', /must use https, e\.g\. https:\/\/cp:8443; got "http:\/\/cp:8443"/);
    refused(`${A},http://cp-1:8443`, /must use https/);
    refused('cp:8443', /must use https/);
    refused('not a url', /"not a url" is not a URL/);
    refused('', /no control plane URL in ""/);
    refused([' , '], /no control plane URL/);
    refused([], /no control plane URL/);
    refused(8443, /a string or a list of strings/);
    refused([A, 8443], /a string or a list of strings/);
  });

  it('orders: the last that answered first, then the list, those in backoff last (soonest out first)', () => {
    const { endpoints, advance } = withClock([A, B, C]);
    assert.deepEqual(endpoints.order(), [A, B, C], 'the order given');
    endpoints.ok(B);
    assert.deepEqual(endpoints.order(), [B, A, C], 'the one that answered last first');
    endpoints.failed(B);
    assert.deepEqual(endpoints.order(), [A, C, B], 'a failed one goes last, and is no longer first');
    advance(100);
    endpoints.failed(A);
    assert.deepEqual(endpoints.order(), [C, B, A], 'in backoff: the one out soonest first');
    endpoints.failed(C);
    assert.deepEqual(endpoints.order(), [B, A, C], 'all failed: all still tried');
    endpoints.ok(A);
    assert.deepEqual(endpoints.order(), [A, B, C], 'an answer ends its backoff');
    endpoints.ok('https://elsewhere:8443');
    endpoints.failed('https://elsewhere:8443');
    assert.deepEqual(endpoints.order(), [A, B, C], 'a URL not in the set changes nothing');
  });

  it('backs off 1 s, doubling to 30 s, with jitter between half and the whole', () => {
    const draws = [0, 1, 0.5];
    let draw = 0;
    const { endpoints, advance } = withClock([A, B], { random: () => draws[draw++ % draws.length] as number });
    const backoffOfA = () => {
      // How long A stays behind B: step the clock until it comes back to the front.
      let waited = 0;
      while (endpoints.order()[0] !== A) {
        advance(10);
        waited += 10;
      }
      return waited;
    };
    endpoints.failed(A);
    assert.equal(backoffOfA(), 500, '1 s, jitter 0: half');
    endpoints.failed(A);
    assert.equal(backoffOfA(), 2_000, '2 s, jitter 1: the whole');
    endpoints.failed(A);
    assert.equal(backoffOfA(), 3_000, '4 s, jitter ½: three quarters');
    for (let failure = 4; failure <= 8; failure += 1) endpoints.failed(A);
    draw = 1; // jitter 1
    endpoints.failed(A);
    assert.equal(backoffOfA(), 30_000, 'capped at 30 s');
    endpoints.ok(A);
    draw = 1;
    endpoints.failed(A);
    assert.equal(backoffOfA(), 1_000, 'an answer starts the backoff over');
  });

  it('rotates the list by a hash of spreadKey: the same key, the same order; a fleet spreads', () => {
    const list = [A, B, C];
    const firsts = new Set<string>();
    for (let instance = 0; instance < 30; instance += 1) {
      const order = controlPlaneEndpoints(list, { spreadKey: `orders-${instance}` }).order();
      assert.deepEqual(order, controlPlaneEndpoints(list, { spreadKey: `orders-${instance}` }).order());
      const at = list.indexOf(order[0] as string);
      assert.deepEqual(order, [...list.slice(at), ...list.slice(0, at)], 'a rotation, not a shuffle');
      firsts.add(order[0] as string);
    }
    assert.equal(firsts.size, 3, 'every replica is first for some instance');
  });
});

describe('isFailover', () => {
  const coded = (code: string, extra: object = {}) => Object.assign(new Error(code), { code, ...extra });
  const table: [string, unknown, boolean][] = [
    ['connection refused', coded('ECONNREFUSED'), true],
    ['reset', coded('ECONNRESET'), true],
    ['host unreachable', coded('EHOSTUNREACH'), true],
    ['network unreachable', coded('ENETUNREACH'), true],
    ['timed out', coded('ETIMEDOUT'), true],
    ['broken pipe', coded('EPIPE'), true],
    ['a replica name that no longer resolves', coded('ENOTFOUND'), true],
    ["undici's connect timeout", coded('UND_ERR_CONNECT_TIMEOUT'), true],
    ["undici's socket closed", coded('UND_ERR_SOCKET'), true],
    ["undici's headers timeout", coded('UND_ERR_HEADERS_TIMEOUT'), true],
    ['socket hang up', new Error('socket hang up'), true],
    [
      'wrapped: fetch failed, caused by a refusal',
      new TypeError('fetch failed', { cause: coded('ECONNREFUSED') }),
      true,
    ],
    ['tried at several addresses', new AggregateError([coded('ECONNREFUSED'), coded('ECONNREFUSED')]), true],
    ['502', 502, true],
    ['503', 503, true],
    ['504', 504, true],
    ['an answer that is not JSON', new SyntaxError('Unexpected token <'), true],
    [
      'not JSON, as the cause of a 200',
      Object.assign(new Error('no JSON'), { status: 200, cause: new SyntaxError('x') }),
      true,
    ],
    ['a coded 503: a replica starting', coded('LOCKSTEP_CP_STARTING', { status: 503 }), true],
    ['a coded 503: a replica cut off from its store', coded('LOCKSTEP_CP_STORE', { status: 503 }), true],
    [
      'a coded 504 from a gateway',
      Object.assign(new Error('x'), { statusCode: 504, error: 'LOCKSTEP_CP_STORE' }),
      true,
    ],
    ['200', 200, false],
    ['500', 500, false],
    [
      'a coded 500: an internal error, which another replica would repeat',
      coded('LOCKSTEP_CP_INTERNAL', { status: 500 }),
      false,
    ],
    ['400', 400, false],
    ['401', 401, false],
    ['403', 403, false],
    ['404', 404, false],
    ['a 401 whatever it says', coded('ECONNRESET', { status: 401 }), false],
    ['a 403 that is not JSON', Object.assign(new Error('x'), { statusCode: 403, cause: new SyntaxError('x') }), false],
    ['a revocation', coded('LOCKSTEP_CP_PEER_REVOKED'), false],
    ['a coded refusal in `error`', Object.assign(new Error('x'), { error: 'LOCKSTEP_CP_WORKLOAD_REVOKED' }), false],
    ['a coded refusal as the cause', new Error('x', { cause: coded('LOCKSTEP_CP_JOIN_TOKEN_USED') }), false],
    ['an abort (the caller gave up)', coded('UND_ERR_ABORTED'), false],
    ['a TLS identity refusal', new Error('the server presented spiffe://shop.test/svc/orders'), false],
    ['nothing', undefined, false],
    ['a string', 'ECONNREFUSED', false],
  ];
  for (const [what, given, expected] of table) {
    it(`${expected ? 'fails over' : 'does not fail over'}: ${what}`, () => {
      assert.equal(isFailover(given), expected);
    });
  }
});
