/**
 * The JOSE header and claims of a Txn-Token, parsed and checked to the letter of
 * draft-ietf-oauth-transaction-tokens-10 ("the draft"; section numbers below are its own) and
 * Lockstep's profile of it (DESIGN.md: `aud` = the trust domain, `req_wl` = a SPIFFE ID).
 *
 * Parsing. One `JSON.parse` whose reviver refuses a key named `__proto__`, `constructor` or
 * `prototype` at any depth and any number JSON cannot hold (`1e400` parses to Infinity), and rebuilds
 * every object with a null prototype and freezes it (arrays are frozen too): what reaches a handler
 * is plain data in which no member lookup — `claims.tctx.constructor`, `claims.toString` — ever
 * reaches Object.prototype. Duplicate keys are found by `hasDuplicateKeys` on the same text.
 *
 * Types. Every claim the draft or Lockstep defines is checked for its type and refused when wrong
 * (LOCKSTEP_ERR_TXN_TOKEN_CLAIMS, the detail naming the claim), never coerced: `tctx.roles: "admin"`
 * is a refusal, not `[]`. Claims nobody defines are kept and otherwise ignored (§9.2: "Recipients
 * of a Txn-Token MUST ignore any claims they do not understand").
 */
import { GuardError } from '../errors.ts';
import { parseSpiffeId } from '../spiffe-id.ts';
import { hasDuplicateKeys } from '../strict-json.ts';

/**
 * How many times one transaction's Txn-Token may be replaced (§13.15: "SHOULD limit the number of
 * times a Txn-Token is replaced"). Lockstep's Txn-Token Service refuses a ninth replacement; a guard
 * refuses a token whose `req_wl_chain` is longer, whoever signed it.
 */
export const MAX_TXN_TOKEN_REPLACEMENTS = 8;

/** Deepest nesting accepted inside the claims (`tctx`, `rctx` and unknown claims included). */
const MAX_DEPTH = 8;
const PROTOTYPE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
// RFC 6749 §3.3 and Appendix A.4: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR.
const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$/;
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/** `tctx` (§9.2.3): the transaction's immutable context. Lockstep reads `roles` and `tenant`. */
export interface TxnContextClaim {
  readonly roles?: readonly string[];
  readonly tenant?: string;
  readonly [member: string]: unknown;
}

/** `rctx` (§9.2.2): the environment of the originating request, as Lockstep's TTS writes it. */
export interface RequestContextClaim {
  readonly req_ip?: string;
  readonly authn?: string;
  readonly [member: string]: unknown;
}

/** A verified token's claims: null-prototype objects, frozen all the way down. */
export interface TxnTokenClaims {
  readonly txn: string;
  readonly sub: string;
  readonly aud: string;
  readonly iat: number;
  readonly exp: number;
  readonly nbf?: number;
  readonly iss?: string;
  /** Space-separated scope tokens (RFC 6749 §3.3). */
  readonly scope: string;
  /** The SPIFFE ID of the workload that requested this token. */
  readonly req_wl: string;
  /**
   * Lockstep's Call Chain of a replacement (§13.15 leaves the mechanism to the TTS): the `req_wl` of
   * every token this one replaces, oldest first, so `req_wl_chain[0]` is the workload that started
   * the transaction. Absent on a token that replaces none.
   */
  readonly req_wl_chain?: readonly string[];
  readonly tctx?: TxnContextClaim;
  readonly rctx?: RequestContextClaim;
  readonly [claim: string]: unknown;
}

export interface ClaimRules {
  readonly trustDomain: string;
  readonly nowSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxLifetimeSeconds: number;
}

/** A key or number JSON.parse accepts but Lockstep does not; the caller picks the error code. */
class RefusedContent extends Error {}

/**
 * The JWS header or the claims as a frozen, null-prototype JSON object. Not JSON, not an object, or
 * duplicate keys: LOCKSTEP_ERR_TXN_TOKEN_MALFORMED. A prototype key or a number out of range:
 * LOCKSTEP_ERR_TXN_TOKEN_INVALID in the header (a header parameter nobody accepts), else
 * LOCKSTEP_ERR_TXN_TOKEN_CLAIMS.
 */
