/**
 * The attacker's tools for the drill, all over loopback against the shop the drill started:
 * stolen workload credentials (a compromised service's own SVID and key), a captured genuine
 * Txn-Token, a forged one, a browser session as another customer, and raw calls with or without a
 * client certificate.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { controlPlaneAgent, joinControlPlane, requestTxnToken, type WorkloadCredentials } from '@lockstep/workload';
import { workloadId } from '@lockstep/guard';
import { createTestBrowser, createTxnTokenMinter, type TestBrowser } from '@lockstep/testkit';
import { TRUST_DOMAIN, type RunningShop } from '../launch.ts';

export interface Answer {
  readonly status: number | null;
  readonly body: Record<string, unknown>;
  /** Set when no HTTP answer came: the TLS handshake or the connection was refused. */
  readonly failure?: string;
}

/** One HTTP call as an attacker makes it: any client certificate (or none), the server not verified. */
export async function call(
  url: string,
  options: {
    method?: 'GET' | 'POST';
    headers?: Record<string, string>;
    json?: unknown;
    as?: WorkloadCredentials | null;
  } = {},
): Promise<Answer> {
  const agent = new Agent({
    connect: {
      rejectUnauthorized: false,
      ...(options.as ? { cert: options.as.chainPem, key: options.as.keyPem } : {}),
    },
  });
  try {
    const response = await request(url, {
      method: options.method ?? 'GET',
      dispatcher: agent,
      headers: { ...(options.json === undefined ? {} : { 'content-type': 'application/json' }), ...options.headers },
      body: options.json === undefined ? null : JSON.stringify(options.json),
    });
    const text = await response.body.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { text: text.slice(0, 200) };
    }
    return { status: response.statusCode, body };
  } catch (error) {
    return { status: null, body: {}, failure: (error as Error & { code?: string }).code ?? (error as Error).message };
  } finally {
    await agent.close();
  }
}

/** A compromised workload: a valid SVID and key of `service`, as stolen from its host. */
export async function stolenCredentials(shop: RunningShop, service: string): Promise<WorkloadCredentials> {
  const [token = ''] = await shop.admin('join-token', 'create', service);
  return joinControlPlane({ url: shop.urls.controlPlane, trustDomain: TRUST_DOMAIN, joinToken: token, service });
}

/** A browser signed in at the gateway as `user`. */
export async function signedIn(
  shop: RunningShop,
  user: string,
  password: string,
): Promise<{ browser: TestBrowser; csrf: string }> {
  const browser = createTestBrowser({ ca: readFileSync(join(shop.dataDir, 'bundle.pem'), 'utf8') });
  const login = await browser.open(`${shop.urls.gateway}/login`);
  const done = await browser.submit(login, { username: user, password });
  if (!done.url.startsWith(shop.urls.gateway))
    throw new Error(`${user} could not sign in: ${done.status} at ${done.url}`);
  const session = await browser.request(`${shop.urls.gateway}/api/session`);
  return { browser, csrf: String((session.body as { csrf?: string }).csrf) };
}

/**
 * A genuine Txn-Token for `user`, as one is captured from inside the system: signed in through the
 * real flow, redeemed and exchanged with the gateway's identity (stolen credentials).
 */
export async function capturedTxnToken(
  shop: RunningShop,
  gateway: WorkloadCredentials,
  user: string,
  password: string,
): Promise<string> {
  const browser = createTestBrowser({ ca: readFileSync(join(shop.dataDir, 'bundle.pem'), 'utf8') });
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const redirectUri = `${shop.urls.gateway}/callback`;
  const authorize = new URL(`${shop.urls.controlPlane}/oidc/auth`);
  for (const [name, value] of Object.entries({
    client_id: 'gateway',
    response_type: 'code',
    redirect_uri: redirectUri,
    scope: 'openid orders:read orders:create',
    state,
    resource: 'https://shop.test/api',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  }))
    authorize.searchParams.set(name, value);
  try {
    const stopAt = (url: URL) => url.href.startsWith(redirectUri);
    const login = await browser.open(authorize.href, { stopAt });
    const done = await browser.submit(login, { username: user, password }, { stopAt });
    const code = new URL(done.url).searchParams.get('code');
    if (code === null) throw new Error(`no authorization code for ${user}: ${done.url}`);
    const pool = controlPlaneAgent(TRUST_DOMAIN, {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
    });
    try {
      const post = async (path: string, fields: Record<string, string>) => {
        const response = await request(`${shop.urls.controlPlane}${path}`, {
          method: 'POST',
          dispatcher: pool,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams(fields).toString(),
        });
        const body = (await response.body.json()) as Record<string, string>;
        if (response.statusCode !== 200) throw new Error(`${path}: ${response.statusCode} ${JSON.stringify(body)}`);
        return body;
      };
      const tokens = await post('/oidc/token', {
        grant_type: 'authorization_code',
        client_id: 'gateway',
        code,
        redirect_uri: redirectUri,
        code_verifier: verifier,
        resource: 'https://shop.test/api',
      });
      return await requestTxnToken(
        { url: shop.urls.controlPlane, trustDomain: TRUST_DOMAIN, dispatcher: pool },
        {
          subjectToken: String(tokens.access_token),
          subjectTokenType: 'access_token',
          scope: 'orders:read orders:create',
        },
      );
    } finally {
      await pool.close();
    }
  } finally {
    await browser.close();
  }
}

/** A Txn-Token with every claim an attacker wants, signed with the attacker's own key. */
export async function forgedTxnToken(user: string): Promise<string> {
  const minter = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN });
  const claims = { sub: user, tctx: { roles: ['customer', 'admin'] }, req_wl: workloadId(TRUST_DOMAIN, 'gateway') };
  return minter.mint(claims);
}
