/**
 * Nothing is lost: the collector goes away for a minute while a guarded service is under load; the
 * guard spools, never blocks a request, and replays oldest-first when the collector is back. Then
 * every emitted decision is in the trail, and the chain verifies — on SQLite and on PostgreSQL.
 * LOCKSTEP_SPOOL_OUTAGE_MS shortens the outage for a quick local run (default 60 000).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Fastify from 'fastify';
import { Agent, request } from 'undici';
import { createGuard, subscribeDecisions } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTxnTokenMinter, testPostgres } from '@lockstep/testkit';
import { createJoinToken, joinControlPlane, type PolicyService } from '@lockstep/control-plane';
import {
  assembleControlPlane,
  COLLECTOR_PATH,
  verifyTrail,
  type AssembledControlPlane,
  type StoreLocation,
} from '../src/index.ts';

const TD = 'shop.test';
const OUTAGE_MS = Number(process.env.LOCKSTEP_SPOOL_OUTAGE_MS ?? 60_000);
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-spool-'));

const postgres = await testPostgres();

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const backends: { name: string; skip: string | false; location(): StoreLocation }[] = [
  { name: 'sqlite', skip: false, location: () => ({ sqlite: join(scratch, `${randomBytes(4).toString('hex')}.db`) }) },
  { name: 'postgres', skip: postgres.skip, location: () => ({ postgres: postgres.url, schema: postgres.schema() }) },
];

for (const backend of backends) {
  describe(`spool and replay (${backend.name})`, { skip: backend.skip }, () => {
    it(`loses nothing while the collector is away for ${OUTAGE_MS / 1000} s under load`, async () => {
      const dir = mkdtempSync(join(scratch, `${backend.name}-`));
      const location = backend.location();
      // Stopped for the outage and started again on the same port, keys and store.
      const start = (port = 0) =>
        assembleControlPlane({
          trustDomain: TD,
          keyDir: join(dir, 'keys'),
          store: location,
          port,
          watchPolicy: false,
          policyDir: new URL('../../guard/example/policies/', import.meta.url).pathname,
          checkpointIntervalMs: 3_600_000,
          detection: { sweepMs: 3_600_000 },
          output: { warning: () => {} },
        });
      let controlPlane: AssembledControlPlane | null = await start();
      const { ca, store, auditKeys } = controlPlane;
      const policy = controlPlane.policy as PolicyService;
      const port = Number(new URL(controlPlane.url).port);
      const minter = await createTxnTokenMinter({ trustDomain: TD });
      const join_ = async (service: string) =>
        joinControlPlane({
          url: controlPlane?.url ?? '',
          trustDomain: TD,
          joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
          service,
        });
      const orders = await join_('orders');
      const gateway = await join_('gateway');
      const guard = await createGuard({
        service: 'orders',
        trustDomain: TD,
        trustBundle: orders.bundlePem,
        svid: { cert: orders.chainPem, key: orders.keyPem },
        txnTokenKeys: { jwks: minter.jwks },
        policy: {
          keys: { keys: [...policy.publicJwks.keys] },
          bundle: (await policy.bundleFor('orders'))?.bundle ?? '',
        },
        audit: { collector: { url: `${controlPlane.url}${COLLECTOR_PATH}`, spoolDir: join(dir, 'spool') } },
        logger: {
          info() {},
          warn: (message: string, fields?: Record<string, unknown>) => {
            if (process.env.DEBUG_SPOOL) console.log(Date.now() % 100000, message, JSON.stringify(fields));
          },
          error() {},
        },
      });
      const app = Fastify({ https: guard.tlsOptions() });
      await app.register(lockstep, { guard });
      app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
      await app.listen({ host: '127.0.0.1', port: 0 });
      const origin = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;

      let emitted = 0;
      const stopCounting = subscribeDecisions((event) => {
        if (event.service === 'orders') emitted += 1;
      });
      const agent = new Agent({
        connect: {
          cert: gateway.chainPem,
          key: gateway.keyPem,
          ca: gateway.bundlePem,
          checkServerIdentity: () => undefined,
        },
      });
      const tokens = await Promise.all(
        Array.from({ length: 20 }, (_, index) =>
          minter.mint({ sub: `user-${index}`, tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId }),
        ),
      );
      let load = true;
      let answered = 0;
      let slowest = 0;
      const loader = (async () => {
        for (let index = 0; load; index += 1) {
          const started = performance.now();
          const response = await request(`${origin}/orders/${index}`, {
            dispatcher: agent,
            headers: { 'txn-token': tokens[index % tokens.length] as string },
          });
          await response.body.dump();
          assert.equal(response.statusCode, 200);
          slowest = Math.max(slowest, performance.now() - started);
          answered += 1;
          // A steady few hundred requests a second: a minute of them fits the default 64 MiB spool.
          if (index % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      try {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        await controlPlane.close();
        controlPlane = null;
        const before = answered;
        await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
        const duringOutage = answered - before;
        assert.ok(duringOutage > 0, 'the service kept answering while the collector was away');
        assert.ok((guard.stats().shipping?.spooled ?? 0) > 0, 'and spooled its decisions');
        controlPlane = await start(port);
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        load = false;
        await loader;
        // The spool drains on its own once the collector answers again.
        const drainedBy = Date.now() + 60_000;
        let collected = 0;
        const restarted = controlPlane;
        while (Date.now() < drainedBy) {
          collected = (await restarted.store.auditEvents(orders.spiffeId, 0, 10_000_000)).length;
          if (collected >= emitted) break;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        await guard.close();
        console.log(
          `${backend.name}: ${emitted} decisions emitted (${duringOutage} during a ${OUTAGE_MS / 1000} s outage), ${collected} collected; slowest request ${slowest.toFixed(1)} ms; shipping ${JSON.stringify(guard.stats().shipping)}`,
        );
        assert.equal(collected, emitted, 'collected = emitted');
        assert.equal(guard.stats().shipping?.dropped, 0);
        await restarted.checkpointer.checkpoint();
        const report = await verifyTrail(restarted.store, auditKeys.publicJwks());
        assert.deepEqual(report.problems, []);
      } finally {
        load = false;
        await loader.catch(() => {});
        stopCounting();
        await agent.close();
        await app.close();
        await guard.close();
        await controlPlane?.close();
      }
    });
  });
}
