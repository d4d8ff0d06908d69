/**
 * The pipeline composes the five steps; every adapter (Fastify, Express, node:http) calls it the same
 * way: `admit` runs transport → transaction → authorization for a request whose route is known (or
 * null when no route matched), `refuse`/`record` emit the audit event. Input validation (step 4)
 * happens in the adapter after `admit` succeeded, and reports through `refuseAdmitted`.
 *
 * Probes. A caller with a scanner identity (`spiffe://<td>/scanner/<name>`) goes through every step
 * like anyone else, but an admitted probe never reaches the handler: the adapter answers it with
 * `probeAnswer` after the input step, so a scan changes nothing (public routes answer as usual: they
 * check no identity). A probe may name, in
 * `Lockstep-Probe-As`, a workload of this trust domain to be authorized as, and in
 * `Lockstep-Probe-Requester` the workload the policy should see as the transaction's requester (the
 * scanner checks that the policy and the owner rule refuse the wrong user, role or method to a caller
 * that is otherwise permitted); transport and Txn-Token checks still apply to the scanner's own
 * certificate and token. Both headers are ignored from anyone but a scanner.
 *
 * A scan's Txn-Token names the scanner as its requester (`req_wl`, or a link of `req_wl_chain`). Such
 * a token is accepted only from a scanner: a workload that received a probe cannot replay it.
 *
 * Every probe's audit event names its scanner in `probe`, so that the monitor counts probes apart
 * from real traffic: a request from a verified scanner SVID, and one that the transport step refused
 * but that carries a valid probe proof (steps/probe-proof.ts: the scanner's transport attacks). The
 * proof changes nothing else: such a request is refused all the same.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { GuardError } from './errors.ts';
import type { RouteSecurity } from './routes.ts';
import { nextRequestSeq, requestIdOf } from './request-id.ts';
import {
  channelHasSubscribers,
  decisionEventOf,
  decisionTap,
  publishToChannel,
  type AllowReason,
  type DecisionRecorder,
} from './steps/audit.ts';
import type { AuthorizeStep } from './steps/authorize.ts';
import { PROBE_PROOF_HEADER, type ProbeProofStep } from './steps/probe-proof.ts';
import type { PresentedChain, PresentedChainStep } from './steps/presented-chain.ts';
import type { PeerIdentity, TransportStep } from './steps/transport.ts';
import type { TxnTokenStep, VerifiedTxnToken } from './steps/txn-token.ts';
import { parseSpiffeId, type SpiffeId } from './spiffe-id.ts';
import { traceIdOf } from './trace-context.ts';

/** What an admitted probe gets instead of the handler's answer: 200, these headers, `probeAnswer`. */
export const PROBE_ANSWER_HEADERS = Object.freeze({
  'content-type': 'application/json; charset=utf-8',
  'lockstep-probe': 'admitted',
});
export function probeAnswer(requestId: string): string {
  return `{"probe":"admitted","requestId":${JSON.stringify(requestId)}}`;
}

export interface InboundRequest {
  /** The caller's connection; absent for a decision service's request (see `peerCertificateChain`). */
  readonly socket?: Socket | undefined;
  readonly method?: string | undefined;
  /** `'1.1'` for an IncomingMessage; absent for requests built by hand (benchmarks, tests). */
  readonly httpVersion?: string | undefined;
  /** The request target (path and query), which a probe proof names. */
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  /**
   * Only read by a decision pipeline (`PipelineOptions.presentedChain`): the client certificate chain
   * that a trusted proxy forwarded, verified against the trust bundle in place of the connection's.
   */
  readonly peerCertificateChain?: PresentedChain | undefined;
  /**
   * Only read by a decision pipeline, when there is no chain: the workload SPIFFE ID a trusted caller
   * asserts (an AuthZEN subject).
   */
  readonly assertedSpiffeId?: string | undefined;
}

/** The guard's verdict on one request; it is also what the handler's async context carries. */
export interface Admission {
  readonly requestId: string;
  /** The number in `requestId` (request-id.ts), for the audit writer. */
  readonly requestSeq: number;
  readonly method: string;
  readonly route: RouteSecurity | null;
  readonly peer: PeerIdentity | null;
  readonly txn: VerifiedTxnToken | null;
  readonly traceparent: string | null;
  /** True when the request goes on to the handler. */
  readonly allowed: boolean;
  /** Why it was refused — or, in dry run, why it would have been. */
  readonly refusal: GuardError | null;
  readonly dryRun: boolean;
  readonly reason: AllowReason | GuardError['code'];
  readonly policyIds: readonly string[];
  readonly policyVersion: string | null;
  readonly latencyMs: number;
  /** A scanner's request: decided, never handled (the adapter answers `probeAnswer`). */
  readonly probe: boolean;
  /** The workload a probe asked to be authorized as, or null. */
  readonly probeAs: string | null;
  /** The requester a probe asked the policy to see instead of its token's `req_wl`, or null. */
  readonly probeRequester: string | null;
  /**
   * The scanner whose probe this is, verified (its SVID, or a probe proof on a request the transport
   * step refused), or null: the audit event's `probe`.
   */
  readonly prober: string | null;
}

