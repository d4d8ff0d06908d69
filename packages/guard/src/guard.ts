/**
 * `createGuard(options)` assembles the pipeline from its steps and holds the inputs that change at
 * run time: this service's SVID and trust bundle (hot-swapped into every attached TLS server and the
 * outbound client), the policy bundle (verified, then swapped atomically), Txn-Token keys and
 * revocations. Adapters use only `guard.pipeline`, `guard.attach` and `guard.declareRoutes`.
 */
import type { Server as HttpsServer, ServerOptions as HttpsServerOptions } from 'node:https';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkServerIdentity as checkHostName, rootCertificates, type Server as TlsServer } from 'node:tls';
import { Agent } from 'undici';
import { createRequire } from 'node:module';
import { decodeJwt } from 'jose';
import { formatSpiffeId, serverSvidCheck } from '@lockstep/identity';
import { createPolicyEngine, verifyBundle, type PolicyEngine } from '@lockstep/policy';
import { createAuditFileSink, type AuditSink } from './audit-file-sink.ts';
import { createNetworkSink, type NetworkSink } from './network-sink.ts';
import type * as MetricsModule from './metrics.ts';
import type { GuardMetrics } from './metrics.ts';
import { createGuardClient, type GuardClient } from './client.ts';
import { GuardConfigError, GuardError, refusalBytes, renderRefusal, type RefusalResponse } from './errors.ts';
import { resolveOptions, type GuardOptions, type ResolvedOptions, type SvidPem } from './options.ts';
import { createPipeline, type Admission, type Pipeline } from './pipeline.ts';
import { Revocations, type Revocation } from './revocations.ts';
import type { RouteSecurity } from './routes.ts';
import { createAuthorizeStep } from './steps/authorize.ts';
import { createPresentedChainStep } from './steps/presented-chain.ts';
import { createProbeProofStep } from './steps/probe-proof.ts';
import { createTransportStep } from './steps/transport.ts';
import { createTxnTokenStep } from './steps/txn-token.ts';
import { loadSvid, type LoadedSvid } from './svid.ts';
import { createRemoteKeySource, createStaticKeySource, type TxnKeySource } from './txn-keys.ts';
import { closeSilentConnections, HANDSHAKE_TIMEOUT_MS } from './silent-connections.ts';

export interface Guard {
  readonly service: string;
  readonly trustDomain: string;
  readonly mode: 'enforce' | 'dry-run';
  readonly options: ResolvedOptions;
  readonly pipeline: Pipeline;
  /**
   * The same steps for the decision service (`lockstep authz-server`): the caller is identified from
   * the client certificate chain a trusted proxy forwarded (verified against the trust bundle), and
   * every audit event says `via: 'authz-server'`. Used through `lockstepDecisions(guard, routes)` from `@lockstep/guard/decision`.
   */
  readonly decisionPipeline: Pipeline;
  /** Outbound calls: mTLS with the current SVID, Txn-Token and traceparent propagated. */
  readonly client: GuardClient;
  /** The policy version in force, or null before the first bundle. */
  readonly policyVersion: string | null;
  /** HTTPS server options: this SVID, the trust bundle, client certificates requested, header limit. */
  tlsOptions(): HttpsServerOptions;
  /** Keeps `server`'s TLS context in step with rotations and audits TLS and header-size failures. */
  attach(server: TlsServer): void;
  /** Called whenever an attached server starts listening (its address joins `status().endpoints`). Returns an unsubscribe. */
  onListening(listener: () => void): () => void;
  /** An HTTPS server for an Express app or a node:http handler, already attached. */
  createServer(handler: RequestListener): HttpsServer;
  /** Logs the route table once: every public and every dry-run route by name. */
  declareRoutes(routes: readonly RouteSecurity[]): void;
  setSvid(svid: SvidPem): void;
  setTrustBundle(pem: string): void;
  setPolicyBundle(jws: string): Promise<{ version: string }>;
  revoke(revocation: Revocation): void;
  /** Takes a revocation back (an administrator lifted one made by mistake): the value is accepted again. */
  lift(revocation: Revocation): void;
  /** Whether this workload SPIFFE ID is revoked now (e.g. a decision service's caller, on every request). */
  isRevokedSpiffeId(spiffeId: string): boolean;
  /** Prometheus metrics of this guard (text exposition); see metrics.ts. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** Cache counters: how much of the traffic took the steady-state path. */
  stats(): GuardStats;
  /** What this guard enforces, for the control plane's registry. */
  status(): GuardStatus;
  close(): Promise<void>;
}

