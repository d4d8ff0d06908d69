/**
 * The one way workloads connect to the control plane: TLS verified against the trust bundle, and the
 * server known by its SPIFFE ID (`spiffe://<td>/lockstep/control-plane`), not by a host name.
 */
import { Agent } from 'undici';
import { controlPlaneSpiffeId } from '../server/control-plane-server.ts';

export function controlPlaneAgent(trustDomain: string, tls: { readonly ca: string; readonly cert?: string; readonly key?: string }): Agent {
  const expected = controlPlaneSpiffeId(trustDomain);
  return new Agent({
    connect: {
      ...tls,
      checkServerIdentity: (_host, cert) => cert.subjectaltname === `URI:${expected}` ? undefined : new Error(`the server is ${cert.subjectaltname ?? 'unnamed'}, not ${expected}`),
    },
  });
}
