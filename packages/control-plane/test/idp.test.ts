/**
 * The identity provider over real HTTPS: discovery, authorization code + PKCE through the real login
 * page, RFC 9068 access tokens, refresh rotation with reuse detection, CSRF, lockout, key rotation,
 * and the Txn-Token Service accepting the provider's access tokens (in process and, as an external
 * issuer, by discovery).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { Agent, fetch as undiciFetch, request } from 'undici';
import { createTestBrowser, type TestBrowser } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  createUser,
  discoverIssuer,
  openKeyRing,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  subscribeLogins,
  type ControlPlaneStore,
  type KeyRing,
  type LockoutPolicy,
  type LoginEvent,
  type PolicyService,
  type RunningControlPlane,
  type TxnTokenService,
  type WorkloadCa,
} from '../src/index.ts';
import { joinControlPlane, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE, type WorkloadCredentials } from '@lockstep/workload';
import { authorizationRequest, logIn, redeemCode, refresh, signIn, type RelyingParty } from './support/oidc-client.ts';

const TD = 'shop.test';
const RESOURCE = 'https://gateway.shop.test/api';
const REDIRECT = 'https://gateway.shop.test/callback';
const ALICE_PASSWORD = 'violet mountain teapot 42';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-idp-'));
const policyDir = join(scratch, 'policies');

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let tts: TxnTokenService;
let idpKeys: KeyRing;
let controlPlane: RunningControlPlane;
let rp: RelyingParty;
let gateway: WorkloadCredentials;
const logins: LoginEvent[] = [];
let stopLogins: () => void;

async function startIdp(lockout?: LockoutPolicy) {
  return startControlPlane({
    ca,
    store,
    policy,
    tts,
    idp: {
      keys: idpKeys,
      cookieKeys: [randomBytes(32).toString('base64url')],
      clients: [
        {
          client_id: 'gateway',
          client_secret: 'gateway-secret-for-tests-only',
          client_name: 'Lockstep Shop',
          redirect_uris: [REDIRECT],
        },
        // A workload client: no secret, its SVID authenticates it at the token endpoint (RFC 8705).
        {
          client_id: 'gateway-mtls',
          token_endpoint_auth_method: 'tls_client_auth',
          tls_client_auth_san_uri: 'spiffe://shop.test/svc/gateway',
          client_name: 'Lockstep Shop',
          redirect_uris: [REDIRECT],
        },
      ],
      resource: { indicator: RESOURCE, scopes: ['orders:read', 'orders:create'] },
      ...(lockout === undefined ? {} : { lockout }),
    },
  });
}

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(
    join(policyDir, 'tts.cedar'),
    `
@id("gateway-exchanges-user-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");
`,
  );
  const keyDir = join(scratch, 'keys');
  ca = await openWorkloadCa({ trustDomain: TD, keyDir });
  store = openSqliteStore(join(scratch, 'cp.db'));
  policy = await createPolicyService({
    dir: policyDir,
    signingKey: await openSigningKey(keyDir, 'policy'),
    watch: false,
  });
  const txnKeys = await openKeyRing(keyDir, 'txn-token', { retainMs: 600_000 });
  const subjects = createSubjectVerifier({ issuers: [], txnTokenKeys: () => txnKeys.publicJwks(), trustDomain: TD });
  tts = createTxnTokenService({
    trustDomain: TD,
    keys: txnKeys,
    subjects,
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  idpKeys = await openKeyRing(keyDir, 'idp', { retainMs: 3_600_000 });
  controlPlane = await startIdp();
  rp = {
    issuer: controlPlane.idp?.issuer ?? '',
    clientId: 'gateway',
    clientSecret: 'gateway-secret-for-tests-only',
    redirectUri: REDIRECT,
    resource: RESOURCE,
    ca: ca.bundlePem,
  };
  await createUser(store, { username: 'alice', password: ALICE_PASSWORD, roles: ['customer'], tenant: 'acme' });
  await createUser(store, { username: 'mallory', password: 'a perfectly fine passphrase', roles: ['customer'] });
  const { token } = await createJoinToken(store, ca, { service: 'gateway', createdBy: 'cli' });
  gateway = await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service: 'gateway' });
  stopLogins = subscribeLogins((event) => logins.push(event));
});

after(async () => {
  stopLogins();
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const browser = (): TestBrowser => createTestBrowser({ ca: ca.bundlePem });

async function exchange(accessToken: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const agent = new Agent({
    connect: {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`${controlPlane.url}/v1/token`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE_GRANT,
        requested_token_type: TOKEN_TYPE.txnToken,
        audience: TD,
        scope: 'orders:read',
        subject_token: accessToken,
        subject_token_type: TOKEN_TYPE.accessToken,
      }).toString(),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

describe('identity provider: discovery and keys', () => {
  it('publishes discovery for code + PKCE only, and a JWKS with the next key already in it', async () => {
    const agent = new Agent({ connect: { ca: ca.bundlePem, checkServerIdentity: () => undefined } });
    try {
      const discovery = (await (
        await request(`${rp.issuer}/.well-known/openid-configuration`, { dispatcher: agent })
      ).body.json()) as Record<string, unknown>;
      assert.equal(discovery.issuer, rp.issuer);
      assert.deepEqual(discovery.response_types_supported, ['code']);
      assert.deepEqual(discovery.code_challenge_methods_supported, ['S256']);
      assert.ok(!(discovery.grant_types_supported as string[]).includes('implicit'));
      const jwks = (await (await request(String(discovery.jwks_uri), { dispatcher: agent })).body.json()) as {
        keys: { kid: string; d?: string }[];
      };
      assert.deepEqual(
        jwks.keys.map((key) => key.kid),
        idpKeys.publicJwks().keys.map((key) => key.kid),
      );
      assert.equal(jwks.keys.length, 2, 'current and next');
      assert.ok(
        jwks.keys.every((key) => key.d === undefined),
        'no private parts',
      );
    } finally {
      await agent.close();
    }
  });
});

describe('identity provider: signing in', () => {
  it('serves an accessible login page with a CSRF token and strict headers', async () => {
    const client = browser();
    try {
      const page = await client.open(authorizationRequest(rp, 'openid orders:read').url, {
        stopAt: (url) => url.href.startsWith(REDIRECT),
      });
      assert.equal(page.status, 200);
      assert.match(page.url, /\/oidc\/interaction\/[\w-]+$/);
      assert.match(page.body, /<html lang="en">/);
      assert.match(page.body, /<label for="username">/);
      assert.match(page.body, /<label for="password">/);
      assert.match(page.body, /autocomplete="current-password"/);
      assert.match(page.body, /name="csrf" value="[\w-]{43}"/);
      assert.match(page.body, /Lockstep Shop/, 'names the application');
      assert.doesNotMatch(page.body, /<script/i);
      const csp = String(page.headers['content-security-policy']);
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.match(csp, /form-action 'self' https:\/\/gateway\.shop\.test/);
      assert.equal(page.headers['x-content-type-options'], 'nosniff');
      assert.equal(page.headers['cache-control'], 'no-store');
      for (const [name, value] of Object.entries(client.cookies(new URL(rp.issuer).host)))
        assert.ok(value.length > 0, name);
    } finally {
      await client.close();
    }
  });

  it('logs a user in through authorization code + PKCE and issues an RFC 9068 access token with roles and tenant', async () => {
    const client = browser();
    try {
      const tokens = await logIn(client, rp, 'alice', ALICE_PASSWORD);
      assert.equal(tokens.token_type, 'Bearer');
      assert.equal(typeof tokens.refresh_token, 'string');
      assert.equal(typeof tokens.id_token, 'string');
      const accessToken = String(tokens.access_token);
      const header = decodeProtectedHeader(accessToken);
      assert.equal(header.typ, 'at+jwt');
      assert.equal(header.alg, 'ES256');
      assert.equal(header.kid, idpKeys.current().kid);
      const { payload } = await jwtVerify(accessToken, createLocalJWKSet(idpKeys.publicJwks()), {
        issuer: rp.issuer,
        audience: RESOURCE,
        typ: 'at+jwt',
      });
      assert.equal(payload.sub, 'alice');
      assert.equal(payload.client_id, 'gateway');
      assert.deepEqual(String(payload.scope).split(' ').sort(), ['orders:create', 'orders:read']);
      assert.deepEqual(payload.roles, ['customer']);
      assert.equal(payload.tenant, 'acme');
      assert.deepEqual(payload.amr, ['pwd']);
      assert.equal(decodeProtectedHeader(String(tokens.id_token)).alg, 'ES256');
      assert.ok(logins.some((event) => event.outcome === 'success' && event.username === 'alice'));
    } finally {
      await client.close();
    }
  });

  it('answers a wrong password with the same message as an unknown user, announced to screen readers', async () => {
    const client = browser();
    try {
      const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
      const login = await client.open(authorizationRequest(rp, 'openid').url, { stopAt });
      const wrong = await client.submit(
        login,
        { username: 'mallory', password: 'not the password at all' },
        { stopAt },
      );
      const unknown = await client.submit(
        login,
        { username: 'nobody-here', password: 'not the password at all' },
        { stopAt },
      );
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      const message = (body: string) => /<p id="login-error" class="error" role="alert">([^<]*)<\/p>/.exec(body)?.[1];
      assert.equal(message(wrong.body), 'The user name or password is incorrect.');
      assert.equal(message(unknown.body), message(wrong.body));
      assert.match(wrong.body, /aria-invalid="true" aria-describedby="login-error"/);
      assert.match(wrong.body, /value="mallory"/, 'the user name is kept');
    } finally {
      await client.close();
    }
  });

  it('refuses a login form without the CSRF token, with a wrong one, or posted from another site', async () => {
    const client = browser();
    try {
      const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
      const login = await client.open(authorizationRequest(rp, 'openid').url, { stopAt });
      const missing = await client.submit(login, { username: 'alice', password: ALICE_PASSWORD, csrf: '' }, { stopAt });
      assert.equal(missing.status, 403);
      assert.match(missing.body, /CSRF/);
      const forged = await client.submit(
        login,
        { username: 'alice', password: ALICE_PASSWORD, csrf: 'A'.repeat(43) },
        { stopAt },
      );
      assert.equal(forged.status, 403);
      const crossSite = await client.submit(
        login,
        { username: 'alice', password: ALICE_PASSWORD },
        { stopAt, origin: 'https://evil.example' },
      );
      assert.equal(crossSite.status, 403);
      assert.match(crossSite.body, /another site/);
      const fine = await client.submit(login, { username: 'alice', password: ALICE_PASSWORD }, { stopAt });
      assert.ok(fine.url.startsWith(REDIRECT), 'the genuine form still works');
    } finally {
      await client.close();
    }
  });

  it('requires PKCE: no code_challenge is refused, and a wrong code_verifier does not redeem the code', async () => {
    const client = browser();
    try {
      const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
      const noPkce = await client.open(
        authorizationRequest(rp, 'openid', { code_challenge: null, code_challenge_method: null }).url,
        { stopAt },
      );
      const refused = new URL(noPkce.url).searchParams;
      assert.equal(refused.get('error'), 'invalid_request');
      assert.match(String(refused.get('error_description')), /PKCE/);

      const authorization = authorizationRequest(rp, 'openid orders:read');
      const callback = await signIn(client, rp, authorization, 'alice', ALICE_PASSWORD);
      const wrong = await redeemCode(rp, String(callback.get('code')), 'x'.repeat(43));
      assert.equal(wrong.status, 400);
      assert.equal(wrong.body.error, 'invalid_grant');
    } finally {
      await client.close();
    }
  });

  it('rotates refresh tokens, and a reused refresh token revokes the whole grant', async () => {
    const client = browser();
    try {
      const tokens = await logIn(client, rp, 'alice', ALICE_PASSWORD);
      const first = String(tokens.refresh_token);
      const rotated = await refresh(rp, first);
      assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
      const second = String(rotated.body.refresh_token);
      assert.notEqual(second, first, 'a new refresh token each time');
      assert.equal(decodeJwt(String(rotated.body.access_token)).sub, 'alice');

      const reused = await refresh(rp, first);
      assert.equal(reused.status, 400);
      assert.equal(reused.body.error, 'invalid_grant');
      const afterReuse = await refresh(rp, second);
      assert.equal(afterReuse.status, 400, "the thief's reuse also ends the legitimate holder's grant");
      assert.equal(afterReuse.body.error, 'invalid_grant');
    } finally {
      await client.close();
    }
  });
});

describe('identity provider: a workload client authenticated by its SVID', () => {
  async function redeemWith(credentials: WorkloadCredentials | null, code: string, verifier: string) {
    const tls = credentials === null ? {} : { cert: credentials.chainPem, key: credentials.keyPem };
    const agent = new Agent({ connect: { ...tls, ca: ca.bundlePem, checkServerIdentity: () => undefined } });
    try {
      const response = await request(`${rp.issuer}/token`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          client_id: 'gateway-mtls',
          code,
          redirect_uri: REDIRECT,
          code_verifier: verifier,
          resource: RESOURCE,
        }).toString(),
      });
      return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
    } finally {
      await agent.close();
    }
  }

  it('redeems a code only over mTLS with the registered SPIFFE ID', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' });
    const orders = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: token,
      service: 'orders',
    });
    const mtlsRp = { ...rp, clientId: 'gateway-mtls' };
    for (const [who, credentials, expected] of [
      ['no certificate', null, 401],
      ['another workload', orders, 401],
      ['the gateway', gateway, 200],
    ] as const) {
      const client = browser();
      try {
        const authorization = authorizationRequest(mtlsRp, 'openid orders:read');
        const callback = await signIn(client, mtlsRp, authorization, 'alice', ALICE_PASSWORD);
        const answer = await redeemWith(credentials, String(callback.get('code')), authorization.verifier);
        assert.equal(answer.status, expected, `${who}: ${JSON.stringify(answer.body)}`);
        if (expected === 401) assert.equal(answer.body.error, 'invalid_client', who);
        else assert.equal(decodeJwt(String(answer.body.access_token)).client_id, 'gateway-mtls');
      } finally {
        await client.close();
      }
    }
  });
});

describe('identity provider and the Txn-Token Service', () => {
  it("exchanges the provider's access token for a Txn-Token carrying the user's roles, tenant and authentication method", async () => {
    const client = browser();
    try {
      const tokens = await logIn(client, rp, 'alice', ALICE_PASSWORD);
      const issued = await exchange(String(tokens.access_token));
      assert.equal(issued.status, 200, JSON.stringify(issued.body));
      const claims = decodeJwt(String(issued.body.access_token));
      assert.equal(claims.sub, 'alice');
      assert.deepEqual(claims.tctx, { roles: ['customer'], tenant: 'acme' });
      assert.deepEqual(claims.rctx, { authn: 'pwd' });
      assert.equal(claims.req_wl, gateway.spiffeId);
    } finally {
      await client.close();
    }
  });

  it('keeps accepting tokens signed before a key rotation, and signs new ones with the published next key', async () => {
    const client = browser();
    try {
      const before = String((await logIn(client, rp, 'alice', ALICE_PASSWORD)).access_token);
      const next = idpKeys.publicJwks().keys[1]?.kid;
      const rotation = await controlPlane.idp?.rotateKeys();
      assert.equal(rotation?.current, next, 'the key published as next signs now');
      const afterRotation = String((await logIn(client, rp, 'alice', ALICE_PASSWORD)).access_token);
      assert.equal(decodeProtectedHeader(afterRotation).kid, next);
      assert.equal((await exchange(before)).status, 200, 'a token signed with the previous key still verifies');
      assert.equal((await exchange(afterRotation)).status, 200);
      assert.deepEqual(
        idpKeys
          .publicJwks()
          .keys.map((key) => key.kid)
          .slice(0, 1),
        [next],
      );
      assert.equal(idpKeys.publicJwks().keys.length, 3, 'current, next and the previous one until its tokens expire');
    } finally {
      await client.close();
    }
  });

  it('trusts the provider as an external issuer by discovery (the issuer in the document must match)', async () => {
    const client = browser();
    const agent = new Agent({ connect: { ca: ca.bundlePem, checkServerIdentity: () => undefined } });
    const fetchWith = ((input: string | URL | Request, init?: RequestInit) =>
      undiciFetch(input as string, { ...(init as object), dispatcher: agent })) as unknown as typeof fetch;
    try {
      const external = await discoverIssuer(rp.issuer, RESOURCE, fetchWith);
      const verifier = createSubjectVerifier({
        issuers: [external],
        txnTokenKeys: () => ({ keys: [] }),
        trustDomain: TD,
      });
      const accessToken = String((await logIn(client, rp, 'alice', ALICE_PASSWORD)).access_token);
      const subject = await verifier.verify('access_token', accessToken, gateway.spiffeId);
      assert.equal(subject.sub, 'alice');
      await assert.rejects(discoverIssuer(`${rp.issuer}/`, RESOURCE, fetchWith), /names issuer .* not .*mix-up/);
      await assert.rejects(discoverIssuer('http://127.0.0.1:1/oidc', RESOURCE, fetchWith), /must use https/);
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('refuses to log in, and to exchange tokens of, a revoked user', async () => {
    const client = browser();
    try {
      await createUser(store, {
        username: 'trudy',
        password: 'correct horse battery staple again',
        roles: ['customer'],
      });
      const accessToken = String((await logIn(client, rp, 'trudy', 'correct horse battery staple again')).access_token);
      await controlPlane.revoke({ kind: 'sub', value: 'trudy', reason: 'left the company', actor: 'cli' });
      const refused = await exchange(accessToken);
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, 'invalid_grant');
      assert.match(String(refused.body.error_description), /revoked/);
      const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
      const login = await client.open(authorizationRequest(rp, 'openid', { prompt: 'login' }).url, { stopAt });
      const denied = await client.submit(
        login,
        { username: 'trudy', password: 'correct horse battery staple again' },
        { stopAt },
      );
      assert.equal(denied.status, 403);
      assert.match(denied.body, /cannot sign in/);
    } finally {
      await client.close();
    }
  });
});

describe('identity provider: lockout with backoff', () => {
  let locked: RunningControlPlane;
  let lockedRp: RelyingParty;

  before(async () => {
    // A second control plane on the same store with a short policy: 3 free attempts per account.
    // (Parallel attacks, other users of the address, spraying: test/sign-in-attacks.test.ts.)
    locked = await startIdp({
      accountFreeAttempts: 3,
      addressFreeAccounts: 20,
      addressLockMs: 60_000,
      baseLockMs: 60_000,
      maxLockMs: 900_000,
      windowMs: 3_600_000,
    });
    lockedRp = { ...rp, issuer: locked.idp?.issuer ?? '' };
    await createUser(store, { username: 'victor', password: 'a long passphrase for v', roles: ['customer'] });
  });
  after(async () => {
    await locked.close();
  });

  it('locks an account after repeated failures, even against the right password, and says when to retry', async () => {
    const client = browser();
    try {
      const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
      const login = await client.open(authorizationRequest(lockedRp, 'openid').url, { stopAt });
      const statuses: number[] = [];
      for (let attempt = 0; attempt < 3; attempt += 1)
        statuses.push(
          (await client.submit(login, { username: 'victor', password: `wrong guess number ${attempt}` }, { stopAt }))
            .status,
        );
      assert.deepEqual(statuses, [401, 401, 429], 'the third failure locks');
      const right = await client.submit(login, { username: 'victor', password: 'a long passphrase for v' }, { stopAt });
      assert.equal(right.status, 429, 'the right password does not get through a lock');
      const seconds = Number(right.headers['retry-after']);
      assert.ok(seconds > 50 && seconds <= 60, `retry after ${seconds} s: what is left of a 60 s lock`);
      assert.match(right.body, new RegExp(`Too many failed sign-in attempts\\. Try again in ${seconds} seconds\\.`));
      assert.ok(logins.some((event) => event.outcome === 'locked' && event.username === 'victor'));
      assert.deepEqual(
        await store.loginFailures('account:victor').then((entry) => entry?.failures),
        3,
        'a locked attempt is not counted: a lock cannot be extended by a stranger',
      );
    } finally {
      await client.close();
    }
  });
});
