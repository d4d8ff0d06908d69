/**
 * Step 4 — input. Runs only after the request has been authorized, so an unauthenticated caller
 * never makes the service read or parse a body. Fastify validates with its own JSON-schema compiler
 * (configured by the plugin to reject, not strip, unknown properties) and its errors are mapped here;
 * the Express and node:http adapters read and check the body with these functions.
 */
import type { IncomingMessage } from 'node:http';
import secureJson from 'secure-json-parse';
import { GuardError } from '../errors.ts';

/** A zod schema, or anything with the same `safeParse` shape. */
export interface BodySchema<T = unknown> {
  safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> } };
}

export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const type = header.split(';', 1)[0]?.trim().toLowerCase();
  return type === 'application/json' || (type !== undefined && /^application\/[a-z0-9.+-]+\+json$/.test(type));
}

/** Reads a JSON body under `limit` bytes, refusing other content types and oversized bodies. */
export async function readJsonBody(request: IncomingMessage, limit: number): Promise<unknown> {
  const declared = request.headers['content-length'];
  const hasBody = declared !== undefined ? declared !== '0' : request.headers['transfer-encoding'] !== undefined;
  if (!hasBody) return undefined;
  if (!isJsonContentType(request.headers['content-type'])) {
    request.resume();
    throw new GuardError('LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE', `content-type ${JSON.stringify(request.headers['content-type'] ?? '')} is not JSON`);
  }
  if (declared !== undefined && Number(declared) > limit) {
    request.resume();
    throw new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE', `content-length ${declared} exceeds ${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      request.resume();
      throw new GuardError('LOCKSTEP_ERR_BODY_TOO_LARGE', `body exceeds ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  try {
    return secureJson.parse(Buffer.concat(chunks).toString('utf8'), undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch {
    throw new GuardError('LOCKSTEP_ERR_INPUT_INVALID', 'body is not valid JSON');
  }
}

export function checkBody<T>(schema: BodySchema<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new GuardError('LOCKSTEP_ERR_INPUT_INVALID', issue ? `${issue.path.map(String).join('.') || 'body'}: ${issue.message}` : 'body does not match the schema');
}

/** Maps an error thrown by Fastify's body parsing or validation to the guard's catalogue, or null. */
export function guardErrorFromFastify(error: { code?: string; validation?: unknown; statusCode?: number; message: string }): GuardError | null {
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
