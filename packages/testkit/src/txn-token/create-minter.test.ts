import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { createTxnTokenMinter } from './create-minter.ts';
import type { TxnTokenMinter } from './create-minter.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('createTxnTokenMinter', () => {
  let minter: TxnTokenMinter;
  before(async () => {
    minter = await createTxnTokenMinter({ trustDomain: 'shop.test' });
  });

  it("mints a Txn-Token that jose jwtVerify accepts with the minter's JWKS under strict options", async () => {
    const token = await minter.mint();
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(minter.jwks), {
      algorithms: ['ES256'],
      typ: 'txntoken+jwt',
      audience: 'shop.test',
      maxTokenAge: 300,
      requiredClaims: ['txn', 'sub', 'exp', 'iat', 'scope', 'tctx', 'rctx', 'req_wl'],
    });
    assert.deepEqual(protectedHeader, { alg: 'ES256', typ: 'txntoken+jwt', kid: minter.kid });
    assert.match(String(payload['txn']), UUID);
    assert.equal(payload.aud, 'shop.test');
    assert.equal(payload.exp! - payload.iat!, 300);
    assert.ok(Math.abs(payload.iat! - Date.now() / 1000) < 5);
    assert.equal(typeof payload['scope'], 'string');
    assert.deepEqual(payload['tctx'], { roles: ['customer'], tenant: 'acme' });
    assert.deepEqual(Object.keys(payload['rctx'] as object), ['req_ip', 'authn']);
    assert.equal(payload['req_wl'], 'spiffe://shop.test/svc/gateway');
  });

  it('publishes one public key: kid (RFC 7638 thumbprint by default), alg ES256, use sig, no private part', async () => {
    assert.equal(minter.jwks.keys.length, 1);
    const [jwk] = minter.jwks.keys;
    assert.deepEqual(
      { kty: jwk?.kty, crv: jwk?.crv, kid: jwk?.kid, alg: jwk?.alg, use: jwk?.use },
      { kty: 'EC', crv: 'P-256', kid: minter.kid, alg: 'ES256', use: 'sig' },
    );
    assert.equal(jwk?.d, undefined);
    assert.match(minter.kid, /^[A-Za-z0-9_-]{43}$/);
    assert.equal((await createTxnTokenMinter({ trustDomain: 'shop.test', kid: 'tts-2025-01' })).kid, 'tts-2025-01');
  });

  it('gives every token a fresh txn', async () => {
    const [a, b] = await Promise.all([minter.mint(), minter.mint()]);
    assert.notEqual(decodeJwt(a)['txn'], decodeJwt(b)['txn']);
  });

  it('applies claim overrides, extra claims, omissions, lifetime and header overrides', async () => {
    const token = await minter.mint(
      { sub: 'bob', scope: 'orders:read', tctx: { roles: ['admin'] }, extra: 1 },
      { lifetimeSeconds: 60, omit: ['req_wl'], header: { typ: undefined, cty: 'x' } },
    );
    const payload = decodeJwt(token);
    assert.equal(payload.sub, 'bob');
    assert.deepEqual(payload['tctx'], { roles: ['admin'] });
    assert.equal(payload['extra'], 1);
    assert.equal('req_wl' in payload, false);
    assert.equal(payload.exp! - payload.iat!, 60);
    assert.deepEqual(decodeProtectedHeader(token), { alg: 'ES256', kid: minter.kid, cty: 'x' });
  });

  it('derives exp from an overridden iat, and keeps an explicit exp', async () => {
    const iat = Math.floor(Date.now() / 1000) - 100;
    assert.equal(decodeJwt(await minter.mint({ iat })).exp, iat + 300);
    assert.equal(decodeJwt(await minter.mint({ iat, exp: iat + 1 })).exp, iat + 1);
  });
});
