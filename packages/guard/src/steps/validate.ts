/**
 * Step 4 — input. Runs only after the request has been authorized, so an unauthenticated caller
 * never makes the service read or parse a body. The same rules on every adapter:
 * - a route without a body schema takes no body (a request that carries one is refused, so that no
 *   body reaches a handler unread and unchecked, whatever the framework would have done with it);
 * - a body is JSON (`application/json` or `application/*+json`), within the size limit — both
 *   checked from the headers before a byte is read, and before `100 Continue` is sent;
 * - it is parsed by the one strict parser (`parseStrictJson`: no duplicate or prototype keys, no
 *   control characters) and then checked against the route's schema.
 * Fastify validates with its own JSON-schema compiler (configured by the plugin to reject, not strip
 * or coerce); the Express and node:http adapters check with zod through `checkBody`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { GuardError } from '../errors.ts';
import { parseStrictJson, StrictJsonError } from '../strict-json.ts';

/** A zod schema, or anything with the same `safeParse` shape. */
export interface BodySchema<T = unknown> {
  safeParse(
    value: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> } };
}

type RequestHead = Pick<IncomingMessage, 'headers'>;

export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const type = header.split(';', 1)[0]?.trim().toLowerCase();
  return type === 'application/json' || (type !== undefined && /^application\/[a-z0-9.+-]+\+json$/.test(type));
}

/** The request says it carries a body (an empty `content-length: 0` is none). */
export function hasBody(request: RequestHead): boolean {
  const declared = request.headers['content-length'];
  return declared !== undefined ? declared !== '0' : request.headers['transfer-encoding'] !== undefined;
}

/**
 * What the headers say about the body, checked before any of it is read: null when it may be read.
 * `schema` says whether the route declares a body schema.
 */
export function checkBodyHeaders(request: RequestHead, schema: boolean, limit: number): GuardError | null {
  if (!schema) {
    const fix =
      'To accept a JSON body, give it one: schema.body on Fastify, body: zodSchema in an Express or ' +
      'node:http route table';
    return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', `this route takes no body: it declares no body schema. ${fix}`);
  }
  const type = request.headers['content-type'];
  if (!isJsonContentType(type)) {
    const detail = `content-type ${JSON.stringify(type ?? '')} is not JSON`;
    return new GuardError('LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE', detail);
  }
  const declared = request.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE', `content-length ${declared} exceeds ${limit} bytes`);
  }
  return null;
}

/**
 * Node answers `Expect: 100-continue` only when told to (`guard.attach` takes the automatic answer
 * away): the client sends the body once the request was authorized and its headers checked.
 */
export function continueIfExpected(request: IncomingMessage, response: ServerResponse): void {
  if (request.headers.expect?.toLowerCase() === '100-continue' && !response.headersSent) response.writeContinue();
}

/** Reads at most `limit` bytes; beyond that it stops reading (the refusal then closes the connection). */
export function readBodyBytes(stream: Readable, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (error: GuardError | null) => {
      stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (error === null) resolve(Buffer.concat(chunks, size));
      else {
        stream.pause();
        reject(error);
      }
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) settle(new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE', `body exceeds ${limit} bytes`));
      else chunks.push(chunk);
    };
    const onEnd = () => settle(null);
    const invalid = (detail: string) => new GuardError('LOCKSTEP_ERR_INPUT_INVALID', detail);
    const onError = (error: Error) => settle(invalid(`body could not be read: ${error.message}`));
    const onClose = () => settle(invalid('the connection closed before the body ended'));
    stream.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

/** The strict parser, its refusal in the catalogue: 400 with the reason as the detail. */
export function parseJsonBody(bytes: Uint8Array): unknown {
  try {
    return parseStrictJson(bytes);
  } catch (error) {
    const detail = error instanceof StrictJsonError ? `${error.problem}: ${error.message}` : 'body is not valid JSON';
    throw new GuardError('LOCKSTEP_ERR_INPUT_INVALID', detail);
  }
}

/**
 * Step 4 for the adapters that read the body themselves (Express, node:http): the checked body, or
 * undefined for a route without a schema; throws the GuardError to refuse with.
 */
export async function readCheckedBody(
  request: IncomingMessage,
  response: ServerResponse,
  schema: BodySchema | undefined,
  limit: number,
): Promise<unknown> {
  if (!hasBody(request)) return schema === undefined ? undefined : checkBody(schema, undefined);
  const refusal = checkBodyHeaders(request, schema !== undefined, limit);
  if (refusal !== null) throw refusal;
  continueIfExpected(request, response);
  const value = parseJsonBody(await readBodyBytes(request, limit));
  return schema === undefined ? value : checkBody(schema, value);
}

export function checkBody<T>(schema: BodySchema<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new GuardError(
    'LOCKSTEP_ERR_INPUT_INVALID',
    issue ? `${issue.path.map(String).join('.') || 'body'}: ${issue.message}` : 'body does not match the schema',
  );
}

/** Maps an error thrown by Fastify's body parsing or validation to the guard's catalogue, or null. */
export function guardErrorFromFastify(error: {
  code?: string;
  validation?: unknown;
  statusCode?: number;
  message: string;
}): GuardError | null {
  if (error.validation !== undefined) return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', error.message);
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE', error.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new GuardError('LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE', error.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', error.message);
    default:
      if (error instanceof SyntaxError || (error.statusCode === 400 && error.code?.startsWith('FST_ERR_CTP'))) {
        return new GuardError('LOCKSTEP_ERR_INPUT_INVALID', error.message);
      }
      return null;
  }
}
