/**
 * Envoy's ext_authz messages and ours: a decoded `CheckRequest` read into the facts the decision pipeline
 * takes (`readCheckRequest`: refused, never thrown on, when it does not fit), and a decision written as a
 * `CheckResponse` (`checkAnswer`, `deniedAnswer`: the guard's one rendering of a refusal, as
 * `denied_response`). Field names are the .proto's (proto-loader with keepCase), packages/proxy/proto/.
 *
 *   const request = readCheckRequest(call.request, 128);            // GuardError: refuse
 *   callback(null, checkAnswer(await decideForwarded(decisions, certificate, request.method, …)));
 */
import { GuardError, renderRefusal, type GuardErrorCode } from '@lockstep/guard';
import type { Decision } from '@lockstep/guard/decision';
import { FORWARDED_HEADER_NAMES } from './forwarded-request.ts';

const GRPC_OK = 0;
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNAUTHENTICATED = 16;
/** An HTTP method is a token (RFC 9110 §9.1); Envoy sends it as the client did. */
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$/;

/** `envoy.config.core.v3.HeaderValueOption`: a header to set, and whether to append to the client's. */
interface HeaderValueOption {
  readonly header: { readonly key: string; readonly value: string };
  readonly append: { readonly value: boolean };
}

/** What a CheckResponse carries, in the shape of the .proto (proto-loader, keepCase). */
export interface CheckResponse {
  readonly status: { readonly code: number; readonly message: string };
  readonly ok_response?: { readonly headers: HeaderValueOption[]; readonly headers_to_remove: string[] };
  readonly denied_response?: {
    readonly status: { readonly code: number };
    readonly headers: HeaderValueOption[];
    readonly body: string;
  };
}

/** `append: false`: Envoy replaces a header of that name the client sent (old and new Envoys alike). */
function replacing(key: string, value: string): HeaderValueOption {
  return { header: { key, value }, append: { value: false } };
}

/** The decision as Envoy takes it: OK with the headers for the upstream, or the refusal. */
export function checkAnswer(decision: Decision): CheckResponse {
  // An admitted scanner probe must never reach the service: refused here, its code says why.
  if (!decision.allowed || decision.admission.probe)
    return deniedAnswer(decision.code ?? 'LOCKSTEP_ERR_DENIED', decision.requestId);
  const caller = decision.admission.peer?.spiffeId;
  return {
    status: { code: GRPC_OK, message: '' },
    ok_response: {
      headers: [
        replacing('lockstep-request-id', decision.requestId),
        ...(caller === undefined ? [] : [replacing('lockstep-caller', caller)]),
      ],
      // A public route has no caller: the upstream must not see one the client wrote.
      headers_to_remove: caller === undefined ? ['lockstep-caller'] : [],
    },
  };
}

/** The guard's one rendering of the refusal, as Envoy sends it to the client. */
export function deniedAnswer(code: GuardErrorCode, requestId: string): CheckResponse {
  const refusal = renderRefusal(code, requestId);
  return {
    status: { code: refusal.status === 401 ? GRPC_UNAUTHENTICATED : GRPC_PERMISSION_DENIED, message: code },
    denied_response: {
      status: { code: refusal.status },
      // Envoy frames the local reply itself: its length and connection handling are its own.
      headers: Object.entries(refusal.headers)
        .filter(([name]) => name !== 'content-length' && name !== 'connection')
        .map(([name, value]) => replacing(name, value)),
      body: refusal.body,
    },
  };
}

export interface ForwardedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  readonly certificate: string;
}

/**
 * The facts of a decoded CheckRequest, or why it cannot be decided. Decoded with defaults, so absent
 * strings are '' and absent messages null; anything else unexpected is refused, never thrown on.
 */
export function readCheckRequest(decoded: unknown, maxHeaders: number): ForwardedRequest | GuardError {
  const invalid = (detail: string) => new GuardError('LOCKSTEP_ERR_INPUT_INVALID', detail);
  const attributes = field(decoded, 'attributes');
  const http = field(field(attributes, 'request'), 'http');
  const method = field(http, 'method');
  const path = field(http, 'path');
  if (typeof method !== 'string' || !METHOD.test(method))
    return invalid('attributes.request.http.method is required: the method of the client request');
  if (typeof path !== 'string' || path === '')
    return invalid('attributes.request.http.path is required: the target of the client request');
  const headerMap = field(http, 'headers');
  const headerLines = field(field(http, 'header_map'), 'headers');
  const entries: [unknown, unknown][] = [
    ...(isObject(headerMap) ? Object.entries(headerMap) : []),
    ...(Array.isArray(headerLines)
      ? (headerLines as unknown[]).map((line): [unknown, unknown] => [field(line, 'key'), headerValue(line)])
      : []),
  ];
  if (entries.length > maxHeaders) return invalid(`more than ${maxHeaders} request headers`);
  const headers: Record<string, string[]> = {};
  for (const [name, value] of entries) {
    if (typeof name !== 'string' || typeof value !== 'string') return invalid('a request header is not text');
    const key = name.toLowerCase();
    if (FORWARDED_HEADER_NAMES.includes(key)) (headers[key] ??= []).push(value);
  }
  const certificate = field(field(attributes, 'source'), 'certificate');
  return {
    method,
    path,
    // One value is a string, repeats (from `header_map`) stay a list: the Txn-Token step refuses duplicates.
    headers: Object.fromEntries(
      Object.entries(headers).map(([name, values]) => [name, values.length === 1 ? (values[0] as string) : values]),
    ),
    certificate: typeof certificate === 'string' ? certificate : '',
  };
}

/** `value`, else `raw_value` (bytes, as Latin-1 so that every byte stays one character). */
function headerValue(line: unknown): unknown {
  const value = field(line, 'value');
  const raw = field(line, 'raw_value');
  if (typeof value === 'string' && value !== '') return value;
  return raw instanceof Uint8Array && raw.length > 0 ? Buffer.from(raw).toString('latin1') : value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function field(value: unknown, name: string): unknown {
  return isObject(value) && Object.hasOwn(value, name) ? value[name] : undefined;
}
