import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ControlPlaneError, type ControlPlaneErrorCode } from '../errors.ts';
import { openSqliteStore } from '../store/sqlite-store.ts';
import { createJoinToken, pinnedBundleHash, redeemJoinToken, type JoinTokenIssuer } from './join-tokens.ts';

function setup() {
  let now = 1_000_000;
  const issuer: JoinTokenIssuer = { trustDomain: 'shop.test', bundleHash: 'A'.repeat(43), now: () => now };
  const store = openSqliteStore(':memory:');
  return {
    issuer,
    store,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

const refusedWith = (code: ControlPlaneErrorCode) => (error: unknown) =>
  error instanceof ControlPlaneError && error.code === code;

describe('join tokens', () => {
  it('bootstraps the one service it was created for, once, and stores only a hash', async () => {
    const { issuer, store } = setup();
    const { token, expiresAt } = await createJoinToken(store, issuer, {
      service: 'orders',
      createdBy: 'spiffe://shop.test/admin/alice',
    });
    assert.match(token, /^ljt1\.A{43}\.[A-Za-z0-9_-]{43}$/);
    assert.equal(expiresAt.getTime(), 1_000_000 + 15 * 60_000, '15 minutes by default');
    assert.equal(pinnedBundleHash(token), issuer.bundleHash, 'the token pins the trust bundle');
    const record = await redeemJoinToken(store, issuer, token, 'orders');
    assert.equal(record.service, 'orders');
    assert.equal(record.createdBy, 'spiffe://shop.test/admin/alice');
    assert.ok(
      !token.includes(record.tokenHash) && record.tokenHash.length === 64,
      'the stored value is a hash, not the secret',
    );
    await store.close();
  });

  it('refuses a reused token', async () => {
    const { issuer, store } = setup();
    const { token } = await createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli' });
    await redeemJoinToken(store, issuer, token, 'orders');
    await assert.rejects(redeemJoinToken(store, issuer, token, 'orders'), refusedWith('LOCKSTEP_CP_JOIN_TOKEN_USED'));
    await store.close();
  });

  it('refuses an expired token', async () => {
    const { issuer, store, advance } = setup();
    const { token } = await createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli', ttlSeconds: 60 });
    advance(60_000);
    await assert.rejects(
      redeemJoinToken(store, issuer, token, 'orders'),
      refusedWith('LOCKSTEP_CP_JOIN_TOKEN_EXPIRED'),
    );
    await store.close();
  });

  it('refuses a token for another service, and that token is spent', async () => {
    const { issuer, store } = setup();
    const { token } = await createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli' });
    await assert.rejects(
      redeemJoinToken(store, issuer, token, 'payments'),
      refusedWith('LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE'),
    );
    await assert.rejects(redeemJoinToken(store, issuer, token, 'orders'), refusedWith('LOCKSTEP_CP_JOIN_TOKEN_USED'));
    await store.close();
  });

  it('refuses unknown, malformed and other-bundle tokens', async () => {
    const { issuer, store } = setup();
    const { token } = await createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli' });
    const secret = token.split('.')[2] as string;
    for (const bad of [
      `ljt1.${issuer.bundleHash}.${'B'.repeat(43)}`,
      `ljt1.${'C'.repeat(43)}.${secret}`,
      token.slice(0, -1),
      `${token}x`,
      '',
      'ljt2' + token.slice(4),
    ]) {
      await assert.rejects(
        redeemJoinToken(store, issuer, bad, 'orders'),
        refusedWith('LOCKSTEP_CP_JOIN_TOKEN_INVALID'),
        bad,
      );
    }
    assert.equal(
      (await redeemJoinToken(store, issuer, token, 'orders')).service,
      'orders',
      'the real token was not spent by the attempts',
    );
    await store.close();
  });

  it('refuses to create tokens for invalid services or lifetimes', async () => {
    const { issuer, store } = setup();
    await assert.rejects(
      createJoinToken(store, issuer, { service: 'Orders/x', createdBy: 'cli' }),
      /lower-case DNS label/,
    );
    await assert.rejects(
      createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli', ttlSeconds: 0 }),
      TypeError,
    );
    await assert.rejects(
      createJoinToken(store, issuer, { service: 'orders', createdBy: 'cli', ttlSeconds: 8 * 24 * 3600 }),
      TypeError,
    );
    await store.close();
  });
});
