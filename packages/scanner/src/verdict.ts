/**
 * Which step refused an attempt, read from the guard's answer. The scanner never asks "was it
 * refused?" but "was it refused by the step that should have refused it?": its own identity is
 * permitted nowhere, so an attempt that passes transport and token checks ends in a policy denial —
 * a certificate attack answered 403 means the certificate was accepted.
 */
import type { Answer } from './send.ts';

export type Step = 'connection' | 'transport' | 'token' | 'authorization' | 'input' | 'admitted' | 'unknown';

const RANK: Record<Step, number> = {
  connection: 0,
  transport: 1,
  token: 2,
  authorization: 3,
  input: 4,
  admitted: 5,
  unknown: 6,
};

const BY_CODE: [RegExp, Step][] = [
  [/^LOCKSTEP_ERR_(PEER_|TLS_HANDSHAKE)/, 'transport'],
  [/^LOCKSTEP_ERR_TXN_TOKEN_/, 'token'],
  // No policy yet and internal failures refuse too (fail closed): as late as a policy denial.
  [/^LOCKSTEP_ERR_(DENIED|ROUTE_UNKNOWN|PROBE_INVALID|NO_POLICY|INTERNAL)$/, 'authorization'],
  [/^LOCKSTEP_ERR_(INPUT_INVALID|BODY_TOO_LARGE|UNSUPPORTED_MEDIA_TYPE|HEADERS_TOO_LARGE)$/, 'input'],
];

export function stepOf(answer: Answer): Step {
  if (answer.status === null) return 'connection';
  if (answer.code !== null) {
    for (const [pattern, step] of BY_CODE) if (pattern.test(answer.code)) return step;
  }
  if (answer.probeAdmitted || answer.status < 400) return 'admitted';
  return 'unknown';
}

/** Refused at `step` or earlier. */
export function refusedBy(answer: Answer, step: Step): boolean {
  const reached = stepOf(answer);
  return reached !== 'unknown' && reached !== 'admitted' && RANK[reached] <= RANK[step];
}

/** One line a reader can check. */
export function describeAnswer(answer: Answer): string {
  if (answer.status === null) return `no HTTP answer (${answer.error ?? 'closed'})`;
  const code = answer.code ?? (answer.probeAdmitted ? 'admitted (probe)' : 'no guard code');
  return `HTTP ${answer.status} ${code}${answer.requestId === null ? '' : ` (request ${answer.requestId})`}`;
}
