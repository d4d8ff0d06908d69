/**
 * Step 5 — audit. One event per decision. The event never carries a token, a key or a body: who
 * (caller SPIFFE ID), on whose behalf (sub, txn), what (action, resource, route), the decision, the
 * deciding policies, the reason code, whether it was a dry run, and how long the guard took.
 *
 * Two ways out, both free when unused:
 * - the `lockstep:guard:decision` diagnostics channel, for anyone in the process (metrics, tests): a
 *   `DecisionEvent` object is built only when the channel has a subscriber;
 * - recorders, the guard's own audit writers (audit-file-sink.ts): a pipeline hands them its
 *   admission as it is, so that the request thread builds no event and encodes nothing (the writer
 *   copies a few numbers into a ring and encodes on a thread of its own). `publishDecision` reaches
 *   them too, for decisions made outside a pipeline (the gateway's sign-in).
 */
import diagnostics from 'node:diagnostics_channel';
import type { Admission } from '../pipeline.ts';

export const DECISION_CHANNEL = 'lockstep:guard:decision';

export type AllowReason = 'LOCKSTEP_ALLOW' | 'LOCKSTEP_ALLOW_PUBLIC';

export interface DecisionEvent {
  readonly time: string;
  readonly service: string;
  readonly requestId: string;
  readonly caller: string | null;
  readonly sub: string | null;
  readonly txn: string | null;
  readonly method: string;
  readonly route: string | null;
  readonly action: string | null;
  readonly resource: string;
  readonly decision: 'allow' | 'deny';
  readonly policyIds: readonly string[];
  readonly policyVersion: string | null;
  /** `LOCKSTEP_ALLOW…` for an allow, else the error code (also for a dry-run would-be denial). */
  readonly reason: string;
  readonly dryRun: boolean;
  readonly latencyMs: number;
  readonly traceId: string | null;
  /**
   * Only on a scanner's probe: the scanner's SPIFFE ID, as verified — its SVID, or a probe proof on a
   * request the transport step refused (steps/probe-proof.ts). What the monitor counts apart from real
   * traffic; a request that merely claims to be a probe never gets it.
   */
  readonly probe?: string | undefined;
  /**
   * Only on a scanner's probe (the caller is a `…/scanner/…` identity, whose requests never reach a
   * handler): the workload it asked to be decided as, or null when it was decided as itself.
   */
  readonly probeAs?: string | null | undefined;
  /** Only on a scanner's probe: the requester it asked the policy to see, or null. */
  readonly probeRequester?: string | null | undefined;
  /**
   * Only on a decision made for a fronting proxy (nginx, Envoy, Traefik, an AuthZEN client) by the
   * decision service: `authz-server`. Absent for a guard's own decisions.
   */
  readonly via?: string | undefined;
}

/** What the events of one transaction's requests to one route share: all but time, id, latency, trace. */
export type DecisionContext = Omit<DecisionEvent, 'time' | 'requestId' | 'latencyMs' | 'traceId'>;

/** The event of a pipeline's decision: what the channel's subscribers get, and what the audit line says. */
export function decisionEventOf(
  service: string,
  via: string | undefined,
  admission: Admission,
  time: string,
  traceId: string | null,
): DecisionEvent {
  return {
    time,
    service,
    requestId: admission.requestId,
    caller: admission.peer?.spiffeId ?? null,
    sub: admission.txn?.claims.sub ?? null,
    txn: admission.txn?.claims.txn ?? null,
    method: admission.method,
    route: admission.route?.template ?? null,
    action: admission.route?.action ?? null,
    resource: service,
    decision: admission.allowed ? 'allow' : 'deny',
    policyIds: admission.policyIds,
    policyVersion: admission.policyVersion,
    reason: admission.reason,
    dryRun: admission.dryRun,
    latencyMs: Math.round(admission.latencyMs * 1000) / 1000,
    traceId,
    // A fixed shape, without a spread: this literal is built for every decision someone listens to.
    probe: admission.prober ?? undefined,
    probeAs: admission.probe ? admission.probeAs : undefined,
    probeRequester: admission.probe ? admission.probeRequester : undefined,
    via,
  };
}

/** An audit writer of the guard's own (audit-file-sink.ts). */
export interface DecisionRecorder {
  /** A pipeline's decision, as the pipeline holds it; `timeMs` is when it was decided. */
  recordAdmission(service: string, via: string | undefined, admission: Admission, timeMs: number): void;
  /** A decision made outside a pipeline (`publishDecision`). */
  recordEvent(event: DecisionEvent): void;
}

/** The recorders of one service, kept up to date: a pipeline holds it and reads `recorders` per decision. */
export interface DecisionTap {
  recorders: readonly DecisionRecorder[];
}

const channel = diagnostics.channel(DECISION_CHANNEL);
const taps = new Map<string, DecisionTap>();
// Recorders of every service's decisions (a writer created without `service`).
let everyService: readonly DecisionRecorder[] = [];
const byService = new Map<string, readonly DecisionRecorder[]>();
let recorderCount = 0;

