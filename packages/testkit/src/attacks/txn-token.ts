import { randomBytes } from 'node:crypto';
import { trustDomainId, workloadId } from '@lockstep/identity';
import { CompactEncrypt, FlattenedSign, SignJWT, base64url, exportSPKI } from 'jose';
import type { TxnClaimsInput } from '../txn-token/claims.ts';
import type { TxnTokenMinter } from '../txn-token/create-minter.ts';
import type { AttackerKey } from './jws-craft.ts';
import { generateAttackerKey, segment, signCompact, signRawHeader, unsignedCompact } from './jws-craft.ts';
import { revokedKidToken } from './revoked-kid.ts';

/** The class of guard reason code an attack must end in (LOCKSTEP_ERR_TXN_TOKEN_*, or 431 for too-large). */
export type TxnTokenRejection =
  'invalid' | 'expired' | 'claims' | 'malformed' | 'missing' | 'duplicate' | 'revoked' | 'too-large';

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
function hmacWithPublicKey(
  id: string,
  form: string,
  secret: (minter: TxnTokenMinter) => Promise<Uint8Array>,
): TxnTokenAttack {
  return {
    id,
    description: `HS256 keyed with the minter's public key (${form}): RS/ES-to-HS key confusion`,
    expect: 'invalid',
    signedWith: 'attacker-key',
    build: async (minter) =>
      new SignJWT(minter.claims())
        .setProtectedHeader({ alg: 'HS256', typ: TYP, kid: minter.kid })
        .sign(await secret(minter)),
  };
}

function attackerSigned(
  id: string,
  description: string,
  header: (minter: TxnTokenMinter, attacker: AttackerKey) => Record<string, unknown>,
): TxnTokenAttack {
  return {
    id,
    description,
    expect: 'invalid',
    signedWith: 'attacker-key',
    build: async (minter) => {
      const attacker = await generateAttackerKey();
      return signCompact(
        { alg: 'ES256', typ: TYP, ...header(minter, attacker) },
        JSON.stringify(minter.claims()),
        attacker.privateKey,
      );
    },
  };
}

function realKeyAttack(
  id: string,
  description: string,
  expect: TxnTokenRejection,
  build: (minter: TxnTokenMinter) => Promise<string>,
): TxnTokenAttack {
  return { id, description, expect, signedWith: 'minter-key', build };
}

/**
 * A claim of the wrong type or form, signed with the real key: draft-ietf-oauth-transaction-tokens-10
 * §9.2 gives each claim its type, and a guard must refuse, never coerce (`roles: "admin"` is not `[]`).
 */
type Overrides = (minter: TxnTokenMinter) => Record<string, unknown>;

function badClaim(id: string, description: string, overrides: Overrides, omit: readonly string[] = []): TxnTokenAttack {
  return realKeyAttack(id, description, 'claims', (m) => m.mint(overrides(m) as TxnClaimsInput, { omit }));
}

/**
 * Payload bytes written by hand (JSON.stringify cannot write a `__proto__` key or 1e400): `members`,
 * raw JSON text, go first, then the minter's default claims without those named in `omit`.
 */
function handWritten(id: string, description: string, members: string, omit: readonly string[]): TxnTokenAttack {
  return realKeyAttack(id, description, 'claims', (minter) => {
    const rest = JSON.stringify(minter.claims({}, { omit }));
    return signCompact(realHeader(minter), `{${members},${rest.slice(1)}`, minter.privateKey);
  });
}

const workload = (minter: TxnTokenMinter, name: string, trustDomain = minter.trustDomain) =>
  workloadId(trustDomain, name);

