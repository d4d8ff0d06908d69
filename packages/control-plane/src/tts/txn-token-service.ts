/**
 * The Txn-Token Service (draft-ietf-oauth-transaction-tokens-10, "the draft"; RFC 8693 token
 * exchange). A workload, authenticated by its SVID, exchanges a subject token for a Txn-Token — when
 * the central policy allows that workload to exchange that kind of subject token
 * (`tts:exchange:<kind>` on Lockstep::Service::"tts"). The checks, in order:
 *
 *   grant_type           token-exchange                           else unsupported_grant_type
 *   requested_token_type txn_token                                else invalid_request
 *   audience             = the trust domain                       else invalid_target
 *   subject_token_type   access_token | txn_token | self_signed   else invalid_request
 *   scope                present (§11.1 REQUIRED)                 else invalid_request
 *                        RFC 6749 §3.3 syntax                     else invalid_scope
 *   policy               requester may exchange this kind         else unauthorized_client
 *   subject_token        verifies (subject-tokens.ts)             else invalid_grant
 *                        a Txn-Token: one a guard accepts, whose  else invalid_grant
 *                        requesters include no scanner
 *   revocation           kid, sub, replaced txn: none revoked     else invalid_grant
 *   scope                ⊆ the subject token's (§13.6, §13.14)    else invalid_scope
 *   replacements         at most MAX_TXN_TOKEN_REPLACEMENTS       else invalid_grant
 *
 * The Txn-Token (§9): ES256 with `kid`, `typ: txntoken+jwt`, a unique `txn`, `sub`, `aud` = trust
 * domain, `iat`, `exp` ≤ 5 min and ≤ the subject token's, `scope` (as requested), `req_wl` = the
 * requester's SPIFFE ID, `tctx` (roles, tenant), `rctx` (client IP, authentication method).
 *
 * A replacement (a Txn-Token as subject token, §13.15) keeps `txn`, `sub` and `aud`, keeps `tctx`
 * and `rctx` as they are (the context of the originating request; a new `request_context` is not
 * read), never widens `scope` and never outlives the token it replaces. It keeps the Call Chain,
 * whose mechanism the draft leaves to the TTS: `req_wl` stays a string (§9.2) naming the workload
 * that asked for this token, and `req_wl_chain` lists the `req_wl` of every token it replaces, oldest
 * first — so `req_wl_chain[0]` is the workload that started the transaction, the requester policies
 * see. A transaction's token is replaced at most MAX_TXN_TOKEN_REPLACEMENTS times (§13.15 SHOULD).
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { SignJWT, type JSONWebKeySet } from 'jose';
import { parseSpiffeId } from '@lockstep/identity';
import { createPolicyEngine, sliceFor, type PolicySet } from '@lockstep/policy';
import { TOKEN_EXCHANGE_GRANT, TOKEN_TYPE } from '@lockstep/workload';
import type { Rotation } from '../ca/key-ring.ts';
import type { SigningKey } from '../ca/signing-key.ts';
import { issueScanTokens, type ScanTokenRequest, type ScanTokens } from './scan-tokens.ts';
import {
  SCOPE_SYNTAX,
  SubjectTokenError,
  type ReplacedTxnToken,
  type SubjectIssuer,
  type SubjectKind,
  type SubjectVerifier,
  type VerifiedSubject,
} from './subject-tokens.ts';

/**
 * How many times one transaction's Txn-Token may be replaced; the guard refuses a longer
 * `req_wl_chain` with the same number (@lockstep/guard's MAX_TXN_TOKEN_REPLACEMENTS).
 */
export const MAX_TXN_TOKEN_REPLACEMENTS = 8;
const MAX_LIFETIME_SECONDS = 300;
const issuedChannel = diagnostics.channel('lockstep:tts:issued');

export type OAuthErrorCode =
  | 'invalid_request'
  | 'unsupported_grant_type'
  | 'invalid_target'
  | 'unauthorized_client'
  | 'invalid_grant'
  | 'invalid_scope';

export class TokenExchangeError extends Error {
  readonly error: OAuthErrorCode;
  constructor(error: OAuthErrorCode, description: string) {
    super(description);
    this.name = 'TokenExchangeError';
    this.error = error;
  }
}

export interface ExchangeRequest {
  readonly grant_type?: string;
  readonly requested_token_type?: string;
  readonly audience?: string;
  readonly subject_token?: string;
  readonly subject_token_type?: string;
  readonly scope?: string;
}

export interface ExchangeContext {
  /** The requester's SPIFFE ID, from its SVID. */
  readonly requester: string;
  /** The public key of the requester's SVID (from the mTLS handshake): verifies a self_signed subject token. */
  readonly requesterKey?: KeyObject;
  /** The end user's IP as the requester saw it (rctx.req_ip), if it says. */
  readonly clientIp?: string;
}

export interface ExchangeResponse {
  readonly access_token: string;
  readonly issued_token_type: typeof TOKEN_TYPE.txnToken;
  readonly token_type: 'N_A';
  readonly expires_in: number;
}

