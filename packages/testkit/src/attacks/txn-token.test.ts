import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import {
  EmbeddedJWK,
  base64url,
  compactVerify,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportSPKI,
  jwtVerify,
} from 'jose';
import { createTxnTokenMinter } from '../txn-token/create-minter.ts';
import type { TxnTokenMinter } from '../txn-token/create-minter.ts';
import { revokedKidToken, revokedKeyMinter } from './revoked-kid.ts';
import { txnTokenAttacks } from './txn-token.ts';
import type { TxnTokenAttack } from './txn-token.ts';

const REJECTIONS = new Set([
  'invalid',
  'expired',
  'claims',
  'malformed',
  'missing',
  'duplicate',
  'revoked',
  'too-large',
]);
const SIGNATURES = new Set(['minter-key', 'revoked-key', 'attacker-key', 'forged', 'unsigned']);
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/;

function attack(id: string): TxnTokenAttack {
  const found = txnTokenAttacks.find((candidate) => candidate.id === id);
  assert.ok(found, `no attack ${id}`);
  return found;
}

async function tokensOf(entry: TxnTokenAttack, minter: TxnTokenMinter): Promise<string[]> {
  const built = await entry.build(minter);
  return typeof built === 'string' ? [built] : built;
}

function decodeJson(segment: string): unknown {
  return JSON.parse(new TextDecoder().decode(base64url.decode(segment)));
}

