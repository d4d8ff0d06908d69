/**
 * The one way workloads connect to the control plane: TLS verified against the trust bundle, and the
 * server known by its SPIFFE ID (`spiffe://<td>/lockstep/control-plane`), not by a host name. The ID
 * is read from the server certificate's DER under the X509-SVID leaf rules of @lockstep/identity —
 * never from Node's text rendering of the SAN, so that the guard, the control plane and its clients
 * apply one identity rule.
 */
import type { Socket } from 'node:net';
import { serverSvidCheck } from '@lockstep/identity';
import { Agent, buildConnector } from 'undici';
import { controlPlaneSpiffeId } from './protocol.ts';

export interface ControlPlaneTls {
  /** The trust bundle (PEM) the server's chain must verify against. */
  readonly ca: string;
  /** The client's SVID chain and key, for endpoints that need mTLS. */
  readonly cert?: string;
  readonly key?: string;
}

export interface ControlPlaneAgentOptions {
  /**
   * How long a connection (TCP and TLS) may take. Default undici's 10 s; shorter where another replica
   * can be asked instead.
   */
  readonly connectTimeoutMs?: number;
}

/** `signal` (optional) ends the connections still being set up when it aborts: see abortableConnect. */
export function controlPlaneAgent(
  trustDomain: string,
  tls: ControlPlaneTls,
  signal?: AbortSignal,
  options: ControlPlaneAgentOptions = {},
): Agent {
  // A bad trustDomain throws here, at construction, rather than refusing every connection later.
  const checkServerIdentity = serverSvidCheck(controlPlaneSpiffeId(trustDomain), {
    hint: `it is not the control plane of ${trustDomain}; check the control plane URL and the trust bundle`,
  });
  const connect = {
    ...tls,
    checkServerIdentity,
    ...(options.connectTimeoutMs === undefined ? {} : { timeout: options.connectTimeoutMs }),
  };
  return new Agent({ connect: signal === undefined ? connect : abortableConnect(buildConnector(connect), signal) });
}

/**
 * undici aborts a request only once its connection is up (nodejs/undici#386): until then, the socket
 * being set up would live on, and keep the process alive, until the connect timeout (10 s). This ends
 * it when `signal` aborts. undici's connector returns that socket (its types say void). Node's own
 * `signal` option is not used: aborting an established TLS socket through it crashed Node 24.
 */
function abortableConnect(connect: buildConnector.connector, signal: AbortSignal): buildConnector.connector {
  const setUp = connect as unknown as (...args: Parameters<buildConnector.connector>) => Socket;
  return (options, callback) => {
    const socket = setUp(options, (...result) => {
      signal.removeEventListener('abort', stop);
      callback(...result);
    });
    function stop() {
      socket.destroy(new Error('closed before the connection to the control plane was established'));
    }
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  };
}
