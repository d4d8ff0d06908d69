/**
 * A sound system, for the scanner's tests of what a scan leaves behind and of scans that cannot run:
 * a real control plane (`assembleControlPlane`: CA, Txn-Token Service, policy, identity provider,
 * monitor with its collector and dashboard) in trust domain `sound.test`, and guarded services that
 * ship their decisions to the collector — nothing planted, so a scan of it passes:
 *
 *   notes      GET /notes (customers, or the frontend's own job), POST /notes (customers, strict schema)
 *   orders     GET /orders/:id, only to the order's owner (object level: ann owns ann-1)
 *   frontend   the workload the policies permit; it also runs as itself (a self-signed Txn-Token),
 *              which is how the tests make real traffic
 *
 * `decisions` counts every decision the guards published, per service, so that a test can wait until
 * the collector holds them all.
 */
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import { Agent, request } from 'undici';
import {
  controlPlaneSpiffeId,
  createJoinToken,
  createUser,
  joinAsWorkload,
  TOKEN_EXCHANGE_GRANT,
  TOKEN_TYPE,
  type WorkloadAgent,
} from '@lockstep/control-plane';
import { createGuard, subscribeDecisions, type DecisionEvent, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { assembleControlPlane, type AssembledControlPlane } from '@lockstep/monitor';
import type { ControlPlaneAccess } from '../src/index.ts';

export const SOUND_TD = 'sound.test';
export const FRONTEND = `spiffe://${SOUND_TD}/svc/frontend`;
export const DASHBOARD_RESOURCE = 'https://lockstep.test/dashboard';
export const ADMIN = { username: 'root', password: 'the operators passphrase' };
const quiet = { info() {}, warn() {}, error() {} };

const POLICIES: Record<string, string> = {
  'sound.cedarschema': `namespace Lockstep {
  action "notes:list", "notes:create", "orders:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`,
  'notes.cedar': `@id("customers-and-the-frontend-job-list-notes")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"notes:list", resource == Lockstep::Service::"notes")
when { context.roles.contains("customer") || context.sub == "${FRONTEND}" };
@id("customers-write-notes")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"notes:create", resource == Lockstep::Service::"notes")
when { context.roles.contains("customer") };`,
  'orders.cedar': `@id("customers-read-their-own-orders")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders")
when { context.roles.contains("customer") && context has owner && context.owner == context.sub };`,
  'tts.cedar': `@id("the-frontend-job-runs-as-itself")
permit (principal == Lockstep::Workload::"${FRONTEND}", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");`,
};

export interface SoundSystem {
  readonly controlPlane: AssembledControlPlane;
  readonly access: ControlPlaneAccess;
  /** `https://127.0.0.1:<port>` of each service. */
  readonly urls: { readonly notes: string; readonly orders: string };
  /** Every decision the guards published, in order. */
  readonly decisions: readonly DecisionEvent[];
  /** A request with the frontend's SVID and a Txn-Token for its job: real traffic. */
  asFrontend(
    path: string,
    options?: { method?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; requestId: string }>;
  close(): Promise<void>;
}

export async function startSoundSystem(): Promise<SoundSystem> {
  const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sound-'));
  const policyDir = join(scratch, 'policies');
  mkdirSync(policyDir);
  for (const [file, text] of Object.entries(POLICIES)) writeFileSync(join(policyDir, file), text);
  const controlPlane = await assembleControlPlane({
    trustDomain: SOUND_TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    policyDir,
    watchPolicy: false,
    idp: { resource: { indicator: DASHBOARD_RESOURCE, scopes: [] } },
    // No sweep meanwhile, and the detector's rules are another test's subject.
    detection: { sweepMs: 3_600_000 },
    adminName: 'ops',
    output: { warning: () => {} },
  });
  const { ca, store, admin } = controlPlane;
  await createUser(store, { ...ADMIN, roles: ['admin'] });
  const decisions: DecisionEvent[] = [];
  const unsubscribe = subscribeDecisions((event) => decisions.push(event));

  const agents: WorkloadAgent[] = [];
  const guards: Guard[] = [];
  const apps: FastifyInstance[] = [];
  async function workload(
    service: string,
    routes?: (app: FastifyInstance) => void,
  ): Promise<{ agent: WorkloadAgent; url: string | null }> {
    const agent = await joinAsWorkload({
      url: controlPlane.url,
      trustDomain: SOUND_TD,
      joinToken: (await createJoinToken(store, ca, { service, createdBy: 'fixture' })).token,
      service,
    });
    const guard = await createGuard({
      ...agent.guardOptions({ auditSpoolDir: join(scratch, 'spool', service) }),
      logger: quiet,
    });
    agent.attach(guard);
    agents.push(agent);
    guards.push(guard);
    if (routes === undefined) {
      for (let i = 0; i < 100 && !(await store.services()).some((entry) => entry.service === service); i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      return { agent, url: null };
    }
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    routes(app);
    await app.listen({ host: '127.0.0.1', port: 0 });
    apps.push(app);
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
    return { agent, url: `https://127.0.0.1:${(app.server.address() as { port: number }).port}` };
  }

  const frontend = await workload('frontend');
  const notes = await workload('notes', (app) => {
    app.get('/notes', { config: { lockstep: { action: 'notes:list' } } }, async () => ({ notes: [] }));
    app.post(
      '/notes',
      {
        config: { lockstep: { action: 'notes:create' } },
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
  });
  const owners: Record<string, string> = { 'ann-1': 'ann', 'ben-1': 'ben' };
  const orders = await workload('orders', (app) => {
    app.get(
      '/orders/:id',
      { config: { lockstep: { action: 'orders:read', owner: ({ id }) => owners[id ?? ''] ?? null } } },
      async () => ({ order: 'tea' }),
    );
  });

  const credentials = frontend.agent.credentials;
  const client = new Agent({
    connect: {
      ca: credentials.bundlePem,
      cert: credentials.chainPem,
      key: credentials.keyPem,
      checkServerIdentity: () => undefined,
    },
  });
  let txnToken: string | null = null;
  async function jobToken(): Promise<string> {
    const iat = Math.floor(Date.now() / 1000);
    const subjectToken = await new SignJWT({ scope: 'notes:list' })
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer(FRONTEND)
      .setSubject(FRONTEND)
      .setAudience(controlPlaneSpiffeId(SOUND_TD))
      .setIssuedAt(iat)
      .setExpirationTime(iat + 60)
      .sign(createPrivateKey(credentials.keyPem));
    const body = new URLSearchParams({
      grant_type: TOKEN_EXCHANGE_GRANT,
      requested_token_type: TOKEN_TYPE.txnToken,
      audience: SOUND_TD,
      subject_token: subjectToken,
      subject_token_type: TOKEN_TYPE.selfSigned,
      scope: 'notes:list',
    }).toString();
    const response = await request(`${controlPlane.url}/v1/token`, {
      method: 'POST',
      dispatcher: client,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    const answer = (await response.body.json()) as { access_token?: string };
    if (response.statusCode !== 200 || answer.access_token === undefined)
      throw new Error(`the frontend's job got no Txn-Token: ${response.statusCode} ${JSON.stringify(answer)}`);
    return answer.access_token;
  }

  return {
    controlPlane,
    access: {
      url: controlPlane.url,
      trustDomain: SOUND_TD,
      admin: { cert: admin.chainPem, key: admin.keyPem, ca: ca.bundlePem },
    },
    urls: { notes: notes.url ?? '', orders: orders.url ?? '' },
    decisions,
    async asFrontend(path, options = {}) {
      txnToken ??= await jobToken();
      const url = path.startsWith('/notes') ? notes.url : orders.url;
      const response = await request(`${url}${path}`, {
        method: options.method ?? 'GET',
        dispatcher: client,
        headers: {
          ...options.headers,
          'txn-token': txnToken,
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
      });
      const answer = (await response.body.json().catch(() => ({}))) as { requestId?: string };
      return {
        status: response.statusCode,
        requestId: answer.requestId ?? String(response.headers['lockstep-request-id'] ?? ''),
      };
    },
    async close() {
      unsubscribe();
      await client.close();
      await Promise.all(apps.map((app) => app.close()));
      await Promise.all(agents.map((agent) => agent.close()));
      await Promise.all(guards.map((guard) => guard.close()));
      await controlPlane.close();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}
