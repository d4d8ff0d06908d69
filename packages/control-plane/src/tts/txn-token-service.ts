/**
 * The Txn-Token Service (draft-ietf-oauth-transaction-tokens, RFC 8693 token exchange). A workload,
 * authenticated by its SVID, exchanges a subject token for a Txn-Token — when the central policy
 * allows that workload to exchange that kind of subject token (`tts:exchange:<kind>` on
 * Lockstep::Service::"tts"). The checks, in order:
 *
 *   grant_type          token-exchange                      else unsupported_grant_type
 *   requested_token_type txn_token                          else invalid_request
 *   audience            = the trust domain                  else invalid_target
 *   subject_token_type  access_token | txn_token | self_signed   else invalid_request
 *   policy              requester may exchange this kind    else unauthorized_client
 *   subject_token       verifies (issuer, keys, typ, exp)   else invalid_grant
 *   revocation          subject (and replaced txn) not revoked   else invalid_grant
 *   scope               ⊆ the subject token's scope         else invalid_scope
 *
 * The Txn-Token: ES256 with `kid`, `typ: txntoken+jwt`, unique `txn` (kept when a Txn-Token is
 * replaced), `sub`, `aud` = trust domain, `exp` ≤ 5 min and ≤ the subject token's, `scope`,
 * `req_wl` = the requester, `tctx` (roles, tenant), `rctx` (client IP, authentication method).
 */
import { randomUUID } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { SignJWT, type JSONWebKeySet } from 'jose';
import { createPolicyEngine, sliceFor, type PolicySet } from '@lockstep/policy';
import type { Rotation } from '../ca/key-ring.ts';
import type { SigningKey } from '../ca/signing-key.ts';
import { issueScanTokens, type ScanTokenRequest, type ScanTokens } from './scan-tokens.ts';
import { SubjectTokenError, TOKEN_TYPE, type SubjectIssuer, type SubjectKind, type SubjectVerifier } from './subject-tokens.ts';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const MAX_LIFETIME_SECONDS = 300;
const issuedChannel = diagnostics.channel('lockstep:tts:issued');

export type OAuthErrorCode = 'invalid_request' | 'unsupported_grant_type' | 'invalid_target' | 'unauthorized_client' | 'invalid_grant' | 'invalid_scope';

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

export interface TxnTokenServiceOptions {
  readonly trustDomain: string;
  readonly keys: TxnTokenKeys;
  readonly subjects: SubjectVerifier;
  /** Revocations (the store's): a revoked `sub`, or a revoked `txn` to replace, gets no Txn-Token. */
  readonly isRevoked?: (kind: 'sub' | 'txn', value: string) => Promise<boolean>;
  readonly now?: () => number;
}

export function createTxnTokenService(options: TxnTokenServiceOptions): TxnTokenService {
  const engine = createPolicyEngine({ cacheSize: 10_000 });
  const now = options.now ?? Date.now;
  const workloadPrefix = `spiffe://${options.trustDomain}/svc/`;

  function allowed(requester: string, kind: SubjectKind): boolean {
    if (engine.version === null) return false;
    const result = engine.authorize({
      principal: requester,
      action: `tts:exchange:${kind}`,
      resource: 'tts',
      context: { sub: '', roles: [], scope: [], requester, callerService: requester.startsWith(workloadPrefix) ? requester.slice(workloadPrefix.length) : '' },
    });
    return result.decision === 'allow';
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
      if (request.grant_type !== TOKEN_EXCHANGE_GRANT) throw new TokenExchangeError('unsupported_grant_type', `grant_type must be ${TOKEN_EXCHANGE_GRANT}`);
      if (request.requested_token_type !== TOKEN_TYPE.txnToken) throw new TokenExchangeError('invalid_request', `requested_token_type must be ${TOKEN_TYPE.txnToken}`);
      if (request.audience !== options.trustDomain) throw new TokenExchangeError('invalid_target', `audience must be the trust domain ${options.trustDomain}`);
      const kind = request.subject_token_type === undefined ? undefined : KINDS[request.subject_token_type];
      if (kind === undefined) throw new TokenExchangeError('invalid_request', `subject_token_type must be one of ${Object.keys(KINDS).join(', ')}`);
      if (!allowed(context.requester, kind)) throw new TokenExchangeError('unauthorized_client', `no policy permits ${context.requester} to exchange a ${kind} subject token; if it should, permit action Lockstep::Action::"tts:exchange:${kind}" on Lockstep::Service::"tts" for it in the policy directory`);

      let subject;
      try {
        subject = await options.subjects.verify(kind, request.subject_token, context.requester);
      } catch (error) {
        if (error instanceof SubjectTokenError) throw new TokenExchangeError('invalid_grant', error.message);
        throw error;
      }
      if (options.isRevoked !== undefined) {
        if (await options.isRevoked('sub', subject.sub)) throw new TokenExchangeError('invalid_grant', `the subject ${subject.sub} is revoked`);
        if (subject.txn !== undefined && await options.isRevoked('txn', subject.txn)) throw new TokenExchangeError('invalid_grant', `the transaction ${subject.txn} is revoked`);
      }
      const requested = request.scope === undefined ? null : request.scope.split(' ').filter(Boolean);
      if (requested !== null && kind !== 'self_signed') {
        const granted = new Set(subject.scope);
        const extra = requested.filter((scope) => !granted.has(scope));
        if (extra.length > 0) throw new TokenExchangeError('invalid_scope', `scope ${extra.join(' ')} is not in the subject token's scope`);
      }
      const scope = requested ?? subject.scope;

      const iat = Math.floor(now() / 1000);
      const exp = Math.min(iat + MAX_LIFETIME_SECONDS, subject.exp ?? Number.POSITIVE_INFINITY);
      if (exp <= iat) throw new TokenExchangeError('invalid_grant', 'the subject token expires now');
      const txn = subject.txn ?? randomUUID();
      const key = options.keys.current();
      const token = await new SignJWT({
        txn,
        scope: scope.join(' '),
        req_wl: context.requester,
        tctx: { roles: [...subject.roles], ...(subject.tenant === undefined ? {} : { tenant: subject.tenant }) },
        rctx: { ...(context.clientIp === undefined ? {} : { req_ip: context.clientIp }), ...(subject.authnMethod === undefined ? {} : { authn: subject.authnMethod }) },
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid })
        .setSubject(subject.sub)
        .setAudience(options.trustDomain)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .sign(key.privateKey);
      if (issuedChannel.hasSubscribers) issuedChannel.publish({ txn, sub: subject.sub, requester: context.requester, kind, exp });
      return { access_token: token, issued_token_type: TOKEN_TYPE.txnToken, token_type: 'N_A', expires_in: exp - iat };
    },
  };
}
