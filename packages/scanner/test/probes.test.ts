/**
 * A scan leaves the monitor as it found it (sound-fixture.ts: real guards shipping to the real
 * collector, the real dashboard): real traffic first, then a full scan, then an attacker who dresses
 * up as the scanner. Every scanner request the guards can verify is marked a probe in its audit event
 * (its SVID, or a probe proof on a request refused at transport); the dashboard's deny rate, graph
 * and events count real traffic only, and the probes have their own page. Nothing an outsider can send
 * — a proof header, a copied one, one made with their own key, a probe-as header — makes a probe.
 */
import assert from 'node:assert/strict';
import type { webcrypto } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeProtectedHeader, exportJWK, SignJWT } from 'jose';
import { Agent, request } from 'undici';
import { createProbeProof, PROBE_PROOF_HEADER, type DecisionEvent } from '@lockstep/guard';
import { isProbeEvent } from '@lockstep/monitor';
import { createTestBrowser, type TestBrowser } from '@lockstep/testkit';
import { parseManifest, scan, type ScanReport } from '../src/index.ts';
import { obtainScanKit } from '../src/kit.ts';
import { ADMIN, FRONTEND, SOUND_TD, startSoundSystem, type SoundSystem } from './sound-fixture.ts';

let system: SoundSystem;
let admin: TestBrowser;

const MANIFEST = parseManifest({
  users: { a: { sub: 'ann', roles: ['customer'] }, b: { sub: 'ben', roles: ['customer'] } },
  objects: [{ service: 'orders', route: 'GET /orders/:id', params: { id: 'ann-1' }, owner: 'a' }],
  bodies: [{ service: 'notes', route: 'POST /notes', body: { text: 'a note' } }],
});

before(async () => {
  system = await startSoundSystem();
  admin = createTestBrowser({ ca: system.controlPlane.ca.bundlePem });
  const login = await admin.open(`${system.controlPlane.url}/dashboard`);
  const done = await admin.submit(login, ADMIN);
  assert.equal(done.url, `${system.controlPlane.url}/dashboard`, 'the administrator is signed in to the dashboard');
});

after(async () => {
  await admin?.close();
  await system?.close();
});

