/**
 * One address in front of the control-plane replicas, for what must have one name: the identity
 * provider's issuer (browsers sign in there, and tokens name it) and the dashboard. A TCP passthrough,
 * as a layer-4 load balancer is: TLS is end to end between the client and a replica, so clients still
 * check the replica's SPIFFE ID. Each connection goes to the first replica, in order, that accepts
 * within 300 ms; a replica that refused is tried last for 5 s.
 *
 * Workloads do not depend on it: they are given every replica's URL and fail over themselves.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

const CONNECT_MS = 300;
const AVOID_MS = 5_000;

export interface Replica {
  readonly host: string;
  readonly port: number;
}

export interface ControlPlaneFront {
  readonly port: number;
  close(): Promise<void>;
}

export async function startControlPlaneFront(
  replicas: () => readonly Replica[],
  listen: { readonly host: string; readonly port: number },
): Promise<ControlPlaneFront> {
  const avoidUntil = new Map<string, number>();
  const sockets = new Set<Socket>();

  const ordered = (): Replica[] => {
    const now = Date.now();
    const key = (replica: Replica) => `${replica.host}:${replica.port}`;
    const all = [...replicas()];
    return [
      ...all.filter((replica) => (avoidUntil.get(key(replica)) ?? 0) <= now),
      ...all.filter((replica) => (avoidUntil.get(key(replica)) ?? 0) > now),
    ];
  };

  const dial = (replica: Replica): Promise<Socket | null> =>
    new Promise((resolve) => {
      const upstream = connect({ host: replica.host, port: replica.port });
      const timer = setTimeout(() => fail(), CONNECT_MS);
      const fail = () => {
        clearTimeout(timer);
        upstream.destroy();
        avoidUntil.set(`${replica.host}:${replica.port}`, Date.now() + AVOID_MS);
        resolve(null);
      };
      upstream.once('error', fail);
      upstream.once('connect', () => {
        clearTimeout(timer);
        upstream.off('error', fail);
        resolve(upstream);
      });
    });

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    void (async () => {
      for (const replica of ordered()) {
        const upstream = await dial(replica);
        if (upstream === null) continue;
        if (client.destroyed) {
          upstream.destroy();
          return;
        }
        sockets.add(upstream);
        upstream.once('close', () => {
          sockets.delete(upstream);
          client.destroy();
        });
        upstream.on('error', () => upstream.destroy());
        client.once('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        return;
      }
      client.destroy(); // no replica answers: as a refused connection, the client's own failover moves on
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : listen.port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
