/**
 * The outbound client: undici over mTLS with this service's current SVID (swapped on rotation), the
 * inbound Txn-Token and a child `traceparent` propagated from the request being handled. The server's
 * SVID is checked on every new connection: a peer outside our trust domain is refused before a
 * single byte of the request — and so before any Txn-Token — is sent.
 */
import type { PeerCertificate } from 'node:tls';
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import { currentAdmission } from './context.ts';
import { GuardError } from './errors.ts';
import { identityFromCertificate } from './steps/transport.ts';
import { outboundTraceparent } from './trace-context.ts';

export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export interface OutboundRequestOptions {
  method?: Dispatcher.HttpMethod;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Overrides the propagated Txn-Token (e.g. for internally initiated work). */
  txnToken?: string;
  signal?: AbortSignal;
}

export interface GuardClient {
  request(url: string | URL, options?: OutboundRequestOptions): Promise<Dispatcher.ResponseData>;
  /** Called by the guard when the SVID or the trust bundle changes. */
  setTlsMaterial(material: TlsMaterial): void;
  close(): Promise<void>;
}

/** `maxSvidLifetimeSeconds`: the longest SVID a server may present; default the X509-SVID rules' 24 h. */
export function createGuardClient(options: {
  trustDomain: string;
  material: TlsMaterial;
  maxSvidLifetimeSeconds?: number;
}): GuardClient {
  const { trustDomain, maxSvidLifetimeSeconds } = options;

  // The server's SVID under the same X509-SVID leaf rules as an inbound peer's (transport step).
  function checkServerIdentity(_host: string, cert: PeerCertificate): Error | undefined {
    try {
      identityFromCertificate(cert.raw, trustDomain, maxSvidLifetimeSeconds);
      return undefined;
    } catch (error) {
      const detail = error instanceof GuardError ? error.detail : String(error);
      return Object.assign(new Error(`Lockstep client refused the server: ${detail}`), {
        code: 'LOCKSTEP_ERR_PEER_REFUSED',
      });
    }
  }

  function agentFor(material: TlsMaterial): Agent {
    return new Agent({
      connect: {
        cert: material.cert,
        key: material.key,
        ca: material.ca,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
        checkServerIdentity,
      },
    });
  }

  let agent = agentFor(options.material);

  return {
    async request(url, init = {}) {
      const admission = currentAdmission();
      const headers: Record<string, string> = { ...init.headers };
      for (const name of Object.keys(headers)) {
        const lower = name.toLowerCase();
        if (lower === 'txn-token' || lower === 'traceparent') delete headers[name];
      }
      const txnToken = init.txnToken ?? admission?.txn?.token;
      if (txnToken !== undefined) headers['txn-token'] = txnToken;
      headers.traceparent = outboundTraceparent(admission?.traceparent ?? null);
      return undiciRequest(url, {
        dispatcher: agent,
        method: init.method ?? 'GET',
        headers,
        ...(init.body !== undefined ? { body: init.body } : {}),
        ...(init.signal !== undefined ? { signal: init.signal } : {}),
      });
    },
    setTlsMaterial(material) {
      const previous = agent;
      agent = agentFor(material);
      // In-flight requests finish on the old connections; new ones use the new SVID.
      void previous.close();
    },
    close: () => agent.close(),
  };
}
