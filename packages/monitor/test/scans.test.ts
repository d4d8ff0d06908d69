/**
 * Scan results end to end over real mTLS on loopback: a scanner identity (spiffe://<td>/scanner/…)
 * posts a report to the control plane; it is stored under the sender's certificate identity and an
 * administrator signed in to the dashboard sees it. Workloads, strangers, reports for another trust
 * domain and malformed or inconsistent reports are refused; a re-post is idempotent.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createTestBrowser, issueCertificate, type TestBrowser } from '@lockstep/testkit';
import {
  createJoinToken,
  createUser,
  joinControlPlane,
  type ControlPlaneStore,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { assembleControlPlane, SCANS_PATH, type AssembledControlPlane } from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-scans-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let controlPlane: AssembledControlPlane;
let admin: TestBrowser;

type Identity = { chainPem: string; keyPem: string };
let scanner: Identity;
let otherScanner: Identity;
let workload: Identity;
let adminSvid: Identity;

/** A scanner's SVID, signed by the control plane's own CA (as its scan kit would be). */
async function scannerSvid(name: string): Promise<Identity> {
  return issueCertificate(
    { cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] },
    { uris: [`spiffe://${TD}/scanner/${name}`] },
  );
}

before(async () => {
  // The scan receiver and the dashboard (administrators sign in for this resource); no policy needed.
  controlPlane = await assembleControlPlane({
    trustDomain: TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    adminName: 'alice',
    idp: { resource: { indicator: 'https://lockstep.test/dashboard', scopes: [] } },
    output: { warning: () => {} },
  });
  ({ ca, store } = controlPlane);
  await createUser(store, { username: 'root', password: 'the operators passphrase', roles: ['admin'] });
  scanner = await scannerSvid('ci');
  otherScanner = await scannerSvid('nightly');
  workload = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' })).token,
    service: 'orders',
  });
  adminSvid = controlPlane.admin;
  admin = createTestBrowser({ ca: ca.bundlePem });
  const login = await admin.open(`${controlPlane.url}/dashboard`);
  assert.equal((await admin.submit(login, { username: 'root', password: 'the operators passphrase' })).status, 200);
});

