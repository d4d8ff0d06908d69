/**
 * The agent recovers on its own after its SVID expired while no control plane answered
 * (`POST /v1/recover`, the expired SVID presented in the handshake), and stops for good when the
 * control plane refuses: a revoked workload, a spent SVID. Real TLS, a real control plane, TCP relays
 * that can be cut and restored on the same port.
 *
 * SVIDs live at least 60 s. The control plane here signs with a clock set back 55 s, so that the SVIDs
 * it issues expire about 5 s after they are issued; its CA was created hours before, so that its
 * intermediate covers them. Lost answers are made by the store: a hook on spending an SVID holds the
 * answer past the client's attempt timeout, or cuts the network before it is sent. The cases run at
 * once: the file takes about 30 s.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  createJoinToken,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RecoveryReuse,
  type RunningControlPlane,
  type SvidSuccession,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { startTcpRelay } from '@lockstep/testkit';
import {
  EnrolmentError,
  joinAsWorkload,
  joinControlPlane,
  recoverWithControlPlane,
  renewWithControlPlane,
  type AgentEvent,
  type AttachableGuard,
  type WorkloadAgent,
  type WorkloadCredentials,
} from '../src/index.ts';
import { generateSvidKeys } from '../src/enrol-client.ts';

const TD = 'shop.test';
const HOUR = 3_600_000;
/** How far the control plane's clock is set back: its 60 s SVIDs expire 5 s after they are issued. */
const SET_BACK_MS = 55_000;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-agent-recovery-'));
let ca: WorkloadCa;
let past: WorkloadCa;
let store: ControlPlaneStore;
let controlPlane: RunningControlPlane;
/** A control plane of the same trust domain under another CA: what one whose root rotated looks like from before. */
let foreign: RunningControlPlane;
let foreignStore: ControlPlaneStore;
const closing: (() => Promise<unknown>)[] = [];
/** Run once, just after the SVID of that serial was spent (renewed or recovered), before the answer leaves. */
const onSpent = new Map<string, (spent: SvidSuccession) => Promise<void>>();
const reuses: RecoveryReuse[] = [];

before(async () => {
  const keyDir = join(scratch, 'keys');
  // Created five hours ago (its intermediate valid from then), then opened as any control plane opens it.
  await openWorkloadCa({ trustDomain: TD, keyDir, now: () => Date.now() - 5 * HOUR });
  ca = await openWorkloadCa({ trustDomain: TD, keyDir });
  past = withClockSetBack(ca, SET_BACK_MS);
  store = openSqliteStore(':memory:');
  const hooked: ControlPlaneStore = {
    ...store,
    async spendSvid(succession) {
      const spent = await store.spendSvid(succession);
      const hook = onSpent.get(succession.serial);
      onSpent.delete(succession.serial);
      await hook?.(succession);
      return spent;
    },
  };
  controlPlane = await startControlPlane({
    ca: past,
    store: hooked,
    svidLifetimeSeconds: 60,
    extensions: [() => ({ onRecoveryReuse: (reuse: RecoveryReuse) => reuses.push(reuse) })],
  });
  foreignStore = openSqliteStore(':memory:');
  foreign = await startControlPlane({
    ca: await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'foreign-keys') }),
    store: foreignStore,
  });
});

after(async () => {
  for (const close of closing.reverse()) await close();
  await controlPlane.close();
  await foreign.close();
  await store.close();
  await foreignStore.close();
  rmSync(scratch, { recursive: true, force: true });
});

/**
 * The CA as it is, but for its clock. Getters, not a copy (`{ ...ca }`): the bundle and the signer are
 * read from the CA at each use, as the control plane would read them.
 */
function withClockSetBack(real: WorkloadCa, ms: number): WorkloadCa {
  const view: Record<string, unknown> = {};
  for (const key of Object.keys(real) as (keyof WorkloadCa)[])
    if (key !== 'now') Object.defineProperty(view, key, { enumerable: true, get: () => real[key] });
  view.now = () => Date.now() - ms;
  return Object.freeze(view) as unknown as WorkloadCa;
}

interface Relay {
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Refuses new connections and drops the open ones: the control plane is unreachable. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /** Drops the open connections; new ones go to `url`'s port: another server answers at this address. */
  retarget(url: string): void;
}

/** A TCP relay to the control plane that can be cut and restored: the network between them. */
async function relay(): Promise<Relay> {
  const controlPlaneAt = (url: string) => ({ host: '127.0.0.1', port: Number(new URL(url).port) });
  const tcp = await startTcpRelay({ target: controlPlaneAt(controlPlane.url) });
  closing.push(() => tcp.close());
  return {
    url: `https://127.0.0.1:${tcp.port}`,
    get accepted() {
      return tcp.accepted;
    },
    cut: () => tcp.cut(),
    restore: () => tcp.restore(),
    retarget: (url) => tcp.retarget(controlPlaneAt(url)),
  };
}

