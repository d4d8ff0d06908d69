/**
 * A deliberately weak system, for the scanner's true-positive tests. A real control plane (the one
 * composition root, `assembleControlPlane`: CA, Txn-Token Service, policy, monitor) in trust domain
 * `weak.test`, and one planted weakness per service:
 *
 *   reports    a route mapped to an over-broad policy (any workload may read reports)
 *   legacy     a guard switched to dry-run (the misconfiguration switch): alg-none tokens get through
 *   notes      a route without schema validation (POST /notes; POST /notes/strict has one)
 *   catalog    Express with a CORS preflight middleware mounted before the guard: OPTIONS is answered
 *              by the app, without a certificate and unaudited (the guard logs an error and runs on)
 *   intranet   perimeter-only: plain HTTP trusting an x-user header, not registered (manifest)
 *   frontend   a registered caller without routes (the workload the policies permit)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server as HttpsServer } from 'node:https';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { createJoinToken, joinAsWorkload, type WorkloadAgent } from '@lockstep/control-plane';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstepExpress } from '@lockstep/guard/express';
import { lockstep } from '@lockstep/guard/fastify';
import { assembleControlPlane } from '@lockstep/monitor';
import type { ControlPlaneAccess } from '../src/index.ts';

export const WEAK_TD = 'weak.test';
const FRONTEND = `spiffe://${WEAK_TD}/svc/frontend`;
const quiet = { info() {}, warn() {}, error() {} };

const POLICIES: Record<string, string> = {
  'weak.cedarschema': `namespace Lockstep {
  action "reports:read", "legacy:read", "notes:create", "notes:create-strict", "catalog:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`,
  // PLANTED: no principal constraint — every workload of the trust domain may read reports.
  'reports.cedar': `@id("anyone-reads-reports")
permit (principal, action == Lockstep::Action::"reports:read", resource == Lockstep::Service::"reports");`,
  'legacy.cedar': `@id("frontend-reads-legacy")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"legacy:read", resource == Lockstep::Service::"legacy")
when { context.roles.contains("customer") };`,
  'notes.cedar': `@id("frontend-writes-notes")
permit (principal == Lockstep::Workload::"${FRONTEND}", action in [Lockstep::Action::"notes:create", Lockstep::Action::"notes:create-strict"], resource == Lockstep::Service::"notes")
when { context.roles.contains("customer") };`,
  'catalog.cedar': `@id("frontend-reads-catalog")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"catalog:read", resource == Lockstep::Service::"catalog")
when { context.roles.contains("customer") };`,
};

export interface WeakSystem {
  readonly access: ControlPlaneAccess;
  /** `host:port` of the perimeter-only service (for the manifest). */
  readonly intranet: string;
  close(): Promise<void>;
}

