/**
 * The control plane's HTTPS server. Every endpoint is TLS; the server presents its own certificate
 * (`spiffe://<td>/lockstep/control-plane`, issued by the workload CA at start) and asks for a client
 * certificate without requiring one, so that a workload without an SVID can join and every other
 * endpoint refuses with a coded 401 instead of a TLS alert. A caller whose SPIFFE ID is revoked is
 * refused on every request, before any endpoint sees it (peer.ts, revoked-callers.ts).
 *
 *   GET  /v1/bundle   the trust bundle (roots, PEM); a joining workload checks it against its token
 *   GET  /v1/policy/jwks.json   the policy-bundle signing keys (public)
 *   POST /v1/join     { joinToken, service, csr } → { svid, bundle, spiffeId, expiresAt }
 *   POST /v1/renew    mTLS with the current SVID; { csr } → the same
 *   POST /v1/recover  mTLS with an SVID that expired within the recovery window; { csr } → the same (ca/recover.ts)
 *   GET  /v1/stream   mTLS with a workload SVID: policy bundles and revocations as server-sent events
 *   POST /v1/registry/heartbeat, GET /v1/services   the service registry (registry-routes.ts)
 *   POST /v1/token, GET /v1/txn-token/jwks.json     the Txn-Token Service (tts-routes.ts)
 *   /v1/admin/…       mTLS with an administrator's SVID (admin-routes.ts; extensions add theirs: `adminRoutes`)
 *   /oidc/…           the identity provider (OpenID Connect; idp/identity-provider.ts), for browsers
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { controlPlaneSpiffeId } from '@lockstep/workload';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClientMetadata } from 'oidc-provider';
import type { AddressInfo } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { bootstrapWorkload, renewWorkload } from '../ca/enrol.ts';
import { DEFAULT_RECOVERY_WINDOW_SECONDS, recoverWorkload, type RecoveryReuse } from '../ca/recover.ts';
import { signLeaf, type IssuedSvid } from '../ca/issue-svid.ts';
import type { WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import { x509 } from '../lib/x509.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import { createRevocationFeed, type RevocationFeed } from '../store/revocation-feed.ts';
import { isStoreUnavailable } from '../store/store-unavailable.ts';
import type { ControlPlaneStore, RevocationKind, RevocationRecord } from '../store/store.ts';
import { registerRegistryRoutes, type UnreachableReport } from './registry-routes.ts';
import { registerStreamRoute } from './stream-route.ts';
import { registerTtsRoutes } from './tts-routes.ts';
import type { TxnTokenService } from '../tts/txn-token-service.ts';
import { recordAdminAction } from '../admin/admin-audit.ts';
import { registerAdminRoutes, registerAdminScope, type AdminActions, type KeyRotators } from './admin-routes.ts';
import { admittedCaller, peerSerial, refuseRevokedCallers, requireCaller } from './peer.ts';
import { followRevokedCallers } from './revoked-callers.ts';
import { refuse } from './refusal.ts';
import {
  createIdentityProvider,
  IDP_PATH,
  type IdentityProvider,
  type IdentityProviderOptions,
} from '../idp/identity-provider.ts';

export interface ControlPlaneServerOptions {
  readonly ca: WorkloadCa;
  readonly store: ControlPlaneStore;
  /** The policy service whose bundles the stream pushes; without one, the stream carries revocations only. */
  readonly policy?: PolicyService;
  /** The Txn-Token Service; it decides with the policy service's set. */
  readonly tts?: TxnTokenService;
  /**
   * The identity provider, mounted under /oidc. Its issuer defaults to this server's URL + /oidc;
   * set `issuer` when users reach the control plane by another name. The TTS accepts its access
   * tokens as subject tokens.
   */
  readonly idp?: Omit<IdentityProviderOptions, 'issuer' | 'store' | 'trustDomain'> & { readonly issuer?: string };
  /**
   * How often the revocation feed re-reads the store for other replicas' entries (default 1 s); a safety net
   * under LISTEN/NOTIFY. Three periods without a successful read end the guards' streams (stream-route.ts).
   */
  readonly rereadMs?: number;
  /**
   * Unexpected failures (answered 500 without details) and failures to reach the store (answered 503
   * LOCKSTEP_CP_STORE, on which clients ask another replica); default: written to stderr, so that none is lost.
   */
  readonly onInternalError?: (error: Error) => void;
  /**
   * More endpoints on the same server (the monitor's collector and dashboard): each is called with
   * the Fastify instance before it listens. Use `requireCaller` for who may call them, or
   * `context.adminRoutes` for administrators' endpoints (recorded in the audit trail as the admin API's).
   */
  readonly extensions?: readonly ((
    app: FastifyInstance,
    context: ExtensionContext,
  ) => void | ExtensionHooks | Promise<void | ExtensionHooks>)[];
  /** Default 127.0.0.1: the embedded control plane listens on loopback unless told otherwise. */
  readonly host?: string;
  /** Default 0 (any free port). */
  readonly port?: number;
  /**
   * Lifetime of the server's own certificate (default 24 h, the X509-SVID ceiling). It is re-issued,
   * with a fresh key, at half its life and on a root rotation; new connections get the new one.
   */
  readonly serverCertificateSeconds?: number;
  /**
   * Lifetime of the SVIDs workloads get at join and renewal: default 1 h, from 60 s to 24 h. Longer rides
   * out a longer control-plane outage (a workload renews at half its life and retries until it expires);
   * shorter bounds how long a stolen SVID is worth having (revocation stops it at once anyway).
   */
  readonly svidLifetimeSeconds?: number;
  /**
   * How long after expiry a workload's newest SVID may still recover a new one (`POST /v1/recover`):
   * default 7 days; 0 turns recovery off (a workload cut off for longer than its SVID lives joins again).
   */
  readonly svidRecoveryWindowSeconds?: number;
}

