/**
 * The egress: the app's outbound calls, in plain HTTP on loopback, leave as mTLS with the sidecar's
 * current SVID. The app names the service that must answer in `lockstep-target`; its address comes
 * from the configuration (`egress.targets`), and the server must present
 * `spiffe://<td>/svc/<target>` — a server that names another service is refused during the handshake,
 * before the request or its Txn-Token is sent. The app forwards the `txn-token` it was given, as it
 * would a trace context: a call without one is refused here, since every guarded server would refuse it.
 *
 *   curl -H 'lockstep-target: payments' -H "txn-token: $TXN_TOKEN" http://127.0.0.1:15001/charges
 *
 * On a host shared with other users, prefer `egress.socket`: a Unix socket made 0600, so that only the
 * sidecar's user (the app's) can reach it; a loopback port is open to every local process.
 *
 *   curl --unix-socket /run/orders/egress.sock -H 'lockstep-target: payments' -H "txn-token: $TXN_TOKEN" http://localhost/charges
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';
import { ambiguousPath, type GuardLogger } from '@lockstep/guard';
import type { WorkloadAgent } from '@lockstep/workload';
import type { SidecarLimits } from './config.ts';
import { isTimeout, writeEgressError } from './errors.ts';
import { egressHeaders, responseHeaders, TXN_TOKEN_HEADER } from './headers.ts';

export const TARGET_HEADER = 'lockstep-target';

export interface EgressOptions {
  readonly agent: Pick<WorkloadAgent, 'request'>;
  readonly listen: { readonly port: number } | { readonly socketPath: string };
  readonly targets: Readonly<Record<string, string>>;
  readonly limits: SidecarLimits;
  readonly logger: GuardLogger;
}

/** Connection-level failures: the server is not there. Anything else before an answer is a refusal of the server. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
]);

/**
 * Listens on 127.0.0.1 only (anything on the network could otherwise borrow the sidecar's identity),
 * or on a Unix socket made 0600. The URL is `http://127.0.0.1:<port>` or `unix:<path>`.
 */
export async function startEgress(options: EgressOptions): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => void handle(options, request, response));
  const { listen } = options;
  if ('socketPath' in listen) await removeStaleSocket(listen.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const listening = () => {
      server.off('error', reject);
      resolve();
    };
    if ('socketPath' in listen) server.listen(listen.socketPath, listening);
    else server.listen(listen.port, '127.0.0.1', listening);
  });
  if ('socketPath' in listen) {
    try {
      await chmod(listen.socketPath, 0o600);
    } catch (error) {
      server.close();
      throw error;
    }
    return { url: `unix:${listen.socketPath}`, server };
  }
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, server };
}

