/**
 * Failover between control-plane replicas, over real TLS. One real control plane stands for the
 * replicas (replicas sharing keys are not built yet): a closed port on 127.0.0.1 is a dead replica,
 * and TCP relays in front of the control plane are replicas that can be stopped while a stream runs.
 * The join, a renewal, the policy keys, a Txn-Token and the heartbeat reach the live replica past a
 * dead first one; a join moves on only while the token was not sent; a stream whose replica goes is
 * on the next within 300 ms and catches up from its position; a refusal (401, a coded refusal) is
 * an answer and fails over nowhere. `withFailover` itself: idempotency, bounded time, the error.
 */
import assert from 'node:assert/strict';
import { getEventListeners, once } from 'node:events';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { controlPlaneEndpoints } from '@lockstep/identity';
import { createTestCa, startTcpRelay } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  singleKey,
  startControlPlane,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type TxnTokenService,
  type UnreachableReport,
  type WorkloadCa,
} from '@lockstep/control-plane';
import {
  connectGuardStream,
  controlPlaneAgent,
  EnrolmentError,
  joinAsWorkload,
  joinControlPlane,
  startRegistryHeartbeat,
  TxnTokenError,
  withFailover,
  type AgentEvent,
  type StreamEvent,
  type WorkloadCredentials,
} from '../src/index.ts';
import { followEventStream } from '../src/event-stream.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-failover-'));
const unreachableReports: UnreachableReport[] = [];
let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let tts: TxnTokenService;
let controlPlane: RunningControlPlane;
const closing: (() => Promise<unknown> | unknown)[] = [];

before(async () => {
  const policyDir = join(scratch, 'policies');
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(
    join(policyDir, 'tts.cedar'),
    `@id("orders-starts-its-own-work")
permit (principal == Lockstep::Workload::"spiffe://${TD}/svc/orders", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
`,
  );
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey: policyKey, watch: false });
  tts = createTxnTokenService({
    trustDomain: TD,
    keys: singleKey(await openSigningKey(join(scratch, 'keys'), 'txn-token')),
    subjects: createSubjectVerifier({ issuers: [], txnTokenKeys: () => tts.jwks, trustDomain: TD }),
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  controlPlane = await startControlPlane({
    ca,
    store,
    policy,
    tts,
    extensions: [() => ({ onUnreachable: (report) => unreachableReports.push(report) })],
  });
});

