/**
 * Who may ask the decision service: the proxies listed in `trustedProxies`, by the SVID they presented
 * in the mTLS handshake — one rule for every transport (the HTTPS endpoints and gRPC `Check`).
 *
 *   const proxies = trustedProxies(options.trustedProxies, options.trustDomain, (id) => guard.isRevokedSpiffeId(id));
 *   const caller = proxies.current(proxies.identify(readTlsPeer(socket)));   // GuardError: refuse
 *
 * `identify` reads what the handshake proved (remember it per connection: it does not change while the
 * connection lives); `current` is asked on every request, since a keep-alive connection outlives a
 * revocation and the SVID's expiry.
 */
import { GuardError } from '@lockstep/guard';
import { readX509Svid, SvidError } from '@lockstep/identity';

export interface ProxyCaller {
  readonly spiffeId: string;
  readonly notAfterMs: number;
}

/** What the TLS handshake says about the peer: `@lockstep/identity`'s `readTlsPeer` shape. */
export interface HandshakePeer {
  readonly leafDer: Uint8Array | null;
  readonly authorized: boolean;
  readonly authorizationError?: string | null;
}

export interface TrustedProxies {
  readonly ids: ReadonlySet<string>;
  identify(peer: HandshakePeer): ProxyCaller | GuardError;
  current(caller: ProxyCaller | GuardError): ProxyCaller | GuardError;
}

export function trustedProxies(
  list: unknown,
  trustDomain: string,
  isRevoked: (spiffeId: string) => boolean,
): TrustedProxies {
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    list.some((id) => typeof id !== 'string' || !id.startsWith('spiffe://'))
  )
    throw new TypeError(
      `trustedProxies must list the SPIFFE IDs of the proxies that may ask, e.g. ['spiffe://${trustDomain}/svc/edge-nginx']`,
    );
  const ids: ReadonlySet<string> = new Set(list as string[]);
  return {
    ids,
    identify(peer) {
      if (peer.leafDer === null) return new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING', 'the proxy sent no SVID');
      if (!peer.authorized)
        return new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', `proxy ${peer.authorizationError ?? 'unverified'}`);
      try {
        const svid = readX509Svid(peer.leafDer, { now: Date.now() });
        return ids.has(svid.spiffeId)
          ? { spiffeId: svid.spiffeId, notAfterMs: svid.notAfterMs }
          : new GuardError('LOCKSTEP_ERR_DENIED', `${svid.spiffeId} is not a trusted proxy of this decision service`);
      } catch (error) {
        if (!(error instanceof SvidError)) throw error;
        return new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', `proxy: ${error.detail}`);
      }
    },
    current(caller) {
      if (caller instanceof GuardError) return caller;
      if (Date.now() >= caller.notAfterMs)
        return new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'the proxy SVID expired: reconnect with the renewed one');
      if (isRevoked(caller.spiffeId))
        return new GuardError('LOCKSTEP_ERR_PEER_REVOKED', `proxy ${caller.spiffeId} is revoked`);
      return caller;
    },
  };
}