/** Enough of a guard to attach: it keeps every SVID it is handed. */
function fakeGuard(service: string): AttachableGuard & { readonly svids: string[] } {
  const svids: string[] = [];
  return {
    svids,
    setSvid: ({ cert }) => void svids.push(cert),
    setPolicyBundle: async () => undefined,
    revoke() {},
    lift() {},
    setTrustBundle() {},
    status: () => ({
      service,
      spiffeId: `spiffe://${TD}/svc/${service}`,
      routes: [],
      policyVersion: null,
      svidExpiresAt: new Date(Date.now() + HOUR).toISOString(),
      mode: 'enforce' as const,
      guardVersion: '0.1.0',
    }),
  };
}

/** An agent of `service`, joined through `via` (one relay, or one per replica), with a guard attached; its events in `events`. */
async function agentVia(
  service: string,
  via: Relay | readonly Relay[],
): Promise<{ agent: WorkloadAgent; events: AgentEvent[]; guard: ReturnType<typeof fakeGuard> }> {
  const events: AgentEvent[] = [];
  const agent = await joinAsWorkload({
    url: Array.isArray(via) ? via.map((each: Relay) => each.url) : (via as Relay).url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, past, { service, createdBy: 'cli' })).token,
    service,
    stateDir: join(scratch, service),
    heartbeatMs: HOUR,
    onEvent: (event) => events.push(event),
  });
  closing.push(() => agent.close());
  const guard = fakeGuard(service);
  agent.attach(guard);
  return { agent, events, guard };
}