after(async () => {
  for (const close of closing.reverse()) await close();
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** An https URL where nothing listens: a replica that is down. */
async function deadUrl(): Promise<string> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return `https://127.0.0.1:${port}`;
}

interface Relay {
  readonly url: string;
  /** Connections it has accepted. */
  readonly accepted: number;
  /** Stops passing on what the control plane sends (the client hears nothing more). */
  hold(): void;
  /** Stops listening and drops every connection: the replica is gone. */
  kill(): Promise<void>;
}

/** A TCP relay to the control plane: a replica of its own, as far as a client can tell. */
async function relay(): Promise<Relay> {
  const tcp = await startTcpRelay({ target: { host: '127.0.0.1', port: Number(new URL(controlPlane.url).port) } });
  closing.push(() => tcp.close());
  return {
    url: `https://127.0.0.1:${tcp.port}`,
    get accepted() {
      return tcp.accepted;
    },
    hold: () => tcp.stall(),
    kill: () => tcp.close(),
  };
}

async function enrol(service: string, url: string | string[] = controlPlane.url): Promise<WorkloadCredentials> {
  const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
  return joinControlPlane({ url, trustDomain: TD, joinToken: token, service });
}

const tlsOf = (who: WorkloadCredentials) => ({ cert: who.chainPem, key: who.keyPem, ca: who.bundlePem });

async function eventually(check: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > limitMs) assert.fail(`waited ${limitMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('a dead replica first in the list', () => {
  it('join, policy keys, renewal and a Txn-Token go to the live one, at once', async () => {
    const dead = await deadUrl();
    const events: AgentEvent[] = [];
    const started = performance.now();
    const agent = await joinAsWorkload({
      url: `${dead}, ${controlPlane.url}`, // comma-separated, as LOCKSTEP_CP_URL gives it
      trustDomain: TD,
      joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' })).token,
      service: 'orders',
      stateDir: join(scratch, 'orders'),
      onEvent: (event) => events.push(event),
    });
    closing.push(() => agent.close());
    assert.ok(performance.now() - started < 2_000, 'a refused connection costs no timeout');
    assert.ok(agent.guardOptions().policy.keys.keys.length > 0, 'the policy keys, fetched past the dead one');
    assert.deepEqual(
      agent.guardOptions({ auditSpoolDir: false }).txnTokenKeys,
      { urls: [`${controlPlane.url}/v1/txn-token/jwks.json`, `${dead}/v1/txn-token/jwks.json`] },
      "the guard gets every replica's JWKS, the one that answered first",
    );
    const before = agent.credentials.expiresAt;
    await agent.renew();
    assert.ok(agent.credentials.expiresAt >= before);
    assert.deepEqual(
      events.map((event) => event.kind),
      ['renewed'],
    );
    const token = await agent.txnToken({ subjectTokenType: 'self_signed', scope: 'reports:run' });
    assert.equal(token.split('.').length, 3);
  });

  it('the heartbeat reports through the live one: not unreachable, and says via which', async () => {
    const orders = await enrol('orders');
    const dead = await deadUrl();
    const heartbeat = startRegistryHeartbeat({
      url: [dead, controlPlane.url],
      trustDomain: TD,
      tls: tlsOf(orders),
      guard: { status },
      intervalMs: 3_600_000,
    });
    try {
      await heartbeat.beat();
      assert.equal(heartbeat.unreachableSince, null);
      assert.equal(heartbeat.via, controlPlane.url);
      assert.deepEqual(unreachableReports, [], 'no outage to report');
    } finally {
      await heartbeat.stop();
    }
  });

  it('the heartbeat is unreachable only when every replica is: the error lists them', async () => {
    const orders = await enrol('orders');
    const [deadA, deadB] = [await deadUrl(), await deadUrl()];
    const down = startRegistryHeartbeat({
      url: [deadA, deadB],
      trustDomain: TD,
      tls: tlsOf(orders),
      guard: { status },
      intervalMs: 3_600_000,
    });
    try {
      await assert.rejects(down.beat(), (error: Error) => {
        assert.match(error.message, /ECONNREFUSED/);
        assert.ok(
          error.message.includes(`tried ${deadA} (`) && error.message.includes(`then ${deadB}]`),
          error.message,
        );
        return true;
      });
    } finally {
      await down.stop();
    }
    const since = down.unreachableSince;
    assert.ok(since !== null, 'no replica answered: unreachable');
    const back = startRegistryHeartbeat({
      url: [deadA, controlPlane.url],
      trustDomain: TD,
      tls: tlsOf(orders),
      guard: { status },
      intervalMs: 3_600_000,
      unreachableSince: since,
    });
    try {
      // Its first report, sent at start, says since when.
      await eventually(() => back.unreachableSince === null, 'the outage to be reported through the live one');
      assert.equal(unreachableReports.length, 1, 'the outage, reported once it could be');
      // The control plane cuts the window to the time since the guard's last report (the test before).
      assert.ok((unreachableReports[0]?.since ?? 0) >= since);
    } finally {
      await back.stop();
    }
  });
});

describe('a join spends a one-time token', () => {
  it('moves past a replica whose bundle does not match the pin, sending it nothing', async () => {
    // Another control plane of the trust domain, with other keys: a replica that has not reloaded a rotation.
    const otherCa = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'other-keys') });
    const otherStore = openSqliteStore(':memory:');
    const other = await startControlPlane({ ca: otherCa, store: otherStore });
    try {
      // Had the token been sent there, that replica (which never issued it) would refuse it, and the join fail.
      const joined = await enrol('inventory', [other.url, controlPlane.url]);
      assert.equal(joined.spiffeId, `spiffe://${TD}/svc/inventory`);
      await assert.rejects(enrol('inventory', [other.url]), { code: 'LOCKSTEP_ENROL_BUNDLE_MISMATCH' });
    } finally {
      await other.close();
      await otherStore.close();
    }
  });

  it('a refusal (the token spent) is the answer: the next replica is not asked', async () => {
    const [first, second] = [await relay(), await relay()];
    const { token } = await createJoinToken(store, ca, { service: 'payments', createdBy: 'cli' });
    await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service: 'payments' });
    await assert.rejects(
      joinControlPlane({ url: [first.url, second.url], trustDomain: TD, joinToken: token, service: 'payments' }),
      (error: unknown) =>
        error instanceof EnrolmentError && error.code === 'LOCKSTEP_CP_JOIN_TOKEN_USED' && error.status === 401,
    );
    assert.ok(first.accepted > 0);
    assert.equal(second.accepted, 0);
  });
});

