import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { startTcpRelay, type TcpRelay, type TcpTarget } from './tcp-relay.ts';

const servers: Server[] = [];
const relays: TcpRelay[] = [];
after(async () => {
  for (const relay of relays) await relay.close();
  for (const server of servers) await new Promise((resolve) => server.close(resolve));
});

/** A server answering each line with `name:line`. */
async function echo(name: string): Promise<TcpTarget> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => socket.write(`${name}:${chunk.toString()}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

async function relayTo(target: TcpTarget): Promise<TcpRelay> {
  const relay = await startTcpRelay({ target });
  relays.push(relay);
  return relay;
}

async function open(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  return socket;
}

/** Writes `text`, resolves with the first answer, or with `silent` when none comes within 200 ms. */
async function ask(socket: Socket, text: string): Promise<string> {
  socket.write(text);
  return Promise.race([
    once(socket, 'data').then(([chunk]) => String(chunk)),
    new Promise<string>((resolve) => setTimeout(() => resolve('silent'), 200)),
  ]);
}

/** The error code of a connection attempt, or `connected`. */
async function attempt(port: number): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  try {
    await once(socket, 'connect');
    return 'connected';
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  } finally {
    socket.destroy();
  }
}

describe('startTcpRelay', () => {
  it('passes bytes both ways and counts the connections it accepted', async () => {
    const relay = await relayTo(await echo('a'));
    assert.equal(relay.host, '127.0.0.1');
    assert.equal(relay.accepted, 0);
    const socket = await open(relay.port);
    assert.equal(await ask(socket, 'hello'), 'a:hello');
    socket.destroy();
    await open(relay.port).then((second) => second.destroy());
    assert.equal(relay.accepted, 2);
  });

  it('cut drops the open connections and refuses new ones; restore listens again on the same port', async () => {
    const relay = await relayTo(await echo('a'));
    const socket = await open(relay.port);
    const closed = once(socket, 'close');
    await relay.cut();
    await closed;
    assert.equal(await attempt(relay.port), 'ECONNREFUSED');
    await relay.cut(); // again: nothing more to do
    await relay.restore();
    const again = await open(relay.port);
    assert.equal(await ask(again, 'back'), 'a:back');
    again.destroy();
    assert.equal(relay.accepted, 2);
  });

  it('stall keeps connections open but passes nothing back', async () => {
    const relay = await relayTo(await echo('a'));
    const socket = await open(relay.port);
    relay.stall();
    assert.equal(await ask(socket, 'anyone?'), 'silent');
    assert.equal(socket.destroyed, false);
    const later = await open(relay.port);
    assert.equal(await ask(later, 'anyone?'), 'silent');
    socket.destroy();
    later.destroy();
  });

  it('retarget drops the open connections and sends new ones to the other server', async () => {
    const relay = await relayTo(await echo('a'));
    const socket = await open(relay.port);
    const closed = once(socket, 'close');
    relay.retarget(await echo('b'));
    await closed;
    const next = await open(relay.port);
    assert.equal(await ask(next, 'who?'), 'b:who?');
    next.destroy();
  });

  it('close is for good, and says what to do instead of restoring', async () => {
    const relay = await relayTo(await echo('a'));
    await relay.close();
    await relay.close();
    assert.equal(await attempt(relay.port), 'ECONNREFUSED');
    await assert.rejects(relay.restore(), /closed; start another/);
  });

  it('refuses a target without a usable port, saying what to write', async () => {
    await assert.rejects(
      startTcpRelay({ target: { host: '127.0.0.1', port: Number('') } }),
      (error: unknown) =>
        error instanceof TypeError && /e\.g\. \{ host: '127\.0\.0\.1', port: 5432 \}/.test(error.message),
    );
  });
});