export interface TxnTokenService {
  /** The public keys guards verify Txn-Tokens with (current, next, retained previous). */
  readonly jwks: JSONWebKeySet;
  /** Rotates the signing keys (null when they are one fixed key). */
  readonly rotateKeys: (() => Promise<Rotation>) | null;
  /** Accepts access tokens of one more issuer as subject tokens (the control plane's own identity provider). */
  trustIssuer(issuer: SubjectIssuer): void;
  /** Loads the policy set (the slice for "tts" is kept). */
  usePolicy(set: PolicySet): void;
  exchange(request: ExchangeRequest, context: ExchangeContext): Promise<ExchangeResponse>;
  /** Test tokens for a scanner (admin API only): see scan-tokens.ts. */
  scanTokens(request: ScanTokenRequest): Promise<ScanTokens>;
}

const KINDS: Record<string, SubjectKind> = {
  [TOKEN_TYPE.accessToken]: 'access_token',
  [TOKEN_TYPE.txnToken]: 'txn_token',
  [TOKEN_TYPE.selfSigned]: 'self_signed',
};

/** Where the TTS's keys come from: a key ring (rotating) or one fixed key (`singleKey`). */
export interface TxnTokenKeys {
  current(): SigningKey;
  publicJwks(): JSONWebKeySet;
  /** Present on a key ring: the published next key signs from now on. */
  rotate?(): Promise<Rotation>;
}

export function singleKey(key: SigningKey): TxnTokenKeys {
  const jwks = { keys: [key.publicJwk] };
  return { current: () => key, publicJwks: () => jwks };
}

/**
 * The revocations a token exchange asks about: the store's kinds but `spiffeId` (a revoked caller is
 * refused on every request before it reaches the TTS).
 */
export type TokenRevocationKind = 'kid' | 'sub' | 'txn';

export interface TxnTokenServiceOptions {
  readonly trustDomain: string;
  readonly keys: TxnTokenKeys;
  readonly subjects: SubjectVerifier;
  /**
   * Revocations (the store's): no Txn-Token for a subject token signed with a revoked `kid` (a key
   * rotated out after a compromise stays published for what it signed, so it still verifies), for a
   * revoked `sub`, or to replace a revoked `txn`. Required: a TTS that cannot see revocations would
   * keep minting tokens for a revoked user (pass the store's `isRevoked`).
   */
  readonly isRevoked: (kind: TokenRevocationKind, value: string) => Promise<boolean>;
  readonly now?: () => number;
}

/** `<name>` of a requester `spiffe://<trustDomain>/svc/<name>`, else "" (what the policy context says). */
function serviceOf(requester: string, trustDomain: string): string {
  const id = parseSpiffeId(requester);
  return id !== null && id.trustDomain === trustDomain ? (id.service ?? '') : '';
}

export function createTxnTokenService(options: TxnTokenServiceOptions): TxnTokenService {
  const engine = createPolicyEngine({ cacheSize: 10_000 });
  const now = options.now ?? Date.now;

  function allowed(requester: string, kind: SubjectKind): boolean {
    if (engine.version === null) return false;
    const result = engine.authorize({
      principal: requester,
      action: `tts:exchange:${kind}`,
      resource: 'tts',
      context: { sub: '', roles: [], scope: [], requester, callerService: serviceOf(requester, options.trustDomain) },
    });
    return result.decision === 'allow';
  }

  async function verifiedSubject(kind: SubjectKind, token: string | undefined, context: ExchangeContext) {
    try {
      return await options.subjects.verify(kind, token, context.requester, context.requesterKey);
    } catch (error) {
      if (error instanceof SubjectTokenError) throw new TokenExchangeError('invalid_grant', error.message);
      throw error;
    }
  }

  async function checkNotRevoked(subject: VerifiedSubject): Promise<void> {
    const { isRevoked } = options;
    const { kid, sub, replaced } = subject;
    const checks: readonly [TokenRevocationKind, string | undefined, string][] = [
      ['kid', kid, `the subject token is signed with key ${kid}, which is revoked`],
      ['sub', sub, `the subject ${sub} is revoked`],
      ['txn', replaced?.txn, `the transaction ${replaced?.txn} is revoked`],
    ];
    for (const [kind, value, refusal] of checks) {
      if (value !== undefined && (await isRevoked(kind, value))) throw new TokenExchangeError('invalid_grant', refusal);
    }
  }

  return {
    get jwks() {
      return options.keys.publicJwks();
    },
    rotateKeys: options.keys.rotate?.bind(options.keys) ?? null,
    trustIssuer(issuer) {
      options.subjects.addIssuer(issuer);
    },
    usePolicy(set) {
      engine.load(sliceFor(set, 'tts'));
    },
    scanTokens(request) {
      return issueScanTokens(options.keys.current(), options.trustDomain, request, now());
    },
    async exchange(request, context) {
      checkRequestShape(request, options.trustDomain);
      const kind = subjectKindOf(request.subject_token_type);
      const requested = requestedScope(request.scope);
      if (!allowed(context.requester, kind))
        throw new TokenExchangeError(
          'unauthorized_client',
          `no policy permits ${context.requester} to exchange a ${kind} subject token; if it should, permit action Lockstep::Action::"tts:exchange:${kind}" on Lockstep::Service::"tts" for it in the policy directory`,
        );
      const subject = await verifiedSubject(kind, request.subject_token, context);
      await checkNotRevoked(subject);
      checkScopeNarrows(requested, subject);
      const chain = requesterChainAfter(subject.replaced);

      const iat = Math.floor(now() / 1000);
      const exp = Math.min(iat + MAX_LIFETIME_SECONDS, subject.exp ?? Number.POSITIVE_INFINITY);
      if (exp <= iat) throw new TokenExchangeError('invalid_grant', 'the subject token expires now');
      const txn = subject.replaced?.txn ?? randomUUID();
      const key = options.keys.current();
      const token = await new SignJWT({
        txn,
        scope: requested.join(' '),
        req_wl: context.requester,
        ...(chain.length > 0 ? { req_wl_chain: chain } : {}),
        ...contextClaims(subject, context),
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid })
        .setSubject(subject.sub)
        .setAudience(options.trustDomain)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .sign(key.privateKey);
      if (issuedChannel.hasSubscribers)
        issuedChannel.publish({ txn, sub: subject.sub, requester: context.requester, kind, exp });
      return { access_token: token, issued_token_type: TOKEN_TYPE.txnToken, token_type: 'N_A', expires_in: exp - iat };
    },
  };
}

