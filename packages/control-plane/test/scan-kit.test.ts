/**
 * The scanner's kit (POST /v1/admin/scan-kit): administrators only. The scanner's SVID names
 * spiffe://<td>/scanner/<name> for the key of its CSR; the probe certificates are the real CA's,
 * each defective in the one way it says and none a CA; the test Txn-Tokens verify with the Txn-Token
 * Service's keys and name the scanner as requester; the kit's revoked subject and transaction are in
 * the revocation feed; the probe token is bound to the scanner's key and is no Txn-Token; the kit
 * says which test user is revoked.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { Agent, request } from 'undici';
import {
  createSubjectVerifier,
  createTxnTokenService,
  issueAdminCredentials,
  createJoinToken,
  openKeyRing,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type AdminCredentials,
  type ControlPlaneStore,
  type KeyRing,
  type RunningControlPlane,
  type ScanKit,
  type WorkloadCa,
} from '../src/index.ts';
import { joinControlPlane } from '@lockstep/workload';
import { x509 } from '../src/lib/x509.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-scan-kit-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let server: RunningControlPlane;
let admin: AdminCredentials;
let txnKeys: KeyRing;

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'ca') });
  store = openSqliteStore(':memory:');
  txnKeys = await openKeyRing(join(scratch, 'keys'), 'txn-token', { retainMs: 600_000 });
  const tts = createTxnTokenService({
    trustDomain: TD,
    keys: txnKeys,
    subjects: createSubjectVerifier({ issuers: [], txnTokenKeys: () => txnKeys.publicJwks(), trustDomain: TD }),
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  server = await startControlPlane({ ca, store, tts });
  admin = await issueAdminCredentials(ca, 'ops');
});
after(async () => {
  await server.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function csrFor(san: string): Promise<string> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: san }])],
  });
  return csr.toString('pem');
}

async function askForKit(body: unknown, tls: { cert: string; key: string }) {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${server.url}/v1/admin/scan-kit`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

/**
 * The X509-SVID leaf-rule probes break their one rule and no other: key usage as named (every other
 * probe: critical digitalSignature only), CA=false throughout, and the over-long lifetime still
 * expires with the kit.
 */
function assertSvidRuleProbes(probes: ScanKit['probeCertificates'], now: number): void {
  const { digitalSignature, keyCertSign, cRLSign } = x509.KeyUsageFlags;
  const keyUsageOf = (pem: string) => {
    const extension = new x509.X509Certificate(
      pem.slice(0, pem.indexOf('-----END CERTIFICATE-----') + 25),
    ).getExtension(x509.KeyUsagesExtension);
    return extension === null ? null : { flags: extension.usages, critical: extension.critical };
  };
  const expected: Record<string, { flags: number; critical: boolean } | null> = {
    'key-cert-sign': { flags: digitalSignature | keyCertSign, critical: true },
    'crl-sign': { flags: digitalSignature | cRLSign, critical: true },
    'no-key-usage': null,
    'key-usage-not-critical': { flags: digitalSignature, critical: false },
  };
  for (const [name, pem] of Object.entries(probes)) {
    const wanted = name in expected ? expected[name] : { flags: digitalSignature, critical: true };
    assert.deepEqual(keyUsageOf(pem), wanted, `${name}: key usage`);
  }
  const long = new X509Certificate(probes['lifetime-over-max']);
  const lifetimeMs = new Date(long.validTo).getTime() - new Date(long.validFrom).getTime();
  assert.ok(lifetimeMs > 9 * 365 * 86_400_000, `lifetime-over-max: ${lifetimeMs} ms from notBefore to notAfter`);
  assert.ok(new Date(long.validTo).getTime() <= now + 3_600_000 + 60_000, 'lifetime-over-max expires with the kit');
}

const users = [
  { sub: 'alice', roles: ['customer'], tenant: 'demo' },
  { sub: 'bob', roles: ['customer'] },
];
const asAdmin = () => ({ cert: admin.chainPem, key: admin.keyPem });
const sansOf = (pem: string) => new X509Certificate(pem).subjectAltName ?? '';

