/**
 * Txn-Token attacks, on every enforced route: tokens a guard must refuse in step 2. Each is sent
 * with the scanner's genuine SVID; a guard that accepted the token answers with the policy's denial
 * instead (the scanner is permitted nowhere). Tokens come from the kit (signed by the real key,
 * defective in one way) or are crafted here (unsigned, forged, or signed with keys nobody trusts).
 */
import type { DefectiveToken } from '@lockstep/control-plane';
import type { Answer } from '../send.ts';
import { attempt, NIST, OWASP, routeLabel, type Attack, type CraftedToken, type Plan, type ScanContext, type Target } from './attack.ts';

type TokenSource = { readonly kit: DefectiveToken } | { readonly crafted: CraftedToken } | { readonly none: true } | { readonly twice: true };

function onRoute(target: Target, build: () => Omit<Plan, 'target'>): Plan[] {
  if (target.kind !== 'route' || target.route.public) return [];
  if (target.unreachable !== null) return [{ target: routeLabel(target), attempts: [], enforcedBy: 'token', inconclusive: target.unreachable }];
  return [{ target: routeLabel(target), ...build() }];
}

function headerValues(source: TokenSource, context: ScanContext): string[] {
  if ('kit' in source) return [context.tokens.defective[source.kit]];
  if ('crafted' in source) return [context.tokens.crafted[source.crafted]];
  if ('twice' in source) return [context.tokens.a, context.tokens.a];
  return [];
}

function tokenAttack(id: string, title: string, severity: Attack['severity'], cwe: string[], description: string, sources: TokenSource[], extra: { owasp?: string; enforced?: (answer: Answer) => boolean } = {}): Attack {
  return {
    id, title, category: 'txn-token', severity, cwe, owasp: extra.owasp ?? OWASP.api2, nist: NIST.tokens, description,
    enforced: 'Refused by the Txn-Token step (401 LOCKSTEP_ERR_TXN_TOKEN_*), or earlier.',
    on: 'route',
    plan: (target, context) => onRoute(target, () => ({
      attempts: sources.map((source) => attempt(target, context, { token: headerValues(source, context) })),
      enforcedBy: 'token',
      ...(extra.enforced === undefined ? {} : { enforced: extra.enforced }),
    })),
  };
}

