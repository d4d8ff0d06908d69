/**
 * A revoked SPIFFE ID calls the control plane no more — over real mTLS on 127.0.0.1, with SVIDs the
 * control plane issued and that are still within their lifetime. Once an administrator revokes an
 * administrator or a workload, its next request is refused with 401 LOCKSTEP_CP_PEER_REVOKED, on a new
 * connection and on a connection kept alive from before the revocation, on every endpoint (the admin
 * API, the Txn-Token Service, the policy bundle, the revocation feed, the stream, an extension's);
 * an open stream of a revoked workload ends; a revocation written by another replica is enforced as
 * soon as the feed reads it. Callers that are not revoked are served as before. A revocation lifted by
 * an administrator (never by the revoked caller itself, nor by a workload) serves the caller again.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest, Agent as HttpsAgent, get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import type { DecisionEvent } from '@lockstep/guard';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  issueAdminCredentials,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  requireCaller,
  singleKey,
  startControlPlane,
  subscribeAdminActions,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { joinControlPlane, renewWithControlPlane, type WorkloadCredentials } from '@lockstep/workload';

const TD = 'shop.test';
const REVOKED = 'LOCKSTEP_CP_PEER_REVOKED';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-revoked-callers-'));
type Tls = { cert: string; key: string };
type Answer = { status: number; body: Record<string, unknown> };

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let server: RunningControlPlane;
const workloads: Record<string, WorkloadCredentials> = {};
const admins: Record<string, Tls> = {};
const events: DecisionEvent[] = [];
const unsubscribe = subscribeAdminActions((event) => events.push(event));

before(async () => {
  const policyDir = join(scratch, 'policies');
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  const signingKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey, watch: false });
  const txnKey = await openSigningKey(join(scratch, 'keys'), 'txn-token');
  const txnTokenKeys = () => ({ keys: [txnKey.publicJwk] });
  const subjects = createSubjectVerifier({ issuers: [], txnTokenKeys, trustDomain: TD });
  const tts = createTxnTokenService({
    trustDomain: TD,
    keys: singleKey(txnKey),
    subjects,
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  // An endpoint added by an extension (as the monitor's are): its own requireCaller knows nothing of revocations.
  const extension = (app: FastifyInstance) => {
    const onRequest = requireCaller(TD, ['workload', 'admin']);
    app.get('/v1/extension/ping', { onRequest }, async () => ({ pong: true }));
  };
  // A short re-read, so that a revocation written by another replica arrives quickly without PostgreSQL.
  server = await startControlPlane({ ca, store, policy, tts, extensions: [extension], rereadMs: 100 });
  for (const service of ['orders', 'reports', 'inventory', 'billing']) {
    const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
    workloads[service] = await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: token, service });
  }
  for (const name of ['alice', 'bob']) {
    const credentials = await issueAdminCredentials(ca, name);
    admins[name] = { cert: credentials.chainPem, key: credentials.keyPem };
  }
});
after(async () => {
  unsubscribe();
  await server.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const asWorkload = (service: string): Tls => ({
  cert: workloads[service]?.chainPem ?? '',
  key: workloads[service]?.keyPem ?? '',
});
const asAdmin = (name: string): Tls => admins[name] ?? { cert: '', key: '' };

/** One request on a connection of its own. */
async function fresh(
  path: string,
  tls: Tls,
  method: 'GET' | 'POST' = 'GET',
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const form = path === '/v1/token';
    const response = await request(`${server.url}${path}`, {
      method,
      dispatcher: agent,
      headers,
      ...(body === undefined
        ? {}
        : {
            headers: { ...headers, 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
            body: form ? new URLSearchParams(body as Record<string, string>).toString() : JSON.stringify(body),
          }),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

/** Requests on one kept-alive connection (node:https says whether each reused the socket). */
function keptAlive(tls: Tls) {
  const agent = new HttpsAgent({
    keepAlive: true,
    maxSockets: 1,
    ca: ca.bundlePem,
    ...tls,
    checkServerIdentity: () => undefined,
  });
  type Sent = Answer & { reused: boolean };
  const send = (path: string, method = 'GET', body?: unknown) =>
    new Promise<Sent>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers = payload === undefined ? {} : { 'content-type': 'application/json' };
      const outgoing = httpsRequest(`${server.url}${path}`, { method, agent, headers }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => {
          const answer = JSON.parse(text) as Record<string, unknown>;
          resolve({ status: response.statusCode ?? 0, body: answer, reused: outgoing.reusedSocket });
        });
      });
      outgoing.on('error', reject);
      outgoing.end(payload);
    });
  return { send, close: () => agent.destroy() };
}

