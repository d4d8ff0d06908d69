/**
 * What every adapter shares: the one way to write a refusal (`writeRefusal`, bytes rendered by
 * `renderRefusal`), and the request flow of the adapters that are handed a route table (Express,
 * node:http): admit → refuse, or read and check the body → run the handler inside the admission's
 * async context.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { admissionStorage } from '../context.ts';
import { GuardError, renderRefusal, type RefusalResponse } from '../errors.ts';
import type { Guard } from '../guard.ts';
import { PROBE_ANSWER_HEADERS, probeAnswer, type Admission } from '../pipeline.ts';
import type { TableRoute } from '../route-table.ts';
import { hasBody, readCheckedBody } from '../steps/validate.ts';

/**
 * Writes the refusal `renderRefusal` makes — the only answer an adapter gives on its own. A body the
 * request still carries is not read: the connection closes after the answer.
 */
export function writeRefusal(
  request: IncomingMessage,
  response: ServerResponse,
  error: GuardError,
  requestId: string,
  close = false,
): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const refusal = refusalFor(request, error, requestId, close);
  // Whatever a framework set before the guard decided (x-powered-by…) is not part of the answer.
  for (const name of response.getHeaderNames()) response.removeHeader(name);
  response.writeHead(refusal.status, refusal.headers);
  response.end(refusal.body);
}

/** The refusal `renderRefusal` makes for `request`: no body for HEAD, closing when its body was not read. */
function refusalFor(request: IncomingMessage, error: GuardError, requestId: string, close: boolean): RefusalResponse {
  const unread = hasBody(request) && !request.complete;
  return renderRefusal(error.code, requestId, { head: request.method === 'HEAD', close: close || unread });
}

/** A refusal for a request that has an admission: recorded as a second event, then answered. */
export function refuseAdmitted(
  guard: Guard,
  request: IncomingMessage,
  response: ServerResponse,
  admission: Admission,
  error: unknown,
): void {
  const refusal = error instanceof GuardError ? error : new GuardError('LOCKSTEP_ERR_INTERNAL', describe(error));
  if (refusal.code === 'LOCKSTEP_ERR_INTERNAL') {
    const fields = { requestId: admission.requestId, error: describe(error, true) };
    guard.options.logger.error('request failed after admission', fields);
  }
  guard.pipeline.refuseAdmitted(admission, refusal);
  writeRefusal(request, response, refusal, admission.requestId);
}

/** A failure before any admission (the guard itself threw): refused, audited, fail closed. */
export function refuseUnadmitted(
  guard: Guard,
  request: IncomingMessage,
  response: ServerResponse,
  error: unknown,
): void {
  guard.options.logger.error('guard failed before a decision; request refused', { error: describe(error, true) });
  const admission = guard.pipeline.refuseEarly(request, null, new GuardError('LOCKSTEP_ERR_INTERNAL', describe(error)));
  writeRefusal(request, response, admission.refusal as GuardError, admission.requestId);
}

function describe(error: unknown, stack = false): string {
  return error instanceof Error ? (stack ? (error.stack ?? error.message) : error.message) : String(error);
}

/**
 * Runs steps 1–4 for `request`. Resolves to the admission and the checked body when the handler may
 * run (the caller then runs it inside `admissionStorage`), or to null after answering a refusal.
 */
export async function guardInbound(
  guard: Guard,
  request: IncomingMessage,
  response: ServerResponse,
  route: TableRoute | null,
  params?: Readonly<Record<string, string | undefined>>,
): Promise<{ admission: Admission; body: unknown } | null> {
  const admission = await guard.pipeline.admit(request, route?.security ?? null, params);
  if (!admission.allowed) {
    writeRefusal(request, response, admission.refusal as GuardError, admission.requestId);
    return null;
  }
  let body: unknown;
  try {
    body = await readCheckedBody(request, response, route?.body, guard.options.limits.bodyBytes);
  } catch (error) {
    refuseAdmitted(guard, request, response, admission, error);
    return null;
  }
  if (admission.probe) {
    // A scanner's request was decided and validated like any other; it never runs the handler.
    const answer = probeAnswer(admission.requestId);
    response.writeHead(200, { ...PROBE_ANSWER_HEADERS, 'content-length': Buffer.byteLength(answer) });
    response.end(answer);
    return null;
  }
  return { admission, body };
}

export function runAdmitted<T>(admission: Admission, fn: () => T): T {
  return admissionStorage.run(admission, fn);
}
