/**
 * Calls to guarded services from a workload that serves none itself (a job, a worker, a script):
 * mTLS with the workload's current SVID, the server known by its SPIFFE ID
 * (`spiffe://<td>/svc/<server>`, read from its certificate's DER under the X509-SVID rules of
 * @lockstep/identity), not by a host name, and the Txn-Token in its header. A server that is not the
 * one named is refused during the handshake, before the request — and its Txn-Token — is sent.
 *
 * Handlers of a guarded service use `guard.client` instead: it also forwards the inbound Txn-Token.
 */
import { serverSvidCheck, workloadId } from '@lockstep/identity';
import { Agent, request, type Dispatcher } from 'undici';

export interface WorkloadRequestOptions {
  /** The service that must answer: its SVID must name `spiffe://<trust domain>/svc/<server>`. */
  readonly server: string;
  readonly method?: Dispatcher.HttpMethod;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Buffer;
  /** The Txn-Token the call is made with (`agent.txnToken(…)`): sent in the `Txn-Token` header. */
  readonly txnToken?: string;
  readonly signal?: AbortSignal;
}

export interface WorkloadClient {
  request(url: string | URL, options: WorkloadRequestOptions): Promise<Dispatcher.ResponseData>;
  close(): Promise<void>;
}

export interface ClientTls {
  /** This workload's SVID chain and key, and the trust bundle: read at every call, so that a renewal is used at once. */
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export function createWorkloadClient(trustDomain: string, tls: () => ClientTls): WorkloadClient {
  // One connection pool per server, all replaced when the SVID or the trust bundle changes.
  let material: ClientTls | null = null;
  let pools = new Map<string, Agent>();
  let closed = false;

  function poolFor(server: string): Agent {
    const current = tls();
    if (material?.cert !== current.cert || material.key !== current.key || material.ca !== current.ca) {
      // Requests in flight finish on the old connections.
      for (const pool of pools.values()) void pool.close();
      pools = new Map();
      material = current;
    }
    let pool = pools.get(server);
    if (pool === undefined) {
      const checkServerIdentity = serverSvidCheck(workloadId(trustDomain, server), {
        hint: `it is not the service "${server}" of ${trustDomain}; check the URL`,
      });
      pool = new Agent({
        connect: { cert: current.cert, key: current.key, ca: current.ca, minVersion: 'TLSv1.3', checkServerIdentity },
      });
      pools.set(server, pool);
    }
    return pool;
  }

  return {
    async request(url, options) {
      if (closed) throw new TypeError('this workload client is closed');
      if (typeof options?.server !== 'string') {
        throw new TypeError(
          "server must name the service that must answer, e.g. { server: 'orders' }: " +
            'its SVID is checked against spiffe://<trust domain>/svc/<server>',
        );
      }
      // Plain http would send the request and its Txn-Token in cleartext to whoever answers, unchecked.
      const protocol = (url instanceof URL ? url : URL.parse(url))?.protocol;
      if (protocol !== 'https:') {
        throw new TypeError(
          `agent.request calls only https:// URLs: it speaks mTLS with the workload's SVID and checks the ` +
            `server's, so the Txn-Token never travels in cleartext; got ${JSON.stringify(String(url))}`,
        );
      }
      const dispatcher = poolFor(options.server);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(options.headers ?? {})) {
        // The Txn-Token travels only as the option says: never twice, never a stale copy.
        if (name.toLowerCase() !== 'txn-token') headers[name] = value;
      }
      if (options.txnToken !== undefined) headers['txn-token'] = options.txnToken;
      return request(url, {
        dispatcher,
        method: options.method ?? 'GET',
        headers,
        ...(options.body === undefined ? {} : { body: options.body }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
    },
    async close() {
      closed = true;
      await Promise.all([...pools.values()].map((pool) => pool.close()));
    },
  };
}
