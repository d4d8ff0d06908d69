/**
 * Where the HA drill runs the control-plane replicas. As root (CI), each replica gets a network
 * namespace of its own, joined to this one by a veth pair on a bridge: traffic between the services
 * and the replicas really crosses interfaces, and a killed replica's address answers with a reset from
 * another network stack, as a dead host's would not be loopback. Otherwise, loopback.
 *
 *   bridge     lsha<id>, 10.231.<k>.1/24 (k: a /24 no interface of this host has)
 *   replica i  namespace lsha<id>r<i>, 10.231.<k>.<10+i>/24 on lsha<id>p<i> (peer lsha<id>v<i> on the bridge)
 *   database   PostgreSQL usually listens on 127.0.0.1 only: a relay on the bridge address passes the
 *              replicas' connections on (they arrive from 127.0.0.1, as local ones do)
 *
 * Only names this run created are removed: at close, and on exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ReplicaPlacement } from '../launch.ts';
import { startTcpRelay, type TcpRelay } from '@lockstep/testkit';

export interface DrillNetwork {
  readonly kind: 'netns' | 'loopback';
  placement(index: number): ReplicaPlacement;
  /** The database URL as the replicas reach it. */
  readonly postgres: string;
  /** The bridge and namespaces this run made (none on loopback). */
  readonly names: readonly string[];
  close(): Promise<void>;
}

/** Network namespaces, when this process may make them: root, `ip`, and a kernel that allows it. */
export function namespacesAvailable(): boolean {
  if (process.getuid?.() !== 0) return false;
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return false;
  return spawnSync('unshare', ['-n', 'true'], { stdio: 'ignore' }).status === 0;
}

export async function drillNetwork(replicas: number, postgres: string): Promise<DrillNetwork> {
  if (!namespacesAvailable()) {
    return { kind: 'loopback', placement: () => ({ host: '127.0.0.1' }), postgres, names: [], close: async () => {} };
  }
  const id = randomBytes(2).toString('hex');
  const bridge = `lsha${id}`;
  const k = freeSubnet();
  const prefix = `10.231.${k}`;
  const namespaces: string[] = [];
  const cleanup = () => {
    // The veth pairs first (deleting a namespace frees its end only in the background), then the rest.
    for (const [index] of namespaces.entries())
      spawnSync('ip', ['link', 'del', `${bridge}v${index}`], { stdio: 'ignore' });
    for (const namespace of namespaces) spawnSync('ip', ['netns', 'del', namespace], { stdio: 'ignore' });
    spawnSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
  };
  process.once('exit', cleanup);
  let relay: TcpRelay | null = null;
  try {
    ip('link', 'add', bridge, 'type', 'bridge');
    ip('addr', 'add', `${prefix}.1/24`, 'dev', bridge);
    ip('link', 'set', bridge, 'up');
    for (let index = 0; index < replicas; index += 1) {
      const namespace = `${bridge}r${index}`;
      ip('netns', 'add', namespace);
      namespaces.push(namespace);
      ip('link', 'add', `${bridge}v${index}`, 'type', 'veth', 'peer', 'name', `${bridge}p${index}`);
      ip('link', 'set', `${bridge}p${index}`, 'netns', namespace);
      ip('link', 'set', `${bridge}v${index}`, 'master', bridge);
      ip('link', 'set', `${bridge}v${index}`, 'up');
      ip('-n', namespace, 'addr', 'add', `${prefix}.${10 + index}/24`, 'dev', `${bridge}p${index}`);
      ip('-n', namespace, 'link', 'set', `${bridge}p${index}`, 'up');
      ip('-n', namespace, 'link', 'set', 'lo', 'up');
    }
    const database = new URL(postgres);
    relay = await startTcpRelay({
      listenHost: `${prefix}.1`,
      target: { host: database.hostname || '127.0.0.1', port: Number(database.port || 5432) },
    });
    database.hostname = `${prefix}.1`;
    database.port = String(relay.port);
    const relayed = relay;
    return {
      kind: 'netns',
      placement: (index) => ({
        host: `${prefix}.${10 + index}`,
        start: (cli, args, env): ChildProcess =>
          // `ip netns exec` execs node in the namespace: the child's pid is node's, so signals reach it.
          spawn('ip', ['netns', 'exec', `${bridge}r${index}`, process.execPath, cli, ...args], {
            env,
            stdio: ['ignore', 'pipe', 'pipe'],
          }),
      }),
      postgres: database.href,
      names: [bridge, ...namespaces],
      async close() {
        await relayed.close();
        cleanup();
        process.off('exit', cleanup);
      },
    };
  } catch (error) {
    await relay?.close();
    cleanup();
    process.off('exit', cleanup);
    throw error;
  }
}

function ip(...args: string[]): void {
  const result = spawnSync('ip', args, { encoding: 'utf8' });
  if (result.status !== 0)
    throw new Error(`ip ${args.join(' ')} failed: ${(result.stderr || result.stdout || '').trim()}`);
}

/** A third octet k such that no address of this host is in 10.231.k.0/24. */
function freeSubnet(): number {
  const addresses = spawnSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' }).stdout;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const k = 1 + Math.floor(Math.random() * 250);
    if (!addresses.includes(`10.231.${k}.`)) return k;
  }
  throw new Error('no free 10.231.x.0/24 subnet for the drill network');
}