describe('a refusal is no outage', () => {
  it('a Txn-Token the policy does not permit is refused by the first replica, and the second is not asked', async () => {
    const [first, second] = [await relay(), await relay()];
    const agent = await joinAsWorkload({
      url: [first.url, second.url],
      trustDomain: TD,
      joinToken: (await createJoinToken(store, ca, { service: 'gateway', createdBy: 'cli' })).token,
      service: 'gateway',
      stateDir: join(scratch, 'gateway'),
    });
    closing.push(() => agent.close());
    await assert.rejects(
      agent.txnToken({ subjectTokenType: 'self_signed', scope: 'reports:run' }),
      (error: unknown) => error instanceof TxnTokenError && error.code === 'LOCKSTEP_TXN_TOKEN_REFUSED',
    );
    assert.equal(second.accepted, 0);
  });

  it('a stream refused with 401 (its workload revoked) backs off and leaves the replica in front', async () => {
    const revoked = await enrol('reports');
    await controlPlane.revoke({ kind: 'spiffeId', value: revoked.spiffeId, reason: 'test', actor: 'test' });
    const [first, second] = [await relay(), await relay()];
    const endpoints = controlPlaneEndpoints([first.url, second.url]);
    const stop = new AbortController();
    const dispatcher = controlPlaneAgent(TD, tlsOf(revoked), stop.signal);
    const downs: { reason: string; retryInMs: number; base: string }[] = [];
    const following = followEventStream(endpoints, '/v1/stream', {
      dispatcher,
      signal: stop.signal,
      silenceMs: 45_000,
      lastEventId: () => null,
      onOpen: () => assert.fail('a revoked workload has no stream'),
      onMessage: () => {},
      onDown: (reason, retryInMs, base) => {
        downs.push({ reason, retryInMs, base });
        stop.abort();
      },
    });
    await following;
    await dispatcher.close();
    assert.equal(downs.length, 1);
    assert.match(downs[0]?.reason ?? '', /answered 401 .*LOCKSTEP_CP_PEER_REVOKED/);
    assert.equal(downs[0]?.base, first.url);
    assert.ok((downs[0]?.retryInMs ?? 0) >= 500, `a backoff, not the move to the next: ${downs[0]?.retryInMs}`);
    assert.equal(endpoints.order()[0], first.url, 'not marked down');
    assert.equal(second.accepted, 0);
  });
});

