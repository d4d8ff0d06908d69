/**
 * Known answers for what a checkpoint link's signature covers: fixed claims and key id → fixed
 * signing input (base64url header "." base64url payload, RFC 7515 §5.1), computed outside this code
 * (Python: json.dumps with compact separators, base64.urlsafe_b64encode without padding). A change
 * of what a link holds, of its order, or of how it is encoded fails here before verify and the
 * checkpointer could agree on a new format between them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { openSqliteStore, type KeyRing } from '@lockstep/control-plane';
import {
  chainPayload,
  linkDigest,
  openAuditKeys,
  signLink,
  startCheckpointer,
  verifiedLink,
  verifyTrail,
  type ChainClaims,
} from '../src/index.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-checkpoints-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const CLAIMS: ChainClaims = {
  v: 2,
  n: 2,
  at: 1765000060000,
  every: 60000,
  kind: 'tick',
  prev: '5'.repeat(64),
  sources: [['spiffe://shop.test/svc/orders', 20, 'a'.repeat(64)]],
  streams: [['spiffe://shop.test/svc/orders', 'o1', 20, 0, 20, null, 1765000000000, 1765000000000]],
  incidents: [],
};
const PAYLOAD =
  '{"v":2,"n":2,"at":1765000060000,"every":60000,"kind":"tick","prev":"5555555555555555555555555555555555555555555555555555555555555555",' +
  '"sources":[["spiffe://shop.test/svc/orders",20,"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]],' +
  '"streams":[["spiffe://shop.test/svc/orders","o1",20,0,20,null,1765000000000,1765000000000]],"incidents":[]}';
const SIGNING_INPUT =
  'eyJhbGciOiJFUzI1NiIsImtpZCI6ImF1ZGl0LTEiLCJ0eXAiOiJsb2Nrc3RlcC1hdWRpdC1jaGFpbitqd3MifQ.' +
  'eyJ2IjoyLCJuIjoyLCJhdCI6MTc2NTAwMDA2MDAwMCwiZXZlcnkiOjYwMDAwLCJraW5kIjoidGljayIsInByZXYiOiI1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1' +
  'Iiwic291cmNlcyI6W1sic3BpZmZlOi8vc2hvcC50ZXN0L3N2Yy9vcmRlcnMiLDIwLCJhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh' +
  'Il1dLCJzdHJlYW1zIjpbWyJzcGlmZmU6Ly9zaG9wLnRlc3Qvc3ZjL29yZGVycyIsIm8xIiwyMCwwLDIwLG51bGwsMTc2NTAwMDAwMDAwMCwxNzY1MDAwMDAwMDAwXV0sImluY2lkZW50cyI6W119';

describe('a checkpoint link', () => {
  it('signs exactly the known payload bytes', () => {
    assert.equal(new TextDecoder().decode(chainPayload(CLAIMS)), PAYLOAD);
  });

  it('has the known signing input (header with alg, kid and typ; then the payload), and verifies', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const keys = { current: () => ({ kid: 'audit-1', privateKey }) } as unknown as KeyRing;
    const link = await signLink(keys, CLAIMS);
    assert.equal(link.jws.split('.').slice(0, 2).join('.'), SIGNING_INPUT);
    assert.deepEqual([link.n, link.at], [2, 1765000060000]);
    const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'audit-1', alg: 'ES256' }] };
    assert.deepEqual(await verifiedLink(link.jws, jwks), CLAIMS);
    const [header, , signature] = link.jws.split('.') as [string, string, string];
    const other = Buffer.from(PAYLOAD.replace('"n":2', '"n":3')).toString('base64url');
    assert.equal(
      await verifiedLink(`${header}.${other}.${signature}`, jwks),
      null,
      'a changed payload does not verify',
    );
  });

  it('is named by the next link with the known digest (SHA-256 of the compact JWS)', () => {
    assert.equal(linkDigest('a.b.c'), '845e30448809e2bc8958eb025bfc795235d13b077a53d0c3abbd2385170dc9b8');
  });
});

describe('two monitors sharing one store (replicas)', () => {
  it('take turns: a position one signed first stands, the other folds it and goes on, silently', async () => {
    const store = openSqliteStore(join(scratch, 'shared.db'));
    const keys = await openAuditKeys(join(scratch, 'keys'));
    const errors: Error[] = [];
    const [a, b] = [0, 1].map(() =>
      startCheckpointer({ store, keys, intervalMs: 3_600_000, onError: (error) => errors.push(error) }),
    ) as [ReturnType<typeof startCheckpointer>, ReturnType<typeof startCheckpointer>];
    try {
      await store.appendAudit(
        'spiffe://shop.test/svc/orders',
        { stream: 's', dropped: 0, written: 1, entries: [{ streamSeq: 1, event: '{"txn":null}' }] },
        Date.now(),
      );
      await Promise.all([a.checkpoint(), b.checkpoint(), a.checkpoint(), b.checkpoint()]);
      await a.stop();
      await b.stop();
      assert.deepEqual(errors, []);
      const report = await verifyTrail(store, keys.publicJwks());
      assert.deepEqual(report.problems, []);
      assert.ok((report.chain.newest?.n ?? 0) >= 3, `${report.chain.newest?.n} links`);
    } finally {
      await store.close();
    }
  });
});
