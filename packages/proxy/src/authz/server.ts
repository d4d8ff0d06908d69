/**
 * `createAuthzServer(options)` — the decision service (`lockstep authz-server`) for proxies that
 * already exist. One process per protected service: it joins the control plane *as that service*
 * (join token for `svc/<service>`), so that it receives exactly that service's signed policy slice,
 * ships its decisions under that service's name (the collector accepts a workload's own events only),
 * and decides with that service's route table. Several services: one decision service each — the
 * same shape as one guard per service, and a compromised decision service holds one slice only.
 *
 * It serves HTTPS with that SVID and asks every caller for its certificate: only the SPIFFE IDs listed
 * in `trustedProxies` may ask (the proxies' own SVIDs); anyone else is refused before any header is
 * read. The client certificate a trusted proxy forwards is then verified against the trust bundle by
 * the guard's decision pipeline, as if the client had connected here.
 *
 *   ANY  /nginx/auth                  nginx auth_request   (X-Original-Method, X-Original-URI, X-Client-Cert)
 *   ANY  /traefik/auth                Traefik forwardAuth  (X-Forwarded-Method, -Uri, -Tls-Client-Cert)
 *   ANY  /envoy/ext_authz/<path>      Envoy ext_authz HTTP (method as sent, path after the prefix, XFCC)
 *   POST /access/v1/evaluation(s)     OpenID AuthZEN 1.0   (subject asserted in the body; `authzenCallers` only)
 *   gRPC envoy.service.auth.v3.Authorization/Check  on its own port with `grpc: { port }` (grpc-check.ts)
 *
 * Every answer is 200 or a refusal rendered by the guard's one renderer (`lockstep-error` and
 * `lockstep-request-id` headers, the catalogue's status; for nginx, statuses nginx cannot pass on are
 * answered 403 with the code kept in the header). Every decision is audited with `via: 'authz-server'`.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import {
  closeSilentConnections,
  createGuard,
  GuardError,
  HANDSHAKE_TIMEOUT_MS,
  renderRefusal,
  type Guard,
  type GuardErrorCode,
  type GuardLogger,
  type RouteTable,
  type TxnTokenKeyOptions,
} from '@lockstep/guard';
import { lockstepDecisions, type Decision } from '@lockstep/guard/decision';
import { readTlsPeer } from '@lockstep/identity';
import { joinAsWorkload, type WorkloadAgent } from '@lockstep/workload';
import { AuthzenRequestError, parseEvaluation, parseEvaluations, type AuthzenEvaluation } from './authzen.ts';
import { fromNginxHeader, fromTraefikHeader, fromXfccHeader } from './client-certificate.ts';
import { decideForwarded } from './forwarded-request.ts';
import type { GrpcCheck } from './grpc-check.ts';
import { trustedProxies, type ProxyCaller } from './trusted-proxy.ts';

export interface AuthzServerOptions {
  /** The protected service this process decides for; it joins the control plane as this service. */
  readonly service: string;
  readonly trustDomain: string;
  /** The control plane's URL, or its replicas' (a list, or comma-separated): asked in turn. */
  readonly controlPlane: string | readonly string[];
  /** A join token for `svc/<service>` (`lockstep join-token <service>`). */
  readonly joinToken: string;
  /** The protected service's routes, as the sidecar's routes file or `lockstepHttp` take them. */
  readonly routes: RouteTable;
  /** SPIFFE IDs of the proxies allowed to ask (their own mTLS SVIDs). At least one. */
  readonly trustedProxies: readonly string[];
  /**
   * SPIFFE IDs allowed to ask AuthZEN (`/access/v1/evaluation(s)`): an AuthZEN caller names the
   * subject itself, so whoever is listed here can decide as any workload. Default none: AuthZEN is
   * refused. A caller must also be listed in `trustedProxies`.
   */
  readonly authzenCallers?: readonly string[];
  /**
   * Envoy's XFCC with several elements: 'refuse' (default) or 'last' (the last element counts).
   * 'last' only when every proxy on the way requires a client certificate; under APPEND_FORWARD a
   * client without one writes the last element itself. Prefer `forward_client_cert_details: SANITIZE_SET`.
   */
  readonly xfccElements?: 'refuse' | 'last';
  /** Default 127.0.0.1, port 0 (any free port). */
  readonly listen?: { readonly host?: string; readonly port?: number };
  /**
   * Envoy ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`) on a port of its own, same
   * mTLS and trusted proxies. Off unless given; host default 127.0.0.1, port 0 (any free port).
   */
  readonly grpc?: { readonly host?: string; readonly port?: number };
  readonly stateDir?: string;
  readonly logger?: GuardLogger;
  /** Default: the control plane's Txn-Token Service JWKS. */
  readonly txnTokenKeys?: TxnTokenKeyOptions;
  /** Ship decisions to the monitor (default true); false only in tests. */
  readonly shipAudit?: boolean;
  readonly limits?: {
    /** Largest AuthZEN body. Default 64 KiB. */
    readonly bodyBytes?: number;
    /** Largest request head (a forwarded certificate chain fits easily). Default 32 KiB. */
    readonly headerBytes?: number;
    /** Most evaluations in one `/access/v1/evaluations` request. Default 64. */
    readonly evaluations?: number;
    /** Largest gRPC CheckRequest (RESOURCE_EXHAUSTED beyond). Default 64 KiB. */
    readonly grpcMessageBytes?: number;
    /** Most request headers in one gRPC CheckRequest. Default 128. */
    readonly grpcHeaders?: number;
  };
}