/** Waits (bounded) until the collector has stored every decision the guards published so far. */
async function allShipped(): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const heads = new Map((await system.controlPlane.store.auditHeads()).map((head) => [head.source, head.seq]));
    const published = new Map<string, number>();
    for (const event of system.decisions) published.set(event.service, (published.get(event.service) ?? 0) + 1);
    const behind = [...published].filter(
      ([service, count]) => (heads.get(`spiffe://${SOUND_TD}/svc/${service}`) ?? 0) < count,
    );
    if (behind.length === 0) return;
    if (Date.now() > deadline)
      assert.fail(`the collector did not receive every decision within 60 s: ${JSON.stringify(behind)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface Overview {
  services: {
    service: string;
    denyRate: number | null;
    decisions: number;
    refusedConnections: number;
    probes: number;
  }[];
}
interface Graph {
  edges: { from: string; to: string; allowed: number; denied: number }[];
}
const api = async <T>(path: string): Promise<T> => {
  const answer = await admin.request(`${system.controlPlane.url}/dashboard/api/${path}`);
  assert.equal(answer.status, 200, path);
  return answer.body as T;
};
/** The events page's decisions of the guards (the control plane's own admin events aside). */
const guardEvents = async () =>
  (await api<{ events: { service: string }[] }>('events')).events.filter((event) => event.service !== 'control-plane')
    .length;
const notesRow = async () => (await api<Overview>('overview')).services.find((entry) => entry.service === 'notes');
const eventOf = (requestId: string): DecisionEvent | undefined =>
  system.decisions.find((event) => event.requestId === requestId);

describe('a scan and the monitor', () => {
  let before: { notes: Overview['services'][number] | undefined; graph: Graph; events: number };
  let report: ScanReport;
  let scanEvents: DecisionEvent[];

  it("counts the real traffic first: the frontend's job reads notes (allowed) and tries to write one (denied)", async () => {
    for (let i = 0; i < 6; i++) assert.equal((await system.asFrontend('/notes')).status, 200);
    for (let i = 0; i < 2; i++)
      assert.equal((await system.asFrontend('/notes', { method: 'POST', body: { text: 'x' } })).status, 403);
    await allShipped();
    before = { notes: await notesRow(), graph: await api<Graph>('graph'), events: await guardEvents() };
    const { denyRate, decisions, refusedConnections, probes } = before.notes ?? {};
    assert.deepEqual(
      { denyRate, decisions, refusedConnections, probes },
      { denyRate: 0.25, decisions: 8, refusedConnections: 0, probes: 0 },
    );
    assert.deepEqual(before.graph.edges, [{ from: 'frontend', to: 'notes', allowed: 6, denied: 2 }]);
  });

  it('scans the whole system: nothing weak, nothing inconclusive', async () => {
    const from = system.decisions.length;
    report = await scan({ controlPlane: system.access, manifest: MANIFEST });
    scanEvents = system.decisions.slice(from);
    const notEnforced = report.results.filter((result) => result.outcome !== 'enforced');
    assert.equal(report.exitCode, 0, JSON.stringify(notEnforced, null, 2));
    assert.ok(report.summary.enforced > 100, `enforced ${report.summary.enforced}`);
  });

  it("marks every request of the scan a probe, except plain HTTP to the TLS port, which no guard can tell from anyone's", () => {
    const scanner = `spiffe://${SOUND_TD}/scanner/lockstep`;
    const unmarked = scanEvents.filter((event) => event.probe === undefined);
    const marked = scanEvents.filter((event) => event.probe !== undefined);
    assert.ok(marked.length > 200, `${marked.length} probes`);
    assert.ok(
      marked.every((event) => event.probe === scanner && isProbeEvent(event as unknown as Record<string, unknown>)),
    );
    // The transport attacks too: refused before any SVID was verified, marked by their probe proofs.
    assert.ok(marked.some((event) => event.caller === null && event.reason === 'LOCKSTEP_ERR_PEER_CERT_MISSING'));
    assert.ok(marked.some((event) => event.caller === null && event.reason === 'LOCKSTEP_ERR_PEER_ID_INVALID'));
    // Per endpoint, plain HTTP to the TLS port: the bytes Node cannot parse, and the handshake that failed.
    assert.deepEqual(unmarked.map((event) => `${event.service} ${event.reason} ${event.caller}`).sort(), [
      'notes LOCKSTEP_ERR_INPUT_INVALID null',
      'notes LOCKSTEP_ERR_TLS_HANDSHAKE null',
      'orders LOCKSTEP_ERR_INPUT_INVALID null',
      'orders LOCKSTEP_ERR_TLS_HANDSHAKE null',
    ]);
  });

  it('leaves the deny rate, the graph and the events as they were, and counts the probes on their own page', async () => {
    await allShipped();
    const notes = await notesRow();
    // The deny rate is the same; plain HTTP to the TLS port (no request, no caller: no guard can tell
    // it from anyone's) is a refused connection; every probe counts apart.
    assert.deepEqual([notes?.denyRate, notes?.decisions], [0.25, 8]);
    assert.equal(
      notes?.refusedConnections,
      scanEvents.filter((event) => event.service === 'notes' && event.probe === undefined).length,
    );
    assert.equal(
      notes?.probes,
      scanEvents.filter((event) => event.service === 'notes' && event.probe !== undefined).length,
    );
    // More than the 200 newest events of notes: the real traffic was read past the scan, not pushed out.
    assert.ok(
      (notes?.probes ?? 0) + (notes?.refusedConnections ?? 0) + (notes?.decisions ?? 0) > 200,
      'the scan fills more than a page',
    );
    assert.deepEqual(
      (await api<Graph>('graph')).edges,
      before.graph.edges,
      'the scan adds no edge and takes none away',
    );
    assert.equal(await guardEvents(), before.events + scanEvents.filter((event) => event.probe === undefined).length);
    const probes = await api<{
      total: number;
      services: { service: string; probes: number }[];
      scanners: { scanner: string; probes: number }[];
      events: Record<string, unknown>[];
    }>('probes');
    assert.equal(probes.total, scanEvents.filter((event) => event.probe !== undefined).length);
    assert.deepEqual(
      probes.scanners.map((entry) => [entry.scanner, entry.probes]),
      [[`spiffe://${SOUND_TD}/scanner/lockstep`, probes.total]],
    );
    assert.deepEqual(
      probes.services.map((entry) => entry.service),
      ['notes', 'orders'],
    );
    assert.ok(probes.events.every((event) => isProbeEvent(event)));
  });

  it("does not take an outsider's request for a probe, whatever it carries; it is refused and counted as real traffic", async () => {
    const { kit, privateKey } = await obtainScanKit(system.access, 'lockstep', [MANIFEST.users.a]);
    const notesId = `spiffe://${SOUND_TD}/svc/notes`;
    const proof = (
      options: { method?: string; target?: string; audience?: string; key?: webcrypto.CryptoKey; token?: string } = {},
    ) =>
      createProbeProof({
        token: options.token ?? kit.tokens.probe,
        key: options.key ?? privateKey,
        method: options.method ?? 'GET',
        target: options.target ?? '/notes',
        audience: options.audience ?? notesId,
      });
    const attacker = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const attackerKey = attacker.privateKey;
    const genuine = await proof();
    const noCertificate = new Agent({
      connect: { ca: system.controlPlane.ca.bundlePem, checkServerIdentity: () => undefined },
    });
    const send = async (headers: Record<string, string>, method = 'GET') => {
      const response = await request(`${system.urls.notes}/notes`, { method, dispatcher: noCertificate, headers });
      const body = (await response.body.json()) as { error?: string; requestId?: string };
      return { status: response.statusCode, error: body.error, event: eventOf(body.requestId ?? '') };
    };
    try {
      // The scanner's own proof marks its request — once.
      const first = await send({ [PROBE_PROOF_HEADER]: genuine });
      assert.deepEqual(
        [first.status, first.error, first.event?.probe],
        [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING', `spiffe://${SOUND_TD}/scanner/lockstep`],
      );
      const attempts: [string, Record<string, string>, string?][] = [
        ['a copied proof, replayed', { [PROBE_PROOF_HEADER]: genuine }],
        ['made-up text', { [PROBE_PROOF_HEADER]: 'probe' }],
        [
          "the real probe token, signed with the attacker's own key",
          { [PROBE_PROOF_HEADER]: await proof({ key: attackerKey }) },
        ],
        [
          'a probe token the attacker signed, for their own key',
          {
            [PROBE_PROOF_HEADER]: await proof({
              key: attackerKey,
              token: await attackerToken(attacker, kit.tokens.probe),
            }),
          },
        ],
        [
          'a genuine proof for another service',
          { [PROBE_PROOF_HEADER]: await proof({ audience: `spiffe://${SOUND_TD}/svc/orders` }) },
        ],
        ['a genuine proof for another method', { [PROBE_PROOF_HEADER]: await proof() }, 'DELETE'],
        ['a genuine proof for another path', { [PROBE_PROOF_HEADER]: await proof({ target: '/notes?all' }) }],
        ['a probe-as header', { 'lockstep-probe-as': FRONTEND }],
      ];
      for (const [what, headers, method] of attempts) {
        const answer = await send(headers, method);
        assert.deepEqual(
          [answer.status, answer.error],
          [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING'],
          `${what}: refused as ever`,
        );
        assert.ok(answer.event !== undefined, `${what}: audited`);
        assert.equal(answer.event.probe, undefined, `${what}: not a probe`);
        assert.equal(
          isProbeEvent(answer.event as unknown as Record<string, unknown>),
          false,
          `${what}: not a probe for the monitor`,
        );
      }
      // With a valid workload SVID, the probe headers change nothing either: decided as itself.
      const headers = { 'lockstep-probe-as': FRONTEND, [PROBE_PROOF_HEADER]: await proof({ method: 'POST' }) };
      const jobAsScanner = await system.asFrontend('/notes', { method: 'POST', body: { text: 'x' }, headers });
      assert.equal(jobAsScanner.status, 403);
      assert.equal(eventOf(jobAsScanner.requestId)?.reason, 'LOCKSTEP_ERR_DENIED');
      assert.equal(eventOf(jobAsScanner.requestId)?.probe, undefined);
      await allShipped();
      const notes = await notesRow();
      // Real traffic: every one refused (the scanner's own proof marked its request, which counts apart).
      const refused = 2 + attempts.length + 1;
      assert.deepEqual(
        [notes?.decisions, notes?.denyRate],
        [8 + attempts.length + 1, refused / (8 + attempts.length + 1)],
        "the outsider's requests are real traffic",
      );
    } finally {
      await noCertificate.close();
    }
  });
});

/**
 * A probe token in the right shape and under the real key id (the JWKS is public), naming the
 * attacker's own key — but signed by the attacker, not by the Txn-Token Service.
 */
async function attackerToken(attacker: webcrypto.CryptoKeyPair, genuine: string): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ cnf: { jwk: await exportJWK(attacker.publicKey) } })
    .setProtectedHeader({ alg: 'ES256', typ: 'lockstep-probe+jwt', kid: decodeProtectedHeader(genuine).kid ?? '' })
    .setSubject(`spiffe://${SOUND_TD}/scanner/lockstep`)
    .setAudience(SOUND_TD)
    .setIssuedAt(iat)
    .setExpirationTime(iat + 600)
    .sign(attacker.privateKey);
}
