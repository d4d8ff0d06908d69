/**
 * What a catalogue entry is: its `AttackInfo` (id, title, severity, standards, what counts as
 * enforced) and `plan`, which turns one target into attempts and says which step must refuse them.
 */
import type { DefectiveToken, ProbeCertificate } from '@lockstep/control-plane';
import type { AttackInfo } from '../types.ts';
import type { Answer, Attempt, Credential } from '../send.ts';
import type { Step } from '../verdict.ts';

export interface ScanRoute {
  readonly method: string;
  readonly template: string;
  readonly action: string;
  readonly public: boolean;
  readonly owner: boolean;
  readonly validatesBody: boolean;
}

export interface ServiceTarget {
  readonly name: string;
  readonly spiffeId: string | null;
  readonly endpoints: readonly string[];
  readonly routes: readonly ScanRoute[];
  readonly source: 'registry' | 'manifest';
}

export interface EndpointTarget {
  readonly kind: 'endpoint';
  readonly service: ServiceTarget;
  readonly endpoint: string;
  /** A request line that reaches the guard: an enforced route's. */
  readonly method: string;
  readonly path: string;
  /**
   * Why no check on this endpoint can be judged (no guard answered the scanner's genuine credentials,
   * or the guard refused its own SVID), or null. Its checks are then inconclusive, never "enforced".
   */
  readonly inconclusive: string | null;
}

/**
 * The route's allowed request: decided as `principal` (Lockstep-Probe-As), with `requester` standing
 * in for the token's requester where the policy asks for one (Lockstep-Probe-Requester).
 */
export interface Control {
  readonly principal: string;
  readonly requester: string | null;
}

export interface RouteTarget {
  readonly kind: 'route';
  readonly service: ServiceTarget;
  readonly route: ScanRoute;
  readonly endpoint: string;
  readonly path: string;
  /**
   * Why no check on this route can be judged, or null: the endpoint's reason, or test user a cannot
   * act (revoked, or its genuine Txn-Token refused): every route check sends its token or one like it.
   */
  readonly inconclusive: string | null;
  /**
   * The route's control — a workload the policy permits here for test user a, found by probing — or
   * why the checks that vary its request cannot run (none found, or a role of test user a that no
   * policy tests for): they are then inconclusive.
   */
  readonly control: Control | { readonly problem: string };
  /** Why test user b cannot act in the object-level check (revoked, token refused, unknown role), or null. */
  readonly userBProblem: string | null;
  /** For an owner route: the path of user a's object (from the manifest), or null. */
  readonly objectPath: string | null;
  /** Every method declared for this path (function-level checks use the others). */
  readonly methodsOfPath: readonly string[];
  /**
   * A JSON body the guard admitted on this route for the control (the manifest's example, else `{}`),
   * or null: input attacks that vary one thing in it then say something only a strict parser refuses.
   */
  readonly permittedBody: string | null;
}

export type Target = EndpointTarget | RouteTarget;

export type CraftedToken =
  | 'alg-none'
  | 'alg-none-title'
  | 'alg-none-upper'
  | 'alg-none-mixed'
  | 'signature-stripped'
  | 'hs256-public-key-pem'
  | 'hs256-public-key-der'
  | 'ecdsa-zero-signature'
  | 'payload-tampered'
  | 'embedded-jwk'
  | 'jku'
  | 'x5u'
  | 'kid-traversal'
  | 'kid-unknown'
  | 'jwe'
  | 'foreign-trust-domain'
  | 'oversized';

export interface ScanContext {
  readonly trustDomain: string;
  readonly scanner: Credential;
  readonly noCertificate: Credential;
  readonly foreignCa: Credential;
  readonly probeCertificates: Readonly<Record<ProbeCertificate, Credential>>;
  readonly tokens: {
    readonly a: string;
    readonly b: string;
    readonly noRole: string;
    readonly defective: Readonly<Record<DefectiveToken, string>>;
    readonly crafted: Readonly<Record<CraftedToken, string>>;
  };
}

