/** W3C Trace Context: read the inbound `traceparent`, make the one for an outbound call. */
import { randomBytes } from 'node:crypto';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function traceIdOf(traceparent: string | undefined): string | null {
  if (traceparent === undefined) return null;
  const match = TRACEPARENT.exec(traceparent);
  if (!match || /^0+$/.test(match[1] as string) || /^0+$/.test(match[2] as string)) return null;
  return match[1] as string;
}

/** A child of the inbound trace (same trace id, new parent id), or a new trace. */
export function outboundTraceparent(inbound: string | null): string {
  const match = inbound === null ? null : TRACEPARENT.exec(inbound);
  const traceId = match ? (match[1] as string) : randomBytes(16).toString('hex');
  const flags = match ? (match[3] as string) : '01';
  return `00-${traceId}-${randomBytes(8).toString('hex')}-${flags}`;
}
