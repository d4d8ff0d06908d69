/**
 * The one way workloads connect to the control plane: TLS verified against the trust bundle, and the
 * server known by its SPIFFE ID (`spiffe://<td>/lockstep/control-plane`), not by a host name. The ID
 * is read from the server certificate's DER under the X509-SVID leaf rules of @lockstep/identity —
 * never from Node's text rendering of the SAN, so that the guard, the control plane and its clients
 * apply one identity rule.
 */
import { serverSvidCheck } from '@lockstep/identity';
import { Agent } from 'undici';
import { controlPlaneSpiffeId } from '../server/control-plane-server.ts';

export interface ControlPlaneTls {
  /** The trust bundle (PEM) the server's chain must verify against. */
  readonly ca: string;
  /** The client's SVID chain and key, for endpoints that need mTLS. */
  readonly cert?: string;
  readonly key?: string;
}

export function controlPlaneAgent(trustDomain: string, tls: ControlPlaneTls): Agent {
  // A bad trustDomain throws here, at construction, rather than refusing every connection later.
  const checkServerIdentity = serverSvidCheck(controlPlaneSpiffeId(trustDomain), {
    hint: `it is not the control plane of ${trustDomain}; check the control plane URL and the trust bundle`,
  });
  return new Agent({ connect: { ...tls, checkServerIdentity } });
}
