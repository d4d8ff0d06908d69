import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { base64url, CompactSign, exportJWK, generateKeyPair, generateSecret } from 'jose';
import type { CryptoKey, JSONWebKeySet } from 'jose';
import { PolicyError } from '../errors.ts';
import type { PolicyErrorCode } from '../errors.ts';
import { shopSources } from '../fixtures/shop.ts';
import { policySetFromSources } from '../from-sources.ts';
import { sliceFor } from '../slice.ts';
import { computePolicySetVersion } from '../version.ts';
import { signBundle } from './sign.ts';
import { verifyBundle } from './verify.ts';

const set = policySetFromSources(shopSources);
const TYP = 'lockstep-policy+jws';
let privateKey: CryptoKey;
let otherPrivateKey: CryptoKey;
let jwks: JSONWebKeySet;

before(async () => {
  const pair = await generateKeyPair('ES256');
  privateKey = pair.privateKey;
  otherPrivateKey = (await generateKeyPair('ES256')).privateKey;
  jwks = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'cp-1', alg: 'ES256', use: 'sig' }] };
});

/** A bundle signed with a real key but a payload and header we choose. */
function signRaw(
  payload: unknown,
  header: Record<string, unknown> = {},
  key: CryptoKey | Uint8Array = privateKey,
): Promise<string> {
  const bytes = new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload));
  return new CompactSign(bytes).setProtectedHeader({ alg: 'ES256', typ: TYP, kid: 'cp-1', ...header }).sign(key);
}

function payloadOf(content: {
  policies: Record<string, string>;
  schemaText?: string;
  service?: string | null;
  version?: string;
}) {
  const schemaText = content.schemaText ?? set.schemaText;
  const service = content.service ?? null;
  const version = content.version ?? computePolicySetVersion({ schemaText, policies: content.policies, service });
  return { v: 1, version, service, schema: schemaText, policies: content.policies, iat: Math.floor(Date.now() / 1000) };
}

async function assertRejected(
  jws: string,
  code: PolicyErrorCode,
  mentions?: RegExp,
  options: Partial<Parameters<typeof verifyBundle>[1]> = {},
) {
  await assert.rejects(verifyBundle(jws, { keys: jwks, ...options }), (error: unknown) => {
    assert.ok(error instanceof PolicyError, String(error));
    assert.equal(error.code, code, error.message);
    if (mentions) assert.match(error.message, mentions);
    return true;
  });
}