export const txnTokenAttacks: readonly TxnTokenAttack[] = Object.freeze(
  (
    [
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
      hmacWithPublicKey('hs256-public-key-pem', 'SPKI PEM text', async (minter) =>
        new TextEncoder().encode(await exportSPKI(minter.publicKey)),
      ),
      hmacWithPublicKey(
        'hs256-public-key-der',
        'SPKI DER bytes',
        async (minter) => new Uint8Array(await globalThis.crypto.subtle.exportKey('spki', minter.publicKey)),
      ),
      hmacWithPublicKey('hs256-public-key-raw', 'raw JWK x||y', async (minter) => rawPublicKey(minter)),
      {
        id: 'ecdsa-zero-signature',
        description: 'ES256 signature of 64 zero bytes (r = s = 0, CVE-2022-21449 "psychic signatures")',
        expect: 'invalid',
        signedWith: 'forged',
        build: async (minter) =>
          `${segment(realHeader(minter))}.${segment(minter.claims())}.${segment(new Uint8Array(64))}`,
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
      attackerSigned(
        'embedded-jwk',
        'The attacker\'s public key embedded as a "jwk" header, signed with it (kid of the real key)',
        (minter, attacker) => ({ kid: minter.kid, jwk: attacker.publicJwk }),
      ),
      attackerSigned(
        'jku-header',
        `"jku" pointing at ${ATTACKER_URL} (a verifier must never fetch keys named by the token)`,
        (_minter, attacker) => ({ kid: attacker.kid, jku: `${ATTACKER_URL}jwks.json` }),
      ),
      attackerSigned('x5u-header', `"x5u" pointing at ${ATTACKER_URL}`, (_minter, attacker) => ({
        kid: attacker.kid,
        x5u: `${ATTACKER_URL}cert.pem`,
      })),
      attackerSigned('kid-path-traversal', '"kid": "../../etc/passwd", signed with an attacker key', () => ({
        kid: '../../etc/passwd',
      })),
      attackerSigned(
        'kid-unknown',
        'A kid the guard does not know, signed with an attacker key',
        (_minter, attacker) => ({ kid: `unknown-${attacker.kid}` }),
      ),
      {
        id: 'kid-revoked',
        description: "Signed by the minter's second key, whose kid the test revokes (see revokedKidToken)",
        expect: 'revoked',
        signedWith: 'revoked-key',
        build: async (minter) => (await revokedKidToken(minter)).token,
      },
      // ── header extensions ────────────────────────────────────────────────────
      realKeyAttack(
        'crit-unknown',
        'Unknown critical header: crit ["exp-x"], "exp-x": 1 — must be refused, not ignored',
        'invalid',
        (minter) =>
          signCompact(
            { ...realHeader(minter), crit: ['exp-x'], 'exp-x': 1 },
            JSON.stringify(minter.claims()),
            minter.privateKey,
            ['exp-x'],
          ),
      ),
      realKeyAttack(
        'crit-b64-false',
        'b64: false with crit ["b64"] (RFC 7797); the signature is also valid read as b64: true',
        'invalid',
        async (minter) => {
          // The unencoded payload is itself base64url text, so the signing input is the same either way.
          // jose leaves an unencoded payload out of its result (detached), so it is put back here.
          const payload = segment(minter.claims());
          const jws = await new FlattenedSign(new TextEncoder().encode(payload))
            .setProtectedHeader({ ...realHeader(minter), b64: false, crit: ['b64'] })
            .sign(minter.privateKey);
          return `${jws.protected}.${payload}.${jws.signature}`;
        },
      ),
      {
        id: 'jwe-shaped',
        description: 'A 5-part JWE (dir, A256GCM) carrying the claims',
        expect: 'malformed',
        signedWith: 'unsigned',
        build: async (minter) =>
          new CompactEncrypt(new TextEncoder().encode(JSON.stringify(minter.claims())))
            .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', typ: TYP, kid: minter.kid })
            .encrypt(randomBytes(32)),
      },
      // ── times ────────────────────────────────────────────────────────────────
      realKeyAttack('expired', 'exp ten minutes ago (well past any clock skew)', 'expired', (minter) =>
        minter.mint({ iat: now() - 900, exp: now() - 600 }),
      ),
      realKeyAttack('nbf-future', 'nbf two minutes ahead', 'claims', (minter) => minter.mint({ nbf: now() + 120 })),
      realKeyAttack('iat-future', 'iat two minutes ahead (exp = iat + 300)', 'claims', (minter) =>
        minter.mint({ iat: now() + 120 }),
      ),
      realKeyAttack('exp-missing', 'No exp claim', 'claims', (minter) => minter.mint({}, { omit: ['exp'] })),
      realKeyAttack('lifetime-over-max', 'exp - iat = 3600 s, over the 300 s maximum', 'claims', (minter) =>
        minter.mint({}, { lifetimeSeconds: 3600 }),
      ),
      // ── audience and type ────────────────────────────────────────────────────
      realKeyAttack('aud-other-trust-domain', 'aud is another trust domain', 'claims', (minter) =>
        minter.mint({ aud: otherTrustDomain(minter) }),
      ),
      realKeyAttack('aud-array', 'aud is an array naming this and another trust domain', 'claims', (minter) =>
        minter.mint({ aud: [minter.trustDomain, otherTrustDomain(minter)] }),
      ),
      realKeyAttack(
        'typ-at-jwt',
        'typ "at+jwt": an OAuth access token (RFC 9068) presented as a Txn-Token',
        'claims',
        (minter) => minter.mint({}, { header: { typ: 'at+jwt' } }),
      ),
      realKeyAttack('typ-jwt', 'typ "JWT": a generic JWT presented as a Txn-Token', 'claims', (minter) =>
        minter.mint({}, { header: { typ: 'JWT' } }),
      ),
      realKeyAttack('typ-missing', 'No typ header at all', 'claims', (minter) =>
        minter.mint({}, { header: { typ: undefined } }),
      ),
      // ── required claims (draft -10 §9.2) ────────────────────────────────────
      badClaim('scope-missing', 'No scope claim (REQUIRED)', () => ({}), ['scope']),
      badClaim('req-wl-missing', 'No req_wl claim (REQUIRED): no requesting workload', () => ({}), ['req_wl']),
      badClaim('txn-missing', 'No txn claim (REQUIRED): no transaction to correlate', () => ({}), ['txn']),
      badClaim('sub-missing', 'No sub claim (REQUIRED): nobody on whose behalf', () => ({}), ['sub']),
      // ── claim types: refused, never coerced ──────────────────────────────────
      badClaim('roles-string', 'tctx.roles "admin" (a string, not an array of strings)', () => ({
        tctx: { roles: 'admin', tenant: 'acme' },
      })),
      badClaim('roles-non-string', 'tctx.roles ["customer", {"name":"admin"}] (an object among the roles)', () => ({
        tctx: { roles: ['customer', { name: 'admin' }], tenant: 'acme' },
      })),
      badClaim('tenant-number', 'tctx.tenant 7 (a number, not a string)', () => ({
        tctx: { roles: ['customer'], tenant: 7 },
      })),
      badClaim('tctx-array', 'tctx ["admin"] (an array, not an object)', () => ({ tctx: ['admin'] })),
      badClaim('rctx-string', 'rctx "internal" (a string, not an object)', () => ({ rctx: 'internal' })),
      badClaim('scope-array', 'scope ["orders:read","orders:write"] (an array, not a string)', () => ({
        scope: ['orders:read', 'orders:write'],
      })),
      badClaim('scope-empty', 'scope "" (no scope token: RFC 6749 §3.3 needs at least one)', () => ({ scope: '' })),
      badClaim('scope-empty-token', 'scope " orders:read  orders:write" (empty scope tokens)', () => ({
        scope: ' orders:read  orders:write',
      })),
      badClaim('sub-number', 'sub 7 (a number, not a string)', () => ({ sub: 7 })),
      badClaim('sub-empty', 'sub "" (an empty subject)', () => ({ sub: '' })),
      badClaim('txn-object', 'txn {"id":"…"} (an object, not a string)', () => ({ txn: { id: 'txn-1' } })),
      badClaim('iat-string', 'iat as a string of digits', () => ({ iat: String(now()), exp: now() + 300 })),
      badClaim('exp-string', 'exp as a string of digits', () => ({ exp: String(now() + 300) })),
      badClaim('nbf-string', 'nbf as a string of digits', () => ({ nbf: String(now()) })),
      badClaim('iss-number', 'iss 7 (a number, not a string)', () => ({ iss: 7 })),
      handWritten(
        'exp-overflow',
        'exp 1e400 in the payload bytes: JSON.parse reads Infinity, a token that never expires',
        '"exp":1e400',
        ['exp'],
      ),
      badClaim('claims-too-deep', 'tctx nested twelve levels deep', () => ({
        tctx: { roles: ['customer'], deep: JSON.parse(`${'{"a":'.repeat(12)}1${'}'.repeat(12)}`) as unknown },
      })),
      // ── requesting workload (req_wl, and the chain a replacement keeps) ──────
      badClaim('req-wl-number', 'req_wl 7 (a number, not a string)', () => ({ req_wl: 7 })),
      badClaim('req-wl-array', 'req_wl as an array of workloads (the -03 form; draft -10 has a string)', (minter) => ({
        req_wl: [workload(minter, 'gateway'), workload(minter, 'orders')],
      })),
      badClaim('req-wl-not-spiffe', 'req_wl "gateway" (not a SPIFFE ID)', () => ({ req_wl: 'gateway' })),
      badClaim('req-wl-foreign-trust-domain', 'req_wl is a workload of another trust domain', (minter) => ({
        req_wl: workload(minter, 'gateway', otherTrustDomain(minter)),
      })),
      badClaim('req-wl-trust-domain-only', 'req_wl names the trust domain, no workload (spiffe://<td>)', (minter) => ({
        req_wl: trustDomainId(minter.trustDomain),
      })),
      badClaim('req-wl-chain-foreign', 'req_wl_chain starts at a workload of another trust domain', (minter) => ({
        req_wl: workload(minter, 'orders'),
        req_wl_chain: [workload(minter, 'gateway', otherTrustDomain(minter))],
      })),
      badClaim('req-wl-chain-string', 'req_wl_chain as a string, not an array', (minter) => ({
        req_wl_chain: workload(minter, 'gateway'),
      })),
      badClaim(
        'req-wl-chain-too-long',
        'req_wl_chain of 9 links: more replacements than any Txn-Token Service allows',
        (minter) => ({ req_wl_chain: Array.from({ length: 9 }, (_, i) => workload(minter, `hop-${i}`)) }),
      ),
      // ── prototype keys (hand-written payload bytes) ──────────────────────────
      handWritten(
        'claims-proto-key',
        'A "__proto__" claim with tctx roles ["admin"] (no own tctx): naive merges inherit it',
        '"__proto__":{"tctx":{"roles":["admin"],"tenant":"acme"}}',
        ['tctx'],
      ),
      handWritten(
        'claims-constructor-key',
        'A "constructor" claim with "prototype" inside: the classic pollution payload',
        '"constructor":{"prototype":{"roles":["admin"]}}',
        [],
      ),
      handWritten(
        'tctx-proto-key',
        'tctx with a "__proto__" member carrying roles ["admin"], and no own roles',
        '"tctx":{"tenant":"acme","__proto__":{"roles":["admin"]}}',
        ['tctx'],
      ),
      handWritten(
        'tctx-prototype-key',
        'tctx with a "prototype" member beside its roles',
        '"tctx":{"roles":["customer"],"prototype":{"roles":["admin"]}}',
        ['tctx'],
      ),
      handWritten(
        'rctx-nested-proto-key',
        'A "__proto__" key two levels down in rctx',
        '"rctx":{"authn":"pwd","device":{"__proto__":{"trusted":true}}}',
        ['rctx'],
      ),
      realKeyAttack(
        'header-proto-key',
        'Header with a "__proto__" member carrying alg none, signature real',
        'invalid',
        (minter) =>
          signRawHeader(
            `{"alg":"ES256","typ":"${TYP}","kid":${JSON.stringify(minter.kid)},"__proto__":{"alg":"none"}}`,
            minter.claims(),
            minter.privateKey,
          ),
      ),
      // ── parsing ──────────────────────────────────────────────────────────────
      realKeyAttack(
        'duplicate-claim-key',
        'Payload {"sub":"alice","sub":"admin",…}: parsers disagree on sub; signature is real',
        'malformed',
        (minter) => {
          const { sub: _sub, ...rest } = minter.claims();
          return signCompact(
            realHeader(minter),
            `{"sub":"alice","sub":"admin",${JSON.stringify(rest).slice(1)}`,
            minter.privateKey,
          );
        },
      ),
      realKeyAttack(
        'duplicate-header-key',
        'Header {"typ":"at+jwt","typ":"txntoken+jwt",…}: parsers disagree on typ; signature is real',
        'malformed',
        (minter) =>
          signRawHeader(
            `{"alg":"ES256","typ":"at+jwt","typ":"${TYP}","kid":${JSON.stringify(minter.kid)}}`,
            minter.claims(),
            minter.privateKey,
          ),
      ),
      realKeyAttack('payload-not-json', 'A real signature over a payload that is not JSON', 'malformed', (minter) =>
        signCompact(realHeader(minter), 'sub=admin', minter.privateKey),
      ),
      {
        id: 'not-a-jws',
        description: 'A header value that is not a compact JWS at all',
        expect: 'malformed',
        signedWith: 'unsigned',
        build: async () => 'not-a-txn-token',
      },
      realKeyAttack(
        'claim-nul-byte',
        'sub "alice\\u0000admin": a NUL byte inside a claim, signature real',
        'claims',
        (minter) => minter.mint({ sub: 'alice\u0000admin' }),
      ),
      realKeyAttack('oversized', 'A ~1 MiB token (padding claim), signature real', 'too-large', (minter) =>
        minter.mint({ pad: 'x'.repeat(Math.floor((ONE_MIB * 3) / 4)) }),
      ),
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
    ] satisfies TxnTokenAttack[]
  ).map((attack) => Object.freeze(attack)),
);

function rawPublicKey(minter: TxnTokenMinter): Uint8Array {
  const jwk = minter.jwks.keys[0];
  if (jwk?.x === undefined || jwk.y === undefined) throw new TypeError("the minter's JWKS has no EC public key");
  return new Uint8Array([...base64url.decode(jwk.x), ...base64url.decode(jwk.y)]);
}

function otherTrustDomain(minter: TxnTokenMinter): string {
  return minter.trustDomain === 'other.test' ? 'another.test' : 'other.test';
}
