/**
 * Probe proofs (probe-proof.ts): only the scanner's key, over a probe token the Txn-Token Service
 * signed, marks a request — once, for the method, target and service it names. Everything an
 * outsider could try instead is not a proof (null), and nothing here throws.
 */
import assert from 'node:assert/strict';
import type { webcrypto } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import { Revocations } from '../revocations.ts';
import { createStaticKeySource, type TxnKeySource } from '../txn-keys.ts';
import { createProbeProof, createProbeProofStep, PROBE_TOKEN_TYP, type ProbeProofStep } from './probe-proof.ts';

const TD = 'shop.test';
const SCANNER = `spiffe://${TD}/scanner/ci`;
const ORDERS = `spiffe://${TD}/svc/orders`;
const KID = 'tts-1';

type KeyPair = webcrypto.CryptoKeyPair;
let tts: KeyPair;
let scanner: KeyPair;
let stranger: KeyPair;
let keys: TxnKeySource;

const pair = async (): Promise<KeyPair> =>
  crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']) as Promise<KeyPair>;

before(async () => {
  [tts, scanner, stranger] = [await pair(), await pair(), await pair()];
  keys = await createStaticKeySource({
    keys: [{ ...(await exportJWK(tts.publicKey)), kid: KID, alg: 'ES256', use: 'sig' }],
  });
});

interface TokenOptions {
  signer?: KeyPair;
  kid?: string;
  typ?: string;
  sub?: string;
  aud?: string;
  iat?: number;
  exp?: number;
  cnf?: KeyPair;
}
async function probeToken(options: TokenOptions = {}): Promise<string> {
  const iat = options.iat ?? Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: 'scan-1', cnf: { jwk: await exportJWK((options.cnf ?? scanner).publicKey) } })
    .setProtectedHeader({ alg: 'ES256', typ: options.typ ?? PROBE_TOKEN_TYP, kid: options.kid ?? KID })
    .setSubject(options.sub ?? SCANNER)
    .setAudience(options.aud ?? TD)
    .setIssuedAt(iat)
    .setExpirationTime(options.exp ?? iat + 3_600)
    .sign((options.signer ?? tts).privateKey);
}

