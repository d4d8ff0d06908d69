/**
 * Forwards an admitted request to the unmodified service on loopback (or its Unix socket) and
 * streams the answer back. Bounded: connecting, waiting for the answer's headers and each silence
 * in its body are timed (undici's timeouts), so a hanging upstream costs a 504, not a connection
 * held for ever; an upstream that is down is a 502. Both are the guard's refusals
 * (LOCKSTEP_ERR_UPSTREAM_TIMEOUT / _UNAVAILABLE): audited as a second event for the admitted request,
 * rendered by its one renderer, and logged with the request id.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Pool, type Dispatcher } from 'undici';
import { GuardError, renderRefusal, type Admission, type Guard } from '@lockstep/guard';
import type { SidecarLimits, UpstreamTarget } from './config.ts';
import { isTimeout } from './errors.ts';
import { responseHeaders, upstreamHeaders } from './headers.ts';

export interface Upstream {
  /** Never rejects: a failure is answered (502/504) and logged. */
  forward(request: IncomingMessage, response: ServerResponse, admission: Admission, body: unknown): Promise<void>;
  close(): Promise<void>;
}

export function createUpstream(target: UpstreamTarget, limits: SidecarLimits, guard: Guard): Upstream {
  const { logger } = guard.options;
  const timeouts = {
    connectTimeout: limits.connectTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    bodyTimeout: limits.bodyTimeoutMs,
  };
  const pool =
    'socketPath' in target
      ? new Pool('http://localhost', { ...timeouts, socketPath: target.socketPath })
      : new Pool(target.origin, timeouts);
  const where = 'socketPath' in target ? `unix:${target.socketPath}` : target.origin;

  async function forward(request: IncomingMessage, response: ServerResponse, admission: Admission, body: unknown) {
    // The guard read and checked the body (routes with a body schema only); the upstream gets it as JSON.
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = upstreamHeaders(request.rawHeaders, admission, payload !== undefined, request.socket.remoteAddress);
    if (payload !== undefined) headers.push('content-length', String(Buffer.byteLength(payload)));
    // A client that goes away takes its upstream request with it.
    const abandoned = new AbortController();
    response.once('close', () => {
      if (!response.writableFinished) abandoned.abort();
    });
    const { requestId } = admission;
    let answer: Dispatcher.ResponseData;
    try {
      answer = await pool.request({
        path: request.url ?? '/',
        method: request.method as Dispatcher.HttpMethod,
        headers,
        ...(payload === undefined ? {} : { body: payload }),
        signal: abandoned.signal,
      });
    } catch (error) {
      if (abandoned.signal.aborted) return;
      const code = isTimeout(error) ? 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT' : 'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE';
      logger.error(`upstream ${where} did not answer: ${code}`, { requestId, code, error: describe(error) });
      guard.pipeline.refuseAdmitted(admission, new GuardError(code, `upstream ${where}: ${describe(error)}`));
      if (response.headersSent) {
        response.destroy();
        return;
      }
      // The body was read (or there was none): the connection can carry the next request.
      const refusal = renderRefusal(code, requestId, { head: request.method === 'HEAD' });
      response.writeHead(refusal.status, refusal.headers);
      response.end(refusal.body);
      return;
    }
    response.writeHead(answer.statusCode, responseHeaders(answer.headers));
    try {
      await pipeline(answer.body, response);
    } catch (error) {
      // Headers are sent: all that is left is to cut the connection, so that the client sees a broken answer.
      if (!abandoned.signal.aborted) {
        const code = isTimeout(error) ? 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT' : 'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE';
        const fields = { requestId, code, error: describe(error) };
        logger.error(`upstream ${where} broke off its answer`, fields);
      }
      response.destroy();
    }
  }

  return { forward, close: () => pool.close() };
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' ? `${code}: ${message}` : message;
}
