/**
 * What the control plane and its workloads must spell the same way. Both sides import these from
 * here: the control plane depends on this package, never the reverse, so a workload installs no
 * server code.
 */
import { formatSpiffeId } from '@lockstep/identity';

/** The control plane's own SPIFFE ID: what its clients check its server certificate against. */
export function controlPlaneSpiffeId(trustDomain: string): string {
  return formatSpiffeId(trustDomain, 'lockstep', 'control-plane');
}

/** RFC 8693 §2.1: the grant type of a token exchange (`POST /v1/token`). */
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** The token types of a token exchange: what a Txn-Token is asked for, and what it may be asked for with. */
export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  txnToken: 'urn:ietf:params:oauth:token-type:txn_token',
  selfSigned: 'urn:ietf:params:oauth:token-type:self_signed',
} as const;

/**
 * Asks `GET /v1/revocations` for lifted entries too. Without it the control plane leaves them out,
 * since a guard of the previous version would apply them as revocations.
 */
export const REVOCATION_LIFTS_HEADER = 'lockstep-revocation-lifts';
