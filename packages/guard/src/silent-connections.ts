/**
 * Connections that say nothing. Node times a request from its first byte only: a connection that
 * finished its TLS handshake (no certificate needed) and then sends nothing would be held for ever, and
 * enough of them exhaust the server (a slowloris). `closeSilentConnections(server)` closes such a
 * connection once FIRST_REQUEST_MS pass without a request; after one, Node's headers, request and
 * keep-alive timeouts hold. Servers with an 'upgrade' listener are left alone: their upgraded
 * connections never emit a request. A handshake itself is bounded by HANDSHAKE_TIMEOUT_MS
 * (`handshakeTimeout` in the server's options; Node's default waits 120 s).
 *
 *   const server = createServer({ ...tls, handshakeTimeout: HANDSHAKE_TIMEOUT_MS }, handler);
 *   closeSilentConnections(server);
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';

/** A TLS handshake not finished by then is cut. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A connection on which no request has started by then is closed. */
export const FIRST_REQUEST_MS = 30_000;

export function closeSilentConnections(server: TlsServer, firstRequestMs = FIRST_REQUEST_MS): void {
  const served = new WeakSet<object>();
  server.on('request', (request: IncomingMessage) => served.add(request.socket));
  server.on('secureConnection', (socket: Socket) => {
    const timer = setTimeout(() => {
      if (!served.has(socket) && server.listenerCount('upgrade') === 0) socket.destroy();
    }, firstRequestMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });
}