describe('scan kit', () => {
  it("gives an administrator the scanner's SVID, probe certificates and test tokens", async () => {
    const answer = await askForKit({ name: 'ci', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users }, asAdmin());
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const kit = answer.body as unknown as ScanKit;
    assert.equal(kit.scanner, `spiffe://${TD}/scanner/ci`);
    assert.equal(sansOf(kit.svid), `URI:spiffe://${TD}/scanner/ci`);
    const intermediate = new X509Certificate(ca.intermediatePem);

    const expected: Record<string, RegExp> = {
      expired: new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'not-yet-valid': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'two-uri-sans': new RegExp(`^URI:spiffe://${TD}/scanner/ci, URI:spiffe://${TD}/scanner/ci-second$`),
      'no-uri-san': /^DNS:ci\.scanner\.invalid$/,
      'lookalike-suffix': /^URI:spiffe:\/\/shop\.test\.evil\/scanner\/ci$/,
      'lookalike-prefix': /^URI:spiffe:\/\/evilshop\.test\/scanner\/ci$/,
      'upper-case-trust-domain': /^URI:spiffe:\/\/SHOP\.TEST\/scanner\/ci$/,
      'percent-encoded-trust-domain': /^URI:spiffe:\/\/shop%2Etest\/scanner\/ci$/,
      'key-cert-sign': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'crl-sign': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'no-key-usage': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'key-usage-not-critical': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
      'no-path': /^URI:spiffe:\/\/shop\.test$/,
      'lifetime-over-max': new RegExp(`^URI:spiffe://${TD}/scanner/ci$`),
    };
    assert.deepEqual(Object.keys(kit.probeCertificates).sort(), Object.keys(expected).sort());
    const now = Date.now();
    for (const [name, pem] of Object.entries(kit.probeCertificates)) {
      const cert = new X509Certificate(pem);
      assert.match(cert.subjectAltName ?? '', expected[name] as RegExp, name);
      assert.ok(cert.verify(intermediate.publicKey), `${name} is signed by the real CA`);
      assert.equal(cert.ca, false, `${name} is no CA`);
      assert.equal(
        cert.publicKey.export({ format: 'jwk' }).x,
        new X509Certificate(kit.svid).publicKey.export({ format: 'jwk' }).x,
        `${name} is for the scanner's key`,
      );
      assert.ok(new Date(cert.validTo).getTime() <= now + 2 * 3_600_000 + 60_000, `${name} expires within hours`);
    }
    assert.ok(new Date(new X509Certificate(kit.probeCertificates.expired).validTo).getTime() < now);
    assert.ok(new Date(new X509Certificate(kit.probeCertificates['not-yet-valid']).validFrom).getTime() > now);
    assertSvidRuleProbes(kit.probeCertificates, now);

    const keys = createLocalJWKSet(txnKeys.publicJwks());
    assert.equal(kit.tokens.users.length, 2);
    for (const [i, token] of kit.tokens.users.entries()) {
      const { payload, protectedHeader } = await jwtVerify(token, keys, { audience: TD, typ: 'txntoken+jwt' });
      assert.equal(payload.sub, users[i]?.sub);
      assert.equal(payload.req_wl, kit.scanner, 'the scanner is the requester: guards never run a handler for it');
      assert.ok((payload.exp as number) - (payload.iat as number) <= 300);
      assert.equal(protectedHeader.alg, 'ES256');
    }
    assert.deepEqual((decodeJwt(kit.tokens.users[0] as string).tctx as { roles: string[] }).roles, ['customer']);
    const defective = kit.tokens.defective;
    assert.equal(decodeProtectedHeader(defective['typ-access-token']).typ, 'at+jwt');
    assert.equal(decodeJwt(defective['foreign-audience']).aud, `other.${TD}`);
    assert.equal(decodeJwt(defective['no-exp']).exp, undefined);
    assert.equal(decodeJwt(defective['revoked-sub']).sub, kit.revoked.sub);
    assert.equal(decodeJwt(defective['revoked-txn']).txn, kit.revoked.txn);
    assert.deepEqual(decodeProtectedHeader(defective['crit-unknown']).crit, ['exp-x']);
    // draft -10 §9.2: scope and req_wl REQUIRED, claim types, prototype keys.
    assert.equal(decodeJwt(defective['scope-missing']).scope, undefined);
    assert.equal(decodeJwt(defective['req-wl-missing']).req_wl, undefined);
    assert.equal((decodeJwt(defective['roles-string']).tctx as { roles: unknown }).roles, 'admin');
    const payload = Buffer.from(defective['tctx-proto-key'].split('.')[1] as string, 'base64url').toString('utf8');
    assert.match(payload, /"tctx":\{"__proto__":\{"roles":\["admin"\]\}/);
    assert.equal(await store.isRevoked('sub', kit.revoked.sub), true);
    assert.equal(await store.isRevoked('txn', kit.revoked.txn), true);
  });

  it("binds the scan's probe token to the scanner's key, and no verifier takes it for a Txn-Token", async () => {
    const kit = (await askForKit({ name: 'ci', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users }, asAdmin()))
      .body as unknown as ScanKit;
    const keys = createLocalJWKSet(txnKeys.publicJwks());
    const { payload } = await jwtVerify(kit.tokens.probe, keys, {
      audience: TD,
      typ: 'lockstep-probe+jwt',
      subject: kit.scanner,
    });
    const svidKey = new X509Certificate(kit.svid).publicKey.export({ format: 'jwk' });
    const { jwk } = payload.cnf as { jwk: { x: string; y: string; d?: string } };
    assert.deepEqual([jwk.x, jwk.y, jwk.d], [svidKey.x, svidKey.y, undefined]);
    assert.ok((payload.exp as number) - (payload.iat as number) <= 3_600);
    await assert.rejects(jwtVerify(kit.tokens.probe, keys, { typ: 'txntoken+jwt' }), /unexpected "typ"/);
  });

  it('says which test user is revoked, by whom and why (the scan cannot act as it)', async () => {
    await store.addRevocation({
      kind: 'sub',
      value: 'bob',
      reason: 'left the company',
      actor: 'spiffe://shop.test/admin/ops',
      at: Date.parse('2026-03-01T10:00:00Z'),
    });
    const kit = (await askForKit({ name: 'ci', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users }, asAdmin()))
      .body as unknown as ScanKit;
    assert.deepEqual(
      kit.users.map((user) => [user.sub, user.revoked]),
      [
        ['alice', null],
        ['bob', { reason: 'left the company', actor: 'spiffe://shop.test/admin/ops', at: '2026-03-01T10:00:00.000Z' }],
      ],
    );
    // Without a policy in force, nobody can say which roles it knows.
    assert.deepEqual(
      kit.users.map((user) => [user.unknownRoles, user.policyRoles]),
      [
        [null, null],
        [null, null],
      ],
    );
  });

  it('issues the same revoked values again for the same scanner (one revocation each, however often it scans)', async () => {
    const first = (
      await askForKit({ name: 'nightly', csr: await csrFor(`spiffe://${TD}/scanner/nightly`), users }, asAdmin())
    ).body as unknown as ScanKit;
    const before = (await store.revocationsSince(0)).length;
    const second = (
      await askForKit({ name: 'nightly', csr: await csrFor(`spiffe://${TD}/scanner/nightly`), users }, asAdmin())
    ).body as unknown as ScanKit;
    assert.deepEqual(second.revoked, first.revoked);
    assert.equal((await store.revocationsSince(0)).length, before);
  });

  it('refuses a workload, a CSR for another identity, and a bad name', async () => {
    const workload = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'test' })).token,
      service: 'orders',
    });
    const byWorkload = await askForKit(
      { name: 'ci', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users },
      { cert: workload.chainPem, key: workload.keyPem },
    );
    assert.equal(byWorkload.status, 403);
    assert.equal(byWorkload.body.error, 'LOCKSTEP_CP_ADMIN_REQUIRED');
    const otherIdentity = await askForKit(
      { name: 'ci', csr: await csrFor(`spiffe://${TD}/svc/payments`), users },
      asAdmin(),
    );
    assert.equal(otherIdentity.status, 400);
    assert.match(String(otherIdentity.body.message), /may only be spiffe:\/\/shop\.test\/scanner\/ci/);
    const badName = await askForKit(
      { name: 'CI/../svc', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users },
      asAdmin(),
    );
    assert.equal(badName.status, 400);
    const noUsers = await askForKit(
      { name: 'ci', csr: await csrFor(`spiffe://${TD}/scanner/ci`), users: [] },
      asAdmin(),
    );
    assert.equal(noUsers.status, 400);
  });
});