interface ProofOptions {
  token?: string;
  key?: KeyPair;
  method?: string;
  target?: string;
  audience?: string;
  now?: number;
}
async function proof(options: ProofOptions = {}): Promise<string> {
  return createProbeProof({
    token: options.token ?? (await probeToken()),
    key: (options.key ?? scanner).privateKey,
    method: options.method ?? 'GET',
    target: options.target ?? '/orders/1',
    audience: options.audience ?? ORDERS,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
}

function step(options: { now?: () => number; revoked?: string[]; revocations?: Revocations } = {}): ProbeProofStep {
  const revocations = options.revocations ?? new Revocations();
  for (const value of options.revoked ?? []) revocations.add({ kind: 'spiffeId', value });
  return createProbeProofStep({
    trustDomain: TD,
    service: 'orders',
    keys,
    revocations,
    clockSkewSeconds: 30,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
}

const SOURCE = '10.0.0.7';
/** `verifier.verify` of a GET /orders/1 from `source`. */
const marks = (verifier: ProbeProofStep, header: string | string[], source = SOURCE) =>
  verifier.verify(header, 'GET', '/orders/1', source);

describe('probe proofs', () => {
  it('name the scanner when its key signed this very request over a probe token of the Txn-Token Service', async () => {
    assert.equal(await marks(step(), await proof()), SCANNER);
  });

  it('mark a request once: the same proof again is not a probe', async () => {
    const verifier = step();
    const header = await proof();
    assert.equal(await marks(verifier, header), SCANNER);
    assert.equal(await marks(verifier, header), null);
  });

  it('mark only the method, target and service they name', async () => {
    const verifier = step();
    assert.equal(await verifier.verify(await proof(), 'DELETE', '/orders/1', SOURCE), null);
    assert.equal(await verifier.verify(await proof(), 'GET', '/orders/2', SOURCE), null);
    assert.equal(await verifier.verify(await proof(), 'GET', undefined, SOURCE), null);
    assert.equal(await marks(verifier, await proof({ audience: `spiffe://${TD}/svc/payments` })), null);
  });

  it("are nothing without the scanner's key, or with a token the Txn-Token Service did not sign as a probe token", async () => {
    const verifier = step();
    const cases: [string, Promise<string>][] = [
      ['a stolen token, signed with another key', proof({ key: stranger })],
      [
        "a token naming the stranger's key, signed by the stranger under the real kid",
        proof({ key: stranger, token: await probeToken({ signer: stranger, cnf: stranger }) }),
      ],
      ['a token under a kid the guard does not know', proof({ token: await probeToken({ kid: 'tts-9' }) })],
      ["a Txn-Token's typ", proof({ token: await probeToken({ typ: 'txntoken+jwt' }) })],
      ['a workload, not a scanner', proof({ token: await probeToken({ sub: ORDERS }) })],
      [
        'a scanner of another trust domain',
        proof({ token: await probeToken({ sub: 'spiffe://evil.test/scanner/ci' }) }),
      ],
      ['another audience', proof({ token: await probeToken({ aud: 'evil.test' }) })],
      [
        'an expired token',
        proof({
          token: await probeToken({
            iat: Math.floor(Date.now() / 1000) - 7_200,
            exp: Math.floor(Date.now() / 1000) - 3_600,
          }),
        }),
      ],
      ['a token that lives a day', proof({ token: await probeToken({ exp: Math.floor(Date.now() / 1000) + 86_400 }) })],
      ['a proof made ten minutes ago', proof({ now: Date.now() - 600_000 })],
    ];
    for (const [what, header] of cases) assert.equal(await marks(verifier, await header), null, what);
    for (const junk of ['probe', 'a.b.c', '', 'x'.repeat(10_000)])
      assert.equal(await marks(verifier, junk), null, junk.slice(0, 20));
    assert.equal(await marks(verifier, [await proof(), await proof()]), null, 'two headers');
  });

  it('are nothing once the scanner is revoked', async () => {
    assert.equal(await marks(step({ revoked: [SCANNER] }), await proof()), null);
  });

  it('are nothing once the kid of their token is revoked, also a token verified before; mark again once lifted', async () => {
    const revocations = new Revocations();
    const verifier = step({ revocations });
    const token = await probeToken();
    assert.equal(await marks(verifier, await proof({ token })), SCANNER, 'verified, and kept for the next proofs');
    revocations.add({ kind: 'kid', value: KID });
    assert.equal(await marks(verifier, await proof({ token })), null, 'the token verified before the revocation');
    assert.equal(await marks(verifier, await proof()), null, 'a token the revoked key signs now');
    const revokedFromStart = new Revocations();
    revokedFromStart.add({ kind: 'kid', value: KID });
    const knewFirst = step({ revocations: revokedFromStart });
    assert.equal(await marks(knewFirst, await proof()), null, 'a guard that knew of the revocation first');
    revocations.remove({ kind: 'kid', value: KID });
    assert.equal(await marks(verifier, await proof({ token })), SCANNER, 'the revocation lifted');
  });

  it('cost a bounded number of verifications a second, whatever a flood of them holds', async () => {
    const now = Date.now();
    const verifier = step({ now: () => now });
    const token = await probeToken();
    const flood = await Promise.all(Array.from({ length: 300 }, () => proof({ now, token })));
    const named = await Promise.all(flood.map((header) => marks(verifier, header)));
    const marked = named.filter((scanner) => scanner !== null).length;
    assert.equal(marked, 256, 'one verification of the token, shared; 256 proofs');
  });

  it("spend no budget on junk that fails a check needing no signature: the scanner's probe after it is marked", async () => {
    const now = Date.now();
    const verifier = step({ now: () => now });
    const seconds = Math.floor(now / 1000);
    const junk = await Promise.all([
      proof({ now, token: await probeToken({ kid: 'tts-9' }) }),
      proof({ now, token: await probeToken({ iat: seconds - 7_200, exp: seconds - 3_600 }) }),
      proof({ now, token: await probeToken({ sub: ORDERS }) }),
      proof({ now, target: '/orders/2' }),
      proof({ now, audience: `spiffe://${TD}/svc/payments` }),
      proof({ now: now - 600_000 }),
    ]);
    for (let i = 0; i < 100; i++) for (const header of junk) assert.equal(await marks(verifier, header), null);
    assert.equal(await marks(verifier, await proof({ now })), SCANNER, 'from the same address, in the same second');
  });

  it('are not crowded out by forged probe tokens: from one address, nor, once verified, from many', async () => {
    const now = Date.now();
    const verifier = step({ now: () => now });
    // Well formed in every part an outsider can see, under the real kid: only a signature check tells.
    const forged = async () =>
      proof({ now, token: await probeToken({ signer: stranger, cnf: stranger }), key: stranger });
    for (let i = 0; i < 300; i++) assert.equal(await marks(verifier, await forged(), '198.51.100.66'), null);
    const token = await probeToken();
    const scanned = async () => marks(verifier, await proof({ now, token }), '10.0.0.8');
    assert.equal(await scanned(), SCANNER, 'the scanner, from its own address, in the same second');
    for (let i = 0; i < 300; i++) assert.equal(await marks(verifier, await forged(), `198.51.100.${i % 250}`), null);
    assert.equal(await scanned(), SCANNER, 'its token verified before: proofs have a budget of their own');
  });

  it('verify at most 8 probe tokens not seen before from one address a second, and 64 from all', async () => {
    const now = Date.now();
    const verifier = step({ now: () => now });
    const fresh = async (source: string) => marks(verifier, await proof({ now, token: await probeToken() }), source);
    const oneAddress = await Promise.all(Array.from({ length: 20 }, () => fresh('10.0.0.9')));
    assert.equal(oneAddress.filter((scanner) => scanner !== null).length, 8);
    const everywhere = await Promise.all(Array.from({ length: 100 }, (_, i) => fresh(`10.0.1.${i}`)));
    assert.equal(everywhere.filter((scanner) => scanner !== null).length, 64 - 8);
  });
});
