/**
 * A Txn-Token for an outbound call: RFC 8693 token exchange at the control plane's Txn-Token Service
 * (`POST /v1/token`, form-encoded, over mTLS with this workload's SVID — the workload the token's
 * `req_wl` names).
 *
 * Inside a guarded request handler there is usually nothing to exchange: `guard.client` forwards the
 * inbound Txn-Token as it is. Exchange when a transaction starts here (an edge turning a signed-in
 * user's access token into a Txn-Token), when a call should carry a narrower scope than the inbound
 * token (a replacement, §13.15: the subject token is `currentAdmission().txn.token`), or for work
 * this workload starts on its own (a `self_signed` subject token).
 */
import { request, type Dispatcher } from 'undici';
import { TxnTokenError } from './errors.ts';
import { endpointsOf, withFailover, type ControlPlaneUrls } from './failover.ts';
import { TOKEN_EXCHANGE_GRANT, TOKEN_TYPE } from './protocol.ts';

export type SubjectTokenKind = 'access_token' | 'txn_token' | 'self_signed';

interface TxnTokenRequestBase {
  /**
   * What this call is for (REQUIRED, draft-ietf-oauth-transaction-tokens §11.1): space-separated
   * scopes, as narrow as the call and no wider than the subject token's, e.g. `'orders:create'`.
   */
  readonly scope: string;
  /** The end user's IP address, recorded in the token (`rctx.req_ip`). */
  readonly clientIp?: string;
  /** Ends the exchange early: the deadline of the request it is made for. */
  readonly signal?: AbortSignal;
}

export interface TxnTokenRequest extends TxnTokenRequestBase {
  /** On whose behalf: a user's access token, the inbound Txn-Token (a replacement), or a self-signed JWT. */
  readonly subjectToken: string;
  readonly subjectTokenType: SubjectTokenKind;
}

/**
 * What `agent.txnToken` takes: a request with its subject token, or a `self_signed` one without,
 * whose subject token the agent signs itself with its SVID's key (work this workload starts on its
 * own, on nobody else's behalf).
 */
export type WorkloadTxnTokenRequest =
  | TxnTokenRequest
  | (TxnTokenRequestBase & { readonly subjectTokenType: 'self_signed'; readonly subjectToken?: undefined });

export interface TxnTokenEndpoint {
  /**
   * The control plane: one URL, several (replicas, comma-separated or a list: an exchange that got no
   * answer is asked of the next), or an endpoint set shared with the agent's other calls.
   */
  readonly url: ControlPlaneUrls;
  readonly trustDomain: string;
  /**
   * mTLS to the control plane with this workload's SVID: `agent.controlPlane()`, or
   * `controlPlaneAgent(trustDomain, { ca, cert, key })`.
   */
  readonly dispatcher: Dispatcher;
}

const SUBJECT_TYPES: Readonly<Record<SubjectTokenKind, string>> = {
  access_token: TOKEN_TYPE.accessToken,
  txn_token: TOKEN_TYPE.txnToken,
  self_signed: TOKEN_TYPE.selfSigned,
};
const TIMEOUT_MS = 10_000;
/** One exchange at one replica, when there is another to ask: a Txn-Token is on the path of a user's request. */
const ATTEMPT_WITH_REPLICAS_MS = 2_500;

/**
 * Resolves to the Txn-Token (a compact JWS); rejects with a `TxnTokenError`. An exchange may be sent
 * again (two tokens for one call are harmless): one that got no answer, or an outage's, is asked of
 * the next replica; a refusal is the answer.
 */
export async function requestTxnToken(service: TxnTokenEndpoint, wanted: TxnTokenRequest): Promise<string> {
  const form = exchangeForm(service.trustDomain, wanted);
  const endpoints = endpointsOf(service.url);
  try {
    return await withFailover(endpoints, (base, signal) => exchangeAt(base, service.dispatcher, form, signal), {
      idempotent: true,
      ...(endpoints.urls.length > 1 ? { attemptMs: ATTEMPT_WITH_REPLICAS_MS } : {}),
      ...(wanted.signal === undefined ? {} : { signal: wanted.signal }),
    });
  } catch (error) {
    if (error instanceof TxnTokenError) throw error;
    // An attempt abandoned (its time was up, or the caller's deadline passed) before it could say why.
    const where = endpoints.urls.length === 1 ? endpoints.urls[0] : 'the control plane';
    const message = `POST ${where}/v1/token got no answer (${(error as Error).message}): is the control plane running, and reachable from here?`;
    throw new TxnTokenError('LOCKSTEP_TXN_TOKEN_UNAVAILABLE', message, { cause: error });
  }
}

