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

// Consecutive events mostly share service, caller, route, action and policy version.
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

/**
 * One event as one line of JSON, field by field in a fixed order: the same text JSON.stringify
 * gives, at a fraction of its cost on the request path of a busy service.
 */
export function decisionToJson(event: DecisionEvent): string {
  let policyIds = '';
  for (let i = 0; i < event.policyIds.length; i++) policyIds += (i === 0 ? '' : ',') + jsonStringRemembered(event.policyIds[i] as string);
  return `{"time":"${event.time}","service":${jsonStringRemembered(event.service)},"requestId":${jsonString(event.requestId)}`
    + `,"caller":${jsonStringRemembered(event.caller)},"sub":${jsonStringOrNull(event.sub)},"txn":${jsonStringOrNull(event.txn)}`
    + `,"method":${jsonStringRemembered(event.method)},"route":${jsonStringRemembered(event.route)},"action":${jsonStringRemembered(event.action)}`
    + `,"resource":${jsonStringRemembered(event.resource)},"decision":"${event.decision}","policyIds":[${policyIds}]`
    + `,"policyVersion":${jsonStringRemembered(event.policyVersion)},"reason":"${event.reason}","dryRun":${event.dryRun}`
    + `,"latencyMs":${Number.isFinite(event.latencyMs) ? event.latencyMs : 0},"traceId":${jsonStringOrNull(event.traceId)}}`;
}
