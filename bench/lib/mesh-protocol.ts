/**
 * What bench/mesh.ts and its load generator (bench/lib/mesh-load.ts, a process of its own) say to each
 * other over IPC: the bench sends one MeshLoadJob; the generator runs its phases in order, sends a
 * `mark` as each measured window opens and closes (the bench reads the servers' CPU from /proc at
 * those moments), then one `report` and exits. Also what the bench tells a server process
 * (bench/lib/mesh-server.ts) to start.
 */
import type { RouteTable } from '@lockstep/guard';

/** Closed loop: `connections` loops of one request at a time, as fast as answers come (saturation). */
export interface ClosedPhase {
  readonly kind: 'closed';
  readonly name: string;
  /** How many of the job's connections loop (default all). */
  readonly loops?: number;
  /** Warm-up lasts at least this long and at least this many answers, never longer than maxWarmupMs. */
  readonly warmupMs: number;
  readonly warmupRequests: number;
  readonly maxWarmupMs: number;
  readonly measureMs: number;
}

/**
 * Open loop: requests sent on a fixed schedule (`rate` per second) whatever the answers do, each
 * timed from its scheduled send time, so that a stalled server is charged for the requests it held
 * back (no coordinated omission). The first `warmupMs` of the schedule are not recorded.
 */
export interface OpenPhase {
  readonly kind: 'open';
  readonly name: string;
  readonly rate: number;
  readonly warmupMs: number;
  readonly measureMs: number;
}

export type LoadPhase = ClosedPhase | OpenPhase;

export interface MeshLoadJob {
  /** http://127.0.0.1:<port> (the bare upstream) or https://127.0.0.1:<port> (mTLS); nothing else. */
  readonly origin: string;
  /** The client's certificate chain, key and the trust bundle the server must chain to; null for http. */
  readonly tls: { readonly certPem: string; readonly keyPem: string; readonly caPem: string } | null;
  /** Request i goes to `${pathPrefix}${i % 1000}`. */
  readonly pathPrefix: string;
  /**
   * Envoy's gRPC ext_authz instead of HTTP: `origin` is then the gRPC port (https://127.0.0.1:<port>),
   * `serverId` the SPIFFE ID the server must present, `certificate` the client's (URL-encoded PEM).
   */
  readonly grpc: { readonly serverId: string; readonly certificate: string } | null;
  /** Sent with every request (the decision service's XFCC). */
  readonly headers: Readonly<Record<string, string>>;
  /** Sent round-robin in the `txn-token` header. */
  readonly tokens: readonly string[];
  /** Keep-alive connections, opened once and used round-robin by every phase. */
  readonly connections: number;
  readonly phases: readonly LoadPhase[];
}

export interface PhaseReport {
  readonly name: string;
  /** Requests answered inside the measured window. */
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Open loop only: how late the generator itself sent (sent − scheduled); 0 for a closed loop. */
  readonly sendLagP50Ms: number;
  readonly sendLagP99Ms: number;
}

export interface MeshLoadReport {
  readonly phases: readonly PhaseReport[];
  /** Over warm-up and measurement: answers that were not 200, transport errors, statuses seen. */
  readonly non200: number;
  readonly errors: number;
  readonly statuses: Readonly<Record<string, number>>;
  readonly firstProblem: string | null;
}

export type MeshLoadMessage =
  | { readonly type: 'mark'; readonly phase: string; readonly edge: 'start' | 'end'; readonly answered: number }
  | { readonly type: 'report'; readonly report: MeshLoadReport }
  | { readonly type: 'failed'; readonly message: string };

/** The servers bench/lib/mesh-server.ts can be. */
export type MeshServerRole = 'upstream' | 'guard' | 'sidecar' | 'authz';

/** Where a joining server finds the control plane. */
export interface JoinSettings {
  readonly controlPlane: string;
  readonly trustDomain: string;
  readonly joinToken: string;
  readonly stateDir: string;
}

export type MeshServerStart =
  | { readonly type: 'start'; readonly role: 'upstream' }
  | ({ readonly type: 'start'; readonly role: 'guard' } & JoinSettings)
  | ({ readonly type: 'start'; readonly role: 'sidecar'; readonly upstream: string } & JoinSettings)
  | ({ readonly type: 'start'; readonly role: 'authz'; readonly trustedProxies: readonly string[] } & JoinSettings);

/** The one service every target serves, and its one route. */
export const SERVICE = 'orders';
export const ROUTES: RouteTable = { 'GET /orders/:id': { action: 'orders:read' } };
