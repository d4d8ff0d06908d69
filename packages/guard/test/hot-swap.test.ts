/**
 * Acceptance — hot swap: rotating the SVID and replacing the policy bundle while a load generator
 * runs drops no request and never lets a request through under a half-applied policy.
 *
 * Policy A permits the gateway `orders:read` only, policy B `orders:delete` only. While gateway
 * clients hammer GET and DELETE /orders/:id over real mTLS (keep-alive, `connection: close` and
 * fresh clients, so new handshakes keep happening), a swapper alternates A and B and rotates the
 * server SVID every ~100 ms. Every answer must be 200 or 403, and every 200 must carry the version
 * and policy @id of the admission that let it through — A for reads, B for deletes. After each
 * rotation a fresh TLS connection must be served the new certificate.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server as HttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import tls, { type PeerCertificate, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import Fastify from 'fastify';
import { policySetFromSources, signBundle, verifyBundle } from '@lockstep/policy';
import { createMtlsClient, type MtlsClient } from '@lockstep/testkit';
import { currentAdmission, type Guard } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { POLICY_DIR, TRUST_DOMAIN, guardFor, world, type World } from './fixture.ts';

/** Policy swaps, each followed by an SVID rotation; the load runs until the last one is done. */
const SWAPS = 10;
const SWAP_EVERY_MS = 100;
const WORKERS = 4;
/** Every n-th request of a worker asks the server to close the connection after answering. */
const CLOSE_EVERY = 4;
/** Every n-th request of a worker starts from a new client (new pool, new handshakes). */
const NEW_CLIENT_EVERY = 25;

type Kind = 'read' | 'delete';
interface SignedPolicy {
  jws: string;
  version: string;
  policyId: string;
}
interface Answer {
  action: string | null;
  policyVersion: string | null;
  policyIds: readonly string[];
  serverSerial: string | null;
}
interface Outcome {
  kind: Kind;
  status: number | null;
  answer: Answer | null;
  refusal: string | null;
  error: string | null;
}
interface Rotation {
  issued: string;
  served: string;
}

const GATEWAY = `Lockstep::Workload::"spiffe://${TRUST_DOMAIN}/svc/gateway"`;

function permitOnly(id: string, action: string, role: string): string {
  return `@id("${id}")
permit (principal == ${GATEWAY}, action == Lockstep::Action::"${action}", resource == Lockstep::Service::"orders")
when { context.roles.contains("${role}") };
`;
}

// Both bundles carry one issue time: the guard refuses to go back to an earlier one, and the test
// swaps back and forth (two signatures straddling a second boundary made it flaky).
const ISSUED_AT = new Date();

async function signedPolicy(w: World, policyId: string, action: string, role: string): Promise<SignedPolicy> {
  const schema = readFileSync(join(POLICY_DIR, 'shop.cedarschema'), 'utf8');
  const set = policySetFromSources({ schema, policies: { [`${policyId}.cedar`]: permitOnly(policyId, action, role) } });
  const jws = await signBundle(set, {
    privateKey: w.policyKey.privateKey,
    kid: w.policyKey.kid,
    service: 'orders',
    issuedAt: ISSUED_AT,
  });
  // The bundle carries the version of the slice for "orders", which is what the guard reports.
  const { version } = await verifyBundle(jws, { keys: w.policyKey.jwks });
  return { jws, version, policyId };
}

/** What the handler was let through with: the admission's own decision, and the certificate this connection was served. */
function answer(request: IncomingMessage): Answer {
  const admission = currentAdmission();
  const served = (request.socket as TLSSocket).getCertificate() as PeerCertificate | null;
  return {
    action: admission?.route?.action ?? null,
    policyVersion: admission?.policyVersion ?? null,
    policyIds: admission?.policyIds ?? [],
    serverSerial: served?.serialNumber ?? null,
  };
}

