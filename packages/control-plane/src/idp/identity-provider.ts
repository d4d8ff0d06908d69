/**
 * The identity provider: OpenID Connect on `oidc-provider` 9, mounted under `/oidc` on the control
 * plane's HTTPS server.
 *
 *   - authorization code + PKCE (required for every client), nothing else: no implicit, no password
 *     grant
 *   - RFC 9068 JWT access tokens (`typ: at+jwt`, ES256) for one resource — the gateway's API —
 *     carrying the user's `roles` and `tenant` for the Txn-Token Service
 *   - refresh tokens rotated on every use; presenting a used one again revokes the whole grant
 *     (oidc-provider's reuse detection)
 *   - discovery (`/oidc/.well-known/openid-configuration`), JWKS from a rotating key ring
 *   - a server-rendered sign-in page (pages.ts) with a CSRF token, scrypt passwords (passwords.ts),
 *     sign-in throttling per account, per network and per known browser (lockout.ts, sign-in.ts),
 *     and a bound on the password checks in progress per network and per replica (check-slots.ts)
 *   - a session whose account was revoked, disabled or removed is ended at the next authorization
 *     request, which shows the sign-in page with the refusal (no single sign-on past a revocation)
 *   - all state (sessions, codes, grants, refresh tokens) in the control plane's store
 *
 * The registered clients are first-party (the gateway): signing in grants them the requested scopes
 * without a consent page. A workload client authenticates at the token endpoint with its SVID (RFC
 * 8705 `tls_client_auth`, `tls_client_auth_san_uri` = its SPIFFE ID): no client secret to keep.
 */
