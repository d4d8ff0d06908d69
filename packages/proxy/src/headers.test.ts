import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Admission } from '@lockstep/guard';
import { egressHeaders, headerSafe, responseHeaders, upstreamHeaders } from './headers.ts';

const admission = {
  requestId: 'r-1',
  peer: { spiffeId: 'spiffe://shop.test/svc/gateway' },
  txn: { token: 'verified.token.jws', claims: { sub: 'zoë', txn: 't-1' }, roles: ['customer', 'a,b'] },
} as unknown as Admission;

const pairs = (flat: string[]) => flat.flatMap((_, i) => (i % 2 === 0 ? [[flat[i], flat[i + 1]]] : []));

describe('upstreamHeaders', () => {
  it("drops the client's x-lockstep-*, txn-token, host, framing, content description and hop-by-hop headers, then sets the verified ones", () => {
    const raw = [
      'Host',
      'orders',
      'X-Lockstep-Caller',
      'spiffe://shop.test/svc/admin',
      'x-lockstep-sub',
      'root',
      'Txn-Token',
      'forged',
      'Connection',
      'keep-alive, X-Secret',
      'X-Secret',
      's',
      'Keep-Alive',
      '5',
      'Transfer-Encoding',
      'chunked',
      'Content-Length',
      '9',
      'Accept',
      'a/b',
      'Accept',
      'c/d',
      'Content-Type',
      'application/evil+json; charset=utf-16',
      'Content-Encoding',
      'gzip',
    ];
    assert.deepEqual(pairs(upstreamHeaders(raw, admission, true)), [
      ['accept', 'a/b'],
      ['accept', 'c/d'],
      ['content-type', 'application/json'],
      ['x-lockstep-request-id', 'r-1'],
      ['x-lockstep-caller', 'spiffe://shop.test/svc/gateway'],
      ['x-lockstep-sub', 'zo%C3%AB'],
      ['x-lockstep-txn', 't-1'],
      ['x-lockstep-roles', 'customer,a%2Cb'],
      ['txn-token', 'verified.token.jws'],
      ['x-forwarded-proto', 'https'],
    ]);
  });

  it('drops every name with `_`: the upstream may read X-Lockstep_Roles as x-lockstep-roles (CGI, gunicorn, Puma)', () => {
    const open = { requestId: 'r-3', peer: null, txn: null } as unknown as Admission;
    const raw = [
      'X-Lockstep_Roles',
      'admin',
      'X-Lockstep_Sub',
      'root',
      'Txn_Token',
      'forged',
      'x_anything',
      '1',
    ].concat(['X-LOCKSTEP-caller', 'forged', 'Accept', 'a']);
    assert.deepEqual(pairs(upstreamHeaders(raw, open, false)), [
      ['accept', 'a'],
      ['x-lockstep-request-id', 'r-3'],
      ['x-forwarded-proto', 'https'],
    ]);
  });

  it("drops other proxies' client-certificate headers: the upstream must not take a client's word for who it is", () => {
    const open = { requestId: 'r-4', peer: null, txn: null } as unknown as Admission;
    const raw = [
      'X-Forwarded-Client-Cert',
      'By=x;Cert="forged"',
      'X-Client-Cert',
      'forged',
      'X-Forwarded-Tls-Client-Cert',
      'forged',
    ];
    assert.deepEqual(pairs(upstreamHeaders([...raw, 'Accept', 'a'], open, false)), [
      ['accept', 'a'],
      ['x-lockstep-request-id', 'r-4'],
      ['x-forwarded-proto', 'https'],
    ]);
  });

  it("replaces the client's forwarding headers with what the sidecar saw: its address, and https", () => {
    const open = { requestId: 'r-5', peer: null, txn: null } as unknown as Admission;
    const raw = [
      'X-Forwarded-For',
      '10.0.0.1',
      'Forwarded',
      'for=10.0.0.1;proto=http',
      'X-Real-IP',
      '10.0.0.1',
      'X-Forwarded-Proto',
      'http',
      'X-Forwarded-Host',
      'admin.internal',
      'Accept',
      'a',
    ];
    assert.deepEqual(pairs(upstreamHeaders(raw, open, false, '127.0.0.9')), [
      ['accept', 'a'],
      ['x-lockstep-request-id', 'r-5'],
      ['x-forwarded-for', '127.0.0.9'],
      ['x-forwarded-proto', 'https'],
    ]);
  });

  it('a public route: no caller, no token; the content type only with a body', () => {
    const open = { requestId: 'r-2', peer: null, txn: null } as unknown as Admission;
    const flat = upstreamHeaders(['Content-Type', 'text/plain', 'Txn-Token', 'unverified'], open, false);
    assert.deepEqual(pairs(flat), [
      ['x-lockstep-request-id', 'r-2'],
      ['x-forwarded-proto', 'https'],
    ]);
  });
});

describe('headerSafe', () => {
  it('leaves plain values alone and percent-encodes %, comma, spaces and non-ASCII', () => {
    assert.equal(headerSafe('spiffe://shop.test/svc/gateway'), 'spiffe://shop.test/svc/gateway');
    assert.equal(headerSafe('a b,c%d\u00e9'), 'a%20b%2Cc%25d%C3%A9');
  });
});

describe('responseHeaders and egressHeaders', () => {
  it('drop hop-by-hop headers and those the Connection header names', () => {
    const kept = responseHeaders({
      connection: 'x-internal',
      'x-internal': '1',
      'transfer-encoding': 'chunked',
      etag: 'e',
    });
    assert.deepEqual(kept, { etag: 'e' });
  });

  it("drop the target, the framing and any x-lockstep-* the app passed on; the Txn-Token is the egress's to set", () => {
    const headers = {
      host: '127.0.0.1',
      'lockstep-target': 'payments',
      'txn-token': 't',
      'x-lockstep-sub': 'x',
      accept: 'a',
    };
    assert.deepEqual(egressHeaders(headers, 'lockstep-target'), { accept: 'a' });
  });

  it('drop every name with `_` on the egress too: the server could read it as an identity header', () => {
    const headers = { 'x-lockstep_roles': 'admin', txn_token: 'forged', lockstep_target: 'x', accept: 'a' };
    assert.deepEqual(egressHeaders(headers, 'lockstep-target'), { accept: 'a' });
  });
});
