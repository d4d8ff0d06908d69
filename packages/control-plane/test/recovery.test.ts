/**
 * Recovery after expiry (`POST /v1/recover`, ca/recover.ts): a workload whose SVID expired while it
 * could reach no control plane presents the expired SVID in the handshake and gets a new one — once,
 * unless it is revoked, within the recovery window, and only for an SVID this CA issued and nobody
 * renewed. Real TLS, a real CA; the expired SVIDs are issued by the same CA keys with a clock set back.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RecoveryReuse,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { signLeaf } from '../src/ca/issue-svid.ts';
import { recoverWorkload } from '../src/ca/recover.ts';
import { keyPem, makeCsr, workloadKeys } from '../src/ca/test-support.ts';

const TD = 'shop.test';
const HOUR = 3_600_000;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-recovery-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let controlPlane: RunningControlPlane;
const reuses: RecoveryReuse[] = [];

/** A CA created five hours ago, so that SVIDs issued hours ago fall within its intermediate's validity. */
async function caCreatedHoursAgo(keyDir: string): Promise<WorkloadCa> {
  await openWorkloadCa({ trustDomain: TD, keyDir, now: () => Date.now() - 5 * HOUR });
  return openWorkloadCa({ trustDomain: TD, keyDir });
}

before(async () => {
  ca = await caCreatedHoursAgo(join(scratch, 'keys'));
  store = openSqliteStore(':memory:');
  controlPlane = await startControlPlane({
    ca,
    store,
    svidRecoveryWindowSeconds: 2 * 3600,
    extensions: [() => ({ onRecoveryReuse: (reuse: RecoveryReuse) => reuses.push(reuse) })],
  });
});

after(async () => {
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

interface Held {
  readonly chainPem: string;
  readonly keyPem: string;
  readonly serial: string;
}

/** An SVID of `service` issued by `issuer` as of `issuedAgoMs` ago, living `ttlSeconds`, recorded as issued. */
async function svidIssuedAgo(
  service: string,
  issuedAgoMs: number,
  ttlSeconds = 3600,
  issuer: WorkloadCa = ca,
): Promise<Held> {
  const past: WorkloadCa = { ...issuer, now: () => Date.now() - issuedAgoMs };
  const keys = await workloadKeys();
  const svid = await signLeaf(past, keys.publicKey, `spiffe://${TD}/svc/${service}`, ttlSeconds);
  await store.recordIssuedSvid({
    serial: svid.serial,
    spiffeId: svid.spiffeId,
    issuedAt: Date.now() - issuedAgoMs,
    expiresAt: svid.notAfter.getTime(),
    via: 'join',
  });
  return { chainPem: svid.chainPem, keyPem: await keyPem(keys.privateKey), serial: svid.serial };
}

type KeyPair = Awaited<ReturnType<typeof workloadKeys>>;

/**
 * POSTs `{ csr }` (for `keys`, default a fresh key; `csr: false`: no body) to `path` presenting `held` in
 * the handshake; the answer's status and JSON body.
 */
async function post(
  path: string,
  held: Held | null,
  { keys, csr = true }: { keys?: KeyPair; csr?: boolean } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const { csrPem } = await makeCsr(keys === undefined ? {} : { keys });
  const url = new URL(path, controlPlane.url);
  return new Promise((resolve, reject) => {
    const outgoing = request(
      url,
      {
        method: 'POST',
        ca: ca.bundlePem,
        ...(held === null ? {} : { cert: held.chainPem, key: held.keyPem }),
        // The control plane's certificate names a SPIFFE ID, not 127.0.0.1: the chain is what is checked here.
        checkServerIdentity: () => undefined,
        headers: csr ? { 'content-type': 'application/json' } : {},
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: text === '' ? {} : JSON.parse(text) }),
        );
      },
    );
    outgoing.once('error', reject);
    outgoing.end(csr ? JSON.stringify({ csr: csrPem }) : undefined);
  });
}

/** The public key an answer's certificate was issued for, as SPKI DER. */
const issuedKey = (body: Record<string, unknown>) =>
  new X509Certificate(String(body.svid)).publicKey.export({ type: 'spki', format: 'der' });
const spkiOf = async (keys: KeyPair) => Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
const serialOf = (body: Record<string, unknown>) => new X509Certificate(String(body.svid)).serialNumber.toLowerCase();

