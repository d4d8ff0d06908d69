/**
 * How the sidecar carries an answer, with the real thing (control plane, joined sidecar, the gateway's
 * SVID and Txn-Token): a large answer streamed to a client that reads slowly arrives whole; an upstream
 * that breaks off its answer leaves the client with a broken one, never a complete-looking one; a client
 * that goes away takes its upstream request with it (the upstream sees its connection closed long
 * before any timeout). sidecar.test.ts covers what is admitted and refused.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import type { AssembledControlPlane } from '@lockstep/monitor';
import { joinAsWorkload, type WorkloadAgent } from '@lockstep/workload';
import { createSidecar, parseSidecarConfig, type Sidecar } from '../src/index.ts';
import { joinTokenFor, startControlPlane } from './control-plane-fixture.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sidecar-streaming-'));
const quiet = { info() {}, warn() {}, error() {} };
const POLICY = `
@id("gateway-reads-orders")
permit (principal == Lockstep::Workload::"spiffe://${TD}/svc/gateway", action == Lockstep::Action::"orders:read",
        resource == Lockstep::Service::"orders");
@id("gateway-starts-its-own-work")
permit (principal == Lockstep::Workload::"spiffe://${TD}/svc/gateway", action == Lockstep::Action::"tts:exchange:self_signed",
        resource == Lockstep::Service::"tts");
`;
const SCHEMA = `namespace Lockstep {
  action "orders:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;

/** 32 MiB: far more than the sockets on the way buffer, so that the sidecar must hold the upstream back. */
const BIG = Buffer.alloc(32 * 1024 * 1024, 0);
for (let i = 0; i < BIG.length; i += 4) BIG.writeUInt32BE(i, i);
const BIG_SHA = createHash('sha256').update(BIG).digest('hex');

let controlPlane: AssembledControlPlane;
let upstream: Server;
let sidecar: Sidecar;
let gateway: WorkloadAgent;
let txnToken: string;
/** When the upstream had written the whole of the big answer. */
let bigWrittenAt = 0;
/** What the upstream tells the test of a `GET /orders/hold`: it arrived; its connection closed. */
let held: { readonly arrived: () => void; readonly closed: () => void } | null = null;

/** The service behind the sidecar: a big answer, a broken one, or none at all. */
function serve(request: IncomingMessage, response: ServerResponse): void {
  if (request.url === '/orders/big') {
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
    let offset = 0;
    const more = () => {
      while (offset < BIG.length) {
        const chunk = BIG.subarray(offset, (offset += 64 * 1024));
        if (!response.write(chunk)) return void response.once('drain', more);
      }
      response.end();
    };
    response.on('finish', () => (bigWrittenAt = Date.now()));
    more();
    return;
  }
  if (request.url === '/orders/broken') {
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 1000 });
    response.write(Buffer.alloc(100), () => setTimeout(() => request.socket.destroy(), 50));
    return;
  }
  if (request.url === '/orders/hold') {
    const watcher = held;
    watcher?.arrived();
    response.on('close', () => watcher?.closed());
    return; // never answers
  }
  response.writeHead(404).end();
}

const joinToken = (service: string) => joinTokenFor(controlPlane, service);

before(async () => {
  controlPlane = await startControlPlane(scratch, { schema: SCHEMA, policy: POLICY });
  upstream = createServer(serve);
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  sidecar = await createSidecar({
    config: parseSidecarConfig({
      service: 'orders',
      controlPlane: controlPlane.url,
      trustDomain: TD,
      listen: { host: '127.0.0.1', port: 0 },
      upstream: `http://127.0.0.1:${(upstream.address() as { port: number }).port}`,
      routes: { 'GET /orders/:id': { action: 'orders:read' } },
      // Long enough that a closed upstream request can only be the client's doing.
      limits: { headersTimeoutMs: 20_000, bodyTimeoutMs: 20_000 },
      stateDir: join(scratch, 'orders'),
    }),
    joinToken: await joinToken('orders'),
    logger: quiet,
  });
  gateway = await joinAsWorkload({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: await joinToken('gateway'),
    service: 'gateway',
    stateDir: join(scratch, 'gateway'),
  });
  txnToken = await gateway.txnToken({ subjectTokenType: 'self_signed', scope: 'orders:read' });
  for (let i = 0; i < 250 && sidecar.guard.policyVersion === null; i++)
    await new Promise((resolve) => setTimeout(resolve, 20));
  assert.notEqual(sidecar.guard.policyVersion, null, 'the policy arrived');
});

after(async () => {
  await sidecar?.close();
  upstream?.closeAllConnections();
  upstream?.close();
  await gateway?.close();
  await controlPlane?.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** A request from the gateway (its SVID, its Txn-Token) on a connection of its own. */
function get(path: string) {
  const { chainPem, keyPem, bundlePem } = gateway.credentials;
  return httpsRequest(`${sidecar.url}${path}`, {
    cert: chainPem,
    key: keyPem,
    ca: bundlePem,
    checkServerIdentity: () => undefined,
    headers: { 'txn-token': txnToken },
    agent: false,
  });
}

it('streams a large answer whole to a client that reads slowly, holding the upstream back meanwhile', async () => {
  let resumedAt = 0;
  const { status, sha, length } = await new Promise<{ status: number; sha: string; length: number }>(
    (resolve, reject) => {
      const request = get('/orders/big');
      request.on('response', (response) => {
        // Nothing read for a while: the sockets on the way fill up, and the sidecar has to wait.
        response.pause();
        const hash = createHash('sha256');
        let length = 0;
        setTimeout(() => {
          response.on('data', (chunk: Buffer) => {
            hash.update(chunk);
            length += chunk.length;
          });
          response.on('end', () => resolve({ status: response.statusCode ?? 0, sha: hash.digest('hex'), length }));
          response.on('error', reject);
          resumedAt = Date.now();
          response.resume();
        }, 300);
      });
      request.on('error', reject).end();
    },
  );
  assert.equal(status, 200);
  assert.equal(length, BIG.length);
  assert.equal(sha, BIG_SHA, 'every byte, in order');
  // Had the sidecar read on regardless, it would hold the answer in memory, and the upstream be done early.
  assert.ok(bigWrittenAt >= resumedAt, 'the upstream wrote its last byte while the client was not reading');
});

it('cuts the connection when the upstream breaks off its answer: the client never sees it complete', async () => {
  const outcome = await new Promise<string>((resolve) => {
    const request = get('/orders/broken');
    request.on('response', (response) => {
      let received = 0;
      response.on('data', (chunk: Buffer) => (received += chunk.length));
      response.on('end', () => resolve(`complete after ${received} bytes`));
      response.on('error', (error: NodeJS.ErrnoException) => resolve(`broken: ${error.code ?? error.message}`));
      response.on('aborted', () => resolve('broken: aborted'));
    });
    request.on('error', (error: NodeJS.ErrnoException) => resolve(`broken: ${error.code ?? error.message}`)).end();
  });
  assert.match(outcome, /^broken/, outcome);
});

it('takes the upstream request with it when the client goes away', async () => {
  const arrived = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<'closed'>();
  held = { arrived: () => arrived.resolve(), closed: () => closed.resolve('closed') };
  const request = get('/orders/hold');
  request.on('error', () => {}).end();
  await arrived.promise;
  request.destroy();
  const timeout = new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), 5_000).unref());
  const outcome = await Promise.race([closed.promise, timeout]);
  held = null;
  assert.equal(outcome, 'closed', 'the upstream request was still open 5 s after the client went away');
});
