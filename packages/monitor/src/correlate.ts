/**
 * Correlation: every event of one transaction, across services, as the call chain it was — who
 * called whom, in order, allowed or not, and which hops were a scanner's probes (probes.ts).
 */
import type { ControlPlaneStore } from '@lockstep/control-plane';
import { isProbeEvent } from './probes.ts';

export interface CallChain {
  readonly txn: string;
  readonly sub: string | null;
  readonly hops: readonly {
    readonly service: string;
    readonly caller: string | null;
    readonly action: string | null;
    readonly decision: string;
    readonly reason: string;
    readonly time: string;
    readonly requestId: string;
    /** A scanner's probe, not real traffic. */
    readonly probe: boolean;
  }[];
}

export async function callChain(store: ControlPlaneStore, txn: string): Promise<CallChain> {
  const events = (await store.auditByTxn(txn)).map(
    (stored) => JSON.parse(stored.event) as Record<string, string | null>,
  );
  events.sort((a, b) => String(a.time).localeCompare(String(b.time)));
  return {
    txn,
    sub: events.find((event) => typeof event.sub === 'string')?.sub ?? null,
    hops: events.map((event) => ({
      service: String(event.service),
      caller: event.caller ?? null,
      action: event.action ?? null,
      decision: String(event.decision),
      reason: String(event.reason),
      time: String(event.time),
      requestId: String(event.requestId),
      probe: isProbeEvent(event),
    })),
  };
}
