/**
 * What the bench (parent) and the load generator (child, bench/load.ts) say to each other over IPC:
 * the parent sends one LoadJob, the child answers with one LoadReport and exits.
 */

export interface LoadJob {
  /** https://127.0.0.1:<port> — the load generator refuses any other host. */
  readonly origin: string;
  readonly path: string;
  /** The gateway's client certificate chain, key, and the trust bundle the server must chain to. */
  readonly certPem: string;
  readonly keyPem: string;
  readonly caPem: string;
  /** Sent round-robin in the `txn-token` header, one per request. */
  readonly tokens: readonly string[];
  readonly connections: number;
  /** Warm-up lasts at least this long and at least this many answered requests… */
  readonly warmupMs: number;
  readonly warmupRequests: number;
  /** …but never longer than this. */
  readonly maxWarmupMs: number;
  readonly measureMs: number;
}

export interface LoadReport {
  /** How long the warm-up really took. */
  readonly warmupSeconds: number;
  /** Requests completed inside the measured window. */
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Responses that were not 200, and transport errors, over warm-up and measurement. */
  readonly non200: number;
  readonly errors: number;
  /** Status code → count, over warm-up and measurement. */
  readonly statuses: Readonly<Record<string, number>>;
  /** First transport error or non-200 body seen, for the failure message. */
  readonly firstProblem: string | null;
}

export type LoadMessage =
  | { readonly type: 'report'; readonly report: LoadReport }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'mark'; readonly phase: 'start' | 'end' };
