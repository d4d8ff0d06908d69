/**
 * The failover drill's network (drill/netns.ts): as root, each replica gets a network namespace of its
 * own on a bridge; a server started there is reached from here across the bridge, the database relay
 * passes connections on, and closing removes every name the run made. Skipped where namespaces cannot
 * be made (not root, no `ip`); CI runs as root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { describe, it } from 'node:test';
import { drillNetwork, namespacesAvailable } from '../drill/netns.ts';

const available = namespacesAvailable();

/** Whether a namespace or a link of this name exists. */
function exists(name: string): boolean {
  const namespaces = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n');
  if (namespaces.some((line) => line.split(' ')[0] === name)) return true;
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

describe('the failover drill network', { skip: available ? false : 'network namespaces need root and `ip`' }, () => {
  it('puts each replica in a namespace of its own, reachable across a bridge, and removes it all at close', async () => {
    // Something to relay to: a stand-in for the database on loopback.
    const database = createServer((socket) => socket.end('database\n'));
    database.listen(0, '127.0.0.1');
    await once(database, 'listening');
    const databasePort = (database.address() as { port: number }).port;
    const network = await drillNetwork(2, `postgres://postgres@127.0.0.1:${databasePort}/test`);
    try {
      assert.equal(network.kind, 'netns');
      const placement = network.placement(1);
      assert.match(placement.host, /^10\.231\.\d+\.11$/);
      // A server in replica 1's namespace, reached from this one.
      const script =
        "require('net').createServer((s) => s.end('replica\\n')).listen(7000, process.argv[1], () => console.log('up'))";
      const child = placement.start?.('-e', [script, placement.host], process.env);
      assert.ok(child !== undefined);
      try {
        const [line] = (await once(child.stdout!, 'data')) as [Buffer];
        assert.equal(line.toString().trim(), 'up');
        assert.equal(await read(placement.host, 7000), 'replica');
        // The relay for the database, at the bridge's address, as the replicas reach it.
        const relayed = new URL(network.postgres);
        assert.match(relayed.hostname, /^10\.231\.\d+\.1$/);
        assert.equal(await read(relayed.hostname, Number(relayed.port)), 'database');
      } finally {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
      assert.equal(network.names.length, 3, 'a bridge and two namespaces');
      for (const name of network.names) assert.ok(exists(name), `${name} exists while it runs`);
      await network.close();
      for (const name of network.names) assert.ok(!exists(name), `${name} is gone after close`);
    } finally {
      await network.close();
      database.close();
    }
  });
});

function read(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('end', () => resolve(text.trim()));
    socket.once('error', reject);
  });
}
