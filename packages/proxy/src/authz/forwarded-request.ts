/**
 * The client's request as a trusted proxy forwards it, turned into the decision pipeline's facts — the
 * same for every way in (nginx, Traefik, Envoy over HTTP or gRPC): the client certificate the proxy
 * forwarded (verified again by the pipeline, never taken on the proxy's word), the method, the request
 * target as sent (the pipeline refuses ambiguous ones), and only the headers the pipeline reads.
 *
 *   const decision = await decideForwarded(decisions, fromXfccHeader(xfcc), 'GET', '/orders/7?x=1', headers);
 */
import { TARGET_OVERRIDE_HEADERS } from '@lockstep/guard';
import type { Decision, DecisionFacts, Decisions } from '@lockstep/guard/decision';
import type { ForwardedCertificate } from './client-certificate.ts';

/**
 * The request headers the pipeline reads: the Txn-Token, the trace context, the scanner's probe headers,
 * and the headers by which frameworks override the method or path (a request carrying one matches no route).
 */
export const FORWARDED_HEADER_NAMES: readonly string[] = [
  'txn-token',
  'traceparent',
  'lockstep-probe-as',
  'lockstep-probe-requester',
  ...TARGET_OVERRIDE_HEADERS,
];

/** Text without a PEM certificate: the pipeline refuses it as an invalid identity. */
const UNREADABLE_CHAIN = 'an unreadable client certificate header';

/** Only what the pipeline reads from the client's request (names in lower case): never the proxy's own headers. */
export function forwardedHeaders(
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): Record<string, string | readonly string[]> {
  const picked: Record<string, string | readonly string[]> = {};
  for (const name of FORWARDED_HEADER_NAMES) {
    const value = headers[name];
    if (value !== undefined) picked[name] = value;
  }
  return picked;
}

/** Decides (and audits) the forwarded request; an unreadable certificate is an invalid identity, not a missing one. */
export function decideForwarded(
  decisions: Decisions,
  certificate: ForwardedCertificate,
  method: string,
  path: string,
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): Promise<Decision> {
  const facts: DecisionFacts = {
    peerCertificateChain:
      certificate === 'malformed' ? UNREADABLE_CHAIN : certificate === 'absent' ? undefined : certificate.chain,
    method,
    path,
    headers: forwardedHeaders(headers),
  };
  return decisions.decide(facts);
}
