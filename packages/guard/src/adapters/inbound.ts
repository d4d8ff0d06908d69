/**
 * The request flow shared by the adapters that are handed a route table (Express, node:http):
 * admit → refuse or read and check the body → run the handler inside the admission's async context.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { admissionStorage } from '../context.ts';
import { ERROR_HEADER, GuardError, errorBody } from '../errors.ts';
import type { Guard } from '../guard.ts';
import { PROBE_ANSWER_HEADERS, probeAnswer, type Admission } from '../pipeline.ts';
import type { TableRoute } from '../route-table.ts';
import { checkBody, readJsonBody } from '../steps/validate.ts';

export function sendRefusal(response: ServerResponse, error: GuardError, requestId: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = errorBody(error.code, requestId);
  response.writeHead(error.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), [ERROR_HEADER]: error.code });
  response.end(body);
}

/**
 * Runs steps 1–4 for `request`. Resolves to the admission and the checked body when the handler may
 * run (the caller then runs it inside `admissionStorage`), or to null after answering a refusal.
 */
export async function guardInbound(guard: Guard, request: IncomingMessage, response: ServerResponse, route: TableRoute | null, params?: Readonly<Record<string, string | undefined>>): Promise<{ admission: Admission; body: unknown } | null> {
  const admission = await guard.pipeline.admit(request, route?.security ?? null, params);
  if (!admission.allowed) {
    sendRefusal(response, admission.refusal as GuardError, admission.requestId);
    return null;
  }
  let body: unknown;
  if (route?.body !== undefined) {
    try {
      body = checkBody(route.body, await readJsonBody(request, guard.options.limits.bodyBytes));
    } catch (error) {
      const refusal = error instanceof GuardError ? error : new GuardError('LOCKSTEP_ERR_INPUT_INVALID', String(error));
      guard.pipeline.refuseInput(admission, refusal);
      sendRefusal(response, refusal, admission.requestId);
      return null;
    }
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
