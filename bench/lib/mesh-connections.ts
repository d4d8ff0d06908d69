/**
 * The load generator's connections (bench/lib/mesh-load.ts): each one keep-alive connection that
 * sends one request at a time and settles with its outcome, never throwing.
 *
 *   http   undici Client, pipelining 1: plain HTTP to the bare upstream, or mTLS with the job's SVID
 *   grpc   @grpc/grpc-js, Envoy's `Authorization/Check` on the decision service's gRPC port, mTLS with
 *          the job's SVID; the client's request (path, Txn-Token) and certificate go in the CheckRequest
 *          as Envoy fills it (`include_peer_certificate: true`). An allowed check counts as 200; a
 *          denied one as the HTTP status of its `denied_response`.
 */
import { Client } from 'undici';
import { dispatchGet, type Outcome } from './dispatch-get.ts';
import type { MeshLoadJob } from './mesh-protocol.ts';

export type { Outcome };

export interface Connection {
  send(path: string, headers: Readonly<Record<string, string>>): Promise<Outcome | Error>;
  close(): Promise<void>;
}

const TIMEOUT_MS = 10_000;

function httpConnection(job: MeshLoadJob): Connection {
  const client = new Client(job.origin, {
    pipelining: 1,
    keepAliveTimeout: 60_000,
    ...(job.tls === null
      ? {}
      : {
          connect: {
            cert: job.tls.certPem,
            key: job.tls.keyPem,
            ca: job.tls.caPem,
            rejectUnauthorized: true,
            checkServerIdentity: () => undefined,
          },
        }),
  });
  return {
    send: (path, headers) =>
      dispatchGet(client, { path, headers, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS }).catch(
        (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
      ),
    close: () => client.close(),
  };
}

interface CheckAnswer {
  readonly status: { readonly code: number; readonly message: string } | null;
  readonly denied_response: { readonly status: { readonly code: number } | null; readonly body: string } | null;
}

type CheckClient = {
  Check(
    request: unknown,
    options: { deadline: number },
    callback: (error: Error | null, response?: CheckAnswer) => void,
  ): unknown;
  close(): void;
};

async function grpcConnections(job: MeshLoadJob, grpcJob: NonNullable<MeshLoadJob['grpc']>): Promise<Connection[]> {
  if (job.tls === null) throw new TypeError('a gRPC load job needs the client SVID (tls)');
  const tls = job.tls;
  // The proto as the decision service loads it (loaded here only for a gRPC job).
  const [{ default: grpc }, { loadAuthorizationService }] = await Promise.all([
    import('@grpc/grpc-js'),
    import('../../packages/proxy/src/authz/grpc-check.ts'),
  ]);
  const Authorization = grpc.makeGenericClientConstructor(
    loadAuthorizationService(),
    'Authorization',
  ) as unknown as new (address: string, credentials: unknown, options: Record<string, unknown>) => CheckClient;
  const credentials = grpc.credentials.createSsl(
    Buffer.from(tls.caPem),
    Buffer.from(tls.keyPem),
    Buffer.from(tls.certPem),
    {
      checkServerIdentity: (_host, certificate) =>
        certificate.subjectaltname === `URI:${grpcJob.serverId}`
          ? undefined
          : new Error(`the decision service is not ${grpcJob.serverId}`),
    },
  );
  const address = new URL(job.origin).host;
  return Array.from({ length: job.connections }, () => {
    // A local subchannel pool: one connection per client, as `connections` says, not one shared by all.
    const client = new Authorization(address, credentials, {
      'grpc.ssl_target_name_override': grpcJob.serverId,
      'grpc.use_local_subchannel_pool': 1,
    });
    return {
      send: (path, headers) =>
        new Promise((resolve) => {
          const request = {
            attributes: {
              source: { certificate: grpcJob.certificate, principal: '' },
              request: {
                http: { method: 'GET', path, headers, host: 'orders.shop.test', scheme: 'https', protocol: 'HTTP/1.1' },
              },
            },
          };
          client.Check(request, { deadline: Date.now() + TIMEOUT_MS }, (error, response) => {
            if (error !== null || response === undefined) return resolve(error ?? new Error('no CheckResponse'));
            if (response.status?.code === 0) return resolve({ status: 200, body: '' });
            resolve({
              status: response.denied_response?.status?.code ?? 0,
              body: `gRPC status ${response.status?.code}: ${response.denied_response?.body ?? ''}`.slice(0, 300),
            });
          });
        }),
      close: async () => client.close(),
    };
  });
}

export async function openConnections(job: MeshLoadJob): Promise<Connection[]> {
  const origin = new URL(job.origin);
  if (origin.hostname !== '127.0.0.1' || (origin.protocol === 'https:') !== (job.tls !== null))
    throw new TypeError(
      `the load generator talks to https://127.0.0.1 with a client SVID, or to http://127.0.0.1 without; got ${job.origin}`,
    );
  if (job.grpc !== null) return grpcConnections(job, job.grpc);
  return Array.from({ length: job.connections }, () => httpConnection(job));
}