/** What an extension is given: the CA, the store, and (once listening) the URL and the identity provider. */
export interface ExtensionContext {
  readonly ca: WorkloadCa;
  readonly store: ControlPlaneStore;
  /** The server's URL; empty until it listens. */
  url(): string;
  /** The identity provider, once started (null without one). */
  idp(): IdentityProvider | null;
  /**
   * Endpoints of the extension's own under the admin API's checks (admin-routes.ts): an administrator's
   * SVID only, and every call in the audit trail, named by `actions` (`{ 'GET /v1/admin/events':
   * 'admin:events.read' }`).
   */
  adminRoutes(actions: AdminActions, routes: (admin: FastifyInstance) => void | Promise<void>): void;
}

/** What an extension may ask of the control plane. */
export interface ExtensionHooks {
  /** OpenID clients of its own (e.g. the dashboard), registered with the identity provider; given the server's URL. */
  readonly idpClients?: (url: string) => readonly ClientMetadata[];
  /** A guard's heartbeat said it could not reach the control plane for a while (the monitor's outage alert). */
  readonly onUnreachable?: (report: UnreachableReport) => void;
  /** An SVID was presented for recovery after it was spent: two holders of one key (the monitor's alert). */
  readonly onRecoveryReuse?: (reuse: RecoveryReuse) => void;
}

export interface RunningControlPlane {
  readonly url: string;
  /** The SPIFFE ID the server presents; clients check it. */
  readonly spiffeId: string;
  /** The identity provider, when configured. */
  readonly idp: IdentityProvider | null;
  /** Revokes and pushes to every connected guard (what the admin API does, for in-process callers). */
  revoke(entry: { kind: RevocationKind; value: string; reason: string; actor: string }): Promise<RevocationRecord>;
  /** Lifts a revocation and pushes that to every connected guard; null when none holds under (kind, value). */
  lift(entry: { kind: RevocationKind; value: string; reason: string; actor: string }): Promise<RevocationRecord | null>;
  close(): Promise<void>;
}

const CSR = { type: 'string', minLength: 1, maxLength: 8192 } as const;

export async function startControlPlane(options: ControlPlaneServerOptions): Promise<RunningControlPlane> {
  const lifetime = options.svidLifetimeSeconds;
  if (lifetime !== undefined && (!Number.isInteger(lifetime) || lifetime < 60 || lifetime > 24 * 3600))
    throw new TypeError(
      `svidLifetimeSeconds must be a whole number of seconds from 60 to 86400 (an SVID lives at most 24 h), e.g. 3600; got ${String(lifetime)}`,
    );
  const window = options.svidRecoveryWindowSeconds;
  if (window !== undefined && (!Number.isInteger(window) || window < 0 || window > 90 * 86_400))
    throw new TypeError(
      `svidRecoveryWindowSeconds must be a whole number of seconds from 0 (off) to 7776000 (90 days), e.g. 604800; got ${String(window)}`,
    );
  // A start that fails (port taken, a bad extension) closes what it opened: nothing keeps the process alive.
  const opened: (() => unknown)[] = [];
  try {
    return await serve(options, opened);
  } catch (error) {
    for (const close of opened.reverse()) {
      try {
        await close();
      } catch {
        // The start failed already: that error is the one to report.
      }
    }
    throw error;
  }
}