async function startService(
  adapter: 'fastify' | 'express',
  guard: Guard,
): Promise<{ port: number; close(): Promise<void> }> {
  if (adapter === 'fastify') {
    const app = Fastify({ https: guard.tlsOptions(), logger: false });
    await app.register(lockstep, { guard });
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async (request) => answer(request.raw));
    app.delete('/orders/:id', { config: { lockstep: { action: 'orders:delete' } } }, async (request) =>
      answer(request.raw),
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    return { port: (app.server.address() as AddressInfo).port, close: () => app.close() };
  }
  const app = express();
  app.use(
    lockstepExpress(guard, {
      'GET /orders/:id': { action: 'orders:read' },
      'DELETE /orders/:id': { action: 'orders:delete' },
    }),
  );
  app.get('/orders/:id', (req, res) => {
    res.json(answer(req));
  });
  app.delete('/orders/:id', (req, res) => {
    res.json(answer(req));
  });
  const server: HttpsServer = guard.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The serial of the certificate a brand-new TLS connection (no session to resume) is served. */
function servedSerial(w: World, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: w.ca.bundlePem,
      cert: w.svids.gateway.chainPem,
      key: w.svids.gateway.keyPem,
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

const sameSerial = (a: string, b: string) => BigInt(`0x${a}`) === BigInt(`0x${b}`);

function gatewayClient(w: World): MtlsClient {
  return createMtlsClient({ certPem: w.svids.gateway.chainPem, keyPem: w.svids.gateway.keyPem, caPem: w.ca.bundlePem });
}

async function generateLoad(
  w: World,
  port: number,
  tokens: Record<Kind, string>,
  running: () => boolean,
): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  async function worker(index: number): Promise<void> {
    let client = gatewayClient(w);
    try {
      for (let n = 0; running(); n++) {
        if (n > 0 && n % NEW_CLIENT_EVERY === 0) {
          const previous = client;
          client = gatewayClient(w);
          await previous.close();
        }
        const kind: Kind = (n + index) % 2 === 0 ? 'read' : 'delete';
        const headers: Record<string, string> = { 'txn-token': tokens[kind] };
        if (n % CLOSE_EVERY === CLOSE_EVERY - 1) headers.connection = 'close';
        try {
          const res = await client.request(`https://127.0.0.1:${port}/orders/${index}-${n}`, {
            method: kind === 'read' ? 'GET' : 'DELETE',
            headers,
          });
          const body = res.json<Answer & { error?: string }>();
          outcomes.push({
            kind,
            status: res.status,
            answer: res.status === 200 ? body : null,
            refusal: body.error ?? null,
            error: null,
          });
        } catch (error) {
          outcomes.push({
            kind,
            status: null,
            answer: null,
            refusal: null,
            error:
              error instanceof Error
                ? `${(error as { code?: string }).code ?? error.name}: ${error.message}`
                : String(error),
          });
        }
      }
    } finally {
      await client.close();
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, (_, index) => worker(index)));
  return outcomes;
}

for (const adapter of ['fastify', 'express'] as const) {
  test(`${adapter}: hot swap of SVID and policy under load drops no request and never admits under the other policy`, async (t) => {
    const w = await world();
    const [policyA, policyB] = await Promise.all([
      signedPolicy(w, 'hot-swap-a-gateway-read', 'orders:read', 'customer'),
      signedPolicy(w, 'hot-swap-b-gateway-delete', 'orders:delete', 'admin'),
    ]);
    assert.notEqual(policyA.version, policyB.version);
    const tokens: Record<Kind, string> = {
      read: await w.customerToken(),
      delete: await w.customerToken({ sub: 'bob', tctx: { roles: ['admin'], tenant: 't1' } }),
    };
    const guard = await guardFor(w, { policy: { keys: w.policyKey.jwks, bundle: policyA.jws } });
    const service = await startService(adapter, guard);
    let running = true;
    const load = generateLoad(w, service.port, tokens, () => running);
    let swaps = 0;
    const rotations: Rotation[] = [];
    try {
      for (let round = 0; round < SWAPS; round++) {
        await sleep(SWAP_EVERY_MS);
        const next = swaps % 2 === 0 ? policyB : policyA;
        assert.equal((await guard.setPolicyBundle(next.jws)).version, next.version);
        swaps += 1;
        const svid = await w.ca.issueSvid({ service: 'orders' });
        guard.setSvid({ cert: svid.chainPem, key: svid.keyPem });
        rotations.push({ issued: svid.serialNumber, served: await servedSerial(w, service.port) });
      }
    } finally {
      running = false;
      await load.catch(() => undefined);
      await service.close();
      await guard.close();
    }
    const outcomes = await load;

    assert.equal(swaps, SWAPS);
    assert.equal(rotations.length, SWAPS);
    const stale = rotations.filter((rotation) => !sameSerial(rotation.issued, rotation.served));
    assert.deepEqual(stale, [], 'a fresh connection after a rotation was served an older certificate');

    // Dropped: a transport error, a 5xx, or any refusal other than the policy's own denial.
    const dropped = outcomes.filter(
      (outcome) => outcome.status !== 200 && !(outcome.status === 403 && outcome.refusal === 'LOCKSTEP_ERR_DENIED'),
    );
    assert.deepEqual(
      dropped.slice(0, 5),
      [],
      `${dropped.length} of ${outcomes.length} requests were dropped or failed`,
    );

    const expected: Record<Kind, { policy: SignedPolicy; action: string }> = {
      read: { policy: policyA, action: 'orders:read' },
      delete: { policy: policyB, action: 'orders:delete' },
    };
    const wrong = outcomes.filter(
      ({ kind, status, answer: got }) =>
        status === 200 &&
        (got === null ||
          got.action !== expected[kind].action ||
          got.policyVersion !== expected[kind].policy.version ||
          got.policyIds.length !== 1 ||
          got.policyIds[0] !== expected[kind].policy.policyId),
    );
    assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} requests were let through under the wrong policy`);

    // Both versions really were in force during the load: each kind was both allowed and refused.
    for (const kind of ['read', 'delete'] as const) {
      const allowed = outcomes.filter((outcome) => outcome.kind === kind && outcome.status === 200).length;
      const denied = outcomes.filter((outcome) => outcome.kind === kind && outcome.status === 403).length;
      assert.ok(
        allowed >= 10 && denied >= 10,
        `${kind}: ${allowed} allowed, ${denied} denied — the swaps did not alternate under load`,
      );
    }
    // Load connections were handshaken with many of the rotated certificates, not just the first.
    const servedToLoad = new Set(outcomes.flatMap((outcome) => outcome.answer?.serverSerial ?? []));
    t.diagnostic(
      `${outcomes.length} requests, ${swaps} policy swaps and SVID rotations, ${servedToLoad.size} server certificates seen by the load`,
    );
    assert.ok(servedToLoad.size >= SWAPS / 2, `load traffic saw only ${servedToLoad.size} server certificates`);
  });
}
