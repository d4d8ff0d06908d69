import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CompactSign } from 'jose';
import { createTxnTokenMinter, txnTokenAttacks, type TxnTokenMinter } from '@lockstep/testkit';
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
async function assertRefused(attempt: () => unknown, code: GuardErrorCode, detail?: RegExp): Promise<void> {
  await assert.rejects(
    async () => attempt(),
    (error: unknown) => {
      assert.ok(error instanceof GuardError, String(error));
      assert.equal(error.code, code);
      assert.equal(error.status, 401);
      if (detail !== undefined) assert.match(error.detail, detail);
      return true;
    },
  );
}

const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
const ORDERS = `spiffe://${TRUST_DOMAIN}/svc/orders`;

/** Refused as LOCKSTEP_ERR_TXN_TOKEN_CLAIMS with a detail matching `detail`. */
async function assertClaimsRefused(step: TxnTokenStep, token: Promise<string>, detail: RegExp): Promise<void> {
  await assertRefused(async () => verify(step, await token), 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS', detail);
}

/** A token of the testkit's attack catalogue, by id. */
async function attackToken(id: string): Promise<string> {
  const attack = txnTokenAttacks.find((candidate) => candidate.id === id);
  assert.ok(attack, `no attack ${id}`);
  return (await attack.build(minter)) as string;
}

/** Every object reachable from `value`: frozen, and (arrays aside) without a prototype. */
function assertPlainFrozen(value: unknown, path: string): void {
  if (typeof value !== 'object' || value === null) return;
  assert.ok(Object.isFrozen(value), `${path} is frozen`);
  if (Array.isArray(value)) {
    value.forEach((item, i) => assertPlainFrozen(item, `${path}[${i}]`));
    return;
  }
  assert.equal(Object.getPrototypeOf(value), null, `${path} has no prototype`);
  for (const [key, item] of Object.entries(value)) assertPlainFrozen(item, `${path}.${key}`);
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
    assert.deepEqual(countsOf(step), { hits: 0, verified: 1, size: 1 });

    const second = verify(step, token);
    assert.ok(!(second instanceof Promise), 'a cache hit is answered without a Promise');
    assert.equal(second, first);
    assert.deepEqual(countsOf(step), { hits: 1, verified: 1, size: 1 });
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

  it('derives roles, scope, tenant and requester from the claims', async () => {
    const { step } = harness();
    const tctx = { roles: ['customer', 'support'], tenant: 'acme' };
    const token = await minter.mint({ scope: 'orders:read orders:write', tctx });
    const entry = await verify(step, token);
    assert.deepEqual(entry.roles, ['customer', 'support']);
    assert.deepEqual(entry.scope, ['orders:read', 'orders:write']);
    assert.equal(entry.tenant, 'acme');
    assert.equal(entry.requester, GATEWAY);
    assert.ok(Object.isFrozen(entry.roles) && Object.isFrozen(entry.scope));

    const bare = await verify(step, await minter.mint({ scope: 'orders:read', tctx: {} } as never, { omit: ['rctx'] }));
    assert.deepEqual(bare.roles, []);
    assert.deepEqual(bare.scope, ['orders:read']);
    assert.equal(bare.tenant, undefined);
  });

  it('takes the requester from the start of the chain of a replaced token (§13.15), not from the last replacer', async () => {
    const { step } = harness();
    const replaced = await verify(step, await minter.mint({ req_wl: ORDERS, req_wl_chain: [GATEWAY] }));
    assert.equal(replaced.requester, GATEWAY);
    assert.equal(replaced.claims.req_wl, ORDERS);
    assert.deepEqual(replaced.claims.req_wl_chain, [GATEWAY]);
    const scanner = `spiffe://${TRUST_DOMAIN}/scanner/ci`;
    const scanned = await verify(step, await minter.mint({ req_wl: scanner }));
    assert.equal(scanned.requester, scanner, 'any workload path of the trust domain');
  });

  it('refuses a token without scope or without req_wl (both REQUIRED by draft -10 §9.2)', async () => {
    const { step } = harness();
    await assertClaimsRefused(step, minter.mint({}, { omit: ['scope'] }), /^scope is required$/);
    await assertClaimsRefused(step, minter.mint({}, { omit: ['req_wl'] }), /^req_wl is required$/);
    assert.equal(step.stats().size, 0, 'nothing refused is cached');
  });

  it('refuses a claim of the wrong type, naming it, and never coerces one', async () => {
    const { step } = harness();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tctx: { roles: 'admin' } }, /^tctx\.roles must be an array of strings$/],
      [{ tctx: { roles: ['customer', 7] } }, /^tctx\.roles must be an array of strings$/],
      [{ tctx: { roles: ['customer'], tenant: 7 } }, /^tctx\.tenant must be a string$/],
      [{ tctx: ['admin'] }, /^tctx must be a JSON object$/],
      [{ rctx: { req_ip: 7 } }, /^rctx\.req_ip must be a string$/],
      [{ scope: ['orders:read'] }, /^scope must be a string$/],
      [{ scope: 'orders:read  orders:write' }, /^scope must be space-separated scope tokens \(RFC 6749 §3\.3\)$/],
      [{ scope: 'orders:read "x"' }, /RFC 6749/],
      [{ scope: '' }, /RFC 6749/],
      [{ req_wl: 7 }, /^req_wl must be a string/],
      [{ req_wl: 'spiffe://other.test/svc/gateway' }, /^req_wl names trust domain "other\.test", not shop\.test$/],
      [{ req_wl: 'https://gateway.shop.test/' }, /^req_wl must be the SPIFFE ID of a workload$/],
      [{ req_wl_chain: [] }, /^req_wl_chain must be a non-empty array/],
      [{ req_wl_chain: ['spiffe://other.test/svc/gateway'] }, /^req_wl_chain\[0\] names trust domain/],
      [{ req_wl_chain: Array.from({ length: 9 }, () => GATEWAY) }, /^req_wl_chain has 9 links; .* at most 8 times$/],
      [{ sub: 7 }, /^sub must be a non-empty string$/],
      [{ txn: { id: 'x' } }, /^txn must be a non-empty string$/],
      [{ iss: 7 }, /^iss must be a non-empty string$/],
      [{ nbf: '0' }, /^nbf must be a number/],
      [{ aud: [TRUST_DOMAIN] }, /^aud must be a single string/],
    ];
    for (const [claims, detail] of cases) {
      await assertClaimsRefused(step, minter.mint(claims as never), detail);
    }
    assert.equal(step.stats().size, 0);
  });

  it('refuses __proto__, constructor and prototype keys at any depth, and numbers JSON cannot hold', async () => {
    const { step } = harness();
    const prototypeKey = /^claims: a key named "(__proto__|constructor|prototype)" is not accepted$/;
    for (const id of [
      'claims-proto-key',
      'claims-constructor-key',
      'tctx-proto-key',
      'tctx-prototype-key',
      'rctx-nested-proto-key',
    ]) {
      await assertClaimsRefused(step, attackToken(id), prototypeKey);
    }
    await assertClaimsRefused(step, attackToken('exp-overflow'), /^claims: "exp" is a number out of range$/);
    await assertClaimsRefused(
      step,
      attackToken('claims-too-deep'),
      /^tctx\.deep(\.a){7} is nested more than 8 levels deep$/,
    );
    const header = attackToken('header-proto-key');
    await assertRefused(
      async () => verify(step, await header),
      'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
      /^header: a key named "__proto__"/,
    );
  });

  it('hands out plain data: claims frozen all the way down, objects without a prototype', async () => {
    const { step } = harness();
    const token = await minter.mint({
      tctx: { roles: ['customer'], tenant: 'acme', limits: { daily: [{ amount: 100 }] } },
      rctx: { req_ip: '203.0.113.7', authn: 'pwd', device: { id: 'd1' } },
    } as never);
    const { claims } = await verify(step, token);
    assertPlainFrozen(claims, 'claims');
    assert.ok(Object.isFrozen(claims.tctx?.roles));
    // No member lookup reaches Object.prototype: not for a claim, not inside tctx.
    for (const name of ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf']) {
      assert.equal((claims as Record<string, unknown>)[name], undefined, `claims.${name}`);
      assert.equal((claims.tctx as Record<string, unknown>)[name], undefined, `claims.tctx.${name}`);
      assert.equal(name in claims, false, `${name} in claims`);
    }
    assert.equal(Object.hasOwn(claims.tctx as object, '__proto__'), false);
    assert.throws(() => {
      (claims.tctx as { tenant: string }).tenant = 'other';
    }, TypeError);
    assert.throws(() => {
      (claims.tctx?.roles as string[]).push('admin');
    }, TypeError);
    // Still plain JSON data to anyone who reads it as such.
    const asJson = { roles: ['customer'], tenant: 'acme', limits: { daily: [{ amount: 100 }] } };
    assert.deepEqual(JSON.parse(JSON.stringify(claims.tctx)), asJson);
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
    assert.deepEqual(countsOf(step), { hits: 0, verified: 3, size: 2 });
    assert.ok(!(verify(step, tokens[2] as string) instanceof Promise), 'the newest is cached');
    const again = verify(step, tokens[0] as string);
    assert.ok(again instanceof Promise, 'the oldest was evicted and is verified again');
    assert.equal((await again).token, tokens[0]);
    assert.deepEqual(countsOf(step), { hits: 1, verified: 4, size: 2 });
  });

  it('refuses a missing, a duplicated and a comma-joined header', async () => {
    const { step } = harness();
    const token = await minter.mint();
    await assertRefused(() => step.verify(undefined, []), 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    await assertRefused(() => step.verify('', ['txn-token', '']), 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    await assertRefused(
      () => step.verify(`${token}, ${token}`, ['Txn-Token', token, 'txn-token', token]),
      'LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE',
    );
    await assertRefused(
      () => step.verify(`${token},x`, ['txn-token', `${token},x`]),
      'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
    );
    assert.equal(step.stats().verified, 0);
  });
});

