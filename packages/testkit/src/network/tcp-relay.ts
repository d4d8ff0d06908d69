/**
 * A TCP relay for tests: the network between a client and a server, which a test cuts, restores,
 * stalls or points at another server. It passes the bytes on as they are (TLS, PostgreSQL…) and reads
 * none of them.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { Transform } from 'node:stream';

export interface TcpTarget {
  readonly host: string;
  readonly port: number;
}

export interface TcpRelayOptions {
  /** Where each connection is passed on. */
  readonly target: TcpTarget;
  /** The address it listens on; default 127.0.0.1. */
  readonly listenHost?: string;
  /** The port it listens on; default 0, a free one. */
  readonly port?: number;
}

export interface TcpRelay {
  readonly host: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Stops listening (a new connection is refused) and drops the open ones: the network is cut. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /** Connections stay open, but what the target sends reaches no client any more: a peer gone silent. */
  stall(): void;
  /** New connections go to `target`, the open ones are dropped: another server answers at this address. */
  retarget(target: TcpTarget): void;
  /** Cut for good (`restore` refuses afterwards); safe to call again. */
  close(): Promise<void>;
}

const isPort = (value: unknown): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65_535;

function checkedTarget(target: TcpTarget): TcpTarget {
  const { host, port } = (target ?? {}) as Partial<TcpTarget>;
  if (typeof host === 'string' && host !== '' && isPort(port)) return { host, port };
  throw new TypeError(
    "target must be { host, port } with a port from 1 to 65535, e.g. { host: '127.0.0.1', port: 5432 }; " +
      `got ${JSON.stringify(target)}`,
  );
}

export async function startTcpRelay(options: TcpRelayOptions): Promise<TcpRelay> {
  let target = checkedTarget(options.target);
  const host = options.listenHost ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  let accepted = 0;
  let stalled = false;
  let listening = false;
  let closed = false;

  const server = createServer((client) => {
    accepted += 1;
    const upstream = connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      // A reset is what the test provokes, not an uncaught error; either side takes the other with it.
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    const back = new Transform({ transform: (chunk, _encoding, done) => done(null, stalled ? undefined : chunk) });
    upstream.pipe(back).pipe(client);
  });
  const drop = () => {
    for (const socket of sockets) socket.destroy();
  };
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        listening = true;
        resolve((server.address() as AddressInfo).port);
      });
    });
  const cut = async () => {
    if (!listening) return;
    listening = false;
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    drop();
    await stopped;
  };

  const port = await listen(options.port ?? 0);
  return {
    host,
    port,
    get accepted() {
      return accepted;
    },
    cut,
    async restore() {
      if (closed) throw new Error('restore(): this relay was closed; start another');
      if (!listening) await listen(port);
    },
    stall() {
      stalled = true;
    },
    retarget(next) {
      target = checkedTarget(next);
      drop();
    },
    async close() {
      closed = true;
      await cut();
    },
  };
}