after(async () => {
  await admin.close();
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function post(
  body: unknown,
  as: Identity | null = scanner,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const agent = new Agent({
    connect: {
      ...(as === null ? {} : { cert: as.chainPem, key: as.keyPem }),
      ca: ca.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`${controlPlane.url}${SCANS_PATH}`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

const attack = (id: string, title: string) => ({
  id,
  title,
  category: 'txn-token',
  severity: 'high',
  cwe: ['CWE-347'],
  owasp: 'API2:2023 Broken Authentication',
  nist: null,
  description: `crafts ${id}`,
  enforced: '401 with the token reason',
});
const result = (service: string, attackId: string, outcome: 'enforced' | 'weak' | 'inconclusive' | 'skipped') => ({
  attack: attackId,
  service,
  target: `GET /${service}/:id`,
  outcome,
  evidence: `GET /${service}/1 with ${attackId} → ${outcome === 'weak' ? 200 : 401}`,
  status: outcome === 'weak' ? 200 : 401,
  reason: outcome === 'weak' ? null : 'LOCKSTEP_TXN_INVALID',
  requestId: 'req-1',
  durationMs: 3.5,
});

/** A report like `lockstep scan --json` writes: two services × two attacks, one weak link. */
function report(runId: string, overrides: Record<string, unknown> = {}) {
  const results = [
    result('orders', 'txn.alg-none', 'enforced'),
    result('orders', 'txn.expired', 'weak'),
    result('payments', 'txn.alg-none', 'enforced'),
    result('payments', 'txn.expired', 'skipped'),
  ];
  return {
    tool: { name: 'lockstep-scan', version: '0.1.0' },
    runId,
    trustDomain: TD,
    scanner: `spiffe://${TD}/scanner/whatever-the-body-says`,
    startedAt: '2025-01-02T03:04:05.000Z',
    finishedAt: '2025-01-02T03:04:07.500Z',
    durationMs: 2_500,
    services: ['orders', 'payments'].map((name) => ({
      name,
      spiffeId: `spiffe://${TD}/svc/${name}`,
      endpoints: ['127.0.0.1:4102'],
      routes: 3,
      source: 'registry',
    })),
    attacks: [attack('txn.alg-none', 'Txn-Token signed with alg none'), attack('txn.expired', 'expired Txn-Token')],
    results,
    summary: { enforced: 2, weak: 1, inconclusive: 0, skipped: 1 },
    exitCode: 1,
    ...overrides,
  };
}

describe('scan results', () => {
  it("stores a scanner's report under the identity of its certificate, and shows it to an administrator", async () => {
    const posted = await post(report('run-1'));
    assert.deepEqual(posted, { status: 201, body: { runId: 'run-1' } });
    const stored = await store.scan('run-1');
    assert.equal(stored?.scanner, `spiffe://${TD}/scanner/ci`, "the certificate's identity, not the body's");
    assert.deepEqual(
      [stored?.startedAt, stored?.finishedAt, stored?.exitCode],
      [Date.parse('2025-01-02T03:04:05.000Z'), Date.parse('2025-01-02T03:04:07.500Z'), 1],
    );

    const list = await admin.request(`${controlPlane.url}/dashboard/api/scans`);
    assert.equal(list.status, 200);
    const [run] = (list.body as { scans: Record<string, unknown>[] }).scans;
    assert.deepEqual(
      { ...run, receivedAt: typeof run?.receivedAt },
      {
        runId: 'run-1',
        scanner: `spiffe://${TD}/scanner/ci`,
        startedAt: '2025-01-02T03:04:05.000Z',
        durationMs: 2_500,
        exitCode: 1,
        status: 'weak',
        summary: { enforced: 2, weak: 1, inconclusive: 0, skipped: 1 },
        receivedAt: 'string',
      },
    );
    const one = await admin.request(`${controlPlane.url}/dashboard/api/scans/run-1`);
    assert.equal(one.status, 200);
    const body = one.body as { scanner: string; status: string; report: unknown };
    assert.deepEqual([body.scanner, body.status], [`spiffe://${TD}/scanner/ci`, 'weak']);
    assert.deepEqual(body.report, report('run-1'), 'the whole report, as posted');
    assert.equal((await admin.request(`${controlPlane.url}/dashboard/api/scans/run-404`)).status, 404);
  });

  it('lists the newest run first, with its verdict; an administrator may post too', async () => {
    const clean = report('run-2', {
      startedAt: '2025-01-03T00:00:00Z',
      finishedAt: '2025-01-03T00:00:01Z',
      results: [result('orders', 'txn.alg-none', 'enforced')],
      summary: { enforced: 1, weak: 0, inconclusive: 0, skipped: 0 },
      exitCode: 0,
    });
    assert.equal((await post(clean, adminSvid)).status, 201);
    const unsure = report('run-3', {
      startedAt: '2025-01-04T00:00:00Z',
      finishedAt: '2025-01-04T00:00:01Z',
      results: [result('orders', 'txn.alg-none', 'inconclusive')],
      summary: { enforced: 0, weak: 0, inconclusive: 1, skipped: 0 },
      exitCode: 2,
    });
    assert.equal((await post(unsure)).status, 201);
    const list = (await admin.request(`${controlPlane.url}/dashboard/api/scans`)).body as {
      scans: { runId: string; status: string; scanner: string }[];
    };
    assert.deepEqual(
      list.scans.map((run) => [run.runId, run.status, run.scanner]),
      [
        ['run-3', 'incomplete', `spiffe://${TD}/scanner/ci`],
        ['run-2', 'passed', `spiffe://${TD}/admin/alice`],
        ['run-1', 'weak', `spiffe://${TD}/scanner/ci`],
      ],
    );
  });

  it('answers a repeated post of the same report 200 and changes nothing; another report under a taken run id is refused', async () => {
    const before = await store.scan('run-1');
    assert.deepEqual(await post(report('run-1')), { status: 200, body: { runId: 'run-1' } });
    const forged = await post(
      report('run-1', { results: [], summary: { enforced: 0, weak: 0, inconclusive: 0, skipped: 0 }, exitCode: 0 }),
    );
    assert.equal(forged.status, 409);
    assert.equal(forged.body.error, 'LOCKSTEP_CP_SCAN_EXISTS');
    const fromAnother = await post(report('run-1'), otherScanner);
    assert.equal(fromAnother.status, 409, 'the same report from another scanner is not the same post');
    assert.deepEqual(await store.scan('run-1'), before);
  });

  it('refuses workloads and callers without a client certificate', async () => {
    const fromWorkload = await post(report('run-w'), workload);
    assert.equal(fromWorkload.status, 403);
    assert.match(String(fromWorkload.body.message), /scanner\/<name>/);
    assert.equal((await post(report('run-anon'), null)).status, 401);
    assert.equal(await store.scan('run-w'), null);
    assert.equal(await store.scan('run-anon'), null);
  });

  it('refuses a report for another trust domain', async () => {
    const foreign = await post(report('run-foreign', { trustDomain: 'evil.test' }));
    assert.equal(foreign.status, 400);
    assert.match(String(foreign.body.message), /trust domain "evil\.test"; this control plane is shop\.test/);
    assert.equal(await store.scan('run-foreign'), null);
  });

  it('refuses malformed, oversized and inconsistent reports, storing nothing', async () => {
    const { exitCode: _exitCode, ...withoutExitCode } = report('run-bad');
    const cases: [string, unknown][] = [
      ['not JSON', '{"runId":'],
      ['not an object', '[1,2]'],
      ['a required field missing', withoutExitCode],
      ['a wrong type', report('run-bad', { durationMs: 'fast' })],
      ['an unknown exit code', report('run-bad', { exitCode: 3 })],
      [
        'an unknown outcome',
        report('run-bad', { results: [{ ...result('orders', 'txn.expired', 'weak'), outcome: 'fine' }] }),
      ],
      ['another tool', report('run-bad', { tool: { name: 'nmap', version: '7' } })],
      ['a run id unfit for a URL', report('../etc/passwd')],
      [
        'a string too long',
        report('run-bad', { results: [{ ...result('orders', 'txn.expired', 'weak'), evidence: 'x'.repeat(9_000) }] }),
      ],
      ['a time that is no time', report('run-bad', { startedAt: 'yesterday' })],
      ['finished before it started', report('run-bad', { finishedAt: '2025-01-01T00:00:00Z' })],
      [
        'a summary that does not count the results',
        report('run-bad', { summary: { enforced: 2, weak: 0, inconclusive: 0, skipped: 1 } }),
      ],
      ['exit 0 with a weak result', report('run-bad', { exitCode: 0 })],
      [
        'exit 1 without a weak result',
        report('run-bad', { results: [], summary: { enforced: 0, weak: 0, inconclusive: 0, skipped: 0 } }),
      ],
      [
        'reasons checks could not run that the summary does not count',
        report('run-bad', { inconclusiveReasons: [{ reason: 'test user a is revoked', results: 3 }] }),
      ],
      ['a reason that is not text', report('run-bad', { inconclusiveReasons: [{ reason: 7, results: 0 }] })],
      ['over 4 MiB', report('run-bad', { padding: 'x'.repeat(4 * 1024 * 1024) })],
    ];
    for (const [name, body] of cases) {
      const answer = await post(body);
      assert.equal(answer.status, 400, name);
      assert.equal(answer.body.error, 'LOCKSTEP_CP_REQUEST_INVALID', name);
    }
    assert.equal(await store.scan('run-bad'), null);
    assert.equal((await store.scans(100)).length, 3, 'only the three good runs');
  });

  it('shows scan results to signed-in administrators only', async () => {
    const stranger = createTestBrowser({ ca: ca.bundlePem });
    try {
      assert.equal((await stranger.request(`${controlPlane.url}/dashboard/api/scans`)).status, 401);
      assert.equal((await stranger.request(`${controlPlane.url}/dashboard/api/scans/run-1`)).status, 401);
    } finally {
      await stranger.close();
    }
  });
});