import { createHmac, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import Provider, {
  errors as oidcErrors,
  interactionPolicy,
  type ClientMetadata,
  type Configuration,
  type Interaction,
  type KoaContextWithOIDC,
} from 'oidc-provider';
import type { JSONWebKeySet } from 'jose';
import type { KeyRing, Rotation } from '../ca/key-ring.ts';
import { documentPlace, readOrCreate } from '../ca/key-document.ts';
import { KeyFileError } from '../ca/key-files.ts';
import { toKeyVault, type KeyVault } from '../ca/key-vault.ts';
import { peerSpiffeId } from '../server/peer.ts';
import type { ControlPlaneStore } from '../store/store.ts';
import { createCheckSlots, DEFAULT_PASSWORD_CHECKS, type PasswordCheckLimits } from './check-slots.ts';
import { createDeviceCookies } from './device-cookie.ts';
import { createLockout, DEFAULT_LOCKOUT, type LockoutPolicy } from './lockout.ts';
import { storeAdapter } from './oidc-adapter.ts';
import { loginPage, logoutPage, messagePage, pageHeaders } from './pages.ts';
import { accountRefusal, checkSignIn } from './sign-in.ts';

export const IDP_PATH = '/oidc';
const loginChannel = diagnostics.channel('lockstep:idp:login');

/** The API the access tokens are for (RFC 8707 resource indicator). */
export interface ProtectedResource {
  /** e.g. `https://gateway.shop.test/api`: the `aud` of every access token. */
  readonly indicator: string;
  /** The scopes clients may ask for it, e.g. `orders:read orders:write`. */
  readonly scopes: readonly string[];
  /** Default 600 (10 min). */
  readonly accessTokenTtlSeconds?: number;
}

export interface IdentityProviderOptions {
  /** `https://<host>:<port>/oidc`: where the control plane is reached, plus `/oidc`. */
  readonly issuer: string;
  /** Clients authenticating with an SVID (tls_client_auth) must be of this trust domain. */
  readonly trustDomain: string;
  readonly store: ControlPlaneStore;
  readonly keys: KeyRing;
  /** Secrets for signing cookies and CSRF tokens, newest first (a rotation keeps the old one for a while). */
  readonly cookieKeys: readonly string[];
  readonly clients: readonly ClientMetadata[];
  readonly resource: ProtectedResource;
  readonly lockout?: LockoutPolicy;
  /** How many sign-in checks this replica runs at once, per network and in all (`DEFAULT_PASSWORD_CHECKS`). */
  readonly passwordChecks?: PasswordCheckLimits;
  readonly now?: () => number;
}

export type LoginEvent = {
  /** `busy`: answered "try again in a moment" before anything was counted or checked (check-slots.ts). */
  readonly outcome: 'success' | 'failure' | 'locked' | 'refused' | 'busy';
  readonly username: string;
  readonly ip: string;
  readonly at: number;
  /** For `locked`: how long until the next attempt is accepted. */
  readonly retryAfterMs?: number;
  /**
   * For `refused`: why a correct password did not sign in (disabled, revoked), or why a session was
   * ended; for `busy`: whose checks were too many (`network` or `replica`).
   */
  readonly reason?: string;
};

export function subscribeLogins(listener: (event: LoginEvent) => void): () => void {
  const handler = (message: unknown) => listener(message as LoginEvent);
  loginChannel.subscribe(handler);
  return () => loginChannel.unsubscribe(handler);
}

export interface IdentityProvider {
  readonly issuer: string;
  /** Handles a request whose path starts with `/oidc` (raw Node request: the body is not read yet). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** The public signing keys (current, next, retained previous), as the JWKS endpoint serves them. */
  publicJwks(): JSONWebKeySet;
  /** Rotates the signing keys: the published next key signs from now on. */
  rotateKeys(): Promise<Rotation>;
  close(): void;
}

const UID = /^[A-Za-z0-9_-]{1,64}$/;
const FORM_LIMIT = 8 * 1024;
// The same words for a disabled or revoked account, whether it signs in or comes back with a session.
const CANNOT_SIGN_IN = 'This account cannot sign in. Contact your administrator.';

/**
 * oidc-provider's prompts plus one check: a session whose account `findAccount` no longer returns
 * (revoked, disabled, removed) asks for a sign-in again. Without it the request went on with no
 * account and failed in the consent prompt (a TypeError, answered 500).
 */
function signInPolicy(): interactionPolicy.Prompt[] {
  const policy = interactionPolicy.base();
  policy
    .get('login')
    ?.checks.add(
      new interactionPolicy.Check(
        'account_cannot_sign_in',
        'the signed-in account can no longer sign in',
        'login_required',
        (ctx) => ctx.oidc.session?.accountId !== undefined && ctx.oidc.account === undefined,
      ),
    );
  return policy;
}

const COOKIE_SECRET = 'idp-cookie.secret';

/**
 * The secret that signs the identity provider's cookies and CSRF tokens: the document
 * `idp-cookie.secret` of the key vault (a file of that name, 0600, in a key directory), created on
 * first use. Replicas opening it at once end with one secret.
 */
export async function openCookieKeys(
  keys: KeyVault | string,
  onCreated?: (message: string) => void,
): Promise<string[]> {
  const vault = toKeyVault(keys);
  const { document, created } = await readOrCreate(vault, COOKIE_SECRET, async () =>
    randomBytes(32).toString('base64url'),
  );
  if (created) onCreated?.(`created a NEW identity-provider cookie secret in ${vault.where} (development material)`);
  const stored = document.text.trim();
  if (stored.length < 32)
    throw new KeyFileError(
      documentPlace(vault, COOKIE_SECRET),
      `it holds ${stored.length} characters, not a secret of 32 or more`,
    );
  return [stored];
}

export function createIdentityProvider(options: IdentityProviderOptions): IdentityProvider {
  if (!options.issuer.endsWith(IDP_PATH))
    throw new TypeError(
      `the issuer must end with ${IDP_PATH}, e.g. https://127.0.0.1:8443${IDP_PATH}; got ${options.issuer}`,
    );
  if (options.cookieKeys.length === 0 || options.cookieKeys.some((key) => key.length < 32))
    throw new TypeError('cookieKeys: give at least one secret of 32 characters or more');
  const { store, resource } = options;
  const now = options.now ?? Date.now;
  const throttling = options.lockout ?? DEFAULT_LOCKOUT;
  const checks = {
    store,
    lockout: createLockout(store, throttling),
    slots: createCheckSlots(options.passwordChecks ?? DEFAULT_PASSWORD_CHECKS),
  };
  const deviceCookies = createDeviceCookies(options.cookieKeys);
  const issuerOrigin = new URL(options.issuer).origin;
  let provider = build();
  let callback = provider.callback();
  // Signing keys follow the ring, whichever replica rotated it (the ring tells of its own rotations too).
  const stopFollowing = options.keys.onRotate(() => {
    provider = build();
    callback = provider.callback();
  });
  // Expired artefacts, and counts past their window: a spray of made-up names does not fill the store.
  const sweeper = setInterval(
    () =>
      void Promise.all([store.sweepOidc(now()), store.sweepLoginFailures(now() - throttling.windowMs)]).catch(() => {}),
    10 * 60_000,
  );
  sweeper.unref();

  function build(): Provider {
    const configuration: Configuration = {
      adapter: storeAdapter(store, now),
      clients: options.clients.map((client) => ({ ...client })),
      clientDefaults: {
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        id_token_signed_response_alg: 'ES256',
        token_endpoint_auth_method: 'client_secret_basic',
      },
      jwks: { keys: options.keys.privateJwks() as NonNullable<Configuration['jwks']>['keys'] },
      cookies: {
        keys: [...options.cookieKeys],
        long: { httpOnly: true, sameSite: 'lax', signed: true },
        short: { httpOnly: true, sameSite: 'lax', signed: true },
      },
      responseTypes: ['code'],
      // tls_client_auth for workloads (their SVID); a secret or a key for others; `none` only with PKCE (required anyway).
      clientAuthMethods: ['tls_client_auth', 'private_key_jwt', 'client_secret_basic', 'none'],
      pkce: { required: () => true },
      scopes: ['openid', 'offline_access', 'profile'],
      claims: { openid: ['sub'], profile: ['preferred_username', 'roles', 'tenant'] },
      findAccount: async (_ctx, sub) => {
        const user = await store.user(sub);
        if (user === null || (await accountRefusal(store, user)) !== null) return undefined;
        return {
          accountId: sub,
          claims: async () => ({
            sub,
            preferred_username: sub,
            roles: [...user.roles],
            ...(user.tenant === null ? {} : { tenant: user.tenant }),
          }),
        };
      },
      extraTokenClaims: async (ctx, token) => {
        if (token.kind !== 'AccessToken') return undefined;
        const user = await store.user(token.accountId);
        const amr = (ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken)?.amr;
        return {
          roles: user === null ? [] : [...user.roles],
          ...(user?.tenant ? { tenant: user.tenant } : {}),
          ...(Array.isArray(amr) ? { amr } : {}),
        };
      },
      features: {
        devInteractions: { enabled: false },
        mTLS: {
          enabled: true,
          tlsClientAuth: true,
          getCertificate: (ctx) => {
            const peer = (ctx.socket as TLSSocket).getPeerCertificate?.(false);
            return peer?.raw ? new X509Certificate(peer.raw).toString() : undefined;
          },
          certificateAuthorized: (ctx) => peerOf(ctx) !== null,
          certificateSubjectMatches: (ctx, property, expected) =>
            property === 'tls_client_auth_san_uri' && peerOf(ctx) === expected,
        },
        revocation: { enabled: true },
        rpInitiatedLogout: {
          enabled: true,
          logoutSource: async (ctx, form) => {
            ctx.set(pageHeaders());
            ctx.body = logoutPage(form, ctx.host);
          },
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: async () => resource.indicator,
          useGrantedResource: async () => true,
          getResourceServerInfo: async (_ctx, indicator) => {
            if (indicator !== resource.indicator)
              throw new oidcErrors.InvalidTarget(
                `unknown resource; this provider issues access tokens for ${resource.indicator} only`,
              );
            return {
              scope: resource.scopes.join(' '),
              audience: resource.indicator,
              accessTokenTTL: resource.accessTokenTtlSeconds ?? 600,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'ES256' } },
            };
          },
        },
      },
      rotateRefreshToken: true,
      issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
      loadExistingGrant: firstPartyGrant,
      interactions: {
        policy: signInPolicy(),
        url: async (_ctx, interaction) => `${IDP_PATH}/interaction/${interaction.uid}`,
      },
      ttl: {
        AccessToken: resource.accessTokenTtlSeconds ?? 600,
        AuthorizationCode: 60,
        IdToken: 600,
        Interaction: 600,
        RefreshToken: 14 * 24 * 3600,
        Session: 14 * 24 * 3600,
        Grant: 14 * 24 * 3600,
      },
      renderError: async (ctx, out) => {
        ctx.set(pageHeaders());
        ctx.body = messagePage(
          'Sign-in problem',
          `${out.error}${out.error_description ? `: ${out.error_description}` : ''}`,
        );
      },
    };
    const built = new Provider(options.issuer, configuration);
    // Koa's default error handler would print every refused request; the HTTP answer says enough.
    built.on('server_error', (_ctx: unknown, error: Error) =>
      process.stderr.write(`lockstep identity provider: ${error.stack ?? error.message}\n`),
    );
    return built;
  }

  /** The caller's SPIFFE ID when it presented a valid SVID of the trust domain, else null. */
  function peerOf(ctx: KoaContextWithOIDC): string | null {
    try {
      return peerSpiffeId(ctx.socket as TLSSocket, options.trustDomain);
    } catch {
      return null;
    }
  }

  /** The clients are first-party: an existing grant is reused, otherwise one is made for what was asked. */
  async function firstPartyGrant(ctx: KoaContextWithOIDC) {
    const { oidc } = ctx;
    const accountId = oidc.session?.accountId;
    if (oidc.client === undefined || accountId === undefined) return undefined;
    const existing = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(oidc.client.clientId);
    const grant = existing
      ? await oidc.provider.Grant.find(existing)
      : new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId });
    if (grant === undefined) return undefined;
    const requested = new Set(
      String(oidc.params?.scope ?? '')
        .split(' ')
        .filter(Boolean),
    );
    const oidcScopes = ['openid', 'offline_access', 'profile'].filter((scope) => requested.has(scope));
    if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(' '));
    const resourceScopes = resource.scopes.filter((scope) => requested.has(scope));
    grant.addResourceScope(resource.indicator, resourceScopes.join(' '));
    await grant.save();
    return grant;
  }

  const csrfFor = (uid: string) =>
    createHmac('sha256', options.cookieKeys[0] as string)
      .update(`lockstep-login:${uid}`)
      .digest('base64url');
  const csrfValid = (uid: string, token: string) =>
    options.cookieKeys.some((key) => {
      const expected = Buffer.from(createHmac('sha256', key).update(`lockstep-login:${uid}`).digest('base64url'));
      const actual = Buffer.from(token);
      return actual.length === expected.length && timingSafeEqual(actual, expected);
    });

  function send(
    res: ServerResponse,
    status: number,
    html: string,
    headers: Record<string, string> = pageHeaders(),
  ): void {
    res.writeHead(status, headers);
    res.end(html);
  }

  async function interaction(
    req: IncomingMessage,
    res: ServerResponse,
    uid: string,
    step: 'show' | 'login',
  ): Promise<void> {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return send(
        res,
        400,
        messagePage(
          'Sign-in expired',
          'This sign-in page has expired or was opened in another browser. Go back to the application and sign in again.',
        ),
      );
    }
    if (details.uid !== uid)
      return send(
        res,
        400,
        messagePage(
          'Sign-in expired',
          'This sign-in page does not belong to your current sign-in. Go back to the application and sign in again.',
        ),
      );
    const client = await provider.Client.find(String(details.params.client_id));
    const clientName = client?.clientName ?? String(details.params.client_id);
    const redirectOrigin =
      typeof details.params.redirect_uri === 'string' ? safeOrigin(details.params.redirect_uri) : null;
    const headers = pageHeaders(redirectOrigin === null ? [] : [redirectOrigin]);
    const action = `${IDP_PATH}/interaction/${uid}/login`;
    if (details.prompt.name !== 'login') {
      return send(
        res,
        400,
        messagePage(
          'Sign-in problem',
          `This application asked for something this sign-in cannot grant (${details.prompt.name}: ${details.prompt.reasons.join(', ')}). Contact its administrator.`,
        ),
      );
    }
    const ip = req.socket.remoteAddress ?? 'unknown';
    const ended = await endStaleSession(details);
    if (ended !== null)
      loginChannel.publish({
        outcome: 'refused',
        username: ended.accountId,
        ip,
        at: now(),
        reason: `${ended.reason}; its session was ended`,
      } satisfies LoginEvent);
    if (step === 'show') {
      if (ended === null) return send(res, 200, loginPage({ action, csrf: csrfFor(uid), client: clientName }), headers);
      return send(
        res,
        403,
        loginPage({ action, csrf: csrfFor(uid), client: clientName, username: ended.accountId, error: CANNOT_SIGN_IN }),
        headers,
      );
    }

    if (req.method !== 'POST')
      return send(res, 405, messagePage('Sign-in problem', 'Send the sign-in form with POST.'), {
        ...headers,
        allow: 'POST',
      });
    // A cross-site form post is refused twice: its Origin is not ours, and it cannot know the CSRF token.
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== issuerOrigin)
      return send(res, 403, messagePage('Sign-in refused', 'This sign-in form was sent from another site.'), headers);
    const form = await readForm(req);
    if (form === null)
      return send(
        res,
        400,
        messagePage('Sign-in problem', 'The sign-in form could not be read. Go back and try again.'),
        headers,
      );
    if (!csrfValid(uid, form.get('csrf') ?? ''))
      return send(
        res,
        403,
        messagePage(
          'Sign-in refused',
          'This sign-in form is not the one we sent (CSRF check). Go back to the application and sign in again.',
        ),
        headers,
      );

    const username = (form.get('username') ?? '').trim().toLowerCase();
    const knownBrowser = deviceCookies.knownBrowser(req, username);
    const at = now();
    const outcome = await checkSignIn(
      checks,
      { username, password: form.get('password') ?? '', address: ip, knownBrowser },
      at,
    );
    const again = (status: number, error: string, extra: Record<string, string> = {}) =>
      send(res, status, loginPage({ action, csrf: csrfFor(uid), client: clientName, username, error }), {
        ...headers,
        ...extra,
      });
    const retry = (ms: number) => {
      const seconds = Math.ceil(ms / 1000);
      return { after: `${seconds} second${seconds === 1 ? '' : 's'}`, header: { 'retry-after': String(seconds) } };
    };
    switch (outcome.kind) {
      case 'busy':
        // Nothing was counted or checked: a retry a second later is a fresh attempt.
        loginChannel.publish({ outcome: 'busy', username, ip, at, reason: outcome.by } satisfies LoginEvent);
        return again(429, 'Too many sign-in attempts are being checked right now. Try again in a moment.', {
          'retry-after': '1',
        });
      case 'held': {
        loginChannel.publish({
          outcome: 'locked',
          username,
          ip,
          at,
          retryAfterMs: outcome.retryAfterMs,
        } satisfies LoginEvent);
        const { after, header } = retry(outcome.retryAfterMs);
        // The network's throttle is said as such: a user who did nothing wrong learns why they wait.
        const why =
          outcome.by === 'address'
            ? 'Too many failed sign-in attempts from your network'
            : 'Too many failed sign-in attempts';
        return again(429, `${why}. Try again in ${after}.`, header);
      }
      case 'wrong': {
        loginChannel.publish({ outcome: 'failure', username, ip, at } satisfies LoginEvent);
        if (outcome.lockedForMs === 0) return again(401, 'The user name or password is incorrect.');
        const { after, header } = retry(outcome.lockedForMs);
        const why =
          outcome.lockedBy === 'address'
            ? 'Too many failed sign-in attempts from your network'
            : 'Too many failed attempts';
        return again(429, `The user name or password is incorrect. ${why}: try again in ${after}.`, header);
      }
      case 'refused':
        loginChannel.publish({ outcome: 'refused', username, ip, at, reason: outcome.reason } satisfies LoginEvent);
        return again(403, CANNOT_SIGN_IN);
      case 'signed-in':
        loginChannel.publish({ outcome: 'success', username, ip, at } satisfies LoginEvent);
        res.appendHeader('set-cookie', deviceCookies.issue(username, knownBrowser));
        await provider.interactionFinished(
          req,
          res,
          { login: { accountId: username, amr: ['pwd'] } },
          { mergeWithLastSubmission: false },
        );
    }
  }

  /**
   * Ends the sign-in of a session whose account can no longer sign in (revoked, disabled, removed):
   * the session forgets its account and its clients, and so does the interaction's copy of it, so
   * that this sign-in page still works for whoever uses it next. Returns who it was, or null.
   */
  async function endStaleSession(details: Interaction): Promise<{ accountId: string; reason: string } | null> {
    const accountId = details.session?.accountId;
    if (details.session === undefined || accountId === undefined) return null;
    const reason = await accountRefusal(store, await store.user(accountId));
    if (reason === null) return null;
    const session = await provider.Session.findByUid(details.session.uid);
    if (session !== undefined) {
      for (const field of ['accountId', 'acr', 'amr', 'loginTs', 'authorizations'] as const) delete session[field];
      await session.persist();
    }
    // As oidc-provider records an interaction started without a signed-in account.
    delete details.session;
    // (`exp` is by oidc-provider's clock, the system's.)
    await details.save(Math.max(details.exp - Math.floor(Date.now() / 1000), 1));
    return { accountId, reason };
  }

  return {
    issuer: options.issuer,
    handle(req, res) {
      const url = req.url ?? '/';
      const path = url.split('?', 1)[0] as string;
      const match = /^\/oidc\/interaction\/([^/]+)(\/login)?$/.exec(path);
      if (match !== null) {
        const uid = match[1] as string;
        if (!UID.test(uid)) return send(res, 404, messagePage('Not found', 'There is no such sign-in page.'));
        interaction(req, res, uid, match[2] === undefined ? 'show' : 'login').catch((error: Error) => {
          process.stderr.write(`lockstep identity provider: ${error.stack ?? error.message}\n`);
          if (!res.headersSent)
            send(res, 500, messagePage('Sign-in problem', 'Something went wrong on our side. Try again in a moment.'));
        });
        return;
      }
      // oidc-provider works out its mount path from originalUrl against url, as under Express.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
      req.url = url.slice(IDP_PATH.length) || '/';
      void callback(req, res);
    },
    publicJwks: () => options.keys.publicJwks(),
    async rotateKeys() {
      return options.keys.rotate();
    },
    close() {
      clearInterval(sweeper);
      stopFollowing();
    },
  };
}

function safeOrigin(uri: string): string | null {
  try {
    const { origin } = new URL(uri);
    return origin === 'null' ? null : origin;
  } catch {
    return null;
  }
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | null> {
  if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded')) return null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > FORM_LIMIT) return null;
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