describe('txnTokenAttacks catalogue', () => {
  let minter: TxnTokenMinter;
  const built = new Map<string, string[]>();
  before(async () => {
    minter = await createTxnTokenMinter({ trustDomain: 'shop.test' });
    for (const entry of txnTokenAttacks) built.set(entry.id, await tokensOf(entry, minter));
  });

  it('has unique kebab-case ids, a description, and known expect/signedWith metadata', () => {
    const ids = txnTokenAttacks.map((entry) => entry.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const entry of txnTokenAttacks) {
      assert.match(entry.id, /^[a-z0-9]+(-[a-z0-9]+)*$/);
      assert.ok(entry.description.length > 10, entry.id);
      assert.ok(REJECTIONS.has(entry.expect), entry.id);
      assert.ok(SIGNATURES.has(entry.signedWith), entry.id);
      assert.ok(Object.isFrozen(entry), entry.id);
    }
    assert.ok(ids.length >= 35, `only ${ids.length} attacks`);
  });

  it('builds compact-JWS-shaped strings, except where the shape is the attack', () => {
    for (const [id, tokens] of built) {
      if (id === 'header-absent') {
        assert.deepEqual(tokens, []);
        continue;
      }
      if (id === 'header-repeated') assert.equal(tokens.length, 2);
      else assert.equal(tokens.length, 1, id);
      for (const token of tokens) {
        if (id === 'jwe-shaped') assert.equal(token.split('.').length, 5);
        else if (id === 'not-a-jws') assert.equal(token.includes('.'), false);
        else {
          assert.match(token, COMPACT_JWS, id);
          assert.equal(typeof decodeJson(token.split('.')[0]!), 'object', id);
        }
      }
    }
  });

  it('signs the minter-key variants with valid signatures, so only non-signature checks can refuse them', async () => {
    const keys = createLocalJWKSet(minter.jwks);
    const entries = txnTokenAttacks.filter((entry) => entry.signedWith === 'minter-key');
    assert.ok(entries.length >= 18);
    for (const entry of entries) {
      for (const token of built.get(entry.id)!) {
        await assert.doesNotReject(
          compactVerify(token, keys, { algorithms: ['ES256'], crit: { 'exp-x': true } }),
          entry.id,
        );
      }
    }
  });

  it("makes every other variant fail a signature check against the minter's JWKS", async () => {
    const keys = createLocalJWKSet(minter.jwks);
    for (const entry of txnTokenAttacks.filter((candidate) => candidate.signedWith !== 'minter-key')) {
      for (const token of built.get(entry.id)!) {
        await assert.rejects(compactVerify(token, keys, { algorithms: ['ES256'] }), `${entry.id} verified`);
      }
    }
  });

  it('kid-revoked: verifies under the second key from revokedKidToken, which is stable per minter', async () => {
    const second = await revokedKidToken(minter);
    assert.equal(second.kid, (await revokedKeyMinter(minter)).kid);
    assert.notEqual(second.kid, minter.kid);
    const [token] = built.get('kid-revoked')!;
    assert.equal(decodeProtectedHeader(token!).kid, second.kid);
    await assert.doesNotReject(compactVerify(token!, createLocalJWKSet(second.jwks), { algorithms: ['ES256'] }));
    await assert.doesNotReject(compactVerify(second.token, createLocalJWKSet(second.jwks)));
  });

  it('hs256-*: genuine HMACs keyed with the public key as PEM, SPKI DER and raw x||y', async () => {
    const jwk = minter.jwks.keys[0]!;
    const secrets: Record<string, Uint8Array> = {
      'hs256-public-key-pem': new TextEncoder().encode(await exportSPKI(minter.publicKey)),
      'hs256-public-key-der': new Uint8Array(await globalThis.crypto.subtle.exportKey('spki', minter.publicKey)),
      'hs256-public-key-raw': new Uint8Array([...base64url.decode(jwk.x!), ...base64url.decode(jwk.y!)]),
    };
    assert.equal(secrets['hs256-public-key-raw']!.length, 64);
    for (const [id, secret] of Object.entries(secrets)) {
      const [token] = built.get(id)!;
      const { protectedHeader } = await compactVerify(token!, secret, { algorithms: ['HS256'] });
      assert.equal(protectedHeader.kid, minter.kid);
    }
  });

  it('embedded-jwk is signed by the key it embeds; jku/x5u point at 127.0.0.1:1', async () => {
    const [embedded] = built.get('embedded-jwk')!;
    await assert.doesNotReject(compactVerify(embedded!, EmbeddedJWK));
    assert.equal(decodeProtectedHeader(built.get('jku-header')![0]!).jku, 'http://127.0.0.1:1/jwks.json');
    assert.equal(decodeProtectedHeader(built.get('x5u-header')![0]!).x5u, 'http://127.0.0.1:1/cert.pem');
    assert.equal(decodeProtectedHeader(built.get('kid-path-traversal')![0]!).kid, '../../etc/passwd');
  });

  it('alg none in four casings with an empty signature; r = s = 0 is 64 zero bytes', () => {
    const algs = ['alg-none', 'alg-none-title-case', 'alg-none-upper-case', 'alg-none-mixed-case'].map((id) => {
      const [token] = built.get(id)!;
      assert.ok(token!.endsWith('.'));
      return decodeProtectedHeader(token!).alg;
    });
    assert.deepEqual(algs, ['none', 'None', 'NONE', 'nOnE']);
    const signature = built.get('ecdsa-zero-signature')![0]!.split('.')[2]!;
    assert.deepEqual(base64url.decode(signature), new Uint8Array(64));
  });

  it('writes duplicate JSON members verbatim, under a real signature', () => {
    const [claimToken] = built.get('duplicate-claim-key')!;
    const payloadText = new TextDecoder().decode(base64url.decode(claimToken!.split('.')[1]!));
    assert.match(payloadText, /^\{"sub":"alice","sub":"admin",/);
    const [headerToken] = built.get('duplicate-header-key')!;
    const headerText = new TextDecoder().decode(base64url.decode(headerToken!.split('.')[0]!));
    assert.match(headerText, /"typ":"at\+jwt","typ":"txntoken\+jwt"/);
  });

  it('writes prototype keys and 1e400 as payload bytes JSON.parse reads as own members, signed for real', async () => {
    const keys = createLocalJWKSet(minter.jwks);
    const payloadOf = (id: string) => new TextDecoder().decode(base64url.decode(built.get(id)![0]!.split('.')[1]!));
    const cases: [string, RegExp, (claims: Record<string, unknown>) => boolean][] = [
      [
        'claims-proto-key',
        /^\{"__proto__":\{"tctx":/,
        (claims) => Object.hasOwn(claims, '__proto__') && !Object.hasOwn(claims, 'tctx'),
      ],
      ['claims-constructor-key', /^\{"constructor":\{"prototype":/, (claims) => Object.hasOwn(claims, 'constructor')],
      [
        'tctx-proto-key',
        /"tctx":\{"tenant":"acme","__proto__":/,
        (claims) => Object.hasOwn(claims.tctx as object, '__proto__'),
      ],
      [
        'tctx-prototype-key',
        /"prototype":\{"roles":\["admin"\]\}/,
        (claims) => Object.hasOwn(claims.tctx as object, 'prototype'),
      ],
      [
        'rctx-nested-proto-key',
        /"device":\{"__proto__":/,
        (claims) => Object.hasOwn((claims.rctx as { device: object }).device, '__proto__'),
      ],
      ['exp-overflow', /^\{"exp":1e400,/, (claims) => claims.exp === Infinity],
    ];
    for (const [id, text, check] of cases) {
      assert.match(payloadOf(id), text, id);
      assert.ok(check(JSON.parse(payloadOf(id)) as Record<string, unknown>), id);
      await assert.doesNotReject(compactVerify(built.get(id)![0]!, keys, { algorithms: ['ES256'] }), id);
    }
    const header = new TextDecoder().decode(base64url.decode(built.get('header-proto-key')![0]!.split('.')[0]!));
    assert.match(header, /,"__proto__":\{"alg":"none"\}\}$/);
  });

  it('leaves out or mistypes exactly the claim each type attack names', () => {
    const claimsOf = (id: string) => decodeJson(built.get(id)![0]!.split('.')[1]!) as Record<string, unknown>;
    const missing: [string, string][] = [
      ['scope-missing', 'scope'],
      ['req-wl-missing', 'req_wl'],
      ['txn-missing', 'txn'],
      ['sub-missing', 'sub'],
    ];
    for (const [id, claim] of missing) assert.equal(Object.hasOwn(claimsOf(id), claim), false, id);
    assert.equal((claimsOf('roles-string').tctx as { roles: unknown }).roles, 'admin');
    assert.equal((claimsOf('tenant-number').tctx as { tenant: unknown }).tenant, 7);
    assert.deepEqual(claimsOf('scope-array').scope, ['orders:read', 'orders:write']);
    assert.equal(claimsOf('req-wl-number').req_wl, 7);
    assert.equal(claimsOf('sub-number').sub, 7);
    assert.deepEqual(claimsOf('txn-object').txn, { id: 'txn-1' });
    assert.equal(claimsOf('req-wl-foreign-trust-domain').req_wl, 'spiffe://other.test/svc/gateway');
    assert.equal((claimsOf('req-wl-chain-too-long').req_wl_chain as string[]).length, 9);
  });

  it('builds a token of about 1 MiB, and crit/b64 headers as described', async () => {
    const size = built.get('oversized')![0]!.length;
    assert.ok(size > 1_000_000 && size < 1_100_000, `${size} bytes`);
    assert.deepEqual(decodeProtectedHeader(built.get('crit-unknown')![0]!).crit, ['exp-x']);
    const b64Token = built.get('crit-b64-false')![0]!;
    const b64 = decodeProtectedHeader(b64Token);
    assert.deepEqual([b64.b64, b64.crit], [false, ['b64']]);
    // A verifier that ignores b64 (reads the payload as base64url) sees a valid signature too.
    const [header, payload, signature] = b64Token.split('.') as [string, string, string];
    const valid = await globalThis.crypto.subtle.verify(
      { name: 'ECDSA', hash: 'SHA-256' },
      minter.publicKey,
      base64url.decode(signature),
      new TextEncoder().encode(`${header}.${payload}`),
    );
    assert.equal(valid, true);
    assert.equal((decodeJson(payload) as { aud: string }).aud, 'shop.test');
  });

  it('jose jwtVerify (strict options) refuses all but the attacks the guard must catch itself', async () => {
    const keys = createLocalJWKSet(minter.jwks);
    const passedJose: string[] = [];
    for (const entry of txnTokenAttacks) {
      for (const token of built.get(entry.id)!) {
        try {
          await jwtVerify(token, keys, {
            algorithms: ['ES256'],
            typ: 'txntoken+jwt',
            audience: 'shop.test',
            maxTokenAge: 300,
            clockTolerance: 30,
            requiredClaims: ['exp', 'iat', 'sub', 'txn'],
          });
          passedJose.push(entry.id);
          break;
        } catch {
          /* refused, as it should be */
        }
      }
    }
    // These are the checks a guard needs beyond jwtVerify: duplicate members, control characters,
    // size, lifetime (exp - iat), aud as an array, the header counted before parsing, and everything
    // draft-ietf-oauth-transaction-tokens-10 §9.2 adds to a JWT: scope and req_wl required, the type
    // of every claim (jose checks only iat/exp/nbf), the requesting workload, and prototype keys.
    assert.deepEqual(passedJose.sort(), [
      'aud-array',
      'claim-nul-byte',
      'claims-constructor-key',
      'claims-proto-key',
      'claims-too-deep',
      'duplicate-claim-key',
      'duplicate-header-key',
      'exp-overflow',
      'header-proto-key',
      'header-repeated',
      'iss-number',
      'lifetime-over-max',
      'oversized',
      'rctx-nested-proto-key',
      'rctx-string',
      'req-wl-array',
      'req-wl-chain-foreign',
      'req-wl-chain-string',
      'req-wl-chain-too-long',
      'req-wl-foreign-trust-domain',
      'req-wl-missing',
      'req-wl-not-spiffe',
      'req-wl-number',
      'req-wl-trust-domain-only',
      'roles-non-string',
      'roles-string',
      'scope-array',
      'scope-empty',
      'scope-empty-token',
      'scope-missing',
      'sub-empty',
      'sub-number',
      'tctx-array',
      'tctx-proto-key',
      'tctx-prototype-key',
      'tenant-number',
      'txn-object',
    ]);
  });

  it('builds afresh on each call (tokens are not cached across minters)', async () => {
    const other = await createTxnTokenMinter({ trustDomain: 'other.test' });
    const [token] = await tokensOf(attack('aud-other-trust-domain'), other);
    await assert.doesNotReject(compactVerify(token!, createLocalJWKSet(other.jwks)));
    const [revoked] = await tokensOf(attack('kid-revoked'), other);
    assert.notEqual(decodeProtectedHeader(revoked!).kid, decodeProtectedHeader(built.get('kid-revoked')![0]!).kid);
  });
});
