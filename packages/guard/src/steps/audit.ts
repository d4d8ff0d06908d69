/**
 * Step 5 — audit. One event per decision on the `lockstep:guard:decision` diagnostics channel. The
 * event never carries a token, a key or a body: who (caller SPIFFE ID), on whose behalf (sub, txn),
 * what (action, resource, route), the decision, the deciding policies, the reason code, whether it
 * was a dry run, and how long the guard took. Publishing costs nothing when nobody subscribes; the
 * file sink (and later the monitor shipper) are plain subscribers.
 */
import diagnostics from 'node:diagnostics_channel';

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

const channel = diagnostics.channel(DECISION_CHANNEL);

export function auditEnabled(): boolean {
  return channel.hasSubscribers;
}

export function publishDecision(event: DecisionEvent): void {
  if (channel.hasSubscribers) channel.publish(event);
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

// Events mostly share service, caller, route, action and policy version.
const remembered = new Map<string, string>();
function jsonStringRemembered(value: string | null): string {
  if (value === null) return 'null';
  let json = remembered.get(value);
  if (json === undefined) {
    if (remembered.size >= 1024) remembered.clear();
    remembered.set(value, (json = jsonString(value)));
  }
  return json;
}

/** The part of an event that repeats for every request of one transaction: encoded once, reused. */
type Middle = Pick<
  DecisionEvent,
  | 'caller'
  | 'sub'
  | 'txn'
  | 'method'
  | 'route'
  | 'action'
  | 'resource'
  | 'decision'
  | 'policyIds'
  | 'policyVersion'
  | 'reason'
  | 'dryRun'
> & {
  readonly json: string;
  /** `json` as UTF-8, copied as is into the sink's buffer. */
  readonly bytes: Buffer;
};

// Keyed by transaction (a Txn-Token's strings are the same instances on every request that carries
// it, so the lookup and the comparisons below are pointer checks); bounded, cleared when full.
const middles = new Map<string, Middle>();
const MIDDLES_LIMIT = 4096;

function sameMiddle(middle: Middle, event: DecisionEvent): boolean {
  return (
    middle.caller === event.caller &&
    middle.sub === event.sub &&
    middle.txn === event.txn &&
    middle.method === event.method &&
    middle.route === event.route &&
    middle.action === event.action &&
    middle.resource === event.resource &&
    middle.decision === event.decision &&
    middle.policyVersion === event.policyVersion &&
    middle.reason === event.reason &&
    middle.dryRun === event.dryRun &&
    samePolicyIds(middle.policyIds, event.policyIds)
  );
}

function samePolicyIds(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function middleOf(event: DecisionEvent): Middle {
  const key = event.txn ?? event.caller ?? '';
  const known = middles.get(key);
  if (known !== undefined && sameMiddle(known, event)) return known;
  let policyIds = '';
  for (let i = 0; i < event.policyIds.length; i++)
    policyIds += (i === 0 ? '' : ',') + jsonStringRemembered(event.policyIds[i] as string);
  const json =
    `,"caller":${jsonStringRemembered(event.caller)},"sub":${jsonStringOrNull(event.sub)},"txn":${jsonStringOrNull(event.txn)}` +
    `,"method":${jsonStringRemembered(event.method)},"route":${jsonStringRemembered(event.route)},"action":${jsonStringRemembered(event.action)}` +
    `,"resource":${jsonStringRemembered(event.resource)},"decision":"${event.decision}","policyIds":[${policyIds}]` +
    `,"policyVersion":${jsonStringRemembered(event.policyVersion)},"reason":${jsonString(event.reason)},"dryRun":${event.dryRun}`;
  if (known === undefined && middles.size >= MIDDLES_LIMIT) middles.clear();
  const middle: Middle = {
    caller: event.caller,
    sub: event.sub,
    txn: event.txn,
    method: event.method,
    route: event.route,
    action: event.action,
    resource: event.resource,
    decision: event.decision,
    policyIds: [...event.policyIds],
    policyVersion: event.policyVersion,
    reason: event.reason,
    dryRun: event.dryRun,
    json,
    bytes: Buffer.from(json, 'utf8'),
  };
  middles.set(key, middle);
  return middle;
}

function headOf(event: DecisionEvent): string {
  return `{"time":${jsonString(event.time)},"service":${jsonStringRemembered(event.service)},"requestId":${jsonString(event.requestId)}`;
}

function tailOf(event: DecisionEvent): string {
  const probe = event.probe === undefined ? '' : `,"probe":${jsonString(event.probe)}`;
  const probeAs =
    event.probeAs === undefined
      ? ''
      : `,"probeAs":${jsonStringOrNull(event.probeAs)},"probeRequester":${jsonStringOrNull(event.probeRequester ?? null)}`;
  const via = event.via === undefined ? '' : `,"via":${jsonString(event.via)}`;
  const latency = Number.isFinite(event.latencyMs) ? event.latencyMs : 0;
  return `,"latencyMs":${latency},"traceId":${jsonStringOrNull(event.traceId)}${probe}${probeAs}${via}}`;
}

/**
 * One event as one line of JSON (without the newline), field by field in a fixed order: the same
 * text JSON.stringify gives, at a fraction of its cost. The fields that repeat for every request of
 * a transaction are encoded once and reused while they stay the same.
 */
export function decisionToJson(event: DecisionEvent): string {
  return headOf(event) + middleOf(event).json + tailOf(event);
}

/**
 * Writes `decisionToJson(event)` and a newline into `target` at `offset` as UTF-8 and returns the
 * offset after it, or -1 (nothing written) when the line might not fit. No intermediate string of
 * the whole line is built: the repeating part is copied as bytes.
 */
export function writeDecisionLine(event: DecisionEvent, target: Buffer, offset: number): number {
  const head = headOf(event);
  const middle = middleOf(event).bytes;
  const tail = `${tailOf(event)}\n`;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  if (offset + (head.length + tail.length) * 3 + middle.length > target.length) return -1;
  let at = offset + target.write(head, offset, 'utf8');
  at += middle.copy(target, at);
  return at + target.write(tail, at, 'utf8');
}

/** The most bytes `writeDecisionLine` can need for `event` (for a buffer of the right size). */
export function decisionLineBound(event: DecisionEvent): number {
  return (headOf(event).length + tailOf(event).length + 1) * 3 + middleOf(event).bytes.length;
}