describe('signBundle / verifyBundle', () => {
  it('round-trips a set: same version, policies and schema', async () => {
    const jws = await signBundle(set, { privateKey, kid: 'cp-1' });
    const [header] = jws.split('.');
    assert.deepEqual(JSON.parse(new TextDecoder().decode(base64url.decode(header ?? ''))), {
      alg: 'ES256',
      typ: TYP,
      kid: 'cp-1',
    });
    const verified = await verifyBundle(jws, { keys: jwks, maxAgeSeconds: 60 });
    assert.equal(verified.version, set.version);
    assert.equal(verified.schemaText, set.schemaText);
    assert.deepEqual(verified.policies, set.policies);
    assert.equal(verified.service, null);
    assert.deepEqual(verified.sources['orders-read-admin'], { file: 'bundle:orders-read-admin', line: 1 });
  });

  it('signs the slice for a service when asked, and checks the service when verifying', async () => {
    const jws = await signBundle(set, { privateKey, kid: 'cp-1', service: 'payments' });
    const verified = await verifyBundle(jws, { keys: jwks, service: 'payments' });
    assert.equal(verified.version, sliceFor(set, 'payments').version);
    assert.equal(verified.service, 'payments');
    await assertRejected(jws, 'LOCKSTEP_POLICY_BUNDLE_INVALID', /slice for "payments"/, { service: 'orders' });
    // The whole set decides correctly for any service, so it is accepted everywhere.
    await verifyBundle(await signBundle(set, { privateKey, kid: 'cp-1' }), { keys: jwks, service: 'orders' });
  });

  it('accepts a jose key resolver instead of a JWKS', async () => {
    const jws = await signBundle(set, { privateKey, kid: 'cp-1' });
    const { createLocalJWKSet } = await import('jose');
    const verified = await verifyBundle(jws, { keys: createLocalJWKSet(jwks) });
    assert.equal(verified.version, set.version);
  });

  it('rejects a tampered payload', async () => {
    const [header, payload, signature] = (await signBundle(set, { privateKey, kid: 'cp-1' })).split('.');
    const decoded = JSON.parse(new TextDecoder().decode(base64url.decode(payload ?? '')));
    decoded.policies['orders-read-admin'] = decoded.policies['orders-read-admin'].replace('"admin"', '"guest"');
    const forged = `${header}.${base64url.encode(JSON.stringify(decoded))}.${signature}`;
    await assertRejected(forged, 'LOCKSTEP_POLICY_BUNDLE_SIGNATURE', /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/);
  });

  it('rejects a bundle signed by a key not in the JWKS, or under an unknown kid', async () => {
    await assertRejected(
      await signBundle(set, { privateKey: otherPrivateKey, kid: 'cp-1' }),
      'LOCKSTEP_POLICY_BUNDLE_SIGNATURE',
    );
    await assertRejected(
      await signBundle(set, { privateKey, kid: 'cp-2' }),
      'LOCKSTEP_POLICY_BUNDLE_SIGNATURE',
      /ERR_JWKS_NO_MATCHING_KEY/,
    );
  });

  it('rejects alg "none", even with an empty signature built by hand', async () => {
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: TYP, kid: 'cp-1' }));
    const payload = base64url.encode(JSON.stringify(payloadOf({ policies: { ...set.policies } })));
    await assertRejected(`${header}.${payload}.`, 'LOCKSTEP_POLICY_BUNDLE_SIGNATURE', /ERR_JOSE_ALG_NOT_ALLOWED/);
  });

  it('rejects HS256, also when the resolver would hand out a secret', async () => {
    const secret = await generateSecret('HS256', { extractable: true });
    const jws = await signRaw(payloadOf({ policies: { ...set.policies } }), { alg: 'HS256' }, secret as CryptoKey);
    await assertRejected(jws, 'LOCKSTEP_POLICY_BUNDLE_SIGNATURE', /ERR_JOSE_ALG_NOT_ALLOWED/);
    await assert.rejects(verifyBundle(jws, { keys: () => secret }), { code: 'LOCKSTEP_POLICY_BUNDLE_SIGNATURE' });
  });

  it('requires typ lockstep-policy+jws and a kid', async () => {
    const payload = payloadOf({ policies: { ...set.policies } });
    await assertRejected(await signRaw(payload, { typ: 'JWT' }), 'LOCKSTEP_POLICY_BUNDLE_INVALID', /typ/);
    await assertRejected(await signRaw(payload, { kid: undefined }), 'LOCKSTEP_POLICY_BUNDLE_INVALID', /kid/);
  });

  it('rejects a signed bundle whose version does not match its content', async () => {
    const jws = await signRaw(payloadOf({ policies: { ...set.policies }, version: 'a'.repeat(64) }));
    await assertRejected(jws, 'LOCKSTEP_POLICY_BUNDLE_INVALID', /does not match the bundle content/);
  });

  it('re-validates signed content strictly, even when its version is consistent', async () => {
    const invalidPolicy = {
      bad: '@id("bad") permit(principal, action == Lockstep::Action::"orders:delete", resource);',
    };
    await assertRejected(
      await signRaw(payloadOf({ policies: invalidPolicy })),
      'LOCKSTEP_POLICY_BUNDLE_INVALID',
      /LOCKSTEP_POLICY_VALIDATION.*unrecognized action/,
    );
    const renamed = { other: '@id("bad") permit(principal, action, resource);' };
    await assertRejected(await signRaw(payloadOf({ policies: renamed })), 'LOCKSTEP_POLICY_BUNDLE_INVALID', /@id/);
  });

  it('checks the payload shape', async () => {
    await assertRejected(await signRaw('not json'), 'LOCKSTEP_POLICY_BUNDLE_INVALID', /JSON/);
    await assertRejected(
      await signRaw({ ...payloadOf({ policies: {} }), v: 2 }),
      'LOCKSTEP_POLICY_BUNDLE_INVALID',
      /v=2/,
    );
    await assertRejected(
      await signRaw({ ...payloadOf({ policies: {} }), iat: 'now' }),
      'LOCKSTEP_POLICY_BUNDLE_INVALID',
      /iat/,
    );
    await assertRejected('a.b', 'LOCKSTEP_POLICY_BUNDLE_INVALID', /compact JWS/);
  });

  it('enforces maxAgeSeconds and refuses bundles issued in the future', async () => {
    const jws = await signBundle(set, { privateKey, kid: 'cp-1' });
    const later = new Date(Date.now() + 2 * 3600_000);
    await assertRejected(jws, 'LOCKSTEP_POLICY_BUNDLE_STALE', /maxAgeSeconds 3600/, {
      maxAgeSeconds: 3600,
      currentDate: later,
    });
    await verifyBundle(jws, { keys: jwks, currentDate: later });
    const future = await signBundle(set, { privateKey, kid: 'cp-1', issuedAt: new Date(Date.now() + 3600_000) });
    await assertRejected(future, 'LOCKSTEP_POLICY_BUNDLE_INVALID', /future/);
  });

  it('accepts an empty slice (every request denied) but not an empty source set', async () => {
    const only = policySetFromSources({
      schema: shopSources.schema,
      policies: { 'a.cedar': '@id("a") permit(principal, action, resource == Lockstep::Service::"orders");' },
    });
    const verified = await verifyBundle(await signBundle(only, { privateKey, kid: 'cp-1', service: 'payments' }), {
      keys: jwks,
    });
    assert.deepEqual(verified.policies, {});
  });

  it('treats misuse as TypeError', async () => {
    await assert.rejects(verifyBundle(42 as unknown as string, { keys: jwks }), TypeError);
    await assert.rejects(verifyBundle('a.b.c', { keys: {} as JSONWebKeySet }), TypeError);
    await assert.rejects(signBundle(set, { privateKey, kid: '' }), TypeError);
  });
});
