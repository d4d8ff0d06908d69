import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import { GuardError, type GuardErrorCode } from '../errors.ts';
import { Revocations } from '../revocations.ts';
import { createStaticKeySource, type TxnKeySource } from '../txn-keys.ts';
import { createTxnTokenStep, type TxnTokenStep, type VerifiedTxnToken } from './txn-token.ts';

const TRUST_DOMAIN = 'shop.test';
const SKEW_SECONDS = 30;

let minter: TxnTokenMinter;
let keys: TxnKeySource;

before(async () => {
  minter = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN, kid: 'tts-1' });
  keys = await createStaticKeySource(minter.jwks);
});

interface Harness {
  step: TxnTokenStep;
  revocations: Revocations;
  clock: { ms: number };
}

function harness(cacheSize = 100): Harness {
  const revocations = new Revocations();
  const clock = { ms: Date.now() };
  const step = createTxnTokenStep({
    trustDomain: TRUST_DOMAIN,
    keys,
    revocations,
    maxLifetimeSeconds: 300,
    clockSkewSeconds: SKEW_SECONDS,
    maxTokenBytes: 8192,
    cacheSize,
    now: () => clock.ms,
  });
  return { step, revocations, clock };
}

function verify(step: TxnTokenStep, token: string): Promise<VerifiedTxnToken> | VerifiedTxnToken {
  return step.verify(token, ['txn-token', token]);
}

/** Refusal with `code`, whether verify throws at once (cache path) or rejects (cold path). */
async function assertRefused(attempt: () => unknown, code: GuardErrorCode): Promise<void> {
  await assert.rejects(async () => attempt(), (error: unknown) => {
    assert.ok(error instanceof GuardError, String(error));
    assert.equal(error.code, code);
    assert.equal(error.status, 401);
    return true;
  });
}

describe('createTxnTokenStep', () => {
  it('verifies a valid token once, then serves it from the cache synchronously', async () => {
    const { step } = harness();
    const token = await minter.mint({ sub: 'alice', txn: 'txn-1' });
    const first = await verify(step, token);
    assert.equal(first.token, token);
    assert.equal(first.kid, 'tts-1');
    assert.equal(first.claims.sub, 'alice');
    assert.equal(first.claims.txn, 'txn-1');
    assert.equal(first.expiresAtMs, first.claims.exp * 1000);
    assert.ok(Object.isFrozen(first));
    assert.deepEqual(step.stats(), { hits: 0, verified: 1, size: 1 });

    const second = verify(step, token);
    assert.ok(!(second instanceof Promise), 'a cache hit is answered without a Promise');
    assert.equal(second, first);
    assert.deepEqual(step.stats(), { hits: 1, verified: 1, size: 1 });
  });

  it('never serves a cached token for another token with the same signature (payload swapped)', async () => {
    const { step } = harness();
    const token = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] } });
    await verify(step, token);
    const [header, , signature] = token.split('.');
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()), sub: 'admin' })).toString('base64url')}.${signature}`;
    await assertRefused(() => verify(step, forged), 'LOCKSTEP_ERR_TXN_TOKEN_INVALID');
    assert.equal(step.stats().verified, 2, 'the forged token went through signature verification');
  });

  it('derives roles, scope and tenant from the claims', async () => {
    const { step } = harness();
    const token = await minter.mint({ scope: 'orders:read  orders:write ', tctx: { roles: ['customer', 'support', 7], tenant: 'acme' } as never });
    const entry = await verify(step, token);
    assert.deepEqual(entry.roles, ['customer', 'support']);
    assert.deepEqual(entry.scope, ['orders:read', 'orders:write']);
    assert.equal(entry.tenant, 'acme');
    assert.ok(Object.isFrozen(entry.roles) && Object.isFrozen(entry.scope));

    const bare = await verify(step, await minter.mint({ tctx: { roles: 'admin' } as never }, { omit: ['scope'] }));
    assert.deepEqual(bare.roles, []);
    assert.deepEqual(bare.scope, []);
    assert.equal(bare.tenant, undefined);
  });

  it('refuses a cached token once the clock passes exp plus the skew, and forgets it', async () => {
    const { step, clock } = harness();
    const token = await minter.mint();
    const entry = await verify(step, token);
    clock.ms = entry.expiresAtMs + SKEW_SECONDS * 1000 - 1;
    assert.equal(verify(step, token), entry, 'still live within the skew');
    clock.ms = entry.expiresAtMs + SKEW_SECONDS * 1000;
    await assertRefused(() => verify(step, token), 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED');
    assert.equal(step.stats().size, 0);
    await assertRefused(() => verify(step, token), 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED');
  });

  it('purges cached tokens of a revoked subject and refuses them as revoked', async () => {
    const { step, revocations } = harness();
    const alice = await minter.mint({ sub: 'alice' });
    const bob = await minter.mint({ sub: 'bob' });
    await verify(step, alice);
    await verify(step, bob);
    revocations.add({ kind: 'sub', value: 'alice' });
    assert.equal(step.stats().size, 1);
    await assertRefused(() => verify(step, alice), 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    assert.equal((await verify(step, bob)).claims.sub, 'bob');
  });

  it('purges cached tokens of a revoked transaction and refuses them as revoked', async () => {
    const { step, revocations } = harness();
    const token = await minter.mint({ txn: 'txn-bad' });
    const other = await minter.mint({ txn: 'txn-good' });
    await verify(step, token);
    await verify(step, other);
    revocations.add({ kind: 'txn', value: 'txn-bad' });
    assert.equal(step.stats().size, 1);
    await assertRefused(() => verify(step, token), 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    assert.equal((await verify(step, other)).claims.txn, 'txn-good');
  });

  it('purges tokens signed by a revoked key; the cold path then refuses them before any signature check', async () => {
    const { step, revocations } = harness();
    const token = await minter.mint();
    await verify(step, token);
    revocations.add({ kind: 'kid', value: 'tts-1' });
    assert.equal(step.stats().size, 0);
    await assertRefused(() => verify(step, token), 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    await assertRefused(async () => verify(step, await minter.mint()), 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    assert.equal(step.stats().verified, 1);
  });

  it('keeps at most cacheSize tokens, forgetting the oldest', async () => {
    const { step } = harness(2);
    const tokens = [await minter.mint(), await minter.mint(), await minter.mint()];
    for (const token of tokens) await verify(step, token);
    assert.deepEqual(step.stats(), { hits: 0, verified: 3, size: 2 });
    assert.ok(!(verify(step, tokens[2] as string) instanceof Promise), 'the newest is cached');
    const again = verify(step, tokens[0] as string);
    assert.ok(again instanceof Promise, 'the oldest was evicted and is verified again');
    assert.equal((await again).token, tokens[0]);
    assert.deepEqual(step.stats(), { hits: 1, verified: 4, size: 2 });
  });

  it('refuses a missing, a duplicated and a comma-joined header', async () => {
    const { step } = harness();
    const token = await minter.mint();
    await assertRefused(() => step.verify(undefined, []), 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    await assertRefused(() => step.verify('', ['txn-token', '']), 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    await assertRefused(() => step.verify(`${token}, ${token}`, ['Txn-Token', token, 'txn-token', token]), 'LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE');
    await assertRefused(() => step.verify(`${token},x`, ['txn-token', `${token},x`]), 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED');
    assert.equal(step.stats().verified, 0);
  });
});