export function parseTokenJson(text: string, what: 'header' | 'claims'): Readonly<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(text, reviveStrictly);
  } catch (error) {
    if (error instanceof RefusedContent) {
      const code = what === 'header' ? 'LOCKSTEP_ERR_TXN_TOKEN_INVALID' : 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS';
      throw new GuardError(code, `${what}: ${error.message}`);
    }
    throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', `${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', `${what} is not a JSON object`);
  }
  // JSON.parse keeps the last of two equal keys, another parser the first: refuse, do not pick.
  if (hasDuplicateKeys(text)) throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', `${what} has duplicate keys`);
  return value as Readonly<Record<string, unknown>>;
}

/** Called by JSON.parse bottom-up for every member, element and finally the whole value. */
function reviveStrictly(key: string, value: unknown): unknown {
  if (PROTOTYPE_KEYS.has(key)) throw new RefusedContent(`a key named "${key}" is not accepted`);
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new RefusedContent(`"${key}" is a number out of range`);
  }
  if (Array.isArray(value)) return Object.freeze(value);
  if (typeof value === 'object' && value !== null) return frozenRecord(value as Record<string, unknown>);
  return value;
}

function frozenRecord(source: Record<string, unknown>): Readonly<Record<string, unknown>> {
  const copy = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(source)) copy[key] = source[key];
  return Object.freeze(copy);
}

/** Checks every claim of `claims` (from parseTokenJson) against the draft and Lockstep's profile. */
export function checkTxnClaims(claims: Readonly<Record<string, unknown>>, rules: ClaimRules): TxnTokenClaims {
  checkStrings(claims, 'claims', 0);
  // §9.2 aud REQUIRED, §12.2 "Verify the aud claim identifies the Trust Domain of the workload".
  if (typeof claims.aud !== 'string') refuse('aud must be a single string (the trust domain)');
  if (claims.aud !== rules.trustDomain) refuse(`aud ${JSON.stringify(claims.aud)} is not ${rules.trustDomain}`);
  // §9.2 iat and exp REQUIRED (RFC 7519 §4.1.4, §4.1.6: NumericDate); nbf and iss optional.
  requireNumber(claims, 'exp');
  requireNumber(claims, 'iat');
  if (claims.nbf !== undefined) requireNumber(claims, 'nbf');
  if (claims.iss !== undefined) requireString(claims, 'iss');
  checkTimes(claims as { exp: number; iat: number; nbf?: number }, rules);
  // §9.2 txn REQUIRED (RFC 8417 §2.2, a string); sub REQUIRED (RFC 7519 §4.1.2, a string).
  requireString(claims, 'txn');
  requireString(claims, 'sub');
  // §9.2 scope REQUIRED (RFC 8693 §4.2, which takes the RFC 6749 §3.3 syntax).
  if (claims.scope === undefined) refuse('scope is required');
  if (typeof claims.scope !== 'string') refuse('scope must be a string');
  if (!SCOPE.test(claims.scope as string)) refuse('scope must be space-separated scope tokens (RFC 6749 §3.3)');
  // §9.2 req_wl REQUIRED, "a string value that identifies the workload": here its SPIFFE ID.
  if (claims.req_wl === undefined) refuse('req_wl is required');
  checkWorkload(claims.req_wl, 'req_wl', rules.trustDomain);
  if (claims.req_wl_chain !== undefined) checkChain(claims.req_wl_chain, rules.trustDomain);
  // §9.2 tctx and rctx RECOMMENDED: JSON objects when present.
  if (claims.tctx !== undefined) checkTctx(claims.tctx);
  if (claims.rctx !== undefined) checkRctx(claims.rctx);
  return claims as TxnTokenClaims;
}