export interface GuardStatus {
  readonly service: string;
  readonly spiffeId: string;
  readonly mode: 'enforce' | 'dry-run';
  /** The policy version in force, or null before the first bundle. */
  readonly policyVersion: string | null;
  readonly svidExpiresAt: string;
  /** Every route the adapters declared, with its action. */
  readonly routes: readonly {
    readonly method: string;
    readonly template: string;
    readonly action: string;
    readonly public: boolean;
    readonly dryRun: boolean;
    readonly owner: boolean;
    readonly validatesBody: boolean;
  }[];
  /** `host:port` of every attached server that is listening (`*:port` when bound to every address). */
  readonly endpoints?: readonly string[];
  readonly guardVersion: string;
}

export interface GuardStats {
  /** `verified` = signature verifications; `hits` = tokens answered from the verified-token cache. */
  tokens: { hits: number; verified: number; size: number; bytes: number };
  /** `misses` = Cedar evaluations; `hits` = decisions answered from the decision cache. */
  decisions: { hits: number; misses: number; size: number; bytes: number };
  /** Audit shipping to the collector (when configured): sent, spooled (waited on disk), dropped, refused. */
  shipping: { sent: number; spooled: number; dropped: number; refused: number } | null;
}

/** Reported to the registry: this package's own version. */
export const GUARD_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export async function createGuard(input: GuardOptions): Promise<Guard> {
  const options = resolveOptions(input);
  // Before anything is opened: a guard that cannot have the metrics it was asked for does not start.
  const metricsModule = options.metrics ? await importMetrics() : null;
  const { logger, service, trustDomain } = options;
  const maxSvidLifetimeSeconds = options.svidRules.maxLifetimeSeconds;
  let svid: LoadedSvid = loadSvid(options.svid, trustDomain, service, maxSvidLifetimeSeconds);
  let trustBundle = options.trustBundle;
  const revocations = new Revocations();
  const engine: PolicyEngine = createPolicyEngine({
    cacheSize: options.cache.decisions,
    cacheBytes: options.cache.decisionBytes,
  });
  const keys: TxnKeySource =
    'jwks' in options.txnTokenKeys
      ? await createStaticKeySource(options.txnTokenKeys.jwks)
      : await createRemoteKeySource({
          ...('urls' in options.txnTokenKeys ? { urls: options.txnTokenKeys.urls } : { url: options.txnTokenKeys.url }),
          dispatcher: jwksDispatcher(trustDomain, trustBundle),
          refreshSeconds: options.txnTokenKeys.refreshSeconds ?? 300,
          cooldownSeconds: options.txnTokenKeys.cooldownSeconds ?? 10,
          onError: (error) =>
            logger.warn('Txn-Token JWKS refresh failed; keeping the last known good keys', { error: error.message }),
        });

  const txnTokenStep = createTxnTokenStep({
    trustDomain,
    keys,
    revocations,
    maxLifetimeSeconds: options.txnToken.maxLifetimeSeconds,
    clockSkewSeconds: options.txnToken.clockSkewSeconds,
    maxTokenBytes: options.limits.txnTokenBytes,
    cacheSize: options.cache.tokens,
    cacheBytes: options.cache.tokenBytes,
  });
  const isRevokedSpiffeId = (id: string) => revocations.spiffeId.size > 0 && revocations.spiffeId.has(id);
  const transport = createTransportStep({ trustDomain, maxSvidLifetimeSeconds, isRevokedSpiffeId });
  const authorize = createAuthorizeStep({ service, engine });
  const onInternalError = (error: unknown) =>
    logger.error('guard step failed; request refused', { error: error instanceof Error ? error.stack : String(error) });
  const pipeline = createPipeline({
    service,
    trustDomain,
    dryRun: options.mode === 'dry-run',
    transport,
    txnToken: txnTokenStep,
    authorize,
    probeProof: createProbeProofStep({
      trustDomain,
      service,
      keys,
      revocations,
      clockSkewSeconds: options.txnToken.clockSkewSeconds,
    }),
    onInternalError,
  });
  // No probe proof: the scanner attacks a service's own listener, not its fronting proxy's decisions.
  const decisionPipeline = createPipeline({
    service,
    trustDomain,
    dryRun: options.mode === 'dry-run',
    transport,
    presentedChain: createPresentedChainStep({
      trustDomain,
      trustBundle: () => trustBundle,
      // Our own chain's intermediates: nginx forwards the client's leaf without the intermediate.
      intermediates: () => svid.cert,
      isRevokedSpiffeId,
      maxSvidLifetimeSeconds,
    }),
    via: 'authz-server',
    txnToken: txnTokenStep,
    authorize,
    onInternalError,
  });

  const client = createGuardClient({
    trustDomain,
    maxSvidLifetimeSeconds,
    material: { cert: svid.cert, key: svid.key, ca: trustBundle },
  });
  const servers = new Set<TlsServer>();
  const auditFile = options.auditFile;
  const auditSink: AuditSink | null =
    auditFile === undefined
      ? null
      : createAuditFileSink(auditFile, {
          service,
          thread: options.auditWriter === 'thread' ? 'worker' : 'inline',
          onError: (error) => logger.error('audit file write failed', { error: error.message }),
        });
  let closing: Promise<void> | null = null;
  let metrics: GuardMetrics | null = null;
  // The network sink ships from a file: the audit file when there is one, else a journal of its own.
  let networkSink: NetworkSink | null = null;
  try {
    networkSink =
      options.auditCollector === undefined
        ? null
        : createNetworkSink({
            urls: options.auditCollector.urls,
            spoolDir: options.auditCollector.spoolDir,
            journalThread: options.auditWriter === 'thread' ? 'worker' : 'inline',
            ...(options.auditCollector.maxSpoolBytes === undefined
              ? {}
              : { maxSpoolBytes: options.auditCollector.maxSpoolBytes }),
            ...(auditSink === null || auditFile === undefined
              ? {}
              : { auditFile: { path: auditFile, flush: () => auditSink.flush(), dropped: () => auditSink.dropped } }),
            tls: () => ({ cert: svid.cert, key: svid.key, ca: trustBundle }),
            serverSpiffeId: formatSpiffeId(trustDomain, 'lockstep', 'control-plane'),
            service,
            onError: (error) => logger.warn('audit shipping', { error: error.message }),
            onWarning: (message) => logger.warn(message, { service }),
          });
  } catch (error) {
    await auditSink?.close();
    throw error;
  }

  // Bundles apply in the order they were given (a slow verification must not let an older bundle
  // land after a newer one), and never move backwards in issue time (no replay of an old bundle).
  let bundleQueue: Promise<unknown> = Promise.resolve();
  let appliedIssuedAt = -Infinity;

  async function applyBundleNow(jws: string): Promise<{ version: string }> {
    // verifyBundle also refuses a bundle cut for another service.
    const set = await verifyBundle(jws, { keys: options.policy.keys, service });
    const { iat } = decodeJwt(jws);
    const issuedAt = typeof iat === 'number' ? iat : -Infinity;
    if (issuedAt < appliedIssuedAt) {
      throw new GuardConfigError(
        `policy bundle ${set.version} was issued before the bundle in force; refusing to roll back (issue a new bundle to revert a policy)`,
      );
    }
    engine.load(set);
    appliedIssuedAt = issuedAt;
    logger.info('policy bundle applied', { service, version: set.version });
    return { version: set.version };
  }

  function applyBundle(jws: string): Promise<{ version: string }> {
    const applied = bundleQueue.then(() => applyBundleNow(jws));
    bundleQueue = applied.catch(() => undefined);
    return applied;
  }

  if (options.policy.bundle !== undefined) await applyBundle(options.policy.bundle);
  else
    logger.warn(
      'no policy bundle yet: every guarded request is answered 503 LOCKSTEP_ERR_NO_POLICY until one is applied',
      { service },
    );
  if (options.mode === 'dry-run') {
    logger.warn(
      'UNSAFE: guard in dry-run mode — Txn-Token and policy denials are logged and LET THROUGH. Use only while rolling out.',
      { service },
    );
  }

  function secureContext() {
    return { cert: svid.cert, key: svid.key, ca: trustBundle, minVersion: 'TLSv1.3' as const };
  }

  const declared: RouteSecurity[] = [];
  let unattachedWarning: NodeJS.Timeout | null = null;
  function tlsOptions(): HttpsServerOptions {
    // These options ask for a client certificate without enforcing it at the TLS layer: only a
    // Lockstep adapter on every request makes it mandatory. A server built from them that is never
    // attached is most likely one without the adapter, so say so loudly.
    if (servers.size === 0 && unattachedWarning === null) {
      unattachedWarning = setTimeout(() => {
        if (servers.size === 0) {
          logger.warn(
            'guard.tlsOptions() was used but no server was attached: unless a Lockstep adapter (register(lockstep, { guard }), lockstepExpress, lockstepHttp) handles every request, client certificates are NOT enforced. Use guard.createServer(handler) or guard.attach(server).',
            { service },
          );
        }
      }, 5_000);
      unattachedWarning.unref();
    }
    return {
      ...secureContext(),
      // Ask for a certificate but decide per request, so that a refusal is an audited HTTP 401 and
      // public routes (health) stay reachable. The transport step refuses any unverified peer.
      requestCert: true,
      rejectUnauthorized: false,
      maxHeaderSize: options.limits.headerBytes,
      // A handshake that does not finish is cut after this (Node's default waits 120 s).
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    };
  }

  function refreshTls(): void {
    for (const server of servers) server.setSecureContext(secureContext());
    client.setTlsMaterial({ cert: svid.cert, key: svid.key, ca: trustBundle });
  }

  function listeningEndpoints(): string[] {
    const endpoints: string[] = [];
    for (const server of servers) {
      const address = server.address();
      if (address === null || typeof address === 'string') continue;
      const unspecified = address.address === '::' || address.address === '0.0.0.0';
      endpoints.push(
        `${unspecified ? '*' : address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`,
      );
    }
    return endpoints;
  }

  const listeningListeners = new Set<() => void>();
  /**
   * Every way Node's HTTP server would answer by itself goes through the pipeline instead: a request
   * it cannot parse (`clientError`), CONNECT, an `Expect` header, a missing Host. Protocol upgrades
   * stay ordinary requests as long as nobody listens for 'upgrade' (the guard does not); a listener
   * for 'upgrade' (a WebSocket server on the same server) takes them outside the pipeline, so one is
   * reported — present at attach time or added later.
   */
  function attach(server: TlsServer): void {
    if (servers.has(server)) return;
    servers.add(server);
    watchUpgradeListeners(server);
    closeSilentConnections(server);
    server.on('listening', () => {
      for (const listener of listeningListeners) listener();
    });
    server.on('tlsClientError', (error: Error & { code?: string }, socket: Socket) => {
      pipeline.refuseEarly(
        { socket, method: '', headers: {}, rawHeaders: [] },
        null,
        new GuardError('LOCKSTEP_ERR_TLS_HANDSHAKE', error.code ?? error.message),
      );
    });
    // Replace the framework's client-error answer so that a request that cannot be parsed is ours.
    server.removeAllListeners('clientError');
    server.on('clientError', refuseClientError);
    server.on('connect', refuseConnect);
    // Node would answer 100 Continue before the guard decides (so an outsider's body would be sent)
    // and 417 to any other expectation: the request goes to the adapter, which continues once the
    // request is admitted and its headers checked.
    const toAdapter = (request: IncomingMessage, response: ServerResponse) => server.emit('request', request, response);
    server.on('checkContinue', toAdapter);
    server.on('checkExpectation', toAdapter);
    // Node answers an HTTP/1.1 request without Host with a bare 400 of its own; the pipeline refuses it.
    (server as TlsServer & { requireHostHeader?: boolean }).requireHostHeader = false;
  }

  function watchUpgradeListeners(server: TlsServer): void {
    let warned = false;
    const warn = () => {
      if (warned) return;
      warned = true;
      logger.warn(
        "this server has an 'upgrade' listener: Node hands Upgrade requests (WebSocket) to it instead of " +
          'the request handler, so the guard does not decide them (no mTLS identity, Txn-Token or policy check, ' +
          "no audit event) unless that listener passes them to the guarded framework's router, as " +
          '@fastify/websocket does. Check the caller yourself there, or serve upgrades from a server of their own.',
        { service },
      );
    };
    if (server.listenerCount('upgrade') > 0) warn();
    const onNewListener = (event: string | symbol) => {
      if (event !== 'upgrade') return;
      warn();
      server.off('newListener', onNewListener);
    };
    if (!warned) server.on('newListener', onNewListener);
  }

  function refuseClientError(error: Error & { code?: string }, socket: Socket): void {
    const code = error.code === 'HPE_HEADER_OVERFLOW' ? 'LOCKSTEP_ERR_HEADERS_TOO_LARGE' : 'LOCKSTEP_ERR_INPUT_INVALID';
    const unparsed = { socket, method: '', headers: {}, rawHeaders: [] };
    const admission = pipeline.refuseEarly(unparsed, null, new GuardError(code, error.code ?? error.message));
    // As Node's own handler: never write into a response that is already on its way.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (socket.writable && error.code !== 'ECONNRESET' && inFlight?.headersSent !== true) {
      writeRaw(socket, renderRefusal(code, admission.requestId, { close: true }));
    } else {
      socket.destroy();
    }
  }

  /** CONNECT is no route of any service: decided as one that matches nothing (401, or 404 once authenticated). */
  function refuseConnect(request: IncomingMessage, socket: Duplex): void {
    const answer = (admission: Admission) => {
      writeRaw(socket, renderRefusal((admission.refusal as GuardError).code, admission.requestId, { close: true }));
    };
    Promise.resolve(pipeline.admit(request, null)).then(answer, (error: unknown) => {
      const detail = error instanceof Error ? error.message : String(error);
      answer(pipeline.refuseEarly(request, null, new GuardError('LOCKSTEP_ERR_INTERNAL', detail)));
    });
  }

  function writeRaw(socket: Duplex, refusal: RefusalResponse): void {
    socket.end(refusalBytes(refusal), () => socket.destroy());
  }

  const self: Guard = {
    service,
    trustDomain,
    mode: options.mode,
    options,
    pipeline,
    decisionPipeline,
    client,
    get policyVersion() {
      return engine.version;
    },
    async metrics() {
      if (metrics === null)
        throw new GuardConfigError('metrics are off: create the guard with createGuard({ …, metrics: true })');
      return { contentType: metrics.contentType, body: await metrics.text() };
    },
    status() {
      return {
        service,
        spiffeId: svid.spiffeId,
        mode: options.mode,
        policyVersion: engine.version,
        svidExpiresAt: new Date(svid.notAfterMs).toISOString(),
        routes: declared.map(({ method, template, action, public: isPublic, dryRun, owner, validatesBody }) => ({
          method,
          template,
          action,
          public: isPublic,
          dryRun,
          owner: owner !== null,
          validatesBody,
        })),
        endpoints: listeningEndpoints(),
        guardVersion: GUARD_VERSION,
      };
    },
    tlsOptions,
    attach,
    onListening(listener) {
      listeningListeners.add(listener);
      return () => listeningListeners.delete(listener);
    },
    createServer(handler) {
      const server = createHttpsServer(tlsOptions(), handler);
      attach(server);
      return server;
    },
    declareRoutes(routes) {
      declared.push(...routes);
      const publicRoutes = routes.filter((route) => route.public).map((route) => `${route.method} ${route.template}`);
      const dryRunRoutes = routes.filter((route) => route.dryRun).map((route) => `${route.method} ${route.template}`);
      logger.info('lockstep routes', {
        service,
        enforced: routes
          .filter((route) => !route.public)
          .map((route) => `${route.method} ${route.template} → ${route.action}`),
        public: publicRoutes,
      });
      if (publicRoutes.length > 0)
        logger.warn(`public routes (no mTLS, Txn-Token or policy check): ${publicRoutes.join(', ')}`, { service });
      if (dryRunRoutes.length > 0)
        logger.warn(`UNSAFE: dry-run routes (denials let through): ${dryRunRoutes.join(', ')}`, { service });
    },
    setSvid(next) {
      svid = loadSvid(next, trustDomain, service, maxSvidLifetimeSeconds);
      refreshTls();
      logger.info('SVID rotated', { spiffeId: svid.spiffeId, notAfter: new Date(svid.notAfterMs).toISOString() });
    },
    setTrustBundle(pem) {
      if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----'))
        throw new GuardConfigError('setTrustBundle expects the PEM text of the CA certificate(s)');
      trustBundle = pem;
      refreshTls();
    },
    setPolicyBundle: applyBundle,
    revoke(revocation) {
      revocations.add(revocation);
      logger.warn('revoked', { kind: revocation.kind, value: revocation.value });
    },
    lift(revocation) {
      if (revocations.remove(revocation))
        logger.warn('revocation lifted', { kind: revocation.kind, value: revocation.value });
    },
    isRevokedSpiffeId,
    stats: () => ({
      tokens: txnTokenStep.stats(),
      decisions: { ...engine.stats() },
      shipping: networkSink === null ? null : { ...networkSink.stats },
    }),
    close() {
      // Idempotent: a second close waits for the first.
      closing ??= (async () => {
        if (unattachedWarning !== null) clearTimeout(unattachedWarning);
        keys.close();
        await keys.dispatcher?.close();
        await client.close();
        // The audit file first: the network sink ships its last lines from there.
        await auditSink?.close();
        await networkSink?.close();
        metrics?.close();
      })();
      return closing;
    },
  };
  if (metricsModule !== null) metrics = metricsModule.createGuardMetrics(self);
  return self;
}