/**
 * Found missing by the mutation run (docs/mutation.md): the edges of each rule — the clock at the
 * skew, the chain at its cap, the size at its limit, JSON that is not an object, null, absent
 * optional claims — and a key revoked or rotated while a token is being verified.
 */
describe('createTxnTokenStep: the edges of each rule', () => {
  /** A token over `payload` (any bytes) with the minter's real header and key. */
  function signedPayload(payload: string): Promise<string> {
    return new CompactSign(new TextEncoder().encode(payload))
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: minter.kid })
      .sign(minter.privateKey);
  }

  /** The harness with its clock on a whole second, and claims timed from it. */
  function atSecond(): Harness & { now: number } {
    const h = harness();
    h.clock.ms = Math.floor(Date.now() / 1000) * 1000;
    return { ...h, now: h.clock.ms / 1000 };
  }

  it('refuses a header or claims that are JSON but not an object as malformed', async () => {
    const { step } = harness();
    const b64 = (text: string) => Buffer.from(text).toString('base64url');
    for (const header of ['[]', '"ES256"', '1', 'null']) {
      await assertRefused(
        () => verify(step, `${b64(header)}.${b64('{}')}.c2ln`),
        'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
        /^header is not a JSON object$/,
      );
    }
    for (const payload of ['[]', '"alice"', '1', 'null']) {
      await assertRefused(
        async () => verify(step, await signedPayload(payload)),
        'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
        /^claims is not a JSON object$/,
      );
    }
  });

  it('refuses a token that is not base64url compact JWS as malformed, before any key is used', async () => {
    const { step } = harness();
    const token = await minter.mint();
    for (const bad of [`!${token}`, `${token}!`, `${token.replace('.', '.=')}`]) {
      await assertRefused(() => verify(step, bad), 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', /not base64url compact JWS/);
    }
    assert.equal(step.stats().verified, 0);
  });

  it('refuses as invalid what jose rejects for another reason than the signature (bad base64url)', async () => {
    const { step } = harness();
    const token = await minter.mint();
    await assertRefused(() => verify(step, `${token}AAA`), 'LOCKSTEP_ERR_TXN_TOKEN_INVALID', /^JWS rejected: /);
  });

  it('takes a token of exactly maxTokenBytes, and refuses one byte more before verifying it', async () => {
    const token = await minter.mint();
    const sized = (maxTokenBytes: number) =>
      createTxnTokenStep({
        trustDomain: TRUST_DOMAIN,
        keys,
        revocations: new Revocations(),
        maxLifetimeSeconds: 300,
        clockSkewSeconds: SKEW_SECONDS,
        maxTokenBytes,
        cacheSize: 10,
      });
    assert.equal((await verify(sized(token.length), token)).token, token);
    const small = sized(token.length - 1);
    await assertRefused(() => verify(small, token), 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', /the limit is/);
    assert.equal(small.stats().verified, 0);
  });

  it('reads a comma in a single header as malformed, whatever other headers the request has', async () => {
    const { step } = harness();
    const raw = ['Host', 'orders', 'Accept', '*/*', 'txn-token', 'a,b', 'User-Agent', 'x'];
    await assertRefused(() => step.verify('a,b', raw), 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED');
  });

  it('holds exp to the skew: accepted up to 30 s after exp, expired from then on; a near exp is fine', async () => {
    const { step, now } = atSecond();
    const timed = (exp: number) => minter.mint({ iat: exp - 60, exp });
    for (const exp of [now - SKEW_SECONDS + 1, now + 5]) {
      assert.equal((await verify(step, await timed(exp))).claims.exp, exp);
    }
    await assertRefused(async () => verify(step, await timed(now - SKEW_SECONDS)), 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED');
  });

  it('holds iat and nbf to the skew: up to 30 s ahead accepted, later refused; a past nbf is fine', async () => {
    const { step, now } = atSecond();
    const at = (iat: number, nbf?: number) => {
      return minter.mint({ iat, exp: iat + 60, ...(nbf === undefined ? {} : { nbf }) });
    };
    assert.ok(await verify(step, await at(now + SKEW_SECONDS)));
    await assertClaimsRefused(step, at(now + SKEW_SECONDS + 1), /^iat is in the future$/);
    for (const nbf of [now - 120, now, now + SKEW_SECONDS]) {
      assert.equal((await verify(step, await at(now, nbf))).claims.nbf, nbf);
    }
    await assertClaimsRefused(step, at(now, now + SKEW_SECONDS + 1), /^nbf is in the future$/);
  });

  it('takes a chain of exactly 8 replacements (the cap), not 9', async () => {
    const { step } = harness();
    const chain = (length: number) => {
      return minter.mint({ req_wl: ORDERS, req_wl_chain: Array.from({ length }, () => GATEWAY) });
    };
    assert.equal((await verify(step, await chain(8))).claims.req_wl_chain?.length, 8);
    await assertClaimsRefused(step, chain(9), /^req_wl_chain has 9 links/);
  });

  it('accepts a token without tctx, with a partial rctx (RECOMMENDED only), or a null unknown claim', async () => {
    const { step } = harness();
    const bare = await verify(step, await minter.mint({}, { omit: ['tctx'] }));
    assert.deepEqual([bare.roles, bare.tenant, bare.claims.tctx], [[], undefined, undefined]);
    for (const rctx of [{}, { req_ip: '127.0.0.1' }, { authn: 'pwd' }]) {
      assert.deepEqual({ ...(await verify(step, await minter.mint({ rctx } as never))).claims.rctx }, rctx);
    }
    const nulls = { ext: null, tctx: { roles: ['customer'], note: null } };
    const extra = await verify(step, await minter.mint(nulls as never));
    assert.equal(extra.claims.ext, null);
  });

  it('refuses a null tctx or rctx, a control character in an array or a key, and arrays nested too deep', async () => {
    const { step } = harness();
    const deep = (levels: number): unknown => (levels === 0 ? 'x' : [deep(levels - 1)]);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tctx: null }, /^tctx must be a JSON object$/],
      [{ rctx: null }, /^rctx must be a JSON object$/],
      [{ tctx: { roles: ['customer', 'ad\u0000min'] } }, /^tctx\.roles\[1\] contains a control character$/],
      [{ tctx: { roles: ['customer'], 'ten\u0007ant': 'acme' } }, /^a key in tctx contains a control character$/],
      [{ ext: deep(9) }, /nested more than 8 levels deep$/],
    ];
    for (const [claims, detail] of cases) await assertClaimsRefused(step, minter.mint(claims as never), detail);
  });

  it('refuses a token whose key is revoked while its signature is being verified', async () => {
    const { step, revocations } = harness();
    const pending = verify(step, await minter.mint());
    revocations.add({ kind: 'kid', value: 'tts-1' });
    await assertRefused(() => pending, 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    assert.equal(step.stats().size, 0);
  });

  it('fetches keys again for an unknown kid only: a rotated key is found, a bad kid or alg never asks', async () => {
    const rotated = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN, kid: 'tts-2' });
    const after = await createStaticKeySource({ keys: [...minter.jwks.keys, ...rotated.jwks.keys] });
    let refreshes = 0;
    // The source the guard would hold: it learns of tts-2 only when it fetches again.
    const rotating: TxnKeySource = {
      get: (kid) => (refreshes > 0 ? after : keys).get(kid),
      refresh: async () => {
        refreshes += 1;
      },
      kids: () => (refreshes > 0 ? after : keys).kids(),
      close() {},
    };
    const step = createTxnTokenStep({
      trustDomain: TRUST_DOMAIN,
      keys: rotating,
      revocations: new Revocations(),
      maxLifetimeSeconds: 300,
      clockSkewSeconds: SKEW_SECONDS,
      maxTokenBytes: 8192,
      cacheSize: 10,
    });
    await verify(step, await minter.mint());
    assert.equal(refreshes, 0, 'a known kid needs no fetch');
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${b64({ alg: 'none', typ: 'txntoken+jwt', kid: 'unknown-1' })}.${b64(minter.claims())}.c2ln`;
    const badKids = [{ kid: 'a/b' }, { kid: 'k'.repeat(129) }, { kid: 7 }].map((header) => minter.mint({}, { header }));
    for (const token of [...(await Promise.all(badKids)), unsigned]) {
      await assertRefused(() => verify(step, token), 'LOCKSTEP_ERR_TXN_TOKEN_INVALID');
    }
    assert.equal(refreshes, 0, 'a kid that is not a plain key id, or an alg not accepted, is refused before any fetch');
    assert.equal((await verify(step, await rotated.mint())).kid, 'tts-2');
    assert.equal(refreshes, 1);
  });
});

/**
 * Found missing by the mutation run (docs/mutation.md): a revocation purges exactly the tokens it
 * names and no others; each refusal names its own reason; a header Node hands over as an array.
 */
describe('createTxnTokenStep: what a revocation purges, and why a token is refused', () => {
  /** The answer to `token` is a cache hit: synchronous, and counted as a hit. */
  function assertServedFromCache(step: TxnTokenStep, token: string): void {
    const before = step.stats();
    const answer = verify(step, token);
    assert.ok(!(answer instanceof Promise), 'served from the cache, not verified again');
    assert.equal(answer.token, token);
    assert.deepEqual(step.stats(), { ...before, hits: before.hits + 1 });
  }

  for (const [kind, revoked, kept] of [
    ['sub', 'alice', 'bob'],
    ['txn', 'txn-bad', 'txn-good'],
  ] as const) {
    it(`keeps the cached tokens of other ${kind} values when one ${kind} is revoked`, async () => {
      const { step, revocations } = harness();
      const bad = await minter.mint({ [kind]: revoked });
      const good = await minter.mint({ [kind]: kept });
      await verify(step, bad);
      await verify(step, good);
      revocations.add({ kind, value: revoked });
      assert.equal(step.stats().size, 1);
      assertServedFromCache(step, good);
    });
  }

  it('keeps the cached tokens of other signing keys when one key is revoked', async () => {
    const second = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN, kid: 'tts-2' });
    const both = await createStaticKeySource({ keys: [...minter.jwks.keys, ...second.jwks.keys] });
    const revocations = new Revocations();
    const step = createTxnTokenStep({
      trustDomain: TRUST_DOMAIN,
      keys: both,
      revocations,
      maxLifetimeSeconds: 300,
      clockSkewSeconds: SKEW_SECONDS,
      maxTokenBytes: 8192,
      cacheSize: 10,
    });
    const old = await minter.mint();
    const current = await second.mint();
    await verify(step, old);
    await verify(step, current);
    revocations.add({ kind: 'kid', value: 'tts-1' });
    assert.equal(step.stats().size, 1);
    assertServedFromCache(step, current);
  });

  it('purges nothing when a workload is revoked, not even a token whose txn is that same string', async () => {
    const { step, revocations } = harness();
    const token = await minter.mint({ txn: ORDERS });
    await verify(step, token);
    revocations.add({ kind: 'spiffeId', value: ORDERS });
    assert.equal(step.stats().size, 1);
    assertServedFromCache(step, token);
  });

  it('names the part count of a token that is not three parts', async () => {
    const { step } = harness();
    const [header, payload, signature] = (await minter.mint()).split('.');
    await assertRefused(
      () => verify(step, `${header}.${payload}`),
      'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
      /^expected a compact JWS \(3 parts\), got 2 parts$/,
    );
    await assertRefused(
      () => verify(step, `${header}.${payload}.${signature}.${signature}`),
      'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
      /^expected a compact JWS \(3 parts\), got 4 parts$/,
    );
  });

  it('refuses a token with an empty signature as unsigned, before any key is used', async () => {
    const { step } = harness();
    const [header, payload] = (await minter.mint()).split('.');
    await assertRefused(
      () => verify(step, `${header}.${payload}.`),
      'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
      /^token has no signature$/,
    );
    assert.equal(step.stats().verified, 0);
  });

  it('refuses a kid the trust bundle does not hold as unknown, without verifying the signature', async () => {
    const { step } = harness();
    const stranger = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN, kid: 'tts-9' });
    await assertRefused(
      async () => verify(step, await stranger.mint()),
      'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
      /^unknown kid tts-9$/,
    );
    assert.equal(step.stats().verified, 0);
  });

  it('says a signature that does not verify is that, not some other JWS error', async () => {
    const { step } = harness();
    const [header, , signature] = (await minter.mint({ sub: 'alice' })).split('.');
    const payload = Buffer.from(JSON.stringify(minter.claims({ sub: 'admin' }))).toString('base64url');
    await assertRefused(
      () => verify(step, `${header}.${payload}.${signature}`),
      'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
      /^signature does not verify$/,
    );
  });

  it('hands out a verified token with an empty decision memo (no action, workload or answer yet)', async () => {
    const { step } = harness();
    const entry = await verify(step, await minter.mint());
    assert.deepEqual({ ...entry.lastDecision }, { action: null, spiffeId: null, answer: null });
  });

  it('refuses a header given as an array: duplicate when sent twice, malformed otherwise', async () => {
    const { step } = harness();
    const token = await minter.mint();
    await assertRefused(
      () => step.verify([token, token], ['txn-token', token, 'Txn-Token', token]),
      'LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE',
    );
    await assertRefused(() => step.verify([token], ['txn-token', token]), 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED');
    assert.equal(step.stats().verified, 0);
  });
});

/** The step's counts, without the cache's estimated bytes (tested in bounded-cache.test.ts). */
function countsOf(step: { stats(): { hits: number; verified: number; size: number } }) {
  const { hits, verified, size } = step.stats();
  return { hits, verified, size };
}
