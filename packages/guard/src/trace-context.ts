/** W3C Trace Context: read the inbound `traceparent`, make the one for an outbound call. */
import { randomBytes } from 'node:crypto';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);

/** The trace id of a valid version-00 `traceparent` (all-zero ids are invalid), else null. Runs per request: no captures. */
export function traceIdOf(traceparent: string | undefined): string | null {
  if (traceparent === undefined || traceparent.length !== 55 || !TRACEPARENT.test(traceparent)) return null;
  const traceId = traceparent.slice(3, 35);
  return traceId === ZERO_TRACE_ID || traceparent.slice(36, 52) === ZERO_PARENT_ID ? null : traceId;
}

/** A child of the inbound trace (same trace id, new parent id), or a new trace. */
export function outboundTraceparent(inbound: string | null): string {
  const match = inbound === null ? null : TRACEPARENT.exec(inbound);
  const traceId = match ? (match[1] as string) : randomBytes(16).toString('hex');
  const flags = match ? (match[3] as string) : '01';
  return `00-${traceId}-${randomBytes(8).toString('hex')}-${flags}`;
}
