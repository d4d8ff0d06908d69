/**
 * The scanner against a deliberately weak system (weak-fixture.ts): every planted weakness is
 * reported with the right attack id, and only the attacks it should be; what is properly enforced in
 * the same system is reported enforced. Exit code 1 on a weak link.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseManifest, renderJunit, renderSarif, scan, type AttackResult, type ScanReport } from '../src/index.ts';
import { junitErrors, sarifErrors } from './schemas/validate.ts';
import { startWeakSystem, type WeakSystem } from './weak-fixture.ts';

let system: WeakSystem;
let report: ScanReport;
const warnings: string[] = [];

before(async () => {
  system = await startWeakSystem();
  const manifest = parseManifest({
    users: { a: { sub: 'ann', roles: ['customer'] }, b: { sub: 'ben', roles: ['customer'] } },
    bodies: [{ service: 'notes', route: 'POST /notes/strict', body: { text: 'a note' } }],
    services: [{ name: 'intranet', endpoints: [system.intranet], routes: [{ method: 'GET', template: '/salaries' }] }],
  });
  const onWarning = (message: string) => warnings.push(message);
  report = await scan({ controlPlane: system.access, name: 'ci', manifest, onWarning });
});

after(async () => {
  await system.close();
});

const outcome = (service: string, attack: string, target?: string): AttackResult['outcome'][] =>
  report.results
    .filter(
      (result) =>
        result.service === service && result.attack === attack && (target === undefined || result.target === target),
    )
    .map((result) => result.outcome);
const weakIds = (service: string) =>
  [
    ...new Set(
      report.results
        .filter((result) => result.service === service && result.outcome === 'weak')
        .map((result) => result.attack),
    ),
  ].sort();

describe('lockstep scan against the weak fixture', () => {
  it("scans every registered service with routes and the manifest's, as spiffe://<td>/scanner/<name>", () => {
    assert.equal(report.scanner, 'spiffe://weak.test/scanner/ci');
    const services = report.services.map((service) => [service.name, service.source]);
    const registered = ['catalog', 'legacy', 'notes', 'reports'].map((name) => [name, 'registry']);
    assert.deepEqual(services, [...registered, ['intranet', 'manifest']]);
    assert.equal(report.exitCode, 1);
  });

  it('finds the over-broad policy: a valid certificate that no one meant to allow gets in (authz.unlisted-caller)', () => {
    assert.deepEqual(outcome('reports', 'authz.unlisted-caller', 'GET /reports/:id'), ['weak']);
    const finding = report.results.find(
      (result) => result.service === 'reports' && result.attack === 'authz.unlisted-caller',
    );
    assert.match(finding?.evidence ?? '', /admitted/);
    // The same service's certificate and token checks hold.
    for (const attack of [
      'transport.no-client-cert',
      'transport.lookalike-trust-domain',
      'txn.alg-none',
      'txn.revoked-sub',
    ]) {
      assert.ok(
        outcome('reports', attack).every((result) => result === 'enforced'),
        `${attack} on reports: ${outcome('reports', attack).join(', ')}`,
      );
    }
  });

  it('finds the dry-run switch: alg-none tokens get through (txn.alg-none)', () => {
    assert.deepEqual(outcome('legacy', 'txn.alg-none', 'GET /legacy'), ['weak']);
    assert.ok(weakIds('legacy').includes('txn.signature-stripped'));
    // Transport is never dry-run: certificates are still refused.
    assert.ok(outcome('legacy', 'transport.foreign-ca').every((result) => result === 'enforced'));
  });

  it('finds the route without schema validation (input.schema-bypass), and not the one with a schema', () => {
    assert.deepEqual(outcome('notes', 'input.schema-bypass', 'POST /notes'), ['weak']);
    assert.deepEqual(outcome('notes', 'input.schema-bypass', 'POST /notes/strict'), ['enforced']);
    assert.deepEqual(weakIds('notes'), ['input.schema-bypass']);
  });

  it('finds the perimeter-only service: it answers plain HTTP (transport.plaintext)', () => {
    assert.deepEqual(outcome('intranet', 'transport.plaintext'), ['weak']);
    assert.deepEqual(weakIds('intranet'), ['transport.plaintext']);
    // Over TLS there is no guard to judge: inconclusive, never "enforced".
    assert.deepEqual([...new Set(outcome('intranet', 'transport.no-client-cert'))], ['inconclusive']);
  });

  it('finds the CORS preflight answered before the guard (transport.framework-auto-answer)', () => {
    assert.equal(outcome('catalog', 'transport.framework-auto-answer').length, 1);
    assert.deepEqual(outcome('catalog', 'transport.framework-auto-answer'), ['weak']);
    const finding = report.results.find(
      (result) => result.service === 'catalog' && result.attack === 'transport.framework-auto-answer',
    );
    assert.match(finding?.evidence ?? '', /^OPTIONS \/catalog via no-certificate → HTTP 204 no guard code/);
    assert.deepEqual(weakIds('catalog'), ['transport.framework-auto-answer']);
    // Every other guard decides what its framework would have answered; without a guard nothing is judged.
    for (const service of ['legacy', 'notes', 'reports']) {
      assert.deepEqual(outcome(service, 'transport.framework-auto-answer'), ['enforced'], service);
    }
    assert.deepEqual(outcome('intranet', 'transport.framework-auto-answer'), ['inconclusive']);
  });

  it('finds the X509-SVID leaf rules and draft -10 claim rules enforced; the dry-run guard lets the tokens in', () => {
    const certificates = ['transport.svid-key-usage', 'transport.svid-no-path', 'transport.svid-lifetime'];
    const tokens = ['txn.no-scope', 'txn.no-req-wl', 'txn.claim-wrong-type', 'txn.tctx-proto-key'];
    for (const attack of [...certificates, ...tokens]) {
      for (const service of ['catalog', 'notes', 'reports']) {
        const found = outcome(service, attack);
        const where = `${attack} on ${service}: ${found.join(', ')}`;
        assert.ok(found.length > 0 && found.every((result) => result === 'enforced'), where);
      }
    }
    // Transport is never dry-run; the Txn-Token step is.
    for (const attack of certificates) assert.deepEqual(outcome('legacy', attack), ['enforced'], attack);
    for (const attack of tokens) assert.deepEqual(outcome('legacy', attack, 'GET /legacy'), ['weak'], attack);
  });

  it('refuses duplicate keys and an escaped NUL in a body also where the schema checks nothing', () => {
    for (const attack of ['input.duplicate-keys', 'input.nul-in-body']) {
      assert.deepEqual(outcome('notes', attack, 'POST /notes'), ['enforced'], attack);
      assert.deepEqual(outcome('notes', attack, 'POST /notes/strict'), ['enforced'], attack);
    }
    // The manifest's example body was admitted, so the strict route's bodies vary it (no warning).
    assert.deepEqual(
      warnings.filter((message) => message.includes('body')),
      [],
    );
  });

  it('writes this report as SARIF 2.1.0 and JUnit XML that validate against their schemas, every weak result a SARIF result', async () => {
    const sarif = JSON.parse(renderSarif(report)) as { runs: { results: { ruleId: string }[] }[] };
    assert.deepEqual(sarifErrors(sarif), []);
    assert.equal(sarif.runs[0]?.results.length, report.summary.weak);
    assert.deepEqual(await junitErrors(renderJunit(report)), []);
  });

  it('reports nothing weak where nothing was planted', () => {
    assert.deepEqual(
      weakIds('reports').filter((id) => !id.startsWith('authz.')),
      [],
    );
  });
});
