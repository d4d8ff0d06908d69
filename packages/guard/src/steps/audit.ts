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