function checkTimes(claims: { exp: number; iat: number; nbf?: number }, rules: ClaimRules): void {
  const { nowSeconds, clockSkewSeconds: skew } = rules;
  // §12.2 "Verify the Txn-Token is not expired".
  if (claims.exp <= nowSeconds - skew) throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_EXPIRED', 'token expired');
  if (claims.iat > nowSeconds + skew) refuse('iat is in the future');
  if (claims.nbf !== undefined && claims.nbf > nowSeconds + skew) refuse('nbf is in the future');
  // §6: short-lived, "on the order of minutes or less".
  const lifetime = claims.exp - claims.iat;
  if (lifetime > rules.maxLifetimeSeconds) {
    refuse(`lifetime ${lifetime}s exceeds the maximum of ${rules.maxLifetimeSeconds}s`);
  }
}

function checkChain(chain: unknown, trustDomain: string): void {
  if (!Array.isArray(chain) || chain.length === 0) refuse('req_wl_chain must be a non-empty array of SPIFFE IDs');
  const links = chain as readonly unknown[];
  if (links.length > MAX_TXN_TOKEN_REPLACEMENTS) {
    const most = MAX_TXN_TOKEN_REPLACEMENTS;
    refuse(`req_wl_chain has ${links.length} links; a transaction's token is replaced at most ${most} times`);
  }
  links.forEach((link, i) => checkWorkload(link, `req_wl_chain[${i}]`, trustDomain));
}

function checkTctx(tctx: unknown): void {
  requireObject(tctx, 'tctx');
  const { roles, tenant } = tctx as TxnContextClaim;
  if (roles !== undefined && (!Array.isArray(roles) || !roles.every((role) => typeof role === 'string'))) {
    refuse('tctx.roles must be an array of strings');
  }
  if (tenant !== undefined && typeof tenant !== 'string') refuse('tctx.tenant must be a string');
}

function checkRctx(rctx: unknown): void {
  requireObject(rctx, 'rctx');
  for (const member of ['req_ip', 'authn'] as const) {
    const value = (rctx as RequestContextClaim)[member];
    if (value !== undefined && typeof value !== 'string') refuse(`rctx.${member} must be a string`);
  }
}

/** A SPIFFE ID with a workload path in our trust domain (a workload or a scanner). */
function checkWorkload(value: unknown, name: string, trustDomain: string): void {
  if (typeof value !== 'string') refuse(`${name} must be a string (a SPIFFE ID)`);
  const id = parseSpiffeId(value as string);
  if (id === null || id.path === '') refuse(`${name} must be the SPIFFE ID of a workload`);
  if (id?.trustDomain !== trustDomain) {
    refuse(`${name} names trust domain ${JSON.stringify(id?.trustDomain)}, not ${trustDomain}`);
  }
}

/** Control characters anywhere (NUL in a `sub` reads differently to C and to JavaScript), and depth. */
function checkStrings(value: unknown, path: string, depth: number): void {
  if (depth > MAX_DEPTH) refuse(`${path} is nested more than ${MAX_DEPTH} levels deep`);
  if (typeof value === 'string') {
    if (CONTROL_CHARACTER.test(value)) refuse(`${path} contains a control character`);
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkStrings(item, `${path}[${i}]`, depth + 1));
  } else if (typeof value === 'object' && value !== null) {
    for (const key of Object.keys(value)) {
      if (CONTROL_CHARACTER.test(key)) refuse(`a key in ${path} contains a control character`);
      checkStrings((value as Record<string, unknown>)[key], depth === 0 ? key : `${path}.${key}`, depth + 1);
    }
  }
}

function requireString(claims: Readonly<Record<string, unknown>>, name: string): void {
  const value = claims[name];
  if (value === undefined) refuse(`${name} is required`);
  if (typeof value !== 'string' || value === '') refuse(`${name} must be a non-empty string`);
}

function requireNumber(claims: Readonly<Record<string, unknown>>, name: string): void {
  const value = claims[name];
  if (value === undefined) refuse(`${name} is required`);
  // JSON numbers are finite after parseTokenJson; the check stays for claims built any other way.
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    refuse(`${name} must be a number (seconds since the epoch)`);
  }
}

function requireObject(value: unknown, name: string): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(`${name} must be a JSON object`);
}

function refuse(detail: string): never {
  throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_CLAIMS', detail);
}
