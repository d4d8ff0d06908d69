/**
 * Envoy `ext_authz` over gRPC: `envoy.service.auth.v3.Authorization/Check`, served by the decision
 * service beside its HTTPS endpoints (`createAuthzServer({ grpc: { port } })`) with the same rules:
 *
 *   transport   mTLS (TLS 1.3) with the decision service's SVID; the caller's certificate is verified
 *               against the trust bundle, and only a SPIFFE ID in `trustedProxies` may ask — checked on
 *               every call (revocation, expiry). A bundle rotation closes every connection (each proxy
 *               reconnects and is verified under the new bundle); an SVID rotation applies to new ones.
 *   identity    the client's certificate from `attributes.source.certificate` (Envoy's
 *               `include_peer_certificate: true`), verified by the decision pipeline; `source.principal`
 *               is never read. Txn-Token and traceparent from `attributes.request.http.headers`
 *               (or `header_map` under `encode_raw_headers`).
 *   answer      allowed: status OK with `lockstep-request-id` and `lockstep-caller` set on the request to
 *               the upstream (replacing any the client sent; removed when there is no caller). Refused:
 *               PERMISSION_DENIED (UNAUTHENTICATED for a 401) with the guard's one rendering of the
 *               refusal as `denied_response`. A refused caller and a malformed request get a denying
 *               CheckResponse too, never an RPC error, so that even an Envoy misconfigured with
 *               `failure_mode_allow: true` cannot turn them into an allow.
 *   bounds      messages up to `messageBytes` (RESOURCE_EXHAUSTED beyond, from grpc-js), at most
 *               `headers` request headers, 10 s for a TLS handshake, idle connections closed after 5 min.
 *
 * The .proto files are Lockstep's own subset of Envoy's API (packages/proxy/proto/), with Envoy's
 * package, service, message names and field numbers.
 */
import { fileURLToPath } from 'node:url';
import type { SecureContextOptions } from 'node:tls';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { GuardError, type Guard, type GuardLogger } from '@lockstep/guard';
import type { Decisions } from '@lockstep/guard/decision';
import { checkAnswer, deniedAnswer, readCheckRequest, type CheckResponse } from './check-messages.ts';
import { fromEnvoyPeerCertificate } from './client-certificate.ts';
import { decideForwarded } from './forwarded-request.ts';
import type { ProxyCaller, TrustedProxies } from './trusted-proxy.ts';

/** The decision service's TLS material: its SVID chain and key, and the trust bundle callers must chain to. */
export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export interface GrpcCheckOptions {
  readonly host: string;
  readonly port: number;
  readonly material: TlsMaterial;
  readonly proxies: TrustedProxies;
  readonly guard: Guard;
  readonly decisions: Decisions;
  readonly limits: { readonly messageBytes: number; readonly headers: number };
  readonly logger: GuardLogger;
}

export interface GrpcCheck {
  /** `host:port`, as a gRPC client takes its target. */
  readonly address: string;
  readonly port: number;
  setSvid(cert: string, key: string): void;
  setTrustBundle(pem: string): void;
  close(): void;
}

/** The method's path, as audited for refusals that concern the call rather than the client's request. */
export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';
const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));
const CHECK_PROTO = 'envoy/service/auth/v3/external_auth.proto';
/** Proxies' SVIDs remembered by fingerprint; far more than any deployment has proxies. */
const CALLER_CACHE_SIZE = 256;

/** The service definition from the .proto files (ours, shipped in proto/), loaded once: for the server, and for clients (tests, the bench). */
let authorizationService: grpc.ServiceDefinition | undefined;
export function loadAuthorizationService(): grpc.ServiceDefinition {
  authorizationService ??= protoLoader.loadSync(CHECK_PROTO, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: true,
    oneofs: true,
  })['envoy.service.auth.v3.Authorization'] as grpc.ServiceDefinition;
  return authorizationService;
}

/**
 * Server credentials that follow the agent's rotations: grpc-js applies `updateSecureContextOptions` to
 * its listening server (`setSecureContext`), as its own certificate-provider credentials do; these also
 * keep TLS 1.3 as the floor and ask for (without demanding) a client certificate, so that a caller
 * without one gets an audited refusal rather than a TLS alert.
 */
class RotatingServerCredentials extends grpc.ServerCredentials {
  constructor(material: TlsMaterial) {
    super(
      {
        requestCert: true,
        rejectUnauthorized: false,
        handshakeTimeout: 10_000,
        maxHeaderListPairs: 64,
        settings: { maxConcurrentStreams: 256 },
      },
      contextOf(material),
    );
  }