export interface Plan {
  /** What the result names as attacked: a route (`GET /orders/:id`) or an endpoint. */
  readonly target: string;
  readonly attempts: readonly Attempt[];
  /** The step that must refuse every attempt (refusing earlier is fine). */
  readonly enforcedBy: Step;
  /** Overrides `enforcedBy` for attacks that a specific answer refuses (e.g. a size limit), per attempt. */
  readonly enforced?: (answer: Answer, attempt: Attempt) => boolean;
  /**
   * The attack applies here but cannot run, or cannot be judged (result: inconclusive, and the scan
   * with it): e.g. no guard answered, a test user the guards refuse, no allowed request to vary.
   */
  readonly inconclusive?: string;
  /** The attack does not apply here (result: skipped). */
  readonly skipped?: string;
}

export interface Attack extends AttackInfo {
  readonly on: 'endpoint' | 'route';
  plan(target: Target, context: ScanContext): Plan[];
}

export const NIST = {
  authentication: 'SP 800-204: authentication (service-to-service, mTLS)',
  authorization: 'SP 800-204: access management (authorization)',
  communication: 'SP 800-204: secure communication',
  tokens: 'SP 800-204: authentication (token validation)',
  resilience: 'SP 800-204: availability (resource limits)',
} as const;

export const OWASP = {
  api1: 'API1:2023 Broken Object Level Authorization',
  api2: 'API2:2023 Broken Authentication',
  api3: 'API3:2023 Broken Object Property Level Authorization',
  api4: 'API4:2023 Unrestricted Resource Consumption',
  api5: 'API5:2023 Broken Function Level Authorization',
  api8: 'API8:2023 Security Misconfiguration',
} as const;

/** One attempt at a route (or an endpoint's representative route) with the scanner's defaults. */
export function attempt(
  target: Target,
  context: ScanContext,
  options: {
    via?: Attempt['via'];
    token?: string | readonly string[] | null;
    probeAs?: Control | null;
    method?: string;
    path?: string;
    headers?: readonly (readonly [string, string])[];
    body?: string | Buffer;
    contentType?: string;
  } = {},
): Attempt {
  const token = options.token === undefined ? context.tokens.a : options.token;
  const tokens = token === null ? [] : typeof token === 'string' ? [token] : token;
  const headers: (readonly [string, string])[] = [
    ['host', target.endpoint],
    ...tokens.map((value) => ['txn-token', value] as [string, string]),
  ];
  if (options.probeAs) headers.push(['lockstep-probe-as', options.probeAs.principal]);
  if (options.probeAs?.requester) headers.push(['lockstep-probe-requester', options.probeAs.requester]);
  if (options.body !== undefined) headers.push(['content-type', options.contentType ?? 'application/json']);
  headers.push(...(options.headers ?? []));
  return {
    endpoint: target.endpoint,
    method: options.method ?? (target.kind === 'route' ? target.route.method : target.method),
    path: options.path ?? target.path,
    headers,
    ...(options.body === undefined ? {} : { body: options.body }),
    via: options.via ?? context.scanner,
  };
}

/**
 * Why the checks that vary an allowed request cannot run on a route without a control (`user` as the
 * manifest gives it, e.g. `alice, roles customer`).
 */
export function noControl(user: string): string {
  return (
    `no registered workload is permitted on this route for test user a (${user}), with any registered workload ` +
    "as requester, so there is no allowed request to vary: give users.a in the manifest the roles the route's " +
    'policy asks for, or, if no user may call this route, accept the result in the manifest (accept:) with the reason'
  );
}

/** What a result names as attacked; a service at several addresses gets each route once per address. */
export function routeLabel(target: Target, method?: string): string {
  if (target.kind === 'endpoint') return target.endpoint;
  const at = target.service.endpoints.length > 1 ? ` @ ${target.endpoint}` : '';
  return `${method ?? target.route.method} ${target.route.template}${at}`;
}