describe('the stream, when its replica goes', () => {
  it('is on the next replica within 300 ms and catches up on what it missed', async () => {
    const orders = await enrol('orders');
    const [first, second] = [await relay(), await relay()];
    const events: { at: number; event: StreamEvent }[] = [];
    const revoked: string[] = [];
    const stream = connectGuardStream({
      url: [first.url, second.url],
      trustDomain: TD,
      tls: tlsOf(orders),
      pollMs: 60_000, // what arrives comes by the stream
      target: {
        setPolicyBundle: async () => {},
        revoke: ({ value }) => revoked.push(value),
        lift() {},
        setTrustBundle() {},
      },
      onEvent: (event) => events.push({ at: performance.now(), event }),
    });
    closing.push(() => stream.close());
    const connected = () => events.filter(({ event }) => event.kind === 'connected');
    await eventually(() => connected().length === 1, 'the stream to open');
    assert.equal([first.accepted, second.accepted].join(), '1,0', 'on the first replica');
    await controlPlane.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'test' });
    await eventually(() => revoked.includes('mallory'), 'the revocation on the open stream');
    const since = () => revoked.slice(revoked.indexOf('mallory')); // earlier tests' revocations came first

    // The first replica stops passing anything on, then goes: what is revoked meanwhile never reaches the guard there.
    first.hold();
    await controlPlane.revoke({ kind: 'sub', value: 'trudy', reason: 'test', actor: 'test' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(since(), ['mallory']);
    const goneAt = performance.now();
    await first.kill();
    await eventually(() => connected().length === 2, 'the stream to reconnect', 2_000);
    const movedMs = (connected()[1]?.at ?? Infinity) - goneAt;
    assert.ok(movedMs < 300, `on the next replica after ${Math.round(movedMs)} ms`);
    assert.equal(second.accepted, 1);
    await eventually(() => revoked.includes('trudy'), 'the revocation made while it was away');
    assert.deepEqual(since(), ['mallory', 'trudy'], 'resumed from its position: nothing applied twice');
  });

  it('sends its Last-Event-ID to the next replica: nothing it had is sent again', async () => {
    const orders = await enrol('orders');
    const [first, second] = [await relay(), await relay()];
    const stop = new AbortController();
    const dispatcher = controlPlaneAgent(TD, tlsOf(orders), stop.signal);
    const opened: string[] = [];
    const received: { base: string; id: string | undefined; event: string | undefined }[] = [];
    let lastEventId: string | null = null;
    const following = followEventStream(controlPlaneEndpoints([first.url, second.url]), '/v1/stream', {
      dispatcher,
      signal: stop.signal,
      silenceMs: 45_000,
      lastEventId: () => lastEventId,
      onOpen: (base) => opened.push(base),
      onMessage: (message) => {
        received.push({ base: opened.at(-1) ?? '', id: message.id, event: message.event });
        lastEventId = message.id ?? lastEventId;
      },
      onDown: () => {},
    });
    try {
      await eventually(() => opened.length === 1, 'the stream to open');
      const { seq } = await controlPlane.revoke({ kind: 'sub', value: 'eve', reason: 'test', actor: 'test' });
      await eventually(() => lastEventId === String(seq), 'the revocation, with its id');
      const before = received.filter(({ id }) => id !== undefined).length;
      await first.kill();
      await eventually(() => opened.length === 2, 'the stream on the second replica');
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(opened, [first.url, second.url]);
      const replayed = received.filter(({ base, id }) => base === second.url && id !== undefined);
      assert.deepEqual(replayed, [], `nothing after position ${seq} to send (had ${before} entries)`);
    } finally {
      stop.abort();
      await following;
      await dispatcher.close();
    }
  });
});

/** A guard's status for the heartbeat. */
function status() {
  return {
    service: 'orders',
    spiffeId: `spiffe://${TD}/svc/orders`,
    routes: [],
    policyVersion: null,
    svidExpiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    mode: 'enforce' as const,
    guardVersion: '0.1.0',
  };
}