export interface Pipeline {
  /**
   * Steps 1–3. Returns synchronously in the steady state; a Promise only when a token must be
   * verified or the route looks up the owner of the addressed object (from `params`).
   */
  admit(
    request: InboundRequest,
    route: RouteSecurity | null,
    params?: Readonly<Record<string, string | undefined>>,
  ): Admission | Promise<Admission>;
  /**
   * Records the refusal of a request that `admit` had let through: by the input step (step 4), or
   * because a node:http handler failed before answering. A second event for the same request id.
   */
  refuseAdmitted(admission: Admission, error: GuardError): Admission;
  /** Records a refusal that happened before a request could be admitted (e.g. a framework error). */
  refuseEarly(request: InboundRequest, route: RouteSecurity | null, error: GuardError): Admission;
}

export interface PipelineOptions {
  service: string;
  /** Probes may be authorized only as workloads of this trust domain. */
  trustDomain: string;
  /** Service-wide dry run. */
  dryRun: boolean;
  transport: TransportStep;
  txnToken: TxnTokenStep;
  authorize: AuthorizeStep;
  /** Tells the scanner's transport attacks apart in the audit trail; without it they count as real traffic. */
  probeProof?: ProbeProofStep;
  /**
   * A decision pipeline (the decision service, `lockstep authz-server`): the caller is identified from
   * `request.peerCertificateChain` by this step, never from the socket, and every audit event says
   * `via`, so that the monitor shows which decisions came through a fronting proxy.
   */
  presentedChain?: PresentedChainStep;
  via?: string;
  onInternalError(error: unknown): void;
}

/**
 * What Node's HTTP server would otherwise answer by itself, outside the pipeline: an HTTP/1.1 request
 * without Host must be refused with 400 (RFC 9112 §3.2). `guard.attach` turns Node's own check off
 * so that the refusal is decided and audited here.
 */
function malformedRequest(request: InboundRequest): GuardError | null {
  if (request.httpVersion === '1.1' && request.headers.host === undefined) {
    return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', 'HTTP/1.1 request without a Host header');
  }
  return null;
}

/** An admission while the steps fill it in. */
type Draft = { -readonly [K in keyof Admission]: Admission[K] };
const NO_POLICIES: readonly string[] = Object.freeze([]);

// Many decisions share a millisecond under load: format the timestamp once per millisecond.
let lastMs = 0;
let lastIso = '';
function isoOf(now: number): string {
  if (now !== lastMs) {
    lastMs = now;
    lastIso = new Date(now).toISOString();
  }
  return lastIso;
}

