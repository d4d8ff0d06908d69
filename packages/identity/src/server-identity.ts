/**
 * The client side of the one identity rule: a `checkServerIdentity` for `tls.connect` / undici that
 * accepts a server only when its leaf is an X509-SVID (read from DER) naming exactly the SPIFFE ID
 * the client expects. TLS has verified the chain against the trust bundle before it runs. It returns
 * an Error to refuse (TLS then closes before a byte of the request is sent) and never throws: an
 * exception out of checkServerIdentity escapes the socket's handler instead of failing one connection.
 */
import type { PeerCertificate } from 'node:tls';
import { parseSpiffeId } from './spiffe-id.ts';
import { readX509Svid, SvidError } from './x509-svid.ts';

export type ServerIdentityCheck = (host: string, cert: PeerCertificate) => Error | undefined;

export interface ServerSvidOptions {
  /** Default: the rules' default (24 h). */
  readonly maxLifetimeSeconds?: number;
  /** What the refusal adds after the reason, e.g. "check the control plane URL and the trust bundle". */
  readonly hint?: string;
}

export function serverSvidCheck(expectedSpiffeId: string, options: ServerSvidOptions = {}): ServerIdentityCheck {
  const expected = parseSpiffeId(expectedSpiffeId);
  if (expected === null) throw new TypeError(`serverSvidCheck: ${JSON.stringify(expectedSpiffeId)} is not a SPIFFE ID`);
  const rules = {
    trustDomain: expected.trustDomain,
    ...(options.maxLifetimeSeconds === undefined ? {} : { maxLifetimeSeconds: options.maxLifetimeSeconds }),
  };
  const hint = options.hint === undefined ? '' : `: ${options.hint}`;
  return (_host, cert) => {
    let presented: string;
    try {
      presented = readX509Svid(cert.raw, rules).spiffeId;
    } catch (error) {
      const reason = error instanceof SvidError ? `${error.code}: ${error.detail}` : String(error);
      presented = `a certificate that is not an X509-SVID of ${expected.trustDomain} (${reason})`;
    }
    if (presented === expected.id) return undefined;
    return new Error(`the server presented ${presented}, not ${expected.id}${hint}`);
  };
}
