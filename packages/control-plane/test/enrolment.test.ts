/**
 * Enrolment over real TLS on loopback: a workload joins with a one-time token (bundle pinned by the
 * token), renews over mTLS with the SVID it got, and every refusal arrives as a coded HTTP answer.
 * The clients know the control plane by its SVID, read from the DER: a server whose certificate the
 * trusted CA signed but that is not exactly the control plane's X509-SVID is sent nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { issueCertificate, type IssueCertOptions } from '@lockstep/testkit';
import { x509 } from '../src/lib/x509.ts';
import {
  createJoinToken,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import {
  controlPlaneAgent,
  controlPlaneSpiffeId,
  EnrolmentError,
  joinControlPlane,
  renewWithControlPlane,
} from '@lockstep/workload';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-enrolment-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let server: RunningControlPlane;

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'ca') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  server = await startControlPlane({ ca, store });
});
after(async () => {
  await server.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const token = async (service: string) => (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token;
const refused = (code: string, status: number) => (error: unknown) =>
  error instanceof EnrolmentError && error.code === code && error.status === status;

/** A raw call, for requests the client library would never make. */
async function raw(
  path: string,
  body: unknown,
  tls: { cert?: string; key?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${server.url}${path}`, {
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

describe('enrolment over TLS', () => {
  it('joins with a token, then renews over mTLS with the SVID it got', async () => {
    const joined = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: await token('orders'),
      service: 'orders',
    });
    assert.equal(joined.spiffeId, `spiffe://${TD}/svc/orders`);
    assert.equal(joined.bundlePem, ca.bundlePem);
    assert.ok(joined.expiresAt.getTime() > Date.now() + 50 * 60_000);
    const renewed = await renewWithControlPlane({
      url: server.url,
      trustDomain: TD,
      current: joined,
      bundlePem: joined.bundlePem,
    });
    assert.equal(renewed.spiffeId, joined.spiffeId);
    assert.notEqual(renewed.chainPem, joined.chainPem);
    assert.notEqual(renewed.keyPem, joined.keyPem, 'a renewal comes with a new key');
    assert.deepEqual(
      (await store.issuedSvids(joined.spiffeId)).map((svid) => svid.via),
      ['join', 'renew'],
    );
  });

  it('refuses a reused token, a token for another service, and an unknown token', async () => {
    const once = await token('payments');
    await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: once, service: 'payments' });
    await assert.rejects(
      joinControlPlane({ url: server.url, trustDomain: TD, joinToken: once, service: 'payments' }),
      refused('LOCKSTEP_CP_JOIN_TOKEN_USED', 401),
    );
    await assert.rejects(
      joinControlPlane({ url: server.url, trustDomain: TD, joinToken: await token('payments'), service: 'orders' }),
      refused('LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE', 403),
    );
    await assert.rejects(
      joinControlPlane({
        url: server.url,
        trustDomain: TD,
        joinToken: `ljt1.${ca.bundleHash}.${'x'.repeat(43)}`,
        service: 'orders',
      }),
      refused('LOCKSTEP_CP_JOIN_TOKEN_INVALID', 401),
    );
  });

  it('sends nothing to a control plane whose bundle does not match the token (no trust on first use)', async () => {
    const otherCa = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'impostor-ca') });
    const otherStore = openSqliteStore(':memory:');
    const impostor = await startControlPlane({ ca: otherCa, store: otherStore });
    try {
      const genuine = await token('inventory');
      await assert.rejects(
        joinControlPlane({ url: impostor.url, trustDomain: TD, joinToken: genuine, service: 'inventory' }),
        (error: unknown) => error instanceof EnrolmentError && error.code === 'LOCKSTEP_ENROL_BUNDLE_MISMATCH',
      );
      const joined = await joinControlPlane({
        url: server.url,
        trustDomain: TD,
        joinToken: genuine,
        service: 'inventory',
      });
      assert.equal(joined.spiffeId, `spiffe://${TD}/svc/inventory`, 'the token was never presented to the impostor');
    } finally {
      await impostor.close();
      await otherStore.close();
    }
  });

  it('renews only over mTLS with a valid SVID of this trust domain that is not revoked', async () => {
    const { csrPem } = await (await import('../src/ca/test-support.ts')).makeCsr();
    const none = await raw('/v1/renew', { csr: csrPem });
    assert.deepEqual([none.status, none.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);

    const foreignCa = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'foreign-ca') });
    const foreignStore = openSqliteStore(':memory:');
    const foreign = await startControlPlane({ ca: foreignCa, store: foreignStore });
    const stranger = await joinControlPlane({
      url: foreign.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(foreignStore, foreignCa, { service: 'orders', createdBy: 'cli' })).token,
      service: 'orders',
    });
    await foreign.close();
    await foreignStore.close();
    const untrusted = await raw('/v1/renew', { csr: csrPem }, { cert: stranger.chainPem, key: stranger.keyPem });
    assert.deepEqual(
      [untrusted.status, untrusted.body.error],
      [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED'],
      'an SVID from another CA',
    );

    const victim = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: await token('reports'),
      service: 'reports',
    });
    await store.addRevocation({
      kind: 'spiffeId',
      value: victim.spiffeId,
      reason: 'compromised',
      actor: 'cli',
      at: Date.now(),
    });
    await assert.rejects(
      renewWithControlPlane({ url: server.url, trustDomain: TD, current: victim, bundlePem: victim.bundlePem }),
      refused('LOCKSTEP_CP_WORKLOAD_REVOKED', 403),
    );
  });

  it('refuses bodies that are not what the endpoint takes', async () => {
    const extra = await raw('/v1/join', { joinToken: await token('orders'), service: 'orders', csr: 'x', admin: true });
    assert.deepEqual([extra.status, extra.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
    const wrongType = await raw('/v1/join', { joinToken: 1, service: 'orders', csr: 'x' });
    assert.deepEqual([wrongType.status, wrongType.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
    const badCsr = await raw('/v1/join', { joinToken: await token('orders'), service: 'orders', csr: 'not a csr' });
    assert.deepEqual([badCsr.status, badCsr.body.error], [400, 'LOCKSTEP_CP_CSR_INVALID']);
  });
});

type Impostor = { readonly url: string; requests(): number; close(): Promise<void> };
type Answer = (body: string) => Promise<unknown>;

/**
 * A server on 127.0.0.1 presenting a leaf that the control plane's own intermediate signed (so TLS
 * verifies its chain against the bundle), shaped by `options`; it counts the requests it receives
 * and answers each with what `answer` makes of its body.
 */
async function impostor(options: IssueCertOptions, answer: Answer = async () => ({})): Promise<Impostor> {
  const signer = { cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] };
  const leaf = await issueCertificate(signer, options);
  let requests = 0;
  const https: Server = createServer({ cert: leaf.chainPem, key: leaf.keyPem, minVersion: 'TLSv1.3' }, (req, res) => {
    requests += 1;
    void text(req)
      .then(answer)
      .then((body) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
  });
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(https.address() as AddressInfo).port}`,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        https.closeAllConnections();
        https.close(() => resolve());
      }),
  };
}

async function text(stream: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * What a compromised or mistaken control plane might answer to /v1/renew: a certificate for the
 * workload's own key and SPIFFE ID, signed by the trusted CA, but with CA=true and keyCertSign —
 * not an X509-SVID, so the workload must not take it as its credentials.
 */
async function caCertificateFor(csrPem: string, spiffeId: string): Promise<string> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=workload',
    issuer: ca.signer.cert.subjectName,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    publicKey: await csr.publicKey.export(),
    signingKey: ca.signer.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }]),
    ],
  });
  return `${cert.toString('pem')}\n${ca.intermediatePem}`;
}

async function statusThrough(agent: Agent, url: string): Promise<number> {
  const timeouts = { headersTimeout: 10_000, bodyTimeout: 10_000 };
  const response = await request(`${url}/v1/bundle`, { dispatcher: agent, ...timeouts });
  await response.body.dump();
  return response.statusCode;
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe('the control plane, known to its clients by its X509-SVID (read from the DER)', () => {
  const CONTROL_PLANE = controlPlaneSpiffeId(TD);
  const ORDERS = `spiffe://${TD}/svc/orders`;
  const TEN_YEARS = new Date(Date.now() + 10 * 365 * 86_400_000);
  // Each certificate is signed by the trusted CA and breaks one rule. The last four name the control
  // plane exactly, so a client that compares the text rendering of the SAN takes them for it.
  const impostors: ReadonlyArray<readonly [string, IssueCertOptions, RegExp]> = [
    ['another workload of the trust domain', { uris: [ORDERS] }, new RegExp(`presented ${escaped(ORDERS)},`)],
    [
      'the control plane of another trust domain',
      { uris: ['spiffe://evil.test/lockstep/control-plane'] },
      /SVID_FOREIGN_TRUST_DOMAIN/,
    ],
    ['the control plane in upper case', { uris: ['spiffe://SHOP.TEST/lockstep/control-plane'] }, /SVID_ID_INVALID/],
    ['the trust domain itself (no path)', { uris: [`spiffe://${TD}`] }, /SVID_NO_PATH/],
    ['two URI SANs, the control plane first', { uris: [CONTROL_PLANE, ORDERS] }, /SVID_URI_SAN/],
    ['no SAN, the ID in the common name', { subject: `CN=${CONTROL_PLANE}` }, /SVID_URI_SAN/],
    ['the control plane, CA=true', { uris: [CONTROL_PLANE], ca: true }, /SVID_CA/],
    [
      'the control plane, keyCertSign',
      { uris: [CONTROL_PLANE], keyUsage: ['digitalSignature', 'keyCertSign'] },
      /SVID_KEY_USAGE/,
    ],
    ['the control plane, no key usage', { uris: [CONTROL_PLANE], keyUsage: [] }, /SVID_KEY_USAGE/],
    ['the control plane, valid for 10 years', { uris: [CONTROL_PLANE], notAfter: TEN_YEARS }, /SVID_LIFETIME/],
  ];

  for (const [name, options, reason] of impostors) {
    it(`refuses a server presenting ${name}, and sends it nothing`, async () => {
      const fake = await impostor(options);
      const agent = controlPlaneAgent(TD, { ca: ca.bundlePem });
      try {
        await assert.rejects(statusThrough(agent, fake.url), (error: Error) => {
          assert.match(error.message, new RegExp(`not ${escaped(CONTROL_PLANE)}: it is not the control plane`));
          assert.match(error.message, reason);
          return true;
        });
        assert.equal(fake.requests(), 0, 'the TLS handshake is refused before a request is written');
      } finally {
        await agent.close();
        await fake.close();
      }
    });
  }

  it("accepts a server presenting the control plane's X509-SVID (same harness: the refusals are real)", async () => {
    const genuine = await impostor({ uris: [CONTROL_PLANE] });
    const agent = controlPlaneAgent(TD, { ca: ca.bundlePem });
    try {
      assert.equal(await statusThrough(agent, genuine.url), 200);
      assert.equal(genuine.requests(), 1);
    } finally {
      await agent.close();
      await genuine.close();
    }
  });

  it('renews only with the control plane: a CA certificate naming it gets neither the CSR nor the SVID', async () => {
    const joined = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: await token('billing'),
      service: 'billing',
    });
    const fake = await impostor({ uris: [CONTROL_PLANE], ca: true });
    try {
      const renewal = renewWithControlPlane({
        url: fake.url,
        trustDomain: TD,
        current: joined,
        bundlePem: joined.bundlePem,
      });
      await assert.rejects(renewal, /SVID_CA/);
      assert.equal(fake.requests(), 0);
    } finally {
      await fake.close();
    }
  });

  it('does not take as its SVID a CA certificate that the control plane issued for its key and ID', async () => {
    const joined = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: await token('ledger'),
      service: 'ledger',
    });
    const mistaken = await impostor({ uris: [CONTROL_PLANE] }, async (body) => {
      const { csr } = JSON.parse(body) as { csr: string };
      const svid = await caCertificateFor(csr, joined.spiffeId);
      return { svid, bundle: ca.bundlePem, spiffeId: joined.spiffeId, expiresAt: new Date().toISOString() };
    });
    try {
      const renewal = renewWithControlPlane({
        url: mistaken.url,
        trustDomain: TD,
        current: joined,
        bundlePem: joined.bundlePem,
      });
      await assert.rejects(
        renewal,
        (error: unknown) =>
          error instanceof EnrolmentError && error.code === 'LOCKSTEP_ENROL_SVID' && /SVID_CA/.test(error.message),
      );
      assert.equal(mistaken.requests(), 1, 'the server is the control plane by its SVID: its answer is refused');
    } finally {
      await mistaken.close();
    }
  });
});
