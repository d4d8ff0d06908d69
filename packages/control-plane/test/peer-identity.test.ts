/**
 * The control plane reads its callers like the guard does: from the leaf's DER, under the X509-SVID
 * leaf rules of @lockstep/identity — over real mTLS on 127.0.0.1. Each client certificate below is
 * signed by the control plane's own CA (so TLS accepts it) and breaks one rule; the admin API and a
 * workload endpoint refuse it with 401 LOCKSTEP_CP_PEER_UNAUTHENTICATED, and the admin refusal is an
 * audit event. A certificate that keeps every rule passes; and every certificate the control plane
 * issues (workload, administrator, its own server SVID) keeps every rule, 24 h included.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { readX509Svid } from '@lockstep/identity';
import { issueCertificate, type CertificateSigner, type IssueCertOptions } from '@lockstep/testkit';
import type { DecisionEvent } from '@lockstep/guard';
import {
  issueAdminCredentials,
  issueSvidFromCsr,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  subscribeAdminActions,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { makeCsr } from '../src/ca/test-support.ts';
import { x509 } from '../src/lib/x509.ts';

const TD = 'shop.test';
const ADMIN = `spiffe://${TD}/admin/alice`;
const WORKLOAD = `spiffe://${TD}/svc/orders`;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-peer-identity-'));
let ca: WorkloadCa;
let signer: CertificateSigner;
let store: ControlPlaneStore;
let server: RunningControlPlane;
const events: DecisionEvent[] = [];
const unsubscribe = subscribeAdminActions((event) => events.push(event));

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'ca') });
  signer = { cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] };
  store = openSqliteStore(':memory:');
  server = await startControlPlane({ ca, store });
});
after(async () => {
  unsubscribe();
  await server.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const UNAUTHENTICATED = 'LOCKSTEP_CP_PEER_UNAUTHENTICATED';
type Answer = { status: number; body: Record<string, unknown> };

async function call(path: string, tls: { cert: string; key: string }): Promise<Answer> {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${server.url}${path}`, { dispatcher: agent });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

/** A leaf from the control plane's own intermediate, for `uri`, with one rule broken by `options`. */
async function leaf(uri: string, options: IssueCertOptions = {}): Promise<{ cert: string; key: string }> {
  const issued = await issueCertificate(signer, { uris: [uri], ...options });
  return { cert: issued.chainPem, key: issued.keyPem };
}

const YEAR_MS = 365 * 86_400_000;
const broken: ReadonlyArray<readonly [string, (uri: string) => IssueCertOptions, RegExp]> = [
  ['keyCertSign', () => ({ keyUsage: ['digitalSignature', 'keyCertSign'] }), /keyCertSign.*SVID_KEY_USAGE/],
  ['cRLSign', () => ({ keyUsage: ['digitalSignature', 'cRLSign'] }), /cRLSign.*SVID_KEY_USAGE/],
  ['no key usage', () => ({ keyUsage: [] }), /no key usage extension/],
  ['a non-critical key usage', () => ({ keyUsageCritical: false }), /not critical/],
  ['a 10-year lifetime', () => ({ notAfter: new Date(Date.now() + 10 * YEAR_MS) }), /3650 days.*SVID_LIFETIME/],
  ['two URI SANs', (uri) => ({ uris: [uri, `spiffe://${TD}/svc/reports`] }), /one URI SAN; this certificate has 2/],
  ['CA=true', () => ({ ca: true }), /SVID_CA/],
  ['no path', () => ({ uris: [`spiffe://${TD}`] }), /has no path.*SVID_NO_PATH/],
];

describe('the control plane refuses leaves that break an X509-SVID rule', () => {
  it('takes an administrator certificate that keeps every rule (control)', async () => {
    const answer = await call('/v1/admin/revocations', await leaf(ADMIN));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });

  for (const [what, options, detail] of broken) {
    it(`refuses an administrator certificate with ${what} on the admin API: 401, audited`, async () => {
      events.length = 0;
      const answer = await call('/v1/admin/revocations', await leaf(ADMIN, options(ADMIN)));
      assert.deepEqual([answer.status, answer.body.error], [401, UNAUTHENTICATED], JSON.stringify(answer.body));
      assert.match(String(answer.body.message), detail);
      assert.equal(events.length, 1, 'one audit event');
      assert.deepEqual([events[0]?.decision, events[0]?.reason, events[0]?.caller], ['deny', UNAUTHENTICATED, null]);
    });

    it(`refuses a workload certificate with ${what} on a workload endpoint: 401`, async () => {
      const answer = await call('/v1/revocations', await leaf(WORKLOAD, options(WORKLOAD)));
      assert.deepEqual([answer.status, answer.body.error], [401, UNAUTHENTICATED], JSON.stringify(answer.body));
    });
  }

  it('takes a workload certificate that keeps every rule on the same endpoint (control)', async () => {
    const answer = await call('/v1/revocations', await leaf(WORKLOAD));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });

  it('admits by the exact kind: …/svc/orders/extra is not a workload, …/admin/alice not one either', async () => {
    for (const uri of [`${WORKLOAD}/extra`, ADMIN]) {
      const answer = await call('/v1/revocations', await leaf(uri));
      assert.deepEqual([answer.status, answer.body.error], [401, UNAUTHENTICATED], uri);
    }
  });
});

describe('every certificate the control plane issues keeps the X509-SVID rules', () => {
  const rules = (pem: string) => {
    const der = new Uint8Array(new x509.X509Certificate(pem).rawData);
    return readX509Svid(der, { trustDomain: TD });
  };

  it('a workload SVID asked for the longest TTL lives exactly 24 h, backdating included', async () => {
    const { csrPem } = await makeCsr();
    const svid = await issueSvidFromCsr(ca, { csrPem, service: 'orders', ttlSeconds: 86_400 });
    const identity = rules(svid.chainPem);
    assert.equal(identity.spiffeId, WORKLOAD);
    assert.equal(identity.notAfterMs - identity.notBeforeMs, 86_400_000);
  });

  it('an administrator credential (8 h), and never one over 24 h', async () => {
    const admin = await issueAdminCredentials(ca, 'alice');
    const identity = rules(admin.chainPem);
    assert.deepEqual([identity.kind, identity.name], ['admin', 'alice']);
    assert.ok(identity.notAfterMs - identity.notBeforeMs <= 8 * 3_600_000 + 60_000);
    const message = /from 60 to 86400 \(an SVID lives at most 24 h\)/;
    await assert.rejects(issueAdminCredentials(ca, 'alice', 7 * 86_400), { name: 'TypeError', message });
  });

  it("the control plane's own server SVID", async () => {
    const { port } = new URL(server.url);
    const der = await new Promise<Uint8Array>((resolve, reject) => {
      const options = { host: '127.0.0.1', port: Number(port), ca: ca.bundlePem, checkServerIdentity: () => undefined };
      const socket = connect(options, () => {
        resolve(new Uint8Array(socket.getPeerCertificate(false).raw));
        socket.destroy();
      });
      socket.once('error', reject);
    });
    const identity = readX509Svid(der, { trustDomain: TD });
    assert.deepEqual([identity.kind, identity.name, identity.spiffeId], ['lockstep', 'control-plane', server.spiffeId]);
    assert.ok(identity.notAfterMs - identity.notBeforeMs <= 86_400_000);
  });
});
