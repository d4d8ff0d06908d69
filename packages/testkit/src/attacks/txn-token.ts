import { randomBytes } from 'node:crypto';
import { CompactEncrypt, FlattenedSign, SignJWT, base64url, exportSPKI } from 'jose';
import type { TxnTokenMinter } from '../txn-token/create-minter.ts';
import type { AttackerKey } from './jws-craft.ts';
import { generateAttackerKey, segment, signCompact, signRawHeader, unsignedCompact } from './jws-craft.ts';
import { revokedKidToken } from './revoked-kid.ts';

/** The class of guard reason code an attack must end in (LOCKSTEP_ERR_TXN_TOKEN_*, or 431 for too-large). */
export type TxnTokenRejection = 'invalid' | 'expired' | 'claims' | 'malformed' | 'missing' | 'duplicate' | 'revoked' | 'too-large';

/**
 * What the signature on the built token is, so tests know what a plain signature check says:
 * - `minter-key`: a valid ES256 signature by the minter's key — only the guard's other checks can refuse it;
 * - `revoked-key`: a valid signature by the minter's second key (see revokedKidToken);
 * - `attacker-key`: a valid signature by a key the guard must not trust (incl. HMAC keyed with public-key bytes);
 * - `forged`: signature bytes that verify under no key;
 * - `unsigned`: no signature at all, or not a JWS.
 */
export type AttackSignature = 'minter-key' | 'revoked-key' | 'attacker-key' | 'forged' | 'unsigned';

export interface TxnTokenAttack {
  readonly id: string;
  readonly description: string;
  readonly expect: TxnTokenRejection;
  readonly signedWith: AttackSignature;
  /** One Txn-Token header value, or several header values (none at all for `header-absent`). */
  build(minter: TxnTokenMinter): Promise<string | string[]>;
}

const TYP = 'txntoken+jwt';
const ATTACKER_URL = 'http://127.0.0.1:1/';
const ONE_MIB = 1024 * 1024;

const now = () => Math.floor(Date.now() / 1000);
const realHeader = (minter: TxnTokenMinter) => ({ alg: 'ES256', typ: TYP, kid: minter.kid });

function algNone(id: string, alg: string): TxnTokenAttack {
  return {
    id,
    description: `"alg": "${alg}" with an empty signature: an unsecured JWT`,
    expect: 'invalid',
    signedWith: 'unsigned',
    build: async (minter) => unsignedCompact({ alg, typ: TYP }, minter.claims()),
  };
}

/** Key confusion: a verifier that lets the token pick HS256 would key the HMAC with the public key it holds. */
function hmacWithPublicKey(id: string, form: string, secret: (minter: TxnTokenMinter) => Promise<Uint8Array>): TxnTokenAttack {
  return {
    id,
    description: `HS256 keyed with the minter's public key (${form}): RS/ES-to-HS key confusion`,
    expect: 'invalid',
    signedWith: 'attacker-key',
    build: async (minter) => new SignJWT(minter.claims())
      .setProtectedHeader({ alg: 'HS256', typ: TYP, kid: minter.kid })
      .sign(await secret(minter)),
  };
}

function attackerSigned(id: string, description: string, header: (minter: TxnTokenMinter, attacker: AttackerKey) => Record<string, unknown>): TxnTokenAttack {
  return {
    id,
    description,
    expect: 'invalid',
    signedWith: 'attacker-key',
    build: async (minter) => {
      const attacker = await generateAttackerKey();
      return signCompact({ alg: 'ES256', typ: TYP, ...header(minter, attacker) }, JSON.stringify(minter.claims()), attacker.privateKey);
    },
  };
}

function realKeyAttack(id: string, description: string, expect: TxnTokenRejection, build: (minter: TxnTokenMinter) => Promise<string>): TxnTokenAttack {
  return { id, description, expect, signedWith: 'minter-key', build };
}