async function serve(options: ControlPlaneServerOptions, opened: (() => unknown)[]): Promise<RunningControlPlane> {
  const { ca, store } = options;
  const spiffeId = controlPlaneSpiffeId(ca.trustDomain);
  const lifetimeSeconds = options.serverCertificateSeconds ?? SERVER_CERTIFICATE_SECONDS;
  let server = await serverCredentials(ca, spiffeId, lifetimeSeconds);
  const app = Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    https: {
      cert: server.svid.chainPem,
      key: server.keyPem,
      ca: ca.bundlePem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  });
  opened.push(() => app.close());
  const feed = await createRevocationFeed(store, options.rereadMs);
  opened.push(() => feed.close());
  const revokedCallers = await followRevokedCallers(store, feed);
  opened.push(() => revokedCallers.close());
  // Ahead of every endpoint, the extensions' and the identity provider's included.
  app.addHook('onRequest', refuseRevokedCallers(ca.trustDomain, revokedCallers));
  const onInternalError =
    options.onInternalError ??
    ((error: Error) =>
      process.stderr.write(`lockstep control plane: internal error: ${error.stack ?? error.message}\n`));
  const { tts, policy } = options;
  const rotators: KeyRotators = new Map();
  if (tts?.rotateKeys) rotators.set('txn-token', tts.rotateKeys);
  const hooks: ExtensionHooks[] = [];
  const enrolment: Enrolment = {
    ...(options.svidLifetimeSeconds === undefined ? {} : { ttlSeconds: options.svidLifetimeSeconds }),
    recoveryWindowSeconds: options.svidRecoveryWindowSeconds ?? DEFAULT_RECOVERY_WINDOW_SECONDS,
    onRecoveryReuse: (reuse) => {
      for (const hook of hooks) hook.onRecoveryReuse?.(reuse);
    },
  };
  registerRoutes(
    app,
    ca,
    store,
    feed,
    options.policy ?? null,
    rotators,
    tts?.scanTokens ?? null,
    onInternalError,
    enrolment,
  );
  registerRegistryRoutes(app, ca, store, (report) => {
    for (const hook of hooks) hook.onUnreachable?.(report);
  });
  // Policy changes are administrative actions too: applied or refused, each is an audit event.
  const stopPolicyAudit =
    policy?.onChange((change) =>
      recordAdminAction({
        caller: null,
        method: 'WATCH',
        route: 'policy directory',
        action: 'admin:policy.apply',
        resource: change.kind === 'applied' ? change.version : (change.keptVersion ?? 'none'),
        allowed: change.kind === 'applied',
        reason: change.kind === 'applied' ? 'LOCKSTEP_ALLOW' : 'LOCKSTEP_POLICY_REFUSED',
        startedAt: performance.now(),
      }),
    ) ?? (() => {});
  let stopPolicy = () => {};
  if (tts !== undefined) {
    registerTtsRoutes(app, ca, tts);
    if (policy?.set) tts.usePolicy(policy.set);
    const follow = policy?.onChange(() => {
      if (policy.set) tts.usePolicy(policy.set);
    });
    if (follow)
      stopPolicy = () => {
        follow();
      };
  }
  // oidc-provider reads the raw request itself: its paths are handed over before Fastify parses a body.
  let idp: IdentityProvider | null = null;
  let listeningUrl = '';
  for (const extension of options.extensions ?? []) {
    const hook = await extension(app, {
      ca,
      store,
      url: () => listeningUrl,
      idp: () => idp,
      adminRoutes: (actions, routes) => registerAdminScope(app, ca.trustDomain, actions, routes),
    });
    if (hook) hooks.push(hook);
  }
  if (options.idp !== undefined) {
    const handOver = (
      request: { raw: IncomingMessage },
      reply: { hijack(): void; raw: ServerResponse },
      done: () => void,
    ) => {
      if (idp === null) return done();
      reply.hijack();
      idp.handle(request.raw, reply.raw);
    };
    app.all(IDP_PATH, { onRequest: handOver }, async (_request, reply) =>
      reply.code(503).send({ error: 'LOCKSTEP_CP_STARTING' }),
    );
    app.all(`${IDP_PATH}/*`, { onRequest: handOver }, async (_request, reply) =>
      reply.code(503).send({ error: 'LOCKSTEP_CP_STARTING' }),
    );
  }
  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 });
  // A root rotation changes the bundle (new connections are verified against it) and, on activation,
  // the signer (the server's own certificate is re-issued by the new CA).
  let signer = ca.signer;
  let tlsUpdate = Promise.resolve();
  /** Re-issues the server's certificate if asked (or the signer changed), then serves it and the bundle. */
  const updateTls = (reissue: boolean) => {
    tlsUpdate = tlsUpdate
      .then(async () => {
        if (reissue || ca.signer !== signer) {
          signer = ca.signer;
          server = await serverCredentials(ca, spiffeId, lifetimeSeconds);
          scheduleRenewal();
        }
        (app.server as unknown as TlsServer).setSecureContext({
          cert: server.svid.chainPem,
          key: server.keyPem,
          ca: ca.bundlePem,
          minVersion: 'TLSv1.3',
        });
      })
      .catch((error: Error) => onInternalError(error));
  };
  // A control plane that runs longer than its certificate lives would refuse every client at the
  // handshake (renewals included): renewed at half its life, as workloads renew theirs.
  let renewal: NodeJS.Timeout | undefined;
  let stopped = false;
  function scheduleRenewal(): void {
    clearTimeout(renewal);
    if (stopped) return;
    const halfLife = (server.svid.notAfter.getTime() - Date.now()) / 2;
    renewal = setTimeout(() => updateTls(true), Math.max(1_000, halfLife));
    renewal.unref();
  }
  scheduleRenewal();
  opened.push(() => {
    stopped = true;
    clearTimeout(renewal);
  });
  const stopBundle = ca.onBundleChange(() => updateTls(false));
  opened.push(stopBundle);
  const { address, port } = app.server.address() as AddressInfo;
  const url = `https://${address.includes(':') ? `[${address}]` : address}:${port}`;
  listeningUrl = url;
  if (options.idp !== undefined) {
    const { issuer, ...rest } = options.idp;
    const clients = [...rest.clients, ...hooks.flatMap((hook) => hook.idpClients?.(url) ?? [])];
    const started = createIdentityProvider({
      ...rest,
      clients,
      issuer: issuer ?? `${url}${IDP_PATH}`,
      store,
      trustDomain: ca.trustDomain,
    });
    idp = started;
    rotators.set('idp', () => started.rotateKeys());
    tts?.trustIssuer({ issuer: started.issuer, jwks: () => started.publicJwks(), audience: rest.resource.indicator });
  }
  return {
    url,
    spiffeId,
    idp,
    revoke: (entry) => feed.revoke({ ...entry, at: Date.now() }),
    lift: ({ kind, value, reason, actor }) => feed.lift(kind, value, { reason, actor, at: Date.now() }),
    // Open streams are long-lived: end them, or close() would wait for every guard to hang up.
    close: async () => {
      stopBundle();
      stopped = true;
      clearTimeout(renewal);
      await tlsUpdate;
      idp?.close();
      stopPolicy();
      stopPolicyAudit();
      const closing = app.close();
      app.server.closeAllConnections();
      await closing;
      revokedCallers.close();
      await feed.close();
    },
  };
}

