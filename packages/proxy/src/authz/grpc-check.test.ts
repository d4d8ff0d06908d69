/**
 * The fence of grpc-check.ts's one reach into grpc-js's internals: `sessionOf(call)` must find the HTTP/2
 * session a call arrived on — the same for two calls on one connection, another for another connection —
 * or the decision service would identify its caller on every call (correct, but its costliest step).
 * The transport is not the point here: plain HTTP/2 on loopback (authz-grpc.test.ts runs the real mTLS).
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import grpc from '@grpc/grpc-js';
import { sessionOf } from './grpc-check.ts';

const same = (value: Buffer) => value;
const ECHO: grpc.ServiceDefinition = {
  Echo: {
    path: '/lockstep.test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: same,
    requestDeserialize: same,
    responseSerialize: same,
    responseDeserialize: same,
  },
};
type EchoClient = grpc.Client & {
  Echo(request: Buffer, callback: (error: grpc.ServiceError | null, answer?: Buffer) => void): void;
};
const EchoClient = grpc.makeGenericClientConstructor(ECHO, 'Echo') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ChannelOptions,
) => EchoClient;

const server = new grpc.Server();
const sessions: (object | null)[] = [];
let address = '';

before(async () => {
  server.addService(ECHO, {
    Echo(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
      sessions.push(sessionOf(call));
      callback(null, call.request);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  );
  address = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

function client(): EchoClient {
  // A local subchannel pool: a connection of its own, not one shared with the other client.
  return new EchoClient(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

function echo(on: EchoClient): Promise<void> {
  return new Promise((resolve, reject) =>
    on.Echo(Buffer.from('x'), (error) => (error === null ? resolve() : reject(error))),
  );
}

it("finds each call's HTTP/2 session: one per connection, so the caller is identified once per connection", async () => {
  const first = client();
  const second = client();
  try {
    await echo(first);
    await echo(first);
    await echo(second);
  } finally {
    first.close();
    second.close();
  }
  const [a, b, c] = sessions;
  assert.ok(
    typeof a === 'object' && a !== null,
    'sessionOf found no session: grpc-js changed its internals; follow them in grpc-check.ts',
  );
  assert.equal(b, a, 'two calls on one connection share their session');
  assert.notEqual(c, a, 'another connection is another session');
});