/** Waits (up to 2 s) for what is recorded after the answer. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > 2_000) throw new Error(`${what} never came`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const revoke = async (value: string) => {
  const revocation = { kind: 'spiffeId', value, reason: 'stolen laptop' };
  const answer = await fresh('/v1/admin/revocations', asAdmin('bob'), 'POST', revocation);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
};

describe('a revoked caller is refused on every request', () => {
  it('an administrator: its next request, kept alive or new, is refused and audited; another still works', async () => {
    const alice = `spiffe://${TD}/admin/alice`;
    const connection = keptAlive(asAdmin('alice'));
    try {
      const first = await connection.send('/v1/admin/join-tokens', 'POST', { service: 'orders' });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      await revoke(alice);
      events.length = 0;
      const again = await connection.send('/v1/admin/join-tokens', 'POST', { service: 'evil' });
      assert.equal(again.reused, true, 'the connection from before the revocation');
      assert.deepEqual([again.status, again.body.error], [401, REVOKED], JSON.stringify(again.body));
      assert.match(String(again.body.message), /spiffe:\/\/shop\.test\/admin\/alice is revoked/);
    } finally {
      connection.close();
    }
    await until(() => events.length > 0, 'the audit event of the refusal');
    const audited = events.map((event) => [event.caller, event.decision, event.reason]);
    assert.deepEqual(audited, [[alice, 'deny', REVOKED]], 'the refusal is an admin audit event with its caller');
    for (const [path, method, body] of [
      ['/v1/admin/join-tokens', 'POST', { service: 'evil' }],
      ['/v1/admin/revocations', 'GET', undefined],
      ['/v1/bundle', 'GET', undefined],
      ['/v1/extension/ping', 'GET', undefined],
    ] as const) {
      const answer = await fresh(path, asAdmin('alice'), method, body);
      assert.deepEqual([answer.status, answer.body.error], [401, REVOKED], `${method} ${path} on a new connection`);
    }
    const bob = await fresh('/v1/admin/join-tokens', asAdmin('bob'), 'POST', { service: 'orders' });
    assert.equal(bob.status, 200, 'an administrator who is not revoked');
  });

  it('a workload: the TTS, policy bundle, feed, stream and an extension refuse it; another is served', async () => {
    const connection = keptAlive(asWorkload('orders'));
    try {
      assert.equal((await connection.send('/v1/policy/bundle')).status, 200);
      await revoke(workloads.orders?.spiffeId ?? '');
      const again = await connection.send('/v1/policy/bundle');
      assert.equal(again.reused, true, 'the connection from before the revocation');
      assert.deepEqual([again.status, again.body.error], [401, REVOKED], JSON.stringify(again.body));
    } finally {
      connection.close();
    }
    const exchange = { grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', scope: 'orders:read' };
    for (const [path, method, body] of [
      ['/v1/token', 'POST', exchange],
      ['/v1/policy/bundle', 'GET', undefined],
      ['/v1/revocations', 'GET', undefined],
      ['/v1/stream', 'GET', undefined],
      ['/v1/extension/ping', 'GET', undefined],
      ['/v1/registry/heartbeat', 'POST', {}],
    ] as const) {
      const revoked = await fresh(path, asWorkload('orders'), method, body);
      const what = `${method} ${path}: ${JSON.stringify(revoked.body)}`;
      assert.deepEqual([revoked.status, revoked.body.error], [401, REVOKED], what);
    }
    // The one endpoint that reads the store itself keeps its own answer.
    const current = workloads.orders as WorkloadCredentials;
    await assert.rejects(
      renewWithControlPlane({ url: server.url, trustDomain: TD, current, bundlePem: ca.bundlePem }),
      { code: 'LOCKSTEP_CP_WORKLOAD_REVOKED', status: 403 },
    );

    assert.equal((await fresh('/v1/policy/bundle', asWorkload('reports'))).status, 200, 'reports');
    assert.equal((await fresh('/v1/revocations', asWorkload('reports'))).status, 200, 'reports');
    assert.equal((await fresh('/v1/extension/ping', asWorkload('reports'))).status, 200, 'reports');
    const token = await fresh('/v1/token', asWorkload('reports'), 'POST', exchange);
    assert.equal(token.status, 400, 'reports reaches the Txn-Token Service (which finds its request incomplete)');
    assert.notEqual(token.body.error, REVOKED);
  });

  it('ends the open stream of a workload once it is revoked', async () => {
    const tls = { ...asWorkload('inventory'), ca: ca.bundlePem, checkServerIdentity: () => undefined };
    let text = '';
    let revoking = false;
    const ended = new Promise<void>((resolve, reject) => {
      const stream = httpsGet(`${server.url}/v1/stream`, tls, (response) => {
        if (response.statusCode !== 200) reject(new Error(`the stream answered ${response.statusCode}`));
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
          if (text.includes('event: trust-bundle') && !revoking) {
            revoking = true;
            void revoke(workloads.inventory?.spiffeId ?? '').catch(reject);
          }
        });
        response.on('end', resolve);
      });
      stream.on('error', reject);
      setTimeout(() => {
        stream.destroy();
        reject(new Error('the stream of a revoked workload stayed open'));
      }, 5_000).unref();
    });
    await ended;
    const ownRevocation = /event: revocation\ndata: \{[^\n]*"value":"spiffe:\/\/shop\.test\/svc\/inventory"/;
    assert.match(text, ownRevocation, 'its own revocation, then the end');
  });

  it('a revocation written through another replica (the shared store) is enforced once the feed reads it', async () => {
    assert.equal((await fresh('/v1/revocations', asWorkload('billing'))).status, 200);
    const spiffeId = workloads.billing?.spiffeId ?? '';
    // What another replica does: the store, not this process's feed (it learns by notification or re-read).
    await store.addRevocation({ kind: 'spiffeId', value: spiffeId, reason: 'replica', actor: 'cli', at: Date.now() });
    const started = performance.now();
    let answer = await fresh('/v1/revocations', asWorkload('billing'));
    while (answer.status === 200 && performance.now() - started < 3_000) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      answer = await fresh('/v1/revocations', asWorkload('billing'));
    }
    const waited = `still served after ${Math.round(performance.now() - started)} ms`;
    assert.deepEqual([answer.status, answer.body.error], [401, REVOKED], waited);
  });
});

describe("a lifted revocation (an administrator's mistake taken back)", () => {
  const lift = (tls: Tls, value: string) =>
    fresh('/v1/admin/revocations/lift', tls, 'POST', { kind: 'spiffeId', value, reason: 'revoked by mistake' });

  it('cannot be lifted by the revoked caller itself, by a workload, or for a value that is not revoked', async () => {
    const alice = `spiffe://${TD}/admin/alice`;
    const herself = await lift(asAdmin('alice'), alice);
    assert.deepEqual(
      [herself.status, herself.body.error],
      [401, REVOKED],
      'a revoked administrator cannot lift her own revocation',
    );
    const workload = await lift(asWorkload('reports'), workloads.orders?.spiffeId ?? '');
    assert.deepEqual([workload.status, workload.body.error], [403, 'LOCKSTEP_CP_ADMIN_REQUIRED']);
    assert.equal((await fresh('/v1/policy/bundle', asWorkload('orders'))).status, 401, 'orders is still revoked');
    const nothing = await lift(asAdmin('bob'), workloads.reports?.spiffeId ?? '');
    assert.deepEqual([nothing.status, nothing.body.error], [404, 'LOCKSTEP_CP_NOT_REVOKED']);
    assert.match(
      String(nothing.body.message),
      /no revocation holds for spiffeId "spiffe:\/\/shop\.test\/svc\/reports"/,
    );
  });

  it('serves the caller again from its next request, renewal included; a second lift finds nothing', async () => {
    const orders = workloads.orders?.spiffeId ?? '';
    const lifted = await lift(asAdmin('bob'), orders);
    assert.equal(lifted.status, 200, JSON.stringify(lifted.body));
    assert.deepEqual(lifted.body.lifted, {
      reason: 'revoked by mistake',
      actor: `spiffe://${TD}/admin/bob`,
      at: (lifted.body.lifted as { at: number }).at,
    });
    assert.equal((await fresh('/v1/policy/bundle', asWorkload('orders'))).status, 200);
    const current = workloads.orders as WorkloadCredentials;
    const renewed = await renewWithControlPlane({ url: server.url, trustDomain: TD, current, bundlePem: ca.bundlePem });
    assert.equal(renewed.spiffeId, orders);
    const again = await lift(asAdmin('bob'), orders);
    assert.deepEqual([again.status, again.body.error], [404, 'LOCKSTEP_CP_NOT_REVOKED']);
    // The feed a guard resumes from holds the lift, not the revocation: nothing there to replay. Only a
    // guard that asks for lifts gets it (one of the previous version would apply it as a revocation).
    const entriesOf = async (headers: Record<string, string>) => {
      const feed = await fresh('/v1/revocations', asWorkload('reports'), 'GET', undefined, headers);
      return (feed.body.revocations as { value: string; lifted: unknown }[]).filter((entry) => entry.value === orders);
    };
    const entries = await entriesOf({ 'lockstep-revocation-lifts': '1' });
    assert.equal(entries.length, 1);
    assert.notEqual(entries[0]?.lifted, null);
    assert.deepEqual(await entriesOf({}), [], 'without asking for lifts');
  });

  it('a lift written through another replica is honoured once the feed reads it', async () => {
    const billing = workloads.billing?.spiffeId ?? '';
    assert.equal((await fresh('/v1/revocations', asWorkload('billing'))).status, 401, 'revoked by the test before');
    await store.liftRevocation('spiffeId', billing, { reason: 'replica', actor: 'cli', at: Date.now() });
    const started = performance.now();
    let answer = await fresh('/v1/revocations', asWorkload('billing'));
    while (answer.status !== 200 && performance.now() - started < 3_000) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      answer = await fresh('/v1/revocations', asWorkload('billing'));
    }
    assert.equal(answer.status, 200, `still refused after ${Math.round(performance.now() - started)} ms`);
  });
});