async function exchangeAt(base: string, dispatcher: Dispatcher, form: URLSearchParams, signal: AbortSignal) {
  let response;
  let text;
  try {
    response = await request(new URL('/v1/token', base), {
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
      headersTimeout: TIMEOUT_MS,
      bodyTimeout: TIMEOUT_MS,
      signal,
    });
    text = await response.body.text();
  } catch (error) {
    const message = `POST ${base}/v1/token got no answer (${(error as Error).message}): is the control plane running, and reachable from here?`;
    throw new TxnTokenError('LOCKSTEP_TXN_TOKEN_UNAVAILABLE', message, { cause: error });
  }
  let body: {
    access_token?: unknown;
    issued_token_type?: unknown;
    error?: unknown;
    error_description?: unknown;
    message?: unknown;
  };
  try {
    body = JSON.parse(text) as typeof body;
  } catch (error) {
    // Not the Txn-Token Service's answer: a proxy in between, whose upstream did not answer.
    const message = `POST ${base}/v1/token answered ${response.statusCode} with no JSON: is that URL the control plane?`;
    throw new TxnTokenError('LOCKSTEP_TXN_TOKEN_UNAVAILABLE', message, { status: response.statusCode, cause: error });
  }
  if (
    response.statusCode === 200 &&
    typeof body.access_token === 'string' &&
    body.issued_token_type === TOKEN_TYPE.txnToken
  )
    return body.access_token;
  const error = typeof body.error === 'string' ? body.error : null;
  const description =
    typeof body.error_description === 'string'
      ? body.error_description
      : typeof body.message === 'string'
        ? body.message
        : '';
  const message = `the Txn-Token Service refused (${response.statusCode} ${error ?? 'no error code'})${description === '' ? '' : `: ${description}`}`;
  throw new TxnTokenError('LOCKSTEP_TXN_TOKEN_REFUSED', message, { error, status: response.statusCode });
}

/** The RFC 8693 request; misuse (no scope, an unknown subject token type) is a TypeError before anything is sent. */
function exchangeForm(trustDomain: string, wanted: TxnTokenRequest): URLSearchParams {
  if (typeof wanted.scope !== 'string' || wanted.scope.trim() === '') {
    throw new TypeError(
      `scope must name what the call is for, e.g. scope: 'orders:create'; got ${JSON.stringify(wanted.scope)}`,
    );
  }
  if (typeof wanted.subjectToken !== 'string' || wanted.subjectToken === '') {
    throw new TypeError(
      "subjectToken must be the token the call is made on behalf of: a user's access token, " +
        'the inbound Txn-Token (currentAdmission()?.txn?.token) or a self-signed JWT ' +
        "(agent.txnToken signs one itself: subjectTokenType 'self_signed' without subjectToken)",
    );
  }
  const subjectType = Object.hasOwn(SUBJECT_TYPES, wanted.subjectTokenType)
    ? SUBJECT_TYPES[wanted.subjectTokenType]
    : undefined;
  if (subjectType === undefined) {
    throw new TypeError(
      `subjectTokenType must be one of ${Object.keys(SUBJECT_TYPES).join(', ')}; got ${JSON.stringify(wanted.subjectTokenType)}`,
    );
  }
  const form = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE_GRANT,
    requested_token_type: TOKEN_TYPE.txnToken,
    audience: trustDomain,
    scope: wanted.scope,
    subject_token: wanted.subjectToken,
    subject_token_type: subjectType,
  });
  if (wanted.clientIp !== undefined) form.set('request_context', JSON.stringify({ req_ip: wanted.clientIp }));
  return form;
}
