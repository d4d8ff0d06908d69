import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GuardError } from '@lockstep/guard';
import { deniedAnswer, readCheckRequest } from './check-messages.ts';

const request = (http: unknown, source: unknown = { certificate: 'pem' }) => ({
  attributes: { source, request: { http } },
});

describe('readCheckRequest', () => {
  it('reads the method, the target, the certificate and only the headers the pipeline reads', () => {
    const read = readCheckRequest(
      request(
        {
          method: 'GET',
          path: '/orders/7?x=1',
          headers: { 'txn-token': 'a', traceparent: 't', cookie: 'secret' },
          header_map: { headers: [{ key: 'Txn-Token', value: '', raw_value: Buffer.from('b') }] },
        },
        { certificate: 'pem', principal: 'spiffe://shop.test/svc/admin' },
      ),
      128,
    );
    assert.deepEqual(read, {
      method: 'GET',
      path: '/orders/7?x=1',
      headers: { 'txn-token': ['a', 'b'], traceparent: 't' },
      certificate: 'pem',
    });
  });

  it('refuses, never throws on, whatever does not fit', () => {
    const shapes: unknown[] = [
      null,
      42,
      { attributes: 'x' },
      request(null),
      request({ method: 'GET' }),
      request({ method: 'G E T', path: '/' }),
      request({ method: 'GET', path: '' }),
      request({ method: 'GET', path: '/', headers: { 'txn-token': 7 } }),
      request({ method: 'GET', path: '/', header_map: { headers: [{ key: 1, value: 'v' }] } }),
      request({ method: 'GET', path: '/', headers: { a: '1', b: '2', c: '3' } }),
    ];
    for (const shape of shapes) {
      const read = readCheckRequest(shape, 2);
      assert.ok(read instanceof GuardError, JSON.stringify(shape));
      assert.equal(read.code, 'LOCKSTEP_ERR_INPUT_INVALID');
    }
  });

  it('takes no certificate as no certificate, whatever source holds', () => {
    const read = readCheckRequest(request({ method: 'GET', path: '/' }, { principal: 'spiffe://shop.test/svc/a' }), 8);
    assert.ok(!(read instanceof GuardError));
    assert.equal(read.certificate, '');
  });
});

describe('deniedAnswer', () => {
  it('is UNAUTHENTICATED for a 401, PERMISSION_DENIED otherwise, with the rendered refusal', () => {
    const unauthenticated = deniedAnswer('LOCKSTEP_ERR_TXN_TOKEN_MISSING', 'r-1');
    assert.equal(unauthenticated.status.code, 16);
    assert.equal(unauthenticated.denied_response?.status.code, 401);
    const notFound = deniedAnswer('LOCKSTEP_ERR_ROUTE_UNKNOWN', 'r-2');
    assert.deepEqual(notFound.status, { code: 7, message: 'LOCKSTEP_ERR_ROUTE_UNKNOWN' });
    assert.equal(notFound.denied_response?.status.code, 404);
    const names = notFound.denied_response?.headers.map(({ header }) => header.key);
    assert.deepEqual(names, ['content-type', 'cache-control', 'lockstep-error', 'lockstep-request-id']);
  });
});