/** A socket file left by a sidecar that died is removed; one that answers is another sidecar's: EADDRINUSE. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const stat = await lstat(socketPath).catch(() => null);
  if (stat === null) return;
  if (!stat.isSocket()) {
    const error = new Error(`${socketPath} exists and is not a socket: choose another egress.socket`);
    throw Object.assign(error, { code: 'EADDRINUSE' });
  }
  const answered = await new Promise<boolean>((resolve) => {
    const probe = connect(socketPath, () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answered) {
    const error = new Error(`another process listens on ${socketPath}: stop it, or choose another egress.socket`);
    throw Object.assign(error, { code: 'EADDRINUSE' });
  }
  await unlink(socketPath);
}

async function handle(options: EgressOptions, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const { targets, limits } = options;
  const address = request.socket.address();
  // A browser page tricked into calling 127.0.0.1 (DNS rebinding) sends its own host name: refused.
  // A Unix socket is out of a browser's reach: any Host will do there.
  const port = typeof address === 'object' && 'port' in address ? address.port : null;
  const host = request.headers.host ?? '';
  if (port !== null && ![`127.0.0.1:${port}`, `localhost:${port}`].includes(host.toLowerCase())) {
    const fix = `call http://127.0.0.1:${String(port)}/<path>`;
    return writeEgressError(response, 'LOCKSTEP_EGRESS_HOST_REFUSED', `Host ${JSON.stringify(host)} refused: ${fix}`);
  }
  const target = request.headers[TARGET_HEADER];
  const known = Object.keys(targets).join(', ') || 'none: add egress.targets to the sidecar config';
  if (typeof target !== 'string' || target === '') {
    const message = `name the service to call in the ${TARGET_HEADER} header, e.g. ${TARGET_HEADER}: payments; configured: ${known}`;
    return writeEgressError(response, 'LOCKSTEP_EGRESS_TARGET_MISSING', message);
  }
  const origin = Object.hasOwn(targets, target) ? targets[target] : undefined;
  if (origin === undefined) {
    const message = `${TARGET_HEADER}: ${target} is not in egress.targets of the sidecar config; configured: ${known}`;
    return writeEgressError(response, 'LOCKSTEP_EGRESS_TARGET_UNKNOWN', message);
  }
  const url = targetUrl(request.url ?? '', origin);
  if (url === null) {
    const message =
      `the request target must be a path on ${target}, e.g. GET /charges/9 HTTP/1.1; got ${JSON.stringify(request.url)}: ` +
      `the egress is no forward proxy, it calls only the origin of egress.targets.${target}, ` +
      'with a plain path (no dot segments, encoded separators, ";" or "//")';
    return writeEgressError(response, 'LOCKSTEP_EGRESS_PATH_INVALID', message);
  }
  const txnToken = request.headers[TXN_TOKEN_HEADER];
  if (typeof txnToken !== 'string' || txnToken === '') {
    const message =
      `forward the ${TXN_TOKEN_HEADER} header of the request you are handling (the sidecar passed it to you), ` +
      'as you would a trace context: every guarded service refuses a call without one';
    return writeEgressError(response, 'LOCKSTEP_EGRESS_TXN_TOKEN_MISSING', message);
  }
  const body = await readBody(request, limits.bodyBytes);
  if (body === null) {
    response.shouldKeepAlive = false;
    const message = `the request body exceeds limits.bodyBytes (${limits.bodyBytes} bytes) of the sidecar config`;
    return writeEgressError(response, 'LOCKSTEP_EGRESS_BODY_TOO_LARGE', message);
  }

  // Connecting and waiting for the answer's headers are bounded; after that undici's body timeout holds.
  const deadline = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    deadline.abort();
  }, limits.connectTimeoutMs + limits.headersTimeoutMs);
  response.once('close', () => {
    if (!response.writableFinished) deadline.abort();
  });
  let answer: Dispatcher.ResponseData;
  try {
    answer = await options.agent.request(url, {
      server: target,
      method: request.method as Dispatcher.HttpMethod,
      headers: egressHeaders(request.headers, TARGET_HEADER),
      ...(body.length === 0 ? {} : { body }),
      txnToken,
      signal: deadline.signal,
    });
  } catch (error) {
    if (deadline.signal.aborted && !timedOut) return; // the app went away
    const [code, message] = egressFailure(error, timedOut, target, origin);
    options.logger.warn(`egress to ${target} (${origin}) failed: ${code}`, { code, error: message });
    return writeEgressError(response, code, message);
  } finally {
    clearTimeout(timer);
  }
  response.writeHead(answer.statusCode, responseHeaders(answer.headers));
  try {
    await pipeline(answer.body, response);
  } catch {
    response.destroy();
  }
}

/**
 * The URL to call: the target's origin and the app's path, or null when the request target is not one
 * path. `new URL(target, origin)` ignores `origin` for an absolute-form target (`GET http://host/…`)
 * and for `//host/…`, which would make the egress an open forward proxy that hands the Txn-Token to
 * any host; the origin is checked again after parsing, so no other spelling can leave either. A path
 * that servers read differently (`ambiguousPath`: dot segments, encoded separators…) is refused too:
 * `new URL` would resolve `/items/../admin` into `/admin`, completing a traversal the app was tricked
 * into, which the server's guard would have refused.
 */
function targetUrl(requestTarget: string, origin: string): URL | null {
  if (!requestTarget.startsWith('/') || requestTarget.startsWith('//')) return null;
  if (ambiguousPath(requestTarget) !== null) return null;
  try {
    const url = new URL(requestTarget, origin);
    return url.origin === new URL(origin).origin ? url : null;
  } catch {
    return null;
  }
}

function egressFailure(
  error: unknown,
  timedOut: boolean,
  target: string,
  origin: string,
): ['LOCKSTEP_EGRESS_TIMEOUT' | 'LOCKSTEP_EGRESS_UNAVAILABLE' | 'LOCKSTEP_EGRESS_SERVER_REFUSED', string] {
  const reason = error instanceof Error ? error.message : String(error);
  if (timedOut || isTimeout(error)) return ['LOCKSTEP_EGRESS_TIMEOUT', `${target} at ${origin} did not answer in time`];
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && UNREACHABLE.has(code)) {
    return ['LOCKSTEP_EGRESS_UNAVAILABLE', `${target} at ${origin} cannot be reached (${code}): is it running?`];
  }
  const fix = `check egress.targets.${target} in the sidecar config`;
  return ['LOCKSTEP_EGRESS_SERVER_REFUSED', `${origin} is not ${target}, nothing was sent: ${reason}; ${fix}`];
}

/** The body, or null when it is over `limit`: then reading stops and the connection closes after the answer. */
function readBody(request: IncomingMessage, limit: number): Promise<Buffer | null> {
  if (Number(request.headers['content-length'] ?? 0) > limit) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      request.off('data', onData).pause();
      resolve(null);
    };
    request.on('data', onData).once('error', reject);
    request.once('end', () => resolve(Buffer.concat(chunks, size)));
  });
}
