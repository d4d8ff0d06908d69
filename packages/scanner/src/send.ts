/**
 * How the scanner sends one attempt, and what it reads back. Every attempt names its endpoint, and
 * the sender refuses any endpoint that is not in the scan's scope (the registered addresses): the
 * scanner never sends traffic anywhere else. Connections are kept alive per credential.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { readX509Svid, SvidError } from '@lockstep/identity';

export interface Credential {
  readonly name: string;
  /** PEM chain; absent: no client certificate. */
  readonly cert?: string;
  readonly key?: string;
}

export interface Attempt {
  /** `host:port`, one of the scope's. */
  readonly endpoint: string;
  readonly method: string;
  readonly path: string;
  /** Raw header pairs, sent as given (repeats and oddities included). */
  readonly headers: readonly (readonly [string, string])[];
  readonly body?: string | Buffer;
  /** A credential for TLS, or 'plaintext' for plain HTTP to the same port. */
  readonly via: Credential | 'plaintext';
}

export interface Answer {
  /** null: no HTTP answer (refused handshake, closed connection, timeout). */
  readonly status: number | null;
  /** The guard's `LOCKSTEP_ERR_*`, when the body carries one. */
  readonly code: string | null;
  readonly requestId: string | null;
  /** The guard admitted a scanner's request and answered instead of the handler. */
  readonly probeAdmitted: boolean;
  /** Why there was no answer. */
  readonly error: string | null;
}

export interface Sender {
  send(attempt: Attempt): Promise<Answer>;
  close(): void;
}

const TIMEOUT_MS = 5_000;
const MAX_READ = 64 * 1024;

export function splitEndpoint(endpoint: string): { host: string; port: number } {
  const at = endpoint.lastIndexOf(':');
  const host = endpoint.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(endpoint.slice(at + 1)) };
}

/**
 * `scope`: the endpoints the scan may reach, each with the SPIFFE ID its server must present (a
 * registered service's), or null for any SVID of `trustDomain` (a service named only in the
 * manifest). `trustBundle`: the roots those certificates must chain to.
 */
export function createSender(options: {
  scope: ReadonlyMap<string, string | null>;
  trustBundle: string;
  trustDomain: string;
  concurrency: number;
}): Sender {
  const agents = new Map<string, HttpsAgent>();
  function agentFor(credential: Credential, server: string | null): HttpsAgent {
    const key = `${credential.name} ${server ?? '*'}`;
    let agent = agents.get(key);
    if (agent === undefined) {
      // Services present SVIDs (no host name): the server must be the service the registry names
      // there, read from the DER under the X509-SVID rules (@lockstep/identity), as a guard reads its callers.
      const checkServerIdentity = (_host: string, cert: PeerCertificate) => {
        let presented: string;
        let ok: boolean;
        try {
          const svid = readX509Svid(cert.raw, { trustDomain: options.trustDomain });
          presented = svid.spiffeId;
          ok = server === null ? svid.service !== null : svid.spiffeId === server;
        } catch (error) {
          if (!(error instanceof SvidError)) throw error;
          presented = `a certificate that is not an SVID (${error.detail})`;
          ok = false;
        }
        const wanted = server ?? `an SVID of ${options.trustDomain}`;
        return ok ? undefined : new Error(`the server presented ${presented}, not ${wanted}`);
      };
      agent = new HttpsAgent({
        keepAlive: true,
        maxSockets: options.concurrency,
        ca: options.trustBundle,
        checkServerIdentity,
        ...(credential.cert === undefined ? {} : { cert: credential.cert, key: credential.key }),
      });
      agents.set(key, agent);
    }
    return agent;
  }

  return {
    send(attempt) {
      if (!options.scope.has(attempt.endpoint)) {
        return Promise.reject(
          new Error(`refusing to send to ${attempt.endpoint}: not a registered address of this scan`),
        );
      }
      const { host, port } = splitEndpoint(attempt.endpoint);
      const headers = attempt.headers.flatMap(([name, value]) => [name, value]);
      if (attempt.body !== undefined) headers.push('content-length', String(Buffer.byteLength(attempt.body)));
      const common = { host, port, method: attempt.method, path: attempt.path, headers, timeout: TIMEOUT_MS };
      return new Promise<Answer>((resolve) => {
        const settle = (answer: Answer) => resolve(answer);
        const onResponse = (response: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            if (size < MAX_READ) chunks.push(chunk);
            size += chunk.length;
          });
          response.on('error', () => settle(readAnswer(response, chunks)));
          response.on('end', () => settle(readAnswer(response, chunks)));
        };
        const outgoing =
          attempt.via === 'plaintext'
            ? httpRequest({ ...common, agent: false }, onResponse)
            : httpsRequest(
                { ...common, agent: agentFor(attempt.via, options.scope.get(attempt.endpoint) ?? null) },
                onResponse,
              );
        outgoing.on('timeout', () => outgoing.destroy(new Error('timed out')));
        outgoing.on('error', (error: Error & { code?: string }) =>
          settle({
            status: null,
            code: null,
            requestId: null,
            probeAdmitted: false,
            error: error.code ?? error.message,
          }),
        );
        outgoing.end(attempt.body);
      });
    },
    close() {
      for (const agent of agents.values()) agent.destroy();
      agents.clear();
    },
  };
}

function readAnswer(response: IncomingMessage, chunks: Buffer[]): Answer {
  // The guard names its refusal in a header too (a HEAD answer has no body).
  const header = response.headers['lockstep-error'];
  let code: string | null = typeof header === 'string' && header.startsWith('LOCKSTEP_ERR_') ? header : null;
  let requestId: string | null = null;
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: unknown; requestId?: unknown };
    if (typeof body.error === 'string' && body.error.startsWith('LOCKSTEP_ERR_')) code ??= body.error;
    if (typeof body.requestId === 'string') requestId = body.requestId;
  } catch {
    // Not a guard's answer.
  }
  return {
    status: response.statusCode ?? null,
    code,
    requestId,
    probeAdmitted: response.headers['lockstep-probe'] === 'admitted',
    error: null,
  };
}
