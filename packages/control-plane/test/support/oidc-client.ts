/**
 * The relying party's side of authorization code + PKCE, for tests: what the gateway does, done by
 * hand so that every step can be checked (and attacked). Real HTTPS, real control plane.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import type { TestBrowser } from '@lockstep/testkit';

export interface RelyingParty {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly redirectUri: string;
  readonly resource: string;
  readonly ca: string;
}

export interface Authorization {
  readonly url: string;
  readonly state: string;
  readonly verifier: string;
}

export function authorizationRequest(
  rp: RelyingParty,
  scope: string,
  overrides: Record<string, string | null> = {},
): Authorization {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const parameters: Record<string, string | null> = {
    client_id: rp.clientId,
    response_type: 'code',
    redirect_uri: rp.redirectUri,
    scope,
    state,
    resource: rp.resource,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    ...overrides,
  };
  const url = new URL(`${rp.issuer}/auth`);
  for (const [name, value] of Object.entries(parameters)) if (value !== null) url.searchParams.set(name, value);
  return { url: url.href, state, verifier };
}

/** Opens the authorization URL, signs in on the login page, and returns the callback's query. */
export async function signIn(
  browser: TestBrowser,
  rp: RelyingParty,
  authorization: Authorization,
  username: string,
  password: string,
): Promise<URLSearchParams> {
  const stopAt = (url: URL) => url.href.startsWith(rp.redirectUri);
  const login = await browser.open(authorization.url, { stopAt });
  // Already signed in (a session cookie): single sign-on straight back to the app.
  if (login.url.startsWith(rp.redirectUri)) return new URL(login.url).searchParams;
  if (login.status !== 200)
    throw new Error(
      `expected the login page, got ${login.status} at ${login.url}: ${/<p role="alert">([^<]*)/.exec(login.body)?.[1] ?? login.body.slice(0, 300)}`,
    );
  const done = await browser.submit(login, { username, password }, { stopAt });
  if (!done.url.startsWith(rp.redirectUri))
    throw new Error(
      `sign-in did not come back to the app: ${done.status} at ${done.url}: ${/<p role="alert">([^<]*)/.exec(done.body)?.[1] ?? done.body.slice(0, 500)}`,
    );
  return new URL(done.url).searchParams;
}

export interface TokenResponse {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export async function tokenRequest(rp: RelyingParty, fields: Record<string, string>): Promise<TokenResponse> {
  const agent = new Agent({ connect: { ca: rp.ca, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${rp.issuer}/token`, {
      method: 'POST',
      dispatcher: agent,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(rp.clientId)}:${encodeURIComponent(rp.clientSecret)}`).toString('base64')}`,
      },
      body: new URLSearchParams(fields).toString(),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

export function redeemCode(rp: RelyingParty, code: string, verifier: string): Promise<TokenResponse> {
  return tokenRequest(rp, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: rp.redirectUri,
    code_verifier: verifier,
    resource: rp.resource,
  });
}

export function refresh(rp: RelyingParty, refreshToken: string): Promise<TokenResponse> {
  return tokenRequest(rp, { grant_type: 'refresh_token', refresh_token: refreshToken, resource: rp.resource });
}

/** The whole flow: authorize, sign in, redeem the code. Returns the token response. */
export async function logIn(
  browser: TestBrowser,
  rp: RelyingParty,
  username: string,
  password: string,
  scope = 'openid offline_access orders:read orders:create',
): Promise<Record<string, unknown>> {
  const authorization = authorizationRequest(rp, scope);
  const callback = await signIn(browser, rp, authorization, username, password);
  if (callback.get('state') !== authorization.state) throw new Error('state mismatch');
  const code = callback.get('code');
  if (code === null) throw new Error(`no code: ${callback.toString()}`);
  const tokens = await redeemCode(rp, code, authorization.verifier);
  if (tokens.status !== 200) throw new Error(`token endpoint: ${tokens.status} ${JSON.stringify(tokens.body)}`);
  return tokens.body;
}