/**
 * Metrics are counted by prom-client, an optional peer dependency: loaded only by a guard created with
 * `metrics: true`, so that a guard without metrics neither installs nor loads it.
 */
async function importMetrics(): Promise<typeof MetricsModule> {
  try {
    return await import('./metrics.ts');
  } catch (error) {
    if (
      (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' &&
      (error as Error).message.includes('prom-client')
    ) {
      throw new GuardConfigError(
        'metrics: true needs prom-client (an optional peer dependency of @lockstep/guard): ' +
          'npm install prom-client, or leave metrics off',
      );
    }
    throw error;
  }
}

/**
 * How a guard fetches a Txn-Token JWKS by URL: TLS trusting the public roots and the trust bundle;
 * the server is either named by its host (a public JWKS endpoint) or is this trust domain's control
 * plane, known by its SPIFFE ID (its certificate carries no host name).
 */
function jwksDispatcher(trustDomain: string, trustBundle: string): Agent {
  const isControlPlane = serverSvidCheck(formatSpiffeId(trustDomain, 'lockstep', 'control-plane'));
  return new Agent({
    connect: {
      ca: [...rootCertificates, trustBundle],
      checkServerIdentity: (host, cert) =>
        isControlPlane(host, cert) === undefined ? undefined : checkHostName(host, cert),
    },
  });
}