describe('withFailover', () => {
  let agent: Agent;
  let okUrl: string;
  let hangUpUrl: string;
  let refusesUrl: string;
  let silentUrl: string;
  const hits = { ok: 0, hangUp: 0, refuses: 0 };
  const servers: (HttpsServer | Server)[] = [];
  const silentSockets = new Set<Socket>();

  before(async () => {
    const testCa = await createTestCa({ trustDomain: TD });
    const cert = await testCa.issueCert({ dnsNames: ['localhost'] });
    const serve = async (handle: (response: ServerResponse) => void): Promise<string> => {
      const server = createHttpsServer({ cert: cert.chainPem, key: cert.keyPem }, (_request, response) =>
        handle(response),
      );
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      servers.push(server);
      return `https://127.0.0.1:${(server.address() as { port: number }).port}`;
    };
    okUrl = await serve((response) => {
      hits.ok += 1;
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    // Takes the request, then drops the connection: the request may have been acted on.
    hangUpUrl = await serve((response) => {
      hits.hangUp += 1;
      response.socket?.destroy();
    });
    refusesUrl = await serve((response) => {
      hits.refuses += 1;
      response.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"LOCKSTEP_CP_PEER_REVOKED"}');
    });
    // Accepts TCP and never says a word.
    const silent = createServer((socket) => {
      silentSockets.add(socket);
      socket.on('error', () => {});
    }).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    servers.push(silent);
    silentUrl = `https://127.0.0.1:${(silent.address() as { port: number }).port}`;
    agent = new Agent({ connect: { ca: testCa.bundlePem, checkServerIdentity: () => undefined } });
  });

  after(async () => {
    await agent.destroy();
    for (const socket of silentSockets) socket.destroy();
    for (const server of servers) {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** GET / at `base`: its JSON, or an error with the status of any other answer. */
  const get = async (base: string, signal: AbortSignal): Promise<unknown> => {
    const response = await request(new URL('/', base), { dispatcher: agent, signal });
    const body = (await response.body.json()) as unknown;
    if (response.statusCode !== 200)
      throw Object.assign(new Error(`answered ${response.statusCode}`), { status: response.statusCode });
    return body;
  };

  it('after a drop once sent: the next replica only when the request may be sent twice', async () => {
    const dropped = { ...hits };
    const idempotent = controlPlaneEndpoints([hangUpUrl, okUrl]);
    assert.deepEqual(await withFailover(idempotent, get, { idempotent: true }), { ok: true });
    assert.deepEqual(idempotent.order(), [okUrl, hangUpUrl], 'the one that answered first from now on');

    await assert.rejects(
      withFailover(controlPlaneEndpoints([hangUpUrl, okUrl]), get, { idempotent: false }),
      (error: Error & { code?: string }) => error.code === 'UND_ERR_SOCKET' && !error.message.includes('tried'),
    );
    assert.deepEqual(
      [hits.hangUp - dropped.hangUp, hits.ok - dropped.ok],
      [2, 1],
      'the request that is not idempotent went nowhere else',
    );
  });

  it('no connection: the next replica, also for a request that must not be sent twice', async () => {
    const dead = await deadUrl();
    assert.deepEqual(await withFailover(controlPlaneEndpoints([dead, okUrl]), get, { idempotent: false }), {
      ok: true,
    });
  });

  it('a refusal surfaces as it is, and leaves the replica in front', async () => {
    const endpoints = controlPlaneEndpoints([refusesUrl, okUrl]);
    const okBefore = hits.ok;
    await assert.rejects(withFailover(endpoints, get, { idempotent: true }), { message: 'answered 401', status: 401 });
    assert.equal(hits.ok, okBefore);
    assert.equal(endpoints.order()[0], refusesUrl);
  });

  it('every replica failing: the last error, its message listing what each said', async () => {
    const dead = await deadUrl();
    await assert.rejects(withFailover(controlPlaneEndpoints([dead, hangUpUrl]), get, { idempotent: true }), (error) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /^other side closed \[tried https:\/\/127\.0\.0\.1:\d+ \(connect ECONNREFUSED/);
      assert.ok(error.message.endsWith(`then ${hangUpUrl}]`), error.message);
      return true;
    });
  });

  it('bounded: replicas that never answer are left after attemptMs, all of them within deadlineMs', async () => {
    const started = performance.now();
    const endpoints = controlPlaneEndpoints([silentUrl, `${silentUrl}/again`, okUrl]);
    await assert.rejects(
      withFailover(endpoints, get, { idempotent: true, attemptMs: 200, deadlineMs: 300 }),
      /gave no answer within \d+ ms \[tried .*gave no answer within 200 ms.*; the deadline of 300 ms passed\]$/,
    );
    const tookMs = performance.now() - started;
    assert.ok(tookMs >= 290 && tookMs < 800, `took ${Math.round(tookMs)} ms`);
  });

  it("leaves no listener behind on an attempt's signal: a long-lived caller signal keeps none alive", async () => {
    const caller = new AbortController();
    const signals: AbortSignal[] = [];
    const endpoints = controlPlaneEndpoints([okUrl, hangUpUrl]);
    for (const fails of [false, true]) {
      let refuse = fails; // the first attempt of the second call finds no connection
      await withFailover(
        endpoints,
        async (_base, signal) => {
          signals.push(signal);
          if (!refuse) return true;
          refuse = false;
          throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
        },
        { idempotent: true, signal: caller.signal },
      );
    }
    assert.equal(signals.length, 3, 'one, then a failed attempt and the next');
    for (const signal of signals) assert.deepEqual(getEventListeners(signal, 'abort'), []);
  });

  it("the caller's own abort stops at once and marks nothing", async () => {
    const endpoints = controlPlaneEndpoints([silentUrl, okUrl]);
    const okBefore = hits.ok;
    await assert.rejects(withFailover(endpoints, get, { idempotent: true, signal: AbortSignal.timeout(50) }));
    assert.equal(hits.ok, okBefore);
    assert.deepEqual(endpoints.order(), [silentUrl, okUrl]);
  });
});
