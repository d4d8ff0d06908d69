/**
 * checkTxnClaims on its own, as the Txn-Token Service calls it on a subject token
 * (control-plane/src/tts/subject-tokens.ts): there no cache re-checks `exp` afterwards, and claims
 * need not come from JSON. Found missing by the mutation run (docs/mutation.md).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GuardError } from '../errors.ts';
import { checkTxnClaims, type ClaimRules } from './txn-claims.ts';

const NOW = 1_800_000_000;
const RULES: ClaimRules = { trustDomain: 'shop.test', nowSeconds: NOW, clockSkewSeconds: 30, maxLifetimeSeconds: 300 };

function claims(overrides: Record<string, unknown> = {}, omit: readonly string[] = []): Record<string, unknown> {
  const base: Record<string, unknown> = {
    aud: 'shop.test',
    iat: NOW - 10,
    exp: NOW + 50,
    txn: 'txn-1',
    sub: 'alice',
    scope: 'orders',
    req_wl: 'spiffe://shop.test/svc/gateway',
    ...overrides,
  };
  for (const name of omit) delete base[name];
  return base;
}

function refusedWith(code: string, detail: RegExp, input: Record<string, unknown>): void {
  assert.throws(
    () => checkTxnClaims(input, RULES),
    (error: unknown) => {
      assert.ok(error instanceof GuardError, `a GuardError, not ${String(error)}`);
      assert.equal(error.code, code);
      assert.match(error.detail, detail);
      return true;
    },
  );
}

describe('checkTxnClaims without the step around it', () => {
  it('accepts a complete claim set', () => {
    assert.equal(checkTxnClaims(claims(), RULES).sub, 'alice');
  });

  it('refuses an expired token by itself: exp at now minus the skew is expired, one second later is not', () => {
    refusedWith('LOCKSTEP_ERR_TXN_TOKEN_EXPIRED', /^token expired$/, claims({ iat: NOW - 100, exp: NOW - 30 }));
    assert.equal(checkTxnClaims(claims({ iat: NOW - 100, exp: NOW - 29 }), RULES).exp, NOW - 29);
  });

  it('says which required claim is missing, rather than calling it the wrong type', () => {
    for (const name of ['txn', 'sub', 'exp', 'iat']) {
      refusedWith('LOCKSTEP_ERR_TXN_TOKEN_CLAIMS', new RegExp(`^${name} is required$`), claims({}, [name]));
    }
  });

  it('refuses times that are numbers but not finite, which only claims not read from JSON can hold', () => {
    for (const name of ['iat', 'exp', 'nbf']) {
      for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const detail = new RegExp(`^${name} must be a number`);
        refusedWith('LOCKSTEP_ERR_TXN_TOKEN_CLAIMS', detail, claims({ [name]: value }));
      }
    }
  });

  it('names the claims as the place of a top-level key with a control character', () => {
    refusedWith(
      'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS',
      /^a key in claims contains a control character$/,
      claims({ 'e\u0001x': 1 }),
    );
  });
});