export interface AuthzServer {
  readonly url: string;
  readonly port: number;
  /** The gRPC listener's `host:port` (a gRPC client's target), or null without `grpc`. */
  readonly grpcAddress: string | null;
  readonly grpcPort: number | null;
  readonly guard: Guard;
  readonly agent: WorkloadAgent;
  close(): Promise<void>;
}

const QUIET: GuardLogger = { info() {}, warn() {}, error() {} };
const ENVOY_PREFIX = '/envoy/ext_authz';
/** No route performs this (an action id is printable ASCII). */
const NO_ACTION = '\u0000';

export async function createAuthzServer(options: AuthzServerOptions): Promise<AuthzServer> {
  let guard: Guard;
  // Checked before joining: a mistake must not spend the join token.
  const proxies = trustedProxies(options.trustedProxies, options.trustDomain, (id) => guard.isRevokedSpiffeId(id));
  const authzenCallers = new Set(options.authzenCallers ?? []);
  for (const id of authzenCallers)
    if (!proxies.ids.has(id))
      throw new TypeError(`authzenCallers lists ${id}, which is not in trustedProxies: add it there too, or remove it`);
  const limits = {
    bodyBytes: options.limits?.bodyBytes ?? 65_536,
    headerBytes: options.limits?.headerBytes ?? 32_768,
    evaluations: options.limits?.evaluations ?? 64,
    grpcMessageBytes: options.limits?.grpcMessageBytes ?? 65_536,
    grpcHeaders: options.limits?.grpcHeaders ?? 128,
  };
  const logger = options.logger ?? QUIET;
  const agent = await joinAsWorkload({
    url: options.controlPlane,
    trustDomain: options.trustDomain,
    joinToken: options.joinToken,
    service: options.service,
    ...(options.stateDir === undefined ? {} : { stateDir: options.stateDir }),
  });
  try {
    const base = agent.guardOptions(options.shipAudit === false ? { auditSpoolDir: false } : {});
    guard = await createGuard({
      ...base,
      ...(options.txnTokenKeys === undefined ? {} : { txnTokenKeys: options.txnTokenKeys }),
      logger,
    });
  } catch (error) {
    await agent.close();
    throw error;
  }
  const decisions = lockstepDecisions(guard, options.routes);
  let material = { cert: agent.credentials.chainPem, key: agent.credentials.keyPem, ca: agent.credentials.bundlePem };

  const server: Server = createServer(
    {
      ...material,
      minVersion: 'TLSv1.3',
      // Checked per request (below) so that a refusal is an audited answer, not a TLS alert.
      requestCert: true,
      rejectUnauthorized: false,
      maxHeaderSize: limits.headerBytes,
      requestTimeout: 10_000,
      headersTimeout: 5_000,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    },
    (request, response) => {
      handle(request, response).catch((error: unknown) => {
        const detail = error instanceof Error ? error.message : String(error);
        logger.error('decision service failed; request refused', { error: detail });
        refuse(request, response, new GuardError('LOCKSTEP_ERR_INTERNAL', detail));
      });
    },
  );
  // A connection that never sends a request is closed (Node times a request from its first byte only).
  closeSilentConnections(server);
  const connections = new Set<TLSSocket>();
  server.on('secureConnection', (socket: TLSSocket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });
  let grpcCheck: GrpcCheck | null = null;
  // Rotations: the agent hands the new SVID and bundle to the guard; this server presents them too.
  agent.attach({
    setPolicyBundle: (jws) => guard.setPolicyBundle(jws),
    revoke: (revocation) => guard.revoke(revocation),
    lift: (revocation) => guard.lift(revocation),
    setTrustBundle(pem) {
      guard.setTrustBundle(pem);
      material = { ...material, ca: pem };
      server.setSecureContext({ ...material, minVersion: 'TLSv1.3' });
      grpcCheck?.setTrustBundle(pem);
      // A connection's peer was verified at its handshake, under the old bundle: a CA removed from the
      // bundle must not keep its proxies trusted over keep-alive. Close them all (fail closed; the
      // proxies reconnect and are verified under the new bundle).
      callers = new WeakMap();
      for (const socket of connections) socket.destroy();
    },
    setSvid(svid) {
      guard.setSvid(svid);
      material = { ...material, cert: svid.cert, key: svid.key };
      server.setSecureContext({ ...material, minVersion: 'TLSv1.3' });
      grpcCheck?.setSvid(svid.cert, svid.key);
    },
    status: () => guard.status(),
  });

  /**
   * The caller must be a trusted proxy, by its verified SVID. What the handshake proved is remembered
   * per connection (a bundle rotation closes every connection); revocation and expiry are checked on every
   * request, since a keep-alive connection outlives both.
   */
  let callers = new WeakMap<TLSSocket, ProxyCaller | GuardError>();
  function callerRefusal(socket: TLSSocket): ProxyCaller | GuardError {
    let caller = callers.get(socket);
    if (caller === undefined) callers.set(socket, (caller = proxies.identify(readTlsPeer(socket))));
    return proxies.current(caller);
  }

  /** A refusal that is no decision about a client (caller, body, endpoint): audited, then answered. */
  function refuse(request: IncomingMessage, response: ServerResponse, error: GuardError): void {
    const admission = guard.decisionPipeline.refuseEarly(
      { method: request.method, url: request.url, headers: {}, rawHeaders: [] },
      null,
      error,
    );
    writeAnswer(response, error.code, admission.requestId, request.method === 'HEAD', false, unreadBody(request));
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const caller = callerRefusal(request.socket as TLSSocket);
    if (caller instanceof GuardError) return refuse(request, response, caller);
    const url = request.url ?? '/';
    const path = url.split('?', 1)[0] as string;
    if (path === '/nginx/auth') return forwardAuth(request, response, 'nginx');
    if (path === '/traefik/auth') return forwardAuth(request, response, 'traefik');
    if (path === ENVOY_PREFIX || path.startsWith(`${ENVOY_PREFIX}/`)) return envoyHttp(request, response, url);
    if (path === '/access/v1/evaluation' || path === '/access/v1/evaluations') {
      if (request.method !== 'POST') return refuse(request, response, new GuardError('LOCKSTEP_ERR_ROUTE_UNKNOWN'));
      if (!authzenCallers.has(caller.spiffeId))
        return refuse(
          request,
          response,
          new GuardError(
            'LOCKSTEP_ERR_DENIED',
            `${caller.spiffeId} may not ask AuthZEN (an AuthZEN caller names any subject): list it in authzenCallers`,
          ),
        );
      return authzen(request, response, path.endsWith('s'));
    }
    return refuse(request, response, new GuardError('LOCKSTEP_ERR_ROUTE_UNKNOWN', `no decision endpoint ${path}`));
  }

  async function forwardAuth(request: IncomingMessage, response: ServerResponse, kind: 'nginx' | 'traefik') {
    const { headers } = request;
    const method = kind === 'nginx' ? headers['x-original-method'] : headers['x-forwarded-method'];
    const uri = kind === 'nginx' ? headers['x-original-uri'] : headers['x-forwarded-uri'];
    if (typeof method !== 'string' || typeof uri !== 'string' || !uri.startsWith('/')) {
      const names = kind === 'nginx' ? 'X-Original-Method and X-Original-URI' : 'X-Forwarded-Method and -Uri';
      return refuse(request, response, new GuardError('LOCKSTEP_ERR_INPUT_INVALID', `${names} are required`));
    }
    const certificate =
      kind === 'nginx'
        ? fromNginxHeader(request.headersDistinct['x-client-cert'])
        : fromTraefikHeader(request.headersDistinct['x-forwarded-tls-client-cert']);
    const decision = await decideForwarded(decisions, certificate, method, uri, headers);
    answer(request, response, decision, kind === 'nginx');
  }

  async function envoyHttp(request: IncomingMessage, response: ServerResponse, url: string) {
    const original = url.slice(ENVOY_PREFIX.length) || '/';
    const certificate = fromXfccHeader(
      request.headersDistinct['x-forwarded-client-cert'],
      options.xfccElements === 'last',
    );
    const decision = await decideForwarded(decisions, certificate, request.method ?? '', original, request.headers);
    answer(request, response, decision, false);
  }

  async function authzen(request: IncomingMessage, response: ServerResponse, batch: boolean) {
    const body = await readJson(request, limits.bodyBytes);
    if (body instanceof GuardError) return refuse(request, response, body);
    let parsed: { evaluations: AuthzenEvaluation[]; semantic: string };
    try {
      parsed = batch
        ? parseEvaluations(body, limits.evaluations)
        : { evaluations: [parseEvaluation(body)], semantic: 'execute_all' };
    } catch (error) {
      if (!(error instanceof AuthzenRequestError)) throw error;
      return refuse(request, response, new GuardError('LOCKSTEP_ERR_INPUT_INVALID', error.message));
    }
    const results: { decision: boolean; context: Record<string, string> }[] = [];
    for (const evaluation of parsed.evaluations) {
      // Another service's resource: no route of ours performs anything on it (refused as an unknown route, audited).
      const decision =
        evaluation.resourceId === options.service
          ? await decisions.decide(evaluation.facts)
          : await decisions.decide({ ...evaluation.facts, action: NO_ACTION });
      results.push({
        decision: decision.allowed,
        context:
          decision.code === null
            ? { request_id: decision.requestId }
            : { request_id: decision.requestId, reason: decision.code },
      });
      if (parsed.semantic === 'deny_on_first_deny' && !decision.allowed) break;
      if (parsed.semantic === 'permit_on_first_permit' && decision.allowed) break;
    }
    const answerBody = JSON.stringify(batch ? { evaluations: results } : results[0]);
    response.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(answerBody),
      'cache-control': 'no-store',
      ...(typeof request.headers['x-request-id'] === 'string'
        ? { 'x-request-id': request.headers['x-request-id'] }
        : {}),
    });
    response.end(answerBody);
  }

  function answer(request: IncomingMessage, response: ServerResponse, decision: Decision, nginx: boolean): void {
    if (decision.allowed && !decision.admission.probe) {
      const caller = decision.admission.peer?.spiffeId;
      response.writeHead(200, {
        'cache-control': 'no-store',
        'lockstep-request-id': decision.requestId,
        // For the upstream (nginx auth_request_set, Envoy allowed_upstream_headers, Traefik authResponseHeaders):
        // always sent, empty on a public route, so that it replaces whatever the client wrote; Envoy also removes it.
        'lockstep-caller': caller ?? '',
        ...(caller === undefined ? { 'x-envoy-auth-headers-to-remove': 'lockstep-caller' } : {}),
        'content-length': '0',
      });
      response.end();
      return;
    }
    // An admitted scanner probe must never reach the service: refused here, its code says why.
    const code: GuardErrorCode = decision.code ?? 'LOCKSTEP_ERR_DENIED';
    writeAnswer(response, code, decision.requestId, request.method === 'HEAD', nginx);
  }

  let closing: Promise<void> | null = null;
  function close(): Promise<void> {
    closing ??= (async () => {
      grpcCheck?.close();
      server.closeAllConnections();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
      await agent.close();
      await guard.close();
    })();
    return closing;
  }

  const host = options.listen?.host ?? '127.0.0.1';
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listen?.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    if (options.grpc !== undefined) {
      // Loaded only when asked for: grpc-js and the protos stay out of every process that serves no gRPC
      // (the sidecar imports this package too).
      const { startGrpcCheck } = await import('./grpc-check.ts');
      grpcCheck = await startGrpcCheck({
        host: options.grpc.host ?? '127.0.0.1',
        port: options.grpc.port ?? 0,
        material,
        proxies,
        guard,
        decisions,
        limits: { messageBytes: limits.grpcMessageBytes, headers: limits.grpcHeaders },
        logger,
      });
    }
  } catch (error) {
    await close();
    throw error;
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  logger.info('decision service listening', {
    service: options.service,
    url,
    ...(grpcCheck === null ? {} : { grpc: grpcCheck.address }),
    trustedProxies: [...proxies.ids],
  });

  return { url, port, grpcAddress: grpcCheck?.address ?? null, grpcPort: grpcCheck?.port ?? null, guard, agent, close };
}

/** The one renderer's refusal; for nginx, a status other than 401/403/5xx becomes 403 (nginx passes no other). */
function writeAnswer(
  response: ServerResponse,
  code: GuardErrorCode,
  requestId: string,
  head: boolean,
  nginx = false,
  close = false,
): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const refusal = renderRefusal(code, requestId, { head, close });
  const status =
    nginx && refusal.status !== 401 && refusal.status !== 403 && refusal.status < 500 ? 403 : refusal.status;
  response.writeHead(status, refusal.headers);
  response.end(refusal.body);
}

/** The request still carries a body that was not read: the connection closes after the answer. */
function unreadBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  const announced = request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  return announced && !request.complete;
}

/** The body as JSON, bounded; a GuardError (413, 415 or 400) when it is not acceptable. */
async function readJson(request: IncomingMessage, limit: number): Promise<unknown> {
  const type = request.headers['content-type'] ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) return new GuardError('LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE');
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limit) return new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE');
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', 'the body is not JSON');
  }
}
