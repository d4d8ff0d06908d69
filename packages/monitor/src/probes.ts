/**
 * A scanner's probes in the audit trail. `lockstep scan` attacks every service on purpose; its
 * requests are counted apart from real traffic (deny rates, the service graph, the events page,
 * detections) and shown on their own. Only what a guard verified marks a probe:
 *
 * - `probe`: the scanner's SPIFFE ID, written by the guard for a request from a verified scanner SVID,
 *   or for one its transport step refused that carried a valid probe proof (a JWS by the scanner's key
 *   over the request, bound to a probe token the control plane signed: @lockstep/guard's
 *   steps/probe-proof.ts);
 * - `probeAs` alone: how a guard older than `probe` marked a verified scanner's request.
 *
 * A request that merely says it is a probe — a header, a claim, a name — gets neither: an attacker
 * cannot hide among the probes. What a guard cannot verify (plain HTTP to its TLS port, a request it
 * cannot parse, sent without a certificate) counts as real traffic, even when the scanner sent it.
 */

export type AuditEvent = Readonly<Record<string, unknown>>;

/** True for a scanner's probe, as the guard that decided it verified. */
export function isProbeEvent(event: AuditEvent): boolean {
  return typeof event.probe === 'string' || event.probeAs !== undefined;
}

/** The scanner that sent a probe event (`probe`, or the caller of an event older than `probe`), or null. */
export function scannerOf(event: AuditEvent): string | null {
  if (typeof event.probe === 'string') return event.probe;
  return isProbeEvent(event) && typeof event.caller === 'string' ? event.caller : null;
}