export const txnTokenAttacks: readonly Attack[] = [
  tokenAttack('txn.missing', 'No Txn-Token', 'critical', ['CWE-306'], 'A request with a valid SVID and no Txn-Token header.', [{ none: true }]),
  tokenAttack('txn.duplicate-header', 'Two Txn-Token headers', 'medium', ['CWE-436'], 'The same valid token twice: which one a verifier reads must never be a question.', [{ twice: true }]),
  tokenAttack('txn.alg-none', '"alg": "none" (every casing)', 'critical', ['CWE-347'], 'Unsecured JWTs with alg none, None, NONE and nOnE and an empty signature.',
    [{ crafted: 'alg-none' }, { crafted: 'alg-none-title' }, { crafted: 'alg-none-upper' }, { crafted: 'alg-none-mixed' }]),
  tokenAttack('txn.signature-stripped', 'Signature stripped', 'critical', ['CWE-347'], 'A genuine token with its signature removed (header.payload.).', [{ crafted: 'signature-stripped' }]),
  tokenAttack('txn.hs256-key-confusion', 'HS256 keyed with the public key', 'critical', ['CWE-347'], 'HMAC-SHA256 keyed with the Txn-Token Service\'s public key (PEM and DER): asymmetric-to-symmetric key confusion.',
    [{ crafted: 'hs256-public-key-pem' }, { crafted: 'hs256-public-key-der' }]),
  tokenAttack('txn.ecdsa-zero-signature', 'ECDSA r = s = 0', 'critical', ['CWE-347'], 'An ES256 signature of 64 zero bytes (CVE-2022-21449, "psychic signatures").', [{ crafted: 'ecdsa-zero-signature' }]),
  tokenAttack('txn.payload-tampered', 'Tampered payload', 'critical', ['CWE-345'], 'A genuine signature over a payload changed afterwards (sub admin, roles admin).', [{ crafted: 'payload-tampered' }]),
  tokenAttack('txn.embedded-jwk', 'Embedded "jwk" header', 'critical', ['CWE-347'], 'Signed with an attacker key carried in the token\'s own "jwk" header.', [{ crafted: 'embedded-jwk' }]),
  tokenAttack('txn.jku-x5u', '"jku" / "x5u" headers', 'high', ['CWE-347', 'CWE-918'], 'Headers pointing at attacker key URLs; a verifier must never fetch keys a token names.', [{ crafted: 'jku' }, { crafted: 'x5u' }]),
  tokenAttack('txn.kid-traversal', '"kid" path traversal', 'high', ['CWE-22'], '"kid": "../../etc/passwd", signed with an attacker key.', [{ crafted: 'kid-traversal' }]),
  tokenAttack('txn.kid-unknown', 'Unknown "kid"', 'high', ['CWE-347'], 'A key id the Txn-Token Service never published, signed with an attacker key.', [{ crafted: 'kid-unknown' }]),
  tokenAttack('txn.crit-unknown', 'Unknown critical header', 'medium', ['CWE-347'], 'Signed by the real key with crit ["exp-x"]: an extension the verifier does not understand must be refused.', [{ kit: 'crit-unknown' }]),
  tokenAttack('txn.b64-false', '"b64": false', 'medium', ['CWE-347'], 'RFC 7797 unencoded payload, signed by the real key.', [{ kit: 'b64-false' }]),
  tokenAttack('txn.jwe', 'JWE instead of JWS', 'medium', ['CWE-345'], 'A five-part JWE (dir, A256GCM) carrying the claims.', [{ crafted: 'jwe' }]),
  tokenAttack('txn.expired', 'Expired token', 'high', ['CWE-613'], 'Signed by the real key, exp ten minutes ago.', [{ kit: 'expired' }]),
  tokenAttack('txn.not-yet-valid', 'Token from the future', 'medium', ['CWE-613'], 'Signed by the real key with nbf, then iat, an hour ahead.', [{ kit: 'not-yet-valid' }, { kit: 'issued-in-future' }]),
  tokenAttack('txn.no-exp', 'No expiry', 'high', ['CWE-613'], 'Signed by the real key, without exp.', [{ kit: 'no-exp' }]),
  tokenAttack('txn.lifetime-over-max', 'Lifetime over the maximum', 'medium', ['CWE-613'], 'Signed by the real key, valid for a day (Txn-Tokens live at most 5 minutes).', [{ kit: 'lifetime-over-max' }]),
  tokenAttack('txn.wrong-audience', 'Wrong audience', 'high', ['CWE-345'], 'Signed by the real key for another trust domain, and with an audience array.', [{ kit: 'foreign-audience' }, { kit: 'audience-array' }]),
  tokenAttack('txn.wrong-type', 'Plain JWT instead of a Txn-Token', 'high', ['CWE-345'], 'Signed by the real key with typ JWT instead of txntoken+jwt.', [{ kit: 'typ-plain-jwt' }]),
  tokenAttack('txn.user-token', 'User token where a Txn-Token is expected', 'critical', ['CWE-287'], 'An access token (typ at+jwt) and an ID token (typ JWT, client audience), signed by a trusted key, sent as the Txn-Token.',
    [{ kit: 'typ-access-token' }, { kit: 'typ-id-token' }]),
  tokenAttack('txn.foreign-trust-domain', 'Txn-Token from another trust domain', 'critical', ['CWE-346'], 'A well-formed Txn-Token issued by another trust domain\'s token service (its own key, its own audience).', [{ crafted: 'foreign-trust-domain' }]),
  tokenAttack('txn.duplicate-claims', 'Duplicate JSON members', 'medium', ['CWE-436'], 'Signed by the real key with "sub" twice: parsers that read the first and the last disagree.', [{ kit: 'duplicate-claims' }]),
  tokenAttack('txn.nul-claims', 'NUL byte in a claim', 'medium', ['CWE-158'], 'Signed by the real key with sub "…\\u0000admin".', [{ kit: 'nul-in-claims' }]),
  tokenAttack('txn.oversized', '1 MB token', 'medium', ['CWE-770'], 'A 1 MB Txn-Token header.', [{ crafted: 'oversized' }], {
    owasp: OWASP.api4, enforced: (answer) => answer.status === null || answer.code === 'LOCKSTEP_ERR_HEADERS_TOO_LARGE' || /^LOCKSTEP_ERR_(PEER_|TXN_TOKEN_)/.test(answer.code ?? ''),
  }),
  tokenAttack('txn.revoked-sub', 'Revoked subject', 'critical', ['CWE-613'], 'A genuine token for a subject the control plane has revoked.', [{ kit: 'revoked-sub' }]),
  tokenAttack('txn.revoked-txn', 'Revoked transaction', 'high', ['CWE-613'], 'A genuine token whose transaction the control plane has revoked.', [{ kit: 'revoked-txn' }]),
  tokenAttack('txn.no-txn', 'No "txn" claim', 'low', ['CWE-345'], 'Signed by the real key without the transaction id every audit event correlates on.', [{ kit: 'no-txn' }]),
];
