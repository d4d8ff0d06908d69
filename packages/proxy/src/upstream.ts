/**
 * Forwards an admitted request to the unmodified service on loopback (or its Unix socket) and
 * streams the answer back. Bounded: connecting, waiting for the answer's headers and each silence
 * in its body are timed (undici's timeouts), so a hanging upstream costs a 504, not a connection
 * held for ever; an upstream that is down is a 502. Both are the guard's refusals
 * (LOCKSTEP_ERR_UPSTREAM_TIMEOUT / _UNAVAILABLE): audited as a second event for the admitted request,
 * rendered by its one renderer, and logged with the request id.
 *
 *   const upstream = createUpstream(config.upstream, config.limits, guard);
 *   lockstepHttp(guard, routes, (request, response, { admission, body }) =>
 *     upstream.forward(request, response, admission, body), { foreignServer: true });
 *
 * The answer is written into the client's response from undici's dispatch callbacks (`Exchange`),
 * with the upstream paused while the client is slow to read: no response stream, no `stream.pipeline`
 * and no AbortController per request. That halves the hop's own CPU per request (docs/performance-notes.md,
 * "Mesh mode"); what it answers is unchanged.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { GuardError, renderRefusal, type Admission, type Guard, type GuardLogger } from '@lockstep/guard';
import type { SidecarLimits, UpstreamTarget } from './config.ts';
import { isTimeout } from './errors.ts';
import { responseHeaders, upstreamHeaders } from './headers.ts';

export interface Upstream {
  /**
   * Resolves once the answer is written (or the client went away). A failure of the upstream is
   * answered (502/504) and logged, never rejected; rejects only when the upstream's answer cannot be
   * written (e.g. a header Node refuses): the guard's adapter answers 500 and audits it.
   */
  forward(request: IncomingMessage, response: ServerResponse, admission: Admission, body: unknown): Promise<void>;
  close(): Promise<void>;
}

/** What every exchange of one upstream shares. */
interface Hop {
  readonly guard: Guard;
  readonly logger: GuardLogger;
  /** The upstream, as logs and refusals name it. */
  readonly where: string;
}

export function createUpstream(target: UpstreamTarget, limits: SidecarLimits, guard: Guard): Upstream {
  const timeouts = {
    connectTimeout: limits.connectTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    bodyTimeout: limits.bodyTimeoutMs,
  };
  const pool =
    'socketPath' in target
      ? new Pool('http://localhost', { ...timeouts, socketPath: target.socketPath })
      : new Pool(target.origin, timeouts);
  const hop: Hop = {
    guard,
    logger: guard.options.logger,
    where: 'socketPath' in target ? `unix:${target.socketPath}` : target.origin,
  };

  function forward(request: IncomingMessage, response: ServerResponse, admission: Admission, body: unknown) {
    // A client that is already gone (while its body was read) sends nothing upstream.
    if (response.destroyed) return Promise.resolve();
    // The guard read and checked the body (routes with a body schema only); the upstream gets it as JSON.
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = upstreamHeaders(request.rawHeaders, admission, payload !== undefined, request.socket.remoteAddress);
    if (payload !== undefined) headers.push('content-length', String(Buffer.byteLength(payload)));
    return new Promise<void>((resolve, reject) => {
      const exchange = new Exchange(hop, request, response, admission, resolve, reject);
      // A client that goes away takes its upstream request with it.
      response.once('close', () => exchange.clientClosed());
      pool.dispatch(
        {
          path: request.url ?? '/',
          method: request.method as Dispatcher.HttpMethod,
          headers,
          ...(payload === undefined ? {} : { body: payload }),
        },
        exchange,
      );
    });
  }

  return { forward, close: () => pool.close() };
}

/** Why the sidecar aborted an upstream request: its client went away first. */
class ClientGone extends Error {
  constructor() {
    super('the client went away before the answer was written');
  }
}

/**
 * One request to the upstream and its answer, written into the client's `response` as it arrives:
 * head, then each chunk (the upstream paused while the client's socket is full), then the end. A
 * failure before the head is the guard's 502/504; after it, the client's connection is cut so that
 * it sees a broken answer, never a complete-looking one.
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #hop: Hop;
  readonly #request: IncomingMessage;
  readonly #response: ServerResponse;
  readonly #admission: Admission;
  readonly #resolve: () => void;
  readonly #reject: (error: unknown) => void;
  #controller: Dispatcher.DispatchController | null = null;
  #clientGone = false;
  #settled = false;

  constructor(
    hop: Hop,
    request: IncomingMessage,
    response: ServerResponse,
    admission: Admission,
    resolve: () => void,
    reject: (error: unknown) => void,
  ) {
    this.#hop = hop;
    this.#request = request;
    this.#response = response;
    this.#admission = admission;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  /** The client's response closed: unless the answer was complete, the upstream request is dropped. */
  clientClosed(): void {
    if (this.#response.writableFinished || this.#settled) return;
    this.#clientGone = true;
    this.#controller?.abort(new ClientGone());
    this.#settle();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // The client went away while the request waited for a connection to the upstream.
    if (this.#clientGone) controller.abort(new ClientGone());
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    // Informational answers (103 Early Hints) are the upstream's business; the client gets the final one.
    if (statusCode < 200 || this.#settled) return;
    try {
      this.#response.writeHead(statusCode, responseHeaders(headers));
    } catch (error) {
      // An answer Node will not write (a header it refuses): the guard's adapter answers 500 and audits it.
      this.#settled = true;
      controller.abort(error as Error);
      this.#reject(error);
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    // The client's socket is full: the upstream waits until it has drained.
    if (!this.#response.write(chunk) && !this.#response.destroyed) {
      controller.pause();
      this.#response.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (this.#settled) return;
    this.#response.end();
    this.#settle();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.#settled || this.#clientGone) {
      this.#settle();
      return;
    }
    const { guard, logger, where } = this.#hop;
    const { requestId } = this.#admission;
    const code = isTimeout(error) ? 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT' : 'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE';
    const response = this.#response;
    if (response.headersSent) {
      // Headers are sent: all that is left is to cut the connection, so that the client sees a broken answer.
      logger.error(`upstream ${where} broke off its answer`, { requestId, code, error: describe(error) });
      response.destroy();
      this.#settle();
      return;
    }
    logger.error(`upstream ${where} did not answer: ${code}`, { requestId, code, error: describe(error) });
    guard.pipeline.refuseAdmitted(this.#admission, new GuardError(code, `upstream ${where}: ${describe(error)}`));
    // The body was read (or there was none): the connection can carry the next request.
    const refusal = renderRefusal(code, requestId, { head: this.#request.method === 'HEAD' });
    response.writeHead(refusal.status, refusal.headers);
    response.end(refusal.body);
    this.#settle();
  }

  #settle(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#resolve();
  }
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' ? `${code}: ${message}` : message;
}