export const txnTokenAttacks: readonly TxnTokenAttack[] = Object.freeze(([
  // ── algorithm and signature ──────────────────────────────────────────────
  algNone('alg-none', 'none'),
  algNone('alg-none-title-case', 'None'),
  algNone('alg-none-upper-case', 'NONE'),
  algNone('alg-none-mixed-case', 'nOnE'),
  {
    id: 'signature-stripped',
    description: 'A real token with its signature removed (header.payload.)',
    expect: 'invalid',
    signedWith: 'unsigned',
    build: async (minter) => {
      const token = await minter.mint();
      return token.slice(0, token.lastIndexOf('.') + 1);
    },
  },
  hmacWithPublicKey('hs256-public-key-pem', 'SPKI PEM text', async (minter) => new TextEncoder().encode(await exportSPKI(minter.publicKey))),
  hmacWithPublicKey('hs256-public-key-der', 'SPKI DER bytes', async (minter) => new Uint8Array(await globalThis.crypto.subtle.exportKey('spki', minter.publicKey))),
  hmacWithPublicKey('hs256-public-key-raw', 'raw JWK x||y', async (minter) => rawPublicKey(minter)),
  {
    id: 'ecdsa-zero-signature',
    description: 'ES256 signature of 64 zero bytes (r = s = 0, CVE-2022-21449 "psychic signatures")',
    expect: 'invalid',
    signedWith: 'forged',
    build: async (minter) => `${segment(realHeader(minter))}.${segment(minter.claims())}.${segment(new Uint8Array(64))}`,
  },
  {
    id: 'payload-tampered',
    description: 'A real signature over a payload changed afterwards (sub → admin, roles → admin)',
    expect: 'invalid',
    signedWith: 'forged',
    build: async (minter) => {
      const [header, , signature] = (await minter.mint()).split('.');
      const payload = segment(minter.claims({ sub: 'admin', tctx: { roles: ['admin'], tenant: 'acme' } }));
      return `${header}.${payload}.${signature}`;
    },
  },
  // ── key selection ────────────────────────────────────────────────────────
  attackerSigned('embedded-jwk', 'The attacker\'s public key embedded as a "jwk" header, signed with it (kid of the real key)',
    (minter, attacker) => ({ kid: minter.kid, jwk: attacker.publicJwk })),
  attackerSigned('jku-header', `"jku" pointing at ${ATTACKER_URL} (a verifier must never fetch keys named by the token)`,
    (_minter, attacker) => ({ kid: attacker.kid, jku: `${ATTACKER_URL}jwks.json` })),
  attackerSigned('x5u-header', `"x5u" pointing at ${ATTACKER_URL}`,
    (_minter, attacker) => ({ kid: attacker.kid, x5u: `${ATTACKER_URL}cert.pem` })),
  attackerSigned('kid-path-traversal', '"kid": "../../etc/passwd", signed with an attacker key',
    () => ({ kid: '../../etc/passwd' })),
  attackerSigned('kid-unknown', 'A kid the guard does not know, signed with an attacker key',
    (_minter, attacker) => ({ kid: `unknown-${attacker.kid}` })),
  {
    id: 'kid-revoked',
    description: 'Signed by the minter\'s second key, whose kid the test revokes (see revokedKidToken)',
    expect: 'revoked',
    signedWith: 'revoked-key',
    build: async (minter) => (await revokedKidToken(minter)).token,
  },
  // ── header extensions ────────────────────────────────────────────────────
  realKeyAttack('crit-unknown', 'Unknown critical header: crit ["exp-x"], "exp-x": 1 — must be refused, not ignored', 'invalid',
    (minter) => signCompact({ ...realHeader(minter), crit: ['exp-x'], 'exp-x': 1 }, JSON.stringify(minter.claims()), minter.privateKey, ['exp-x'])),
  realKeyAttack('crit-b64-false', 'b64: false with crit ["b64"] (RFC 7797); the signature is also valid read as b64: true', 'invalid',
    async (minter) => {
      // The unencoded payload is itself base64url text, so the signing input is the same either way.
      // jose leaves an unencoded payload out of its result (detached), so it is put back here.
      const payload = segment(minter.claims());
      const jws = await new FlattenedSign(new TextEncoder().encode(payload))
        .setProtectedHeader({ ...realHeader(minter), b64: false, crit: ['b64'] })
        .sign(minter.privateKey);
      return `${jws.protected}.${payload}.${jws.signature}`;
    }),
  {
    id: 'jwe-shaped',
    description: 'A 5-part JWE (dir, A256GCM) carrying the claims',
    expect: 'malformed',
    signedWith: 'unsigned',
    build: async (minter) => new CompactEncrypt(new TextEncoder().encode(JSON.stringify(minter.claims())))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', typ: TYP, kid: minter.kid })
      .encrypt(randomBytes(32)),
  },
  // ── times ────────────────────────────────────────────────────────────────
  realKeyAttack('expired', 'exp ten minutes ago (well past any clock skew)', 'expired',
    (minter) => minter.mint({ iat: now() - 900, exp: now() - 600 })),
  realKeyAttack('nbf-future', 'nbf two minutes ahead', 'claims', (minter) => minter.mint({ nbf: now() + 120 })),
  realKeyAttack('iat-future', 'iat two minutes ahead (exp = iat + 300)', 'claims', (minter) => minter.mint({ iat: now() + 120 })),
  realKeyAttack('exp-missing', 'No exp claim', 'claims', (minter) => minter.mint({}, { omit: ['exp'] })),
  realKeyAttack('lifetime-over-max', 'exp - iat = 3600 s, over the 300 s maximum', 'claims', (minter) => minter.mint({}, { lifetimeSeconds: 3600 })),
  // ── audience and type ────────────────────────────────────────────────────
  realKeyAttack('aud-other-trust-domain', 'aud is another trust domain', 'claims',
    (minter) => minter.mint({ aud: otherTrustDomain(minter) })),
  realKeyAttack('aud-array', 'aud is an array naming this and another trust domain', 'claims',
    (minter) => minter.mint({ aud: [minter.trustDomain, otherTrustDomain(minter)] })),
  realKeyAttack('typ-at-jwt', 'typ "at+jwt": an OAuth access token (RFC 9068) presented as a Txn-Token', 'claims',
    (minter) => minter.mint({}, { header: { typ: 'at+jwt' } })),
  realKeyAttack('typ-jwt', 'typ "JWT": a generic JWT presented as a Txn-Token', 'claims', (minter) => minter.mint({}, { header: { typ: 'JWT' } })),
  realKeyAttack('typ-missing', 'No typ header at all', 'claims', (minter) => minter.mint({}, { header: { typ: undefined } })),
  // ── parsing ──────────────────────────────────────────────────────────────
  realKeyAttack('duplicate-claim-key', 'Payload {"sub":"alice","sub":"admin",…}: parsers disagree on sub; signature is real', 'malformed',
    (minter) => {
      const { sub: _sub, ...rest } = minter.claims();
      return signCompact(realHeader(minter), `{"sub":"alice","sub":"admin",${JSON.stringify(rest).slice(1)}`, minter.privateKey);
    }),
  realKeyAttack('duplicate-header-key', 'Header {"typ":"at+jwt","typ":"txntoken+jwt",…}: parsers disagree on typ; signature is real', 'malformed',
    (minter) => signRawHeader(`{"alg":"ES256","typ":"at+jwt","typ":"${TYP}","kid":${JSON.stringify(minter.kid)}}`, minter.claims(), minter.privateKey)),
  realKeyAttack('payload-not-json', 'A real signature over a payload that is not JSON', 'malformed',
    (minter) => signCompact(realHeader(minter), 'sub=admin', minter.privateKey)),
  {
    id: 'not-a-jws',
    description: 'A header value that is not a compact JWS at all',
    expect: 'malformed',
    signedWith: 'unsigned',
    build: async () => 'not-a-txn-token',
  },
  realKeyAttack('claim-nul-byte', 'sub "alice\\u0000admin": a NUL byte inside a claim, signature real', 'claims',
    (minter) => minter.mint({ sub: 'alice\u0000admin' })),
  realKeyAttack('oversized', 'A ~1 MiB token (padding claim), signature real', 'too-large',
    (minter) => minter.mint({ pad: 'x'.repeat(Math.floor(ONE_MIB * 3 / 4)) })),
  // ── header transport ─────────────────────────────────────────────────────
  {
    id: 'header-repeated',
    description: 'Two Txn-Token headers, each a valid token',
    expect: 'duplicate',
    signedWith: 'minter-key',
    build: async (minter) => [await minter.mint(), await minter.mint({ sub: 'admin' })],
  },
  {
    id: 'header-absent',
    description: 'No Txn-Token header on a route that requires one',
    expect: 'missing',
    signedWith: 'unsigned',
    build: async () => [],
  },
] satisfies TxnTokenAttack[]).map((attack) => Object.freeze(attack)));

function rawPublicKey(minter: TxnTokenMinter): Uint8Array {
  const jwk = minter.jwks.keys[0];
  if (jwk?.x === undefined || jwk.y === undefined) throw new TypeError('the minter\'s JWKS has no EC public key');
  return new Uint8Array([...base64url.decode(jwk.x), ...base64url.decode(jwk.y)]);
}

function otherTrustDomain(minter: TxnTokenMinter): string {
  return minter.trustDomain === 'other.test' ? 'another.test' : 'other.test';
}
