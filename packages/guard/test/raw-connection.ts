/**
 * One TLS connection as the gateway, for what the mTLS client hides: several requests on the same
 * socket, a body sent only in part, an interim answer (100 Continue), and whether the server closed
 * the connection. Every wait is bounded (`within`): a request left unanswered fails the test, not hangs it.
 */
import tls from 'node:tls';
import { parseRawAnswer, within, type Answer, type World } from './fixture.ts';

export interface Connection {
  send(raw: string): void;
  /** The next whole answer on the connection (its body is content-length bytes long; none for HEAD). */
  answer(options?: { head?: boolean }): Promise<Answer>;
  /** Everything the server sent, once it has closed the connection. */
  closed(): Promise<string>;
  destroy(): void;
}

export async function connect(w: World, port: number): Promise<Connection> {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: w.ca.bundlePem,
    cert: w.svids.gateway.chainPem,
    key: w.svids.gateway.keyPem,
    checkServerIdentity: () => undefined,
  });
  let received = '';
  let all = '';
  let isClosed = false;
  let wake = () => {};
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    all += chunk.toString('latin1');
    wake();
  });
  socket.on('error', () => {}); // a reset shows as the close that follows it
  socket.on('close', () => {
    isClosed = true;
    wake();
  });
  await within(new Promise((resolve) => socket.once('secureConnect', resolve)), 'TLS handshake');
  /** What `check` returns once it returns something; checked again whenever bytes arrive or the socket closes. */
  const until = <T>(check: () => T | undefined, what: string) =>
    within(
      new Promise<T>((resolve, reject) => {
        wake = () => {
          try {
            const result = check();
            if (result !== undefined) resolve(result);
          } catch (error) {
            reject(error as Error);
          }
        };
        wake();
      }),
      what,
    );
  return {
    send: (raw) => void socket.write(raw),
    answer: (options = {}) =>
      until(() => {
        const end = received.indexOf('\r\n\r\n');
        if (end !== -1) {
          const declared = Number(/\r\ncontent-length: *(\d+)/i.exec(received.slice(0, end))?.[1] ?? 0);
          const length = options.head === true || /^HTTP\/1\.1 1\d\d /.test(received) ? 0 : declared;
          if (received.length >= end + 4 + length) {
            const raw = received.slice(0, end + 4 + length);
            received = received.slice(raw.length);
            return parseRawAnswer(raw);
          }
        }
        if (isClosed) throw new Error(`the connection closed before a whole answer; got ${JSON.stringify(received)}`);
        return undefined;
      }, 'an answer'),
    closed: () => until(() => (isClosed ? all : undefined), 'the connection closing'),
    destroy: () => socket.destroy(),
  };
}

/** An HTTP/1.1 request as raw text; `token` adds a txn-token header. */
export function rawRequest(
  method: string,
  path: string,
  options: { token?: string; headers?: string[]; body?: string } = {},
): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'host: orders.test'];
  if (options.token !== undefined) lines.push(`txn-token: ${options.token}`);
  lines.push(...(options.headers ?? []));
  return `${lines.join('\r\n')}\r\n\r\n${options.body ?? ''}`;
}