export function createPipeline(options: PipelineOptions): Pipeline {
  const { service, transport, txnToken, authorize, presentedChain, via } = options;
  const tap = decisionTap(service);
  // As the transport step tells a scanner's certificate: any path under /scanner/.
  const scannerPrefix = `spiffe://${options.trustDomain}/scanner/`;

  // One object per request, filled in as the steps run (the steady state allocates nothing else).
  function draft(request: InboundRequest, route: RouteSecurity | null): Draft {
    const traceparent = request.headers.traceparent;
    const requestSeq = nextRequestSeq();
    return {
      requestId: requestIdOf(requestSeq),
      requestSeq,
      method: request.method ?? '',
      route,
      peer: null,
      txn: null,
      traceparent: typeof traceparent === 'string' ? traceparent : null,
      allowed: false,
      refusal: null,
      dryRun: false,
      reason: 'LOCKSTEP_ALLOW',
      policyIds: NO_POLICIES,
      policyVersion: null,
      latencyMs: 0,
      probe: false,
      probeAs: null,
      probeRequester: null,
      prober: null,
    };
  }

  function finish(admission: Draft, startedAt: number): Admission {
    admission.latencyMs = performance.now() - startedAt;
    record(admission);
    return admission;
  }

  /**
   * To the service's audit writers, which take the admission as it is (steps/audit.ts), and to the
   * channel's subscribers, for whom an event object is built only if there are any.
   */
  function record(admission: Admission): void {
    const { recorders } = tap;
    const toChannel = channelHasSubscribers();
    if (recorders.length === 0 && !toChannel) return;
    const timeMs = Date.now();
    for (let i = 0; i < recorders.length; i++)
      (recorders[i] as DecisionRecorder).recordAdmission(service, via, admission, timeMs);
    if (!toChannel) return;
    const traceId = traceIdOf(admission.traceparent ?? undefined);
    publishToChannel(decisionEventOf(service, via, admission, isoOf(timeMs), traceId));
  }

  function refuse(admission: Draft, error: GuardError, startedAt: number): Admission {
    admission.allowed = false;
    admission.refusal = error;
    admission.reason = error.code;
    admission.policyIds = error.policyIds;
    admission.policyVersion = error.policyVersion;
    admission.dryRun = false;
    return finish(admission, startedAt);
  }

  /**
   * Steps 2b–3, once the Txn-Token is known (or known to be bad). Synchronous, except for a route
   * that looks up its object's owner — only once the caller and the token have passed.
   */
  function decide(
    admission: Draft & { peer: PeerIdentity },
    principal: PeerIdentity,
    dryRun: boolean,
    tokenError: GuardError | null,
    startedAt: number,
    params?: Readonly<Record<string, string | undefined>>,
  ): Admission | Promise<Admission> {
    const { route } = admission;
    if (tokenError === null && admission.txn !== null && !admission.peer.scanner) {
      tokenError = scanTokenReplayed(admission.txn);
    }
    if (tokenError !== null && (!dryRun || tokenError.code === 'LOCKSTEP_ERR_INTERNAL'))
      return refuse(admission, tokenError, startedAt);
    if (route === null) return refuse(admission, new GuardError('LOCKSTEP_ERR_ROUTE_UNKNOWN'), startedAt);
    if (route.owner !== null && tokenError === null) {
      const lookup = route.owner;
      return (async () => lookup(params ?? {}))().then(
        (owner) =>
          decideFor(admission, principal, route, dryRun, null, startedAt, typeof owner === 'string' ? owner : ''),
        (error: unknown) =>
          refuse(
            admission,
            new GuardError(
              'LOCKSTEP_ERR_INTERNAL',
              `owner lookup failed: ${error instanceof Error ? error.message : String(error)}`,
            ),
            startedAt,
          ),
      );
    }
    return decideFor(admission, principal, route, dryRun, tokenError, startedAt, undefined);
  }

  function decideFor(
    admission: Draft & { peer: PeerIdentity },
    principal: PeerIdentity,
    route: RouteSecurity,
    dryRun: boolean,
    tokenError: GuardError | null,
    startedAt: number,
    owner: string | undefined,
  ): Admission {
    let wouldBe = tokenError;
    try {
      const decision = authorize.decide(
        principal,
        admission.txn,
        route.action,
        owner,
        admission.probeRequester ?? undefined,
      );
      admission.policyIds = decision.policyIds;
      admission.policyVersion = decision.policyVersion;
    } catch (error) {
      const denial = asGuardError(error);
      if (!dryRun || denial.code === 'LOCKSTEP_ERR_INTERNAL') return refuse(admission, denial, startedAt);
      wouldBe ??= denial;
      admission.policyIds = denial.policyIds;
      admission.policyVersion = denial.policyVersion;
    }
    admission.allowed = true;
    admission.refusal = wouldBe;
    admission.reason = wouldBe?.code ?? 'LOCKSTEP_ALLOW';
    admission.dryRun = dryRun;
    return finish(admission, startedAt);
  }

  return {
    // Synchronous when the connection, token and decision are cached (the steady state): no promise.
    admit(request, route, params) {
      const startedAt = performance.now();
      const admission = draft(request, route);
      if (route?.public) {
        const malformed = malformedRequest(request);
        if (malformed !== null) return refuse(admission, malformed, startedAt);
        admission.allowed = true;
        admission.reason = 'LOCKSTEP_ALLOW_PUBLIC';
        return finish(admission, startedAt);
      }
      let peer: PeerIdentity;
      try {
        // Transport is never dry-run: without a verified peer there is no principal to decide about.
        peer = identifyPeer(request);
      } catch (error) {
        const refusal = asGuardError(error);
        const proof = request.headers[PROBE_PROOF_HEADER];
        if (proof === undefined || options.probeProof === undefined) return refuse(admission, refusal, startedAt);
        // Refused all the same: the proof only tells the audit trail that the scanner sent it.
        const source = request.socket?.remoteAddress;
        return options.probeProof.verify(proof, admission.method, request.url, source).then((scanner) => {
          admission.prober = scanner;
          return refuse(admission, refusal, startedAt);
        });
      }
      admission.peer = peer;
      const identified = admission as Draft & { peer: PeerIdentity };
      // After transport: an outsider learns nothing from how a request is malformed.
      const malformed = malformedRequest(request);
      if (malformed !== null) return refuse(identified, malformed, startedAt);
      let principal = peer;
      if (peer.scanner) {
        identified.probe = true;
        identified.prober = peer.spiffeId;
        const probeAs = probeTarget('Lockstep-Probe-As', request.headers['lockstep-probe-as']);
        if (probeAs instanceof GuardError) return refuse(identified, probeAs, startedAt);
        const probeRequester = probeTarget('Lockstep-Probe-Requester', request.headers['lockstep-probe-requester']);
        if (probeRequester instanceof GuardError) return refuse(identified, probeRequester, startedAt);
        if (probeAs !== null) {
          identified.probeAs = probeAs.id;
          principal = Object.freeze({
            spiffeId: probeAs.id,
            service: probeAs.service ?? '',
            notAfterMs: peer.notAfterMs,
            scanner: false,
          });
        }
        identified.probeRequester = probeRequester?.id ?? null;
      }
      const dryRun = route !== null && (options.dryRun || route.dryRun);
      let verified: VerifiedTxnToken | Promise<VerifiedTxnToken>;
      try {
        verified = txnToken.verify(request.headers['txn-token'], request.rawHeaders);
      } catch (error) {
        return decide(identified, principal, dryRun, asGuardError(error), startedAt, params);
      }
      if (verified instanceof Promise) {
        return verified.then(
          (txn) => {
            identified.txn = txn;
            return decide(identified, principal, dryRun, null, startedAt, params);
          },
          (error: unknown) => decide(identified, principal, dryRun, asGuardError(error), startedAt),
        );
      }
      identified.txn = verified;
      return decide(identified, principal, dryRun, null, startedAt, params);
    },

    refuseAdmitted(admission, error) {
      const refusedAdmission: Admission = {
        ...admission,
        allowed: false,
        refusal: error,
        reason: error.code,
        dryRun: false,
      };
      record(refusedAdmission);
      return refusedAdmission;
    },

    refuseEarly(request, route, error) {
      const startedAt = performance.now();
      let peer: PeerIdentity | null = null;
      try {
        peer = identifyPeer(request);
      } catch {
        // The early error is what we report; an unidentifiable peer is simply recorded as unknown.
      }
      const admission = draft(request, route);
      admission.peer = peer;
      // A scanner's request the framework refused (e.g. its oversized headers) is still its probe.
      if (peer?.scanner === true) admission.prober = peer.spiffeId;
      return refuse(admission, error, startedAt);
    },
  };

  /** Step 1: from the connection, or — in a decision pipeline — from the chain a trusted proxy forwarded. */
  function identifyPeer(request: InboundRequest): PeerIdentity {
    if (presentedChain !== undefined) {
      if (request.peerCertificateChain === undefined && request.assertedSpiffeId !== undefined)
        return presentedChain.identifyAsserted(request.assertedSpiffeId);
      return presentedChain.identify(request.peerCertificateChain);
    }
    if (request.socket === undefined) throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING', 'no connection');
    return transport.identify(request.socket);
  }

  /** A token a scanner asked for (its requester is a scanner), presented by a peer that is not one. */
  function scanTokenReplayed(txn: VerifiedTxnToken): GuardError | null {
    // The claims step has parsed these as SPIFFE IDs of this trust domain: a prefix test is exact.
    const { req_wl: requester, req_wl_chain: chain } = txn.claims;
    let scanner = requester.startsWith(scannerPrefix) ? requester : undefined;
    if (scanner === undefined && chain !== undefined) scanner = chain.find((link) => link.startsWith(scannerPrefix));
    if (scanner === undefined) return null;
    return new GuardError(
      'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS',
      `the token was issued for a scan (requester ${scanner}) ` +
        'and is accepted only from a scanner: a workload that received a probe cannot replay it',
    );
  }

  /** A probe header: absent, or exactly one workload SPIFFE ID of this trust domain. */
  function probeTarget(name: string, header: string | string[] | undefined): SpiffeId | GuardError | null {
    if (header === undefined) return null;
    const parsed = typeof header === 'string' ? parseSpiffeId(header) : null;
    if (parsed === null || parsed.trustDomain !== options.trustDomain || parsed.service === null) {
      return new GuardError(
        'LOCKSTEP_ERR_PROBE_INVALID',
        `${name} must be one spiffe://${options.trustDomain}/svc/<name>; got ${JSON.stringify(String(header).slice(0, 200))}`,
      );
    }
    return parsed;
  }

  function asGuardError(error: unknown): GuardError {
    if (error instanceof GuardError) return error;
    options.onInternalError(error);
    return new GuardError('LOCKSTEP_ERR_INTERNAL', error instanceof Error ? error.message : String(error));
  }
}
