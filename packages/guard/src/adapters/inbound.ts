/**
 * The request flow shared by the adapters that are handed a route table (Express, node:http):
 * admit → refuse or read and check the body → run the handler inside the admission's async context.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { admissionStorage } from '../context.ts';
import { GuardError, errorBody } from '../errors.ts';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import type { TableRoute } from '../route-table.ts';
import { checkBody, readJsonBody } from '../steps/validate.ts';

export function sendRefusal(response: ServerResponse, error: GuardError, requestId: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = errorBody(error.code, requestId);
  response.writeHead(error.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
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
  if (route?.body === undefined) return { admission, body: undefined };
  try {
    const raw = await readJsonBody(request, guard.options.limits.bodyBytes);
    return { admission, body: checkBody(route.body, raw) };
  } catch (error) {
    const refusal = error instanceof GuardError ? error : new GuardError('LOCKSTEP_ERR_INPUT_INVALID', String(error));
    guard.pipeline.refuseInput(admission, refusal);
    sendRefusal(response, refusal, admission.requestId);
    return null;
  }
}

export function runAdmitted<T>(admission: Admission, fn: () => T): T {
  return admissionStorage.run(admission, fn);
}