function checkRequestShape(request: ExchangeRequest, trustDomain: string): void {
  if (request.grant_type !== TOKEN_EXCHANGE_GRANT) {
    throw new TokenExchangeError('unsupported_grant_type', `grant_type must be ${TOKEN_EXCHANGE_GRANT}`);
  }
  if (request.requested_token_type !== TOKEN_TYPE.txnToken) {
    throw new TokenExchangeError('invalid_request', `requested_token_type must be ${TOKEN_TYPE.txnToken}`);
  }
  if (request.audience !== trustDomain) {
    throw new TokenExchangeError('invalid_target', `audience must be the trust domain ${trustDomain}`);
  }
}

function subjectKindOf(type: string | undefined): SubjectKind {
  const kind = type === undefined ? undefined : KINDS[type];
  if (kind === undefined) {
    const kinds = Object.keys(KINDS).join(', ');
    throw new TokenExchangeError('invalid_request', `subject_token_type must be one of ${kinds}`);
  }
  return kind;
}

/**
 * §11.1: `scope` REQUIRED, "a space-delimited list of case-sensitive strings" — RFC 6749 §3.3 syntax.
 * An empty value counts as absent (RFC 6749 §3.1). Repeated scope tokens are kept once.
 */
function requestedScope(scope: string | undefined): string[] {
  if (scope === undefined || scope === '') {
    throw new TokenExchangeError('invalid_request', 'scope is required: the purpose of the transaction');
  }
  if (!SCOPE_SYNTAX.test(scope)) {
    throw new TokenExchangeError('invalid_scope', 'scope must be scope tokens separated by single spaces');
  }
  return [...new Set(scope.split(' '))];
}

/** §13.6: "equal or less than the scope(s) associated with the original subject_token"; never widened. */
function checkScopeNarrows(requested: readonly string[], subject: VerifiedSubject): void {
  if (subject.scope.length === 0) {
    // §13.14: a subject token of unknown scope is refused, never taken as unconstrained.
    throw new TokenExchangeError('invalid_scope', 'the subject token carries no scope, so none can be granted');
  }
  const granted = new Set(subject.scope);
  const extra = requested.filter((scope) => !granted.has(scope));
  if (extra.length > 0) {
    throw new TokenExchangeError('invalid_scope', `scope ${extra.join(' ')} is not in the subject token's scope`);
  }
}

/** The `req_wl_chain` of a replacement: the replaced token's requesters, at most the cap (§13.15). */
function requesterChainAfter(replaced: ReplacedTxnToken | undefined): readonly string[] {
  if (replaced === undefined) return [];
  if (replaced.requesters.length > MAX_TXN_TOKEN_REPLACEMENTS) {
    throw new TokenExchangeError(
      'invalid_grant',
      `transaction ${replaced.txn} has had its Txn-Token replaced ` +
        `${MAX_TXN_TOKEN_REPLACEMENTS} times, the most allowed: propagate the token you received instead`,
    );
  }
  return replaced.requesters;
}

/** `tctx` and `rctx`: kept as they are on a replacement, else from the subject token and the request. */
function contextClaims(subject: VerifiedSubject, context: ExchangeContext): Record<string, unknown> {
  if (subject.replaced !== undefined) {
    const { tctx, rctx } = subject.replaced;
    return { ...(tctx === undefined ? {} : { tctx }), ...(rctx === undefined ? {} : { rctx }) };
  }
  return {
    tctx: { roles: [...subject.roles], ...(subject.tenant === undefined ? {} : { tenant: subject.tenant }) },
    rctx: {
      ...(context.clientIp === undefined ? {} : { req_ip: context.clientIp }),
      ...(subject.authnMethod === undefined ? {} : { authn: subject.authnMethod }),
    },
  };
}