function registerRoutes(
  app: FastifyInstance,
  ca: WorkloadCa,
  store: ControlPlaneStore,
  feed: RevocationFeed,
  policy: PolicyService | null,
  rotators: KeyRotators,
  scanTokens: TxnTokenService['scanTokens'] | null,
  onInternalError: (error: Error) => void,
  enrolment: Enrolment,
): void {
  const svidLifetime = enrolment.ttlSeconds === undefined ? {} : { ttlSeconds: enrolment.ttlSeconds };
  app.setErrorHandler((error: Error & { validation?: unknown; statusCode?: number }, _request, reply) => {
    if (error instanceof ControlPlaneError) return refuse(reply, error);
    if (
      error.validation !== undefined ||
      error.statusCode === 400 ||
      error.statusCode === 413 ||
      error.statusCode === 415
    ) {
      return refuse(reply, new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', error.message));
    }
    onInternalError(error);
    // Not this caller's fault, nor a verdict: another replica, whose store answers, may serve it.
    if (isStoreUnavailable(error)) return refuse(reply, new ControlPlaneError('LOCKSTEP_CP_STORE'));
    return reply.code(500).send({ error: 'LOCKSTEP_CP_INTERNAL' });
  });

  registerAdminRoutes(app, ca, store, feed, policy, rotators, scanTokens);
  registerStreamRoute(app, ca, store, feed, policy);
  app.get('/v1/bundle', async (_request, reply) => reply.type('application/x-pem-file').send(ca.bundlePem));
  // The keys guards verify policy bundles with; workloads fetch them over TLS pinned to the bundle.
  if (policy !== null) app.get('/v1/policy/jwks.json', async () => policy.publicJwks);

  app.post<{ Body: { joinToken: string; service: string; csr: string } }>(
    '/v1/join',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['joinToken', 'service', 'csr'],
          properties: {
            joinToken: { type: 'string', maxLength: 200 },
            service: { type: 'string', maxLength: 63 },
            csr: CSR,
          },
        },
      },
    },
    async (request) =>
      issued(
        ca,
        await bootstrapWorkload(store, ca, {
          joinToken: request.body.joinToken,
          service: request.body.service,
          csrPem: request.body.csr,
          ...svidLifetime,
        }),
      ),
  );

  app.post<{ Body: { csr: string } }>(
    '/v1/renew',
    {
      schema: { body: { type: 'object', additionalProperties: false, required: ['csr'], properties: { csr: CSR } } },
      // renewWorkload reads the store for the caller's revocation on every renewal (a replica's too,
      // at once) and answers LOCKSTEP_CP_WORKLOAD_REVOKED: one answer, whenever the revocation was made.
      config: { checksOwnRevocation: true },
      // Who is calling is decided before the body is even read.
      onRequest: requireCaller(ca.trustDomain, ['workload']),
    },
    async (request) =>
      issued(
        ca,
        await renewWorkload(store, ca, {
          peerSpiffeId: admittedCaller(request),
          peerSerial: peerSerial(request.raw.socket as TLSSocket),
          csrPem: request.body.csr,
          ...svidLifetime,
        }),
      ),
  );

  // An expired SVID, presented in the handshake (which proves its key), for a new one: ca/recover.ts.
  // TLS let the expired certificate through (the server asks for a certificate without requiring a
  // valid one); recoverWorkload verifies its chain and rules itself, as of its last valid second.
  app.post<{ Body: { csr: string } }>(
    '/v1/recover',
    {
      schema: { body: { type: 'object', additionalProperties: false, required: ['csr'], properties: { csr: CSR } } },
      config: { checksOwnRevocation: true },
    },
    async (request) => {
      const { leafDer, intermediateDer } = presentedChain(request.raw.socket as TLSSocket);
      const { svid } = await recoverWorkload(
        store,
        ca,
        {
          leafDer,
          intermediateDer,
          csrPem: request.body.csr,
          windowSeconds: enrolment.recoveryWindowSeconds,
          ...svidLifetime,
        },
        enrolment.onRecoveryReuse,
      );
      return issued(ca, svid);
    },
  );
}