export async function startWeakSystem(): Promise<WeakSystem> {
  const scratch = mkdtempSync(join(tmpdir(), 'lockstep-weak-'));
  const policyDir = join(scratch, 'policies');
  mkdirSync(policyDir);
  for (const [file, text] of Object.entries(POLICIES)) writeFileSync(join(policyDir, file), text);
  const controlPlane = await assembleControlPlane({
    trustDomain: WEAK_TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    policyDir,
    watchPolicy: false,
    adminName: 'ops',
    output: { warning: () => {} },
  });
  const { ca, store, admin } = controlPlane;

  const agents: WorkloadAgent[] = [];
  const guards: Guard[] = [];
  const apps: FastifyInstance[] = [];
  const servers: HttpsServer[] = [];
  /** `routes`: a Fastify app with the plugin registered first; `server`: any server the test builds. */
  interface Serve {
    mode?: 'dry-run';
    routes?: (app: FastifyInstance) => void;
    server?: (guard: Guard) => HttpsServer;
  }
  async function workload(service: string, options: Serve = {}): Promise<void> {
    const agent = await joinAsWorkload({
      url: controlPlane.url,
      trustDomain: WEAK_TD,
      joinToken: (await createJoinToken(store, ca, { service, createdBy: 'fixture' })).token,
      service,
    });
    const guard = await createGuard({
      ...agent.guardOptions({ auditSpoolDir: false }),
      logger: quiet,
      ...(options.mode === undefined ? {} : { mode: options.mode }),
    });
    agent.attach(guard);
    agents.push(agent);
    guards.push(guard);
    if (options.server !== undefined) {
      const server = options.server(guard);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      servers.push(server);
    } else if (options.routes !== undefined) {
      const app = Fastify({ https: guard.tlsOptions() });
      await app.register(lockstep, { guard });
      options.routes(app);
      await app.listen({ host: '127.0.0.1', port: 0 });
      apps.push(app);
    } else {
      return;
    }
    // Registered with its address (the heartbeat on listening) and the policy applied.
    for (
      let i = 0;
      i < 100 &&
      (guard.policyVersion === null ||
        !(await store.services()).some((entry) => entry.service === service && entry.endpoints.length > 0));
      i++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  await workload('frontend');
  await workload('reports', {
    routes: (app) =>
      app.get('/reports/:id', { config: { lockstep: { action: 'reports:read' } } }, async () => ({
        report: 'quarterly',
      })),
  });
  // PLANTED: the whole service in dry-run — denials, bad tokens included, are let through.
  await workload('legacy', {
    mode: 'dry-run',
    routes: (app) =>
      app.get('/legacy', { config: { lockstep: { action: 'legacy:read' } } }, async () => ({ legacy: true })),
  });
  await workload('notes', {
    routes: (app) => {
      // PLANTED: a body schema that checks nothing (without any schema the guard refuses every body).
      app.post(
        '/notes',
        { config: { lockstep: { action: 'notes:create' } }, schema: { body: { type: 'object' } } },
        async () => ({ saved: true }),
      );
      app.post(
        '/notes/strict',
        {
          config: { lockstep: { action: 'notes:create-strict' } },
          schema: {
            body: {
              type: 'object',
              additionalProperties: false,
              required: ['text'],
              properties: { text: { type: 'string', maxLength: 200 } },
            },
          },
        },
        async () => ({ saved: true }),
      );
    },
  });

  await workload('catalog', {
    server: (guard) => {
      const app = express();
      // PLANTED: a hand-rolled CORS preflight before the guard answers OPTIONS itself, to anyone.
      app.use((request, response, next) => {
        if (request.method !== 'OPTIONS') return next();
        response.status(204).set({ allow: 'GET, OPTIONS', 'access-control-allow-origin': '*' }).end();
      });
      app.use(lockstepExpress(guard, { 'GET /catalog': { action: 'catalog:read' } }));
      app.get('/catalog', (_request, response) => {
        response.json({ items: ['tea'] });
      });
      return guard.createServer(app);
    },
  });

  // PLANTED: perimeter-only — plain HTTP, whoever says x-user is that user.
  const intranet: Server = createServer((request, response) => {
    response.writeHead(request.headers['x-user'] ? 200 : 401, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ user: request.headers['x-user'] ?? null }));
  });
  await new Promise<void>((resolve) => intranet.listen(0, '127.0.0.1', resolve));

  return {
    access: {
      url: controlPlane.url,
      trustDomain: WEAK_TD,
      admin: { cert: admin.chainPem, key: admin.keyPem, ca: ca.bundlePem },
    },
    intranet: `127.0.0.1:${(intranet.address() as { port: number }).port}`,
    async close() {
      await Promise.all(apps.map((app) => app.close()));
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.closeAllConnections();
              server.close(() => resolve());
            }),
        ),
      );
      await new Promise<void>((resolve) => intranet.close(() => resolve()));
      await Promise.all(agents.map((agent) => agent.close()));
      await Promise.all(guards.map((guard) => guard.close()));
      await controlPlane.close();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}