describe('recovery after expiry', () => {
  it('gives an SVID that expired while the control plane was away a new one, of the same identity', async () => {
    const expired = await svidIssuedAgo('orders', 2 * HOUR - 60_000); // expired 59 min ago
    const answer = await post('/v1/recover', expired);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.spiffeId, `spiffe://${TD}/svc/orders`);
    const leaf = new X509Certificate(answer.body.svid as string);
    assert.ok(leaf.validToDate.getTime() > Date.now() + 30 * 60_000, 'a fresh SVID');
    assert.ok(leaf.verify(new X509Certificate(ca.intermediatePem).publicKey), 'issued by this CA');
    const issued = await store.issuedSvids(`spiffe://${TD}/svc/orders`);
    assert.ok(
      issued.some((record) => record.via === 'recover'),
      'recorded as a recovery',
    );
  });

  it('recovers an SVID once: the second presentation is refused and raises svid-recovery-reuse', async () => {
    const expired = await svidIssuedAgo('payments', 2 * HOUR - 60_000);
    assert.equal((await post('/v1/recover', expired)).status, 200);
    reuses.length = 0;
    const again = await post('/v1/recover', expired);
    assert.equal(again.status, 403);
    assert.equal(again.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.match(String(again.body.message), /recovered already/);
    assert.equal(reuses.length, 1, 'the monitor is told');
    assert.equal(reuses[0]?.serial, expired.serial);
    assert.equal(reuses[0]?.spiffeId, `spiffe://${TD}/svc/payments`);
  });

  it('serves a retry for the same key again (its first answer was lost): a fresh certificate, no alert', async () => {
    const expired = await svidIssuedAgo('shipping', 2 * HOUR - 60_000);
    const keys = await workloadKeys();
    const first = await post('/v1/recover', expired, { keys });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    reuses.length = 0;
    // The first answer never arrived: the agent asks again (another replica, or after a timeout) with its pending key.
    const retry = await post('/v1/recover', expired, { keys });
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.deepEqual(issuedKey(retry.body), await spkiOf(keys), 'for the same key');
    assert.notEqual(serialOf(retry.body), serialOf(first.body), 'a certificate of its own');
    assert.equal((await store.svidSuccession(expired.serial))?.successor, serialOf(retry.body), 'now the successor');
    assert.equal(reuses.length, 0, 'not a reuse');
    // Another key is not a retry: refused, and the monitor is told.
    const other = await post('/v1/recover', expired);
    assert.equal(other.status, 403);
    assert.equal(other.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.match(String(other.body.message), /recovered already/);
    assert.equal(reuses.length, 1);
    assert.equal(reuses[0]?.serial, expired.serial);
  });

  it('recovers to the key of a renewal whose answer was lost, and to no other', async () => {
    const nearEnd = await svidIssuedAgo('billing', HOUR - 30_000); // 30 s left: renews, and recovers
    const keys = await workloadKeys();
    const renewed = await post('/v1/renew', nearEnd, { keys });
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    // The renewal's answer was lost as the outage began; once the control plane answers again, the
    // agent recovers with the key it had pending.
    reuses.length = 0;
    const recovered = await post('/v1/recover', nearEnd, { keys });
    assert.equal(recovered.status, 200, JSON.stringify(recovered.body));
    assert.deepEqual(issuedKey(recovered.body), await spkiOf(keys));
    assert.equal(reuses.length, 0, 'not a reuse');
    const other = await post('/v1/recover', nearEnd);
    assert.equal(other.status, 403);
    assert.match(String(other.body.message), /renewed already/);
    assert.equal(reuses.length, 1);
  });

  it('refuses a retry for the successor key once the successor is in use: two holders', async () => {
    const expired = await svidIssuedAgo('ledger', 2 * HOUR - 60_000);
    const keys = await workloadKeys();
    const recovered = await post('/v1/recover', expired, { keys });
    assert.equal(recovered.status, 200);
    // The recovered SVID renews (it is in use), so a second certificate for its key is nobody's retry.
    const successor = { chainPem: String(recovered.body.svid), keyPem: await keyPem(keys.privateKey), serial: '' };
    assert.equal((await post('/v1/renew', successor)).status, 200);
    reuses.length = 0;
    const again = await post('/v1/recover', expired, { keys });
    assert.equal(again.status, 403);
    assert.equal(again.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.equal(reuses.length, 1);
  });

  it('refuses a spent SVID before anything is signed', async () => {
    const expired = await svidIssuedAgo('audit', 2 * HOUR - 60_000);
    assert.equal((await post('/v1/recover', expired)).status, 200);
    let signed = 0;
    const counting: WorkloadCa = Object.create(ca, {
      signer: {
        get: () => {
          signed += 1;
          return ca.signer;
        },
      },
    });
    const leafDer = new Uint8Array(new X509Certificate(expired.chainPem).raw);
    const request = { leafDer, intermediateDer: null, windowSeconds: 7200 };
    const noted: RecoveryReuse[] = [];
    await assert.rejects(
      recoverWorkload(store, counting, { ...request, csrPem: (await makeCsr()).csrPem }, (reuse) => noted.push(reuse)),
      (error: Error & { code?: string }) => error.code === 'LOCKSTEP_CP_RECOVERY_REFUSED',
    );
    assert.equal(signed, 0, 'the CA did not sign');
    assert.equal(noted.length, 1);
    // The counting view does count: an unspent SVID is signed for.
    const fresh = await svidIssuedAgo('audit', 2 * HOUR - 60_000);
    const leaf = new Uint8Array(new X509Certificate(fresh.chainPem).raw);
    await recoverWorkload(store, counting, { ...request, leafDer: leaf, csrPem: (await makeCsr()).csrPem });
    assert.ok(signed > 0);
  });

  it("refuses the SVID of an instance that stopped cleanly (deregistered): its key is someone else's now", async () => {
    const last = await svidIssuedAgo('search', HOUR - 30_000); // valid 30 s more: it can still call, and recover
    const stopped = await post('/v1/registry/deregister', last, { csr: false });
    assert.equal(stopped.status, 204, JSON.stringify(stopped.body));
    assert.equal((await store.svidSuccession(last.serial))?.via, 'retire');
    reuses.length = 0;
    const answer = await post('/v1/recover', last);
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.match(String(answer.body.message), /retired/);
    assert.equal(reuses.length, 1, "the monitor is told: someone holds a stopped instance's key");
    assert.equal(reuses[0]?.via, 'retire');
  });

  it('refuses, after a revocation was lifted, the SVIDs issued before it; later ones recover', async () => {
    const id = `spiffe://${TD}/svc/reports`;
    const beforeRevocation = await svidIssuedAgo('reports', 3 * HOUR, 2 * 3600); // expired 1 h ago
    const afterLift = await svidIssuedAgo('reports', 2.3 * HOUR, 1.5 * 3600); // expired 48 min ago
    await store.addRevocation({
      kind: 'spiffeId',
      value: id,
      reason: 'suspected',
      actor: 'test',
      at: Date.now() - 2.5 * HOUR,
    });
    await store.liftRevocation('spiffeId', id, { reason: 'false alarm', actor: 'test', at: Date.now() - 2.4 * HOUR });
    const refused = await post('/v1/recover', beforeRevocation);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.match(String(refused.body.message), /issued before .* was revoked/);
    const recovered = await post('/v1/recover', afterLift);
    assert.equal(recovered.status, 200, JSON.stringify(recovered.body));
  });

  it('refuses a revoked workload', async () => {
    const expired = await svidIssuedAgo('mallory', 2 * HOUR - 60_000);
    await controlPlane.revoke({ kind: 'spiffeId', value: `spiffe://${TD}/svc/mallory`, reason: 'test', actor: 'test' });
    const answer = await post('/v1/recover', expired);
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error, 'LOCKSTEP_CP_WORKLOAD_REVOKED');
  });

  it('refuses an SVID that expired longer ago than the window', async () => {
    const expired = await svidIssuedAgo('inventory', 4 * HOUR); // expired 3 h ago; the window is 2 h
    const answer = await post('/v1/recover', expired);
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error, 'LOCKSTEP_CP_RECOVERY_EXPIRED');
  });

  it('refuses an SVID that is still valid: renew it instead', async () => {
    const valid = await svidIssuedAgo('catalog', 60_000);
    const answer = await post('/v1/recover', valid);
    assert.equal(answer.status, 409);
    assert.equal(answer.body.error, 'LOCKSTEP_CP_RECOVERY_EARLY', 'not a refusal for good: an agent asks again later');
    assert.match(String(answer.body.message), /renew it/);
  });

  it('refuses an SVID that was renewed: renewal spends it', async () => {
    const nearEnd = await svidIssuedAgo('orders', HOUR - 30_000); // 30 s left: still renews
    const renewed = await post('/v1/renew', nearEnd);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    const answer = await post('/v1/recover', nearEnd);
    assert.equal(answer.status, 403);
    assert.match(String(answer.body.message), /renewed already/);
  });

  it('refuses an SVID of another CA, and a request without one', async () => {
    const foreign = await caCreatedHoursAgo(join(scratch, 'foreign'));
    const stranger = await svidIssuedAgo('orders', 2 * HOUR - 60_000, 3600, foreign);
    const answer = await post('/v1/recover', stranger);
    assert.equal(answer.status, 403);
    assert.equal(answer.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
    assert.match(String(answer.body.message), /not issued by this control plane's CA/);
    const anonymous = await post('/v1/recover', null);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.error, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED');
  });
});