interface Enrolment {
  /** The SVID lifetime workloads get at join, renewal and recovery, when configured. */
  readonly ttlSeconds?: number;
  readonly recoveryWindowSeconds: number;
  readonly onRecoveryReuse: (reuse: RecoveryReuse) => void;
}

/** The leaf the client presented and the certificate it sent above it (DER), as TLS received them. */
function presentedChain(socket: TLSSocket): { leafDer: Uint8Array | null; intermediateDer: Uint8Array | null } {
  const leaf = socket.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: { raw?: Buffer } } | null;
  const leafRaw = leaf?.raw;
  if (leafRaw === undefined || leafRaw.length === 0) return { leafDer: null, intermediateDer: null };
  const issuerRaw = leaf?.issuerCertificate?.raw;
  const distinct = issuerRaw !== undefined && issuerRaw.length > 0 && !issuerRaw.equals(leafRaw);
  return { leafDer: new Uint8Array(leafRaw), intermediateDer: distinct ? new Uint8Array(issuerRaw) : null };
}

function issued(ca: WorkloadCa, svid: IssuedSvid) {
  return { spiffeId: svid.spiffeId, svid: svid.chainPem, bundle: ca.bundlePem, expiresAt: svid.notAfter.toISOString() };
}

/** Default lifetime of the server's own certificate: a day, the X509-SVID ceiling. */
const SERVER_CERTIFICATE_SECONDS = 24 * 3600;

/** A fresh key and a certificate for the server itself, issued by the CA at start and at half its life. */
async function serverCredentials(
  ca: WorkloadCa,
  spiffeId: string,
  lifetimeSeconds: number,
): Promise<{ svid: IssuedSvid; keyPem: string }> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const svid = await signLeaf(ca, keys.publicKey, spiffeId, lifetimeSeconds);
  return {
    svid,
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
  };
}