  rotate(material: TlsMaterial): void {
    this.updateSecureContextOptions(contextOf(material));
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

function contextOf(material: TlsMaterial): SecureContextOptions {
  return { cert: material.cert, key: material.key, ca: material.ca, minVersion: 'TLSv1.3' };
}

export async function startGrpcCheck(options: GrpcCheckOptions): Promise<GrpcCheck> {
  const { guard, proxies, decisions, limits, logger } = options;
  let material = options.material;
  const credentials = new RotatingServerCredentials(material);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': limits.messageBytes,
    'grpc.max_send_message_length': 64 * 1024,
    'grpc.max_connection_idle_ms': 300_000,
    // channelz (grpc-js's introspection service, which nothing here serves) counts and timestamps every call.
    'grpc.enable_channelz': 0,
  });
  /**
   * Each connection's caller, by the HTTP/2 session it arrived on (one TLS connection; renegotiation is
   * off, so its certificate cannot change): what the handshake proved is read once per connection, as
   * the HTTPS endpoints remember it per socket. A bundle rotation starts afresh (and closes them all).
   */
  let bySession = new WeakMap<object, ProxyCaller | GuardError>();
  /** Without a session to remember it by (see sessionOf): by the certificate's fingerprint. */
  const byFingerprint = new Map<string, ProxyCaller | GuardError>();

  /** The caller, from what its handshake proved (grpc-js shows only a verified certificate). */
  function callerOf(call: grpc.ServerUnaryCall<unknown, unknown>): ProxyCaller | GuardError {
    const session = sessionOf(call);
    let caller = session === null ? undefined : bySession.get(session);
    if (caller === undefined) {
      caller = identify(call);
      if (session !== null) bySession.set(session, caller);
    }
    return proxies.current(caller);
  }

  /**
   * The call's verified certificate, as a caller. `getAuthContext` converts the whole certificate
   * (three fingerprints, names, key) on every call: the bulk of a Check's CPU when asked per call.
   */
  function identify(call: grpc.ServerUnaryCall<unknown, unknown>): ProxyCaller | GuardError {
    const certificate = call.getAuthContext().sslPeerCertificate;
    if (certificate === undefined)
      return new GuardError(
        'LOCKSTEP_ERR_PEER_UNTRUSTED',
        'the proxy presented no SVID that chains to the trust bundle',
      );
    let caller = byFingerprint.get(certificate.fingerprint256);
    if (caller === undefined) {
      caller = proxies.identify({ leafDer: new Uint8Array(certificate.raw), authorized: true });
      if (byFingerprint.size >= CALLER_CACHE_SIZE) byFingerprint.clear();
      byFingerprint.set(certificate.fingerprint256, caller);
    }
    return caller;
  }

  async function check(call: grpc.ServerUnaryCall<unknown, unknown>): Promise<CheckResponse> {
    const caller = callerOf(call);
    if (caller instanceof GuardError) return refuseCall(caller);
    const request = readCheckRequest(call.request, limits.headers);
    if (request instanceof GuardError) return refuseCall(request);
    const certificate = fromEnvoyPeerCertificate(request.certificate);
    return checkAnswer(await decideForwarded(decisions, certificate, request.method, request.path, request.headers));
  }

  /** A refusal that is no decision about a client (the caller, a malformed request): audited, then answered. */
  function refuseCall(error: GuardError): CheckResponse {
    const admission = guard.decisionPipeline.refuseEarly(
      { method: 'POST', url: CHECK_PATH, headers: {}, rawHeaders: [] },
      null,
      error,
    );
    return deniedAnswer(error.code, admission.requestId);
  }

  server.addService(loadAuthorizationService(), {
    Check(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<CheckResponse>) {
      check(call).then(
        (response) => callback(null, response),
        (error: unknown) => {
          const detail = error instanceof Error ? error.message : String(error);
          logger.error('decision service (gRPC) failed; request refused', { error: detail });
          try {
            callback(null, refuseCall(new GuardError('LOCKSTEP_ERR_INTERNAL', detail)));
          } catch {
            callback({ code: grpc.status.INTERNAL, details: 'LOCKSTEP_ERR_INTERNAL' });
          }
        },
      );
    },
  });

  const bindHost = options.host.includes(':') ? `[${options.host}]` : options.host;
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${bindHost}:${options.port}`, credentials, (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    );
  });
  const address = `${bindHost}:${port}`;

  return {
    address,
    port,
    setSvid(cert, key) {
      material = { ...material, cert, key };
      credentials.rotate(material);
    },
    setTrustBundle(pem) {
      material = { ...material, ca: pem };
      credentials.rotate(material);
      // Every open connection's caller was verified under the old bundle: a CA removed from it must not
      // keep its proxies trusted. GOAWAY to all of them at once (fail closed; they reconnect).
      bySession = new WeakMap();
      byFingerprint.clear();
      server.drain(address, 0);
    },
    close() {
      server.forceShutdown();
    },
  };
}

/**
 * The HTTP/2 session (one TLS connection) a call arrived on, read from grpc-js's internals
 * (`ServerUnaryCallImpl.call.stream.session`, as its own `getAuthContext` reads it); null when they
 * are shaped otherwise (another grpc-js), and the caller is then identified on every call: slower,
 * never wrong. A test (grpc-check.test.ts) says when this path is gone.
 */
export function sessionOf(call: grpc.ServerUnaryCall<unknown, unknown>): object | null {
  const session = (call as { call?: { stream?: { session?: unknown } } }).call?.stream?.session;
  return typeof session === 'object' && session !== null ? session : null;
}