async function eventually(check: () => boolean, what: string, limitMs: number): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > limitMs) assert.fail(`waited ${limitMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Cuts `via` just after a renewal (none in flight: a renewal whose answer the cut lost would have spent
 * the SVID, and its recovery would be refused), then waits until the SVID has expired.
 */
async function cutAfterRenewal(via: Relay | readonly Relay[], events: AgentEvent[]): Promise<void> {
  await afterRenewal(events);
  await Promise.all((Array.isArray(via) ? via : [via]).map((each: Relay) => each.cut()));
}

/** Resolves just after the agent's next renewal. */
async function afterRenewal(events: AgentEvent[]): Promise<void> {
  const seen = events.length;
  await eventually(() => events.slice(seen).some((event) => event.kind === 'renewed'), 'a renewal', 5_000);
}

async function untilExpired(agent: WorkloadAgent): Promise<void> {
  // The SVID held at the cut is the last one: its expiry, and a little more.
  await eventually(() => Date.now() > agent.credentials.expiresAt.getTime() + 300, 'the SVID to expire', 8_000);
  assert.equal(agent.state, 'recovering');
}

/** The leaf verifies against the intermediate it came with, and that against a root of `bundlePem`. */
function verifiesAgainst(chainPem: string, bundlePem: string): boolean {
  const [leaf, intermediate] = (
    chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  ).map((pem) => new X509Certificate(pem));
  const roots = (bundlePem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (pem) => new X509Certificate(pem),
  );
  if (leaf === undefined || intermediate === undefined) return false;
  return (
    leaf.checkIssued(intermediate) &&
    leaf.verify(intermediate.publicKey) &&
    roots.some((root) => intermediate.checkIssued(root) && intermediate.verify(root.publicKey))
  );
}

const serialOf = (chainPem: string) => new X509Certificate(chainPem).serialNumber.toLowerCase();

describe('an agent whose SVID expired while the control plane was unreachable', { concurrency: true }, () => {
  it('recovers on its own once it is reachable again: a new SVID, same identity, in use', async () => {
    const via = await relay();
    const { agent, events, guard } = await agentVia('orders', via);
    await eventually(() => events.some((event) => event.kind === 'connected'), 'the stream', 5_000);
    const spiffeId = agent.credentials.spiffeId;

    await cutAfterRenewal(via, events);
    await untilExpired(agent);
    const expired = agent.credentials;
    assert.ok(
      events.some((event) => event.kind === 'recovery-failed'),
      'each failed attempt is reported',
    );
    const restoredAt = Date.now();
    await via.restore();
    await eventually(() => events.some((event) => event.kind === 'recovered'), "'recovered'", 20_000);
    const recovered = events.find((event) => event.kind === 'recovered');
    assert.ok(recovered?.kind === 'recovered');
    assert.ok(Date.now() - restoredAt < 20_000);
    assert.equal(recovered.previousExpiresAt.getTime(), expired.expiresAt.getTime());

    // The SVID issued by the recovery (renewals go on after it, every 2.5 s here) is the guard's, as a renewed one is.
    const issued = (await store.issuedSvids(spiffeId)).filter((record) => record.via === 'recover');
    assert.equal(issued.length, 1, 'one recovery, recorded as such');
    const svid = guard.svids.find((cert) => serialOf(cert) === issued[0]?.serial.toLowerCase());
    assert.ok(svid !== undefined, 'the guard was handed the recovered SVID');
    assert.notEqual(serialOf(svid), serialOf(expired.chainPem));
    assert.ok(verifiesAgainst(svid, ca.bundlePem), 'issued by this CA');
    assert.ok(new X509Certificate(svid).subjectAltName?.includes(`URI:${spiffeId}`), 'the same SPIFFE ID');
    assert.equal(agent.credentials.spiffeId, spiffeId);
    assert.equal(agent.state, 'active');
    // The stream follows again, with the new SVID.
    const since = events.indexOf(recovered);
    await eventually(() => events.slice(since).some((event) => event.kind === 'connected'), 'the stream back', 5_000);
  });

  it('stops for good when the workload was revoked meanwhile: recovery-refused, needs-join', async () => {
    const via = await relay();
    const { agent, events } = await agentVia('payments', via);
    await cutAfterRenewal(via, events);
    await controlPlane.revoke({
      kind: 'spiffeId',
      value: `spiffe://${TD}/svc/payments`,
      reason: 'compromised',
      actor: 'test',
    });
    await untilExpired(agent);
    await via.restore();
    await eventually(() => events.some((event) => event.kind === 'recovery-refused'), "'recovery-refused'", 20_000);
    const refused = events.find((event) => event.kind === 'recovery-refused');
    assert.ok(refused?.kind === 'recovery-refused');
    assert.equal(refused.code, 'LOCKSTEP_CP_WORKLOAD_REVOKED');
    assert.match(refused.message, /payments/);
    assert.equal(agent.state, 'needs-join');

    // Nothing more is tried: no recovery, no renewal, no stream, no heartbeat.
    const [connections, seen] = [via.accepted, events.length];
    await sleep(4_000);
    assert.equal(via.accepted, connections, 'no connection after the refusal');
    assert.deepEqual(events.slice(seen), []);
    assert.equal(agent.state, 'needs-join');
  });

  it('recovers although the answer to its first recovery was lost: failover abandoned it, the retry asks for the same key', async () => {
    // Two replicas (two relays to one control plane): an attempt that gets no answer within 5 s is
    // abandoned for the next, while the control plane carries on and spends the SVID.
    const replicas = [await relay(), await relay()];
    const { agent, events, guard } = await agentVia('shipping', replicas);
    const spiffeId = agent.credentials.spiffeId;
    await cutAfterRenewal(replicas, events);
    await untilExpired(agent);
    const expired = serialOf(agent.credentials.chainPem);
    let held = 0;
    let answered: Promise<unknown> = Promise.resolve();
    onSpent.set(expired, async () => {
      held += 1;
      answered = sleep(6_000);
      await answered; // spent; the answer comes after the attempt's 5 s
    });
    await Promise.all(replicas.map((each) => each.restore()));
    await eventually(
      () => events.some((event) => event.kind === 'recovered' || event.kind === 'recovery-refused'),
      "'recovered'",
      40_000,
    );
    assert.deepEqual(
      events.filter((event) => event.kind === 'recovery-refused'),
      [],
    );
    assert.equal(held, 1, 'the first recovery reached the control plane, and its answer was lost');
    assert.equal(agent.state, 'active');
    // The abandoned request ends on the control plane too, after its answer was given up on.
    await answered;
    const recoveries = async () => (await store.issuedSvids(spiffeId)).filter((record) => record.via === 'recover');
    let issued = await recoveries();
    for (const started = Date.now(); issued.length < 2 && Date.now() - started < 2_000; issued = await recoveries())
      await sleep(20);
    assert.equal(issued.length, 2, 'the lost one, and the retry');
    const succession = await store.svidSuccession(expired);
    assert.equal(succession?.via, 'recover');
    assert.ok(
      guard.svids.some((cert) => serialOf(cert) === succession.successor),
      "the retry's SVID is the successor, and the guard's",
    );
    assert.ok(
      issued.some((record) => record.serial.toLowerCase() === succession.successor),
      'recorded as a recovery',
    );
    assert.equal(new Set(issued.map((record) => record.serial)).size, 2);
    assert.deepEqual(
      reuses.filter((reuse) => reuse.spiffeId === spiffeId),
      [],
      'no svid-recovery-reuse alert',
    );
  });

  it('recovers after a renewal whose answer was lost as the outage began: the recovery asks for its key', async () => {
    const via = await relay();
    const { agent, events } = await agentVia('billing', via);
    await afterRenewal(events);
    // The next renewal reaches the control plane, which spends the SVID; the network goes before the answer.
    const renewing = serialOf(agent.credentials.chainPem);
    let lost: SvidSuccession | null = null;
    onSpent.set(renewing, async (spent) => {
      lost = spent;
      await via.cut();
    });
    await eventually(() => lost !== null, 'the renewal to reach the control plane', 10_000);
    assert.equal((lost as SvidSuccession | null)?.via, 'renew');
    assert.equal(serialOf(agent.credentials.chainPem), renewing, 'its answer never arrived');
    await untilExpired(agent);
    await via.restore();
    await eventually(
      () => events.some((event) => event.kind === 'recovered' || event.kind === 'recovery-refused'),
      "'recovered'",
      30_000,
    );
    assert.deepEqual(
      events.filter((event) => event.kind === 'recovery-refused'),
      [],
    );
    assert.equal(agent.state, 'active');
    assert.equal((await store.svidSuccession(renewing))?.via, 'renew', 'spent by the renewal, served to its key');
    assert.deepEqual(
      reuses.filter((reuse) => reuse.spiffeId === agent.credentials.spiffeId),
      [],
    );
  });

  it("stops once the control plane's certificate no longer verifies at any replica, three tries in a row: its CA changed", async () => {
    const via = await relay();
    const { agent, events } = await agentVia('reports', via);
    await afterRenewal(events);
    // From now on a control plane under another CA answers at that address (a root rotation this workload missed).
    via.retarget(foreign.url);
    await eventually(() => events.some((event) => event.kind === 'recovery-refused'), "'recovery-refused'", 30_000);
    const refused = events.find((event) => event.kind === 'recovery-refused');
    assert.ok(refused?.kind === 'recovery-refused');
    assert.equal(refused.code, 'LOCKSTEP_ENROL_CA_CHANGED');
    assert.match(refused.message, /CA changed while this workload was away/);
    assert.equal(agent.state, 'needs-join');
    const failed = events.filter((event) => event.kind === 'recovery-failed');
    assert.ok(failed.length >= 2, 'not at the first try');
    assert.ok(failed.slice(-2).every((event) => event.kind === 'recovery-failed' && /CA changed/.test(event.reason)));
  });

  it('renewWithControlPlane: a replica whose certificate does not verify is passed over; only all of them is a changed CA', async () => {
    const joined = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(store, past, { service: 'catalog', createdBy: 'cli' })).token,
      service: 'catalog',
    });
    const renewal = { trustDomain: TD, current: joined, bundlePem: joined.bundlePem };
    const renewed = await renewWithControlPlane({ ...renewal, url: [foreign.url, controlPlane.url] });
    assert.equal(renewed.spiffeId, joined.spiffeId);
    await assert.rejects(
      renewWithControlPlane({ ...renewal, current: renewed, url: foreign.url }),
      (error: unknown) => {
        assert.ok(error instanceof EnrolmentError);
        assert.equal(error.code, 'LOCKSTEP_ENROL_CA_CHANGED');
        assert.equal(error.status, null);
        return true;
      },
    );
  });

  it('recoverWithControlPlane: an expired SVID recovers once; the second use is refused', async () => {
    const joined: WorkloadCredentials = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(store, past, { service: 'inventory', createdBy: 'cli' })).token,
      service: 'inventory',
    });
    await sleep(joined.expiresAt.getTime() - Date.now() + 300);
    const recovery = { url: controlPlane.url, trustDomain: TD, current: joined, bundlePem: joined.bundlePem };
    const keys = await generateSvidKeys();
    const recovered = await recoverWithControlPlane({ ...recovery, keys });
    assert.equal(recovered.spiffeId, joined.spiffeId);
    assert.notEqual(serialOf(recovered.chainPem), serialOf(joined.chainPem));
    assert.ok(recovered.expiresAt.getTime() > Date.now());
    assert.ok(verifiesAgainst(recovered.chainPem, ca.bundlePem));
    // Asked again for the same key (as after a lost answer): served again, a certificate of its own.
    const again = await recoverWithControlPlane({ ...recovery, keys });
    assert.notEqual(serialOf(again.chainPem), serialOf(recovered.chainPem));
    assert.equal(again.keyPem, recovered.keyPem);

    await assert.rejects(recoverWithControlPlane(recovery), (error: unknown) => {
      assert.ok(error instanceof EnrolmentError);
      assert.equal(error.code, 'LOCKSTEP_CP_RECOVERY_REFUSED');
      assert.equal(error.status, 403);
      assert.match(error.message, /recovered already/);
      return true;
    });
  });
});
