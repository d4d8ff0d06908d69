/**
 * One JSON request to the control plane, asked of its replicas in turn (`withFailover`): what the CLI's
 * admin commands and the scanner's setup calls both make. A replica that answers 502/503/504 (starting,
 * cut from its store, a proxy with no upstream) is left for the next; any other answer — a refusal
 * included — is the control plane's, returned as it is. What could not be asked of any replica throws
 * the last failure: a connection error, or an Error with the `status` of a 502/503/504 answer.
 */
import { isFailover, type ControlPlaneEndpoints } from '@lockstep/identity';
import { request } from 'undici';
import { controlPlaneAgent, type ControlPlaneTls } from './control-plane-agent.ts';
import { connectTimeoutFor, unexpectedAnswer, withFailover } from './failover.ts';

export interface JsonCall {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly body?: unknown;
  /** Asked again of the next replica after a failure once sent (default: GETs only). */
  readonly idempotent?: boolean;
  /** For all replicas together. */
  readonly deadlineMs: number;
  /** For each replica, when there are several. */
  readonly attemptMs: number;
}

export interface JsonAnswer {
  readonly status: number;
  readonly answer: Record<string, unknown>;
}

export async function callControlPlane(
  endpoints: ControlPlaneEndpoints,
  trustDomain: string,
  tls: ControlPlaneTls,
  call: JsonCall,
): Promise<JsonAnswer> {
  const several = endpoints.urls.length > 1;
  const agent = controlPlaneAgent(trustDomain, tls, undefined, connectTimeoutFor(endpoints));
  const payload =
    call.body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(call.body) };
  try {
    return await withFailover(
      endpoints,
      async (base, signal) => {
        const response = await request(new URL(call.path, base), {
          method: call.method,
          dispatcher: agent,
          signal,
          ...payload,
        });
        // An answer that is not JSON is no control plane's: isFailover moves on from the SyntaxError.
        const answer = (await response.body.json()) as Record<string, unknown>;
        if (isFailover(response.statusCode))
          throw unexpectedAnswer(refusalOf(call, response.statusCode, answer), response.statusCode);
        return { status: response.statusCode, answer };
      },
      {
        idempotent: call.idempotent ?? call.method === 'GET',
        deadlineMs: call.deadlineMs,
        ...(several ? { attemptMs: call.attemptMs } : {}),
      },
    );
  } finally {
    await agent.close();
  }
}

/** `POST /v1/admin/… refused (403 LOCKSTEP_CP_…): <message>`: a refusal, said the same way everywhere. */
export function refusalOf(call: Pick<JsonCall, 'method' | 'path'>, status: number, answer: Record<string, unknown>) {
  return `${call.method} ${call.path} refused (${status} ${String(answer.error ?? '')}): ${String(answer.message ?? '')}`;
}
