/**
 * A scan that cannot run a check that applies says so: inconclusive, exit 2, with the true reason,
 * in every report and on the monitor's Scans page — never a pass with the checks skipped. Against a
 * sound system (sound-fixture.ts) that passes as it is: a role no policy names, then test user b
 * revoked, then test user a revoked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestBrowser } from '@lockstep/testkit';
import {
  parseManifest,
  renderHtml,
  renderJson,
  renderJunit,
  renderSarif,
  renderTerminal,
  scan,
  sendScanReport,
  type ScanReport,
} from '../src/index.ts';
import { ADMIN, startSoundSystem, type SoundSystem } from './sound-fixture.ts';

let system: SoundSystem;

const manifest = (roles: { a?: string[]; b?: string[] } = {}) =>
  parseManifest({
    users: { a: { sub: 'ann', roles: roles.a ?? ['customer'] }, b: { sub: 'ben', roles: roles.b ?? ['customer'] } },
    objects: [{ service: 'orders', route: 'GET /orders/:id', params: { id: 'ann-1' }, owner: 'a' }],
    bodies: [{ service: 'notes', route: 'POST /notes', body: { text: 'a note' } }],
  });

before(async () => {
  system = await startSoundSystem();
});

after(async () => {
  await system?.close();
});

const outcomes = (report: ScanReport, attack: string) => [
  ...new Set(report.results.filter((result) => result.attack === attack).map((result) => result.outcome)),
];
const inconclusiveAttacks = (report: ScanReport) =>
  [
    ...new Set(report.results.filter((result) => result.outcome === 'inconclusive').map((result) => result.attack)),
  ].sort();

describe('a scan that cannot run every check that applies', () => {
  it('passes as the system is: every check ran', async () => {
    const report = await scan({ controlPlane: system.access, manifest: manifest() });
    assert.equal(
      report.exitCode,
      0,
      JSON.stringify(
        report.results.filter((result) => result.outcome !== 'enforced'),
        null,
        2,
      ),
    );
    assert.deepEqual(report.inconclusiveReasons, []);
  });

  it('is inconclusive when the manifest gives test user a a role that no policy tests for, and says which', async () => {
    const report = await scan({ controlPlane: system.access, manifest: manifest({ a: ['custmer'] }) });
    assert.equal(report.exitCode, 2);
    const [reason, ...others] = report.inconclusiveReasons;
    assert.deepEqual(others, []);
    assert.match(
      reason?.reason ?? '',
      /^test user a \(ann, roles custmer\) has the role custmer, which no policy in force tests for \(the policy's roles: customer\)/,
    );
    // Every check that varies the route's allowed request needs the role to mean something.
    assert.deepEqual(inconclusiveAttacks(report), [
      'authz.bola',
      'authz.missing-role',
      'input.duplicate-keys',
      'input.nul-in-body',
      'input.oversized-body',
      'input.oversized-headers',
      'input.prototype-pollution',
      'input.schema-bypass',
      'input.wrong-content-type',
    ]);
    assert.equal(reason?.results, report.summary.inconclusive);
    // The rest of the scan ran.
    assert.deepEqual(outcomes(report, 'txn.alg-none'), ['enforced']);
    assert.deepEqual(outcomes(report, 'transport.no-client-cert'), ['enforced']);
  });

  it('is inconclusive when test user b is revoked: the object-level check cannot run, and says why', async () => {
    await system.controlPlane.revoke({
      kind: 'sub',
      value: 'ben',
      reason: 'left the company',
      actor: 'spiffe://sound.test/admin/ops',
    });
    const report = await scan({ controlPlane: system.access, manifest: manifest() });
    assert.equal(report.exitCode, 2);
    assert.deepEqual(inconclusiveAttacks(report), ['authz.bola']);
    assert.equal(report.inconclusiveReasons.length, 1);
    assert.match(
      report.inconclusiveReasons[0]?.reason ?? '',
      /^test user b \(ben, roles customer\) is revoked \(at [^)]+ by spiffe:\/\/sound\.test\/admin\/ops: left the company\)/,
    );
    assert.deepEqual(outcomes(report, 'authz.missing-role'), ['enforced']);
  });

  describe('when test user a is revoked', () => {
    let report: ScanReport;

    before(async () => {
      await system.controlPlane.revoke({
        kind: 'sub',
        value: 'ann',
        reason: 'a mistake',
        actor: 'spiffe://sound.test/admin/ops',
      });
      report = await scan({ controlPlane: system.access, manifest: manifest() });
    });

    it('exits 2 and names the revoked user as the reason the checks that act as it could not run', () => {
      assert.equal(report.exitCode, 2);
      assert.equal(report.summary.weak, 0);
      const reasons = report.inconclusiveReasons.map((entry) => entry.reason);
      assert.equal(
        reasons[0]?.replace(/\(at [^)]+\)/, '(at …)'),
        'test user a (ann, roles customer) is revoked ' +
          '(at …), so the guards refuse its Txn-Tokens and no check that acts as it can run: lift the revocation, or name ' +
          'another user as users.a in the manifest',
      );
      assert.match(reasons[0] ?? '', /\(at \d{4}-\d\d-\d\dT[^ ]+ by spiffe:\/\/sound\.test\/admin\/ops: a mistake\)/);
      assert.equal(
        report.inconclusiveReasons.reduce((sum, entry) => sum + entry.results, 0),
        report.summary.inconclusive,
      );
      // Every check on a route sends user a's token (or one like it): none is "enforced" by the revocation.
      for (const attack of [
        'authz.bola',
        'authz.missing-role',
        'authz.unlisted-caller',
        'input.schema-bypass',
        'txn.alg-none',
        'txn.duplicate-header',
      ]) {
        assert.deepEqual(outcomes(report, attack), ['inconclusive'], attack);
      }
      assert.equal(report.summary.skipped, 0, 'nothing that applies is skipped');
      // The transport checks never depend on the user: a certificate refused is refused before any token is read.
      assert.deepEqual(outcomes(report, 'transport.foreign-ca'), ['enforced']);
    });

    it('says inconclusive, with the reason, in every report', () => {
      const terminal = renderTerminal(report, { color: false });
      assert.match(
        terminal,
        /Why the scan is inconclusive \(1 reason\)\n {2}\? \d+ checks {2}test user a \(ann, roles customer\) is revoked/,
      );
      assert.match(terminal.trimEnd().split('\n').at(-1) ?? '', /; exit 2: inconclusive$/);
      const json = JSON.parse(renderJson(report)) as ScanReport;
      assert.equal(json.exitCode, 2);
      assert.match(json.inconclusiveReasons[0]?.reason ?? '', /test user a \(ann, roles customer\) is revoked/);
      type Invocation = {
        executionSuccessful: boolean;
        exitCode: number;
        toolExecutionNotifications: { level: string; message: { text: string } }[];
      };
      const sarif = JSON.parse(renderSarif(report)) as { runs: { invocations: Invocation[] }[] };
      const invocation = sarif.runs[0]?.invocations[0];
      assert.deepEqual([invocation?.executionSuccessful, invocation?.exitCode], [false, 2]);
      assert.equal(invocation?.toolExecutionNotifications[0]?.level, 'error');
      assert.match(
        invocation?.toolExecutionNotifications[0]?.message.text ?? '',
        /checks could not run: test user a \(ann, roles customer\) is revoked/,
      );
      const junit = renderJunit(report);
      assert.match(junit, new RegExp(`<testsuites [^>]*errors="${report.summary.inconclusive}"`));
      assert.match(junit, /<error message="inconclusive: test user a \(ann, roles customer\) is revoked/);
      const html = renderHtml(report);
      assert.match(html, /Exit 2: the scan is inconclusive: checks that apply could not run/);
      assert.match(html, /checks:<\/strong> test user a \(ann, roles customer\) is revoked/);
    });

    it("reaches the monitor's Scans page as inconclusive, with the reason", async () => {
      await sendScanReport(system.access, report);
      const admin = createTestBrowser({ ca: system.controlPlane.ca.bundlePem });
      try {
        const login = await admin.open(`${system.controlPlane.url}/dashboard`);
        await admin.submit(login, ADMIN);
        const runs = await admin.request(`${system.controlPlane.url}/dashboard/api/scans`);
        const run = (runs.body as { scans: { runId: string; status: string; exitCode: number }[] }).scans.find(
          (entry) => entry.runId === report.runId,
        );
        assert.deepEqual([run?.status, run?.exitCode], ['incomplete', 2]);
        const stored = await admin.request(`${system.controlPlane.url}/dashboard/api/scans/${report.runId}`);
        const reasons = (stored.body as { report: ScanReport }).report.inconclusiveReasons;
        assert.match(reasons[0]?.reason ?? '', /test user a \(ann, roles customer\) is revoked/);
      } finally {
        await admin.close();
      }
    });
  });
});