export function decisionTap(service: string): DecisionTap {
  let tap = taps.get(service);
  if (tap === undefined) {
    tap = { recorders: [...(byService.get(service) ?? []), ...everyService] };
    taps.set(service, tap);
  }
  return tap;
}

function refreshTaps(): void {
  for (const [service, tap] of taps) tap.recorders = [...(byService.get(service) ?? []), ...everyService];
}

/** Adds a recorder of `service`'s decisions (every service's when undefined); returns its removal. */
export function subscribeRecorder(recorder: DecisionRecorder, service?: string): () => void {
  if (service === undefined) everyService = [...everyService, recorder];
  else byService.set(service, [...(byService.get(service) ?? []), recorder]);
  recorderCount += 1;
  refreshTaps();
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    recorderCount -= 1;
    if (service === undefined) everyService = everyService.filter((known) => known !== recorder);
    else {
      const left = (byService.get(service) ?? []).filter((known) => known !== recorder);
      if (left.length === 0) byService.delete(service);
      else byService.set(service, left);
    }
    refreshTaps();
  };
}

/** True when a decision would go anywhere: a channel subscriber or a recorder. */
export function auditEnabled(): boolean {
  return channel.hasSubscribers || recorderCount > 0;
}

/** True when the channel has a subscriber (then a pipeline builds the event object). */
export function channelHasSubscribers(): boolean {
  return channel.hasSubscribers;
}

/** To the channel's subscribers and to the recorders of `event.service`. Touches nothing when nobody listens. */
export function publishDecision(event: DecisionEvent): void {
  if (channel.hasSubscribers) channel.publish(event);
  if (recorderCount === 0) return;
  for (const recorder of decisionTap(event.service).recorders) recorder.recordEvent(event);
}

/** To the channel's subscribers only: a pipeline hands its recorders the admission itself. */
export function publishToChannel(event: DecisionEvent): void {
  channel.publish(event);
}

export function subscribeDecisions(listener: (event: DecisionEvent) => void): () => void {
  const onMessage = (message: unknown) => listener(message as DecisionEvent);
  diagnostics.subscribe(DECISION_CHANNEL, onMessage);
  return () => diagnostics.unsubscribe(DECISION_CHANNEL, onMessage);
}

// What JSON.stringify escapes in a string: quote, backslash, control characters, lone surrogates
// (a well-formed pair is escaped by neither, but telling them apart is not worth it here).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** A JSON string literal; skips JSON.stringify when nothing needs escaping (the usual case). */
function jsonString(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

function jsonStringOrNull(value: string | null): string {
  return value === null ? 'null' : jsonString(value);
}

/**
 * A decision line is `{"time":…,"service":` SERVICE `,"requestId":…` MIDDLE `,"latencyMs":…,"traceId":…`
 * SUFFIX `}`: the parts in capitals depend only on the context, and are encoded once per context by a
 * writer (audit-ring.ts); the rest is a few numbers per request.
 */
export interface ContextJson {
  readonly service: string;
  readonly middle: string;
  readonly suffix: string;
}

export function contextJson(context: DecisionContext): ContextJson {
  let policyIds = '';
  for (let i = 0; i < context.policyIds.length; i++)
    policyIds += (i === 0 ? '' : ',') + jsonString(context.policyIds[i] as string);
  const middle =
    `,"caller":${jsonStringOrNull(context.caller)},"sub":${jsonStringOrNull(context.sub)},"txn":${jsonStringOrNull(context.txn)}` +
    `,"method":${jsonString(context.method)},"route":${jsonStringOrNull(context.route)},"action":${jsonStringOrNull(context.action)}` +
    `,"resource":${jsonString(context.resource)},"decision":"${context.decision}","policyIds":[${policyIds}]` +
    `,"policyVersion":${jsonStringOrNull(context.policyVersion)},"reason":${jsonString(context.reason)},"dryRun":${context.dryRun}`;
  const probe = context.probe === undefined ? '' : `,"probe":${jsonString(context.probe)}`;
  const probeAs =
    context.probeAs === undefined
      ? ''
      : `,"probeAs":${jsonStringOrNull(context.probeAs)},"probeRequester":${jsonStringOrNull(context.probeRequester ?? null)}`;
  const via = context.via === undefined ? '' : `,"via":${jsonString(context.via)}`;
  return { service: jsonString(context.service), middle, suffix: probe + probeAs + via };
}

/** The latency as a decision line writes it: a finite number (0 for anything else). */
export function latencyJson(latencyMs: number): string {
  return Number.isFinite(latencyMs) ? String(latencyMs) : '0';
}

/**
 * One event as one line of JSON (without the newline), field by field in a fixed order: the text
 * JSON.stringify gives for an event with finite latency. What the writer's thread assembles from the
 * ring is the same text (audit-ring.test.ts).
 */
export function decisionToJson(event: DecisionEvent): string {
  const context = contextJson(event);
  return (
    `{"time":${jsonString(event.time)},"service":${context.service},"requestId":${jsonString(event.requestId)}` +
    `${context.middle},"latencyMs":${latencyJson(event.latencyMs)},"traceId":${jsonStringOrNull(event.traceId)}` +
    `${context.suffix}}`
  );
}
