/**
 * `scan()`: discovery, the scanner's identity, controls, the catalogue against every target, the
 * report. The order of the results is deterministic (service, then catalogue order, then target),
 * whatever order the attempts finished in; concurrency and rate are bounded.
 *
 * A check that applies but cannot run — no guard answered, a test user the guards refuse or whose
 * roles no policy names, no allowed request to vary — is inconclusive with the reason, and so is the
 * scan (exit 2); only a check that does not apply to a target is skipped.
 */
import { randomUUID } from 'node:crypto';
import type { ScanUser } from '@lockstep/control-plane';
import { createProbeProof, PROBE_PROOF_HEADER } from '@lockstep/guard';
import { parseSpiffeId } from '@lockstep/identity';
import {
  catalogue,
  type Attack,
  type Control,
  type EndpointTarget,
  type RouteTarget,
  type ScanContext,
  type ScanRoute,
  type ServiceTarget,
  type Target,
} from './catalogue/index.ts';
import { noControl, type Plan } from './catalogue/attack.ts';
import { BODY_METHODS } from './catalogue/input/define.ts';
import { craftTokens, foreignCaCredential } from './craft.ts';
import { obtainScanKit, registeredServices, ScanSetupError, type ControlPlaneAccess } from './kit.ts';
import { parseManifest, type ScanManifest } from './manifest.ts';
import { createSender, type Answer, type Attempt, type Credential, type Sender } from './send.ts';
import { describeAnswer, refusedBy, stepOf } from './verdict.ts';
import { testUser, tokenRefused, type TestUser } from './test-users.ts';
import type { AttackResult, InconclusiveReason, ScanReport, ScannedService } from './types.ts';

export const SCANNER_VERSION = '0.1.0';

export interface ScanOptions {
  readonly controlPlane: ControlPlaneAccess;
  /** The scanner's name: its identity is spiffe://<td>/scanner/<name>. Default "lockstep". */
  readonly name?: string;
  readonly manifest?: ScanManifest;
  /** Plans in flight at once (default 8). */
  readonly concurrency?: number;
  /** At most this many requests per second (default: no limit). */
  readonly rate?: number;
  /** Only attacks whose id starts with one of these. */
  readonly only?: readonly string[];
  readonly onProgress?: (done: number, total: number) => void;
  readonly onWarning?: (message: string) => void;
}

const PLACEHOLDER = 'lockstep-scan';

export async function scan(options: ScanOptions): Promise<ScanReport> {
  const started = Date.now();
  const manifest = options.manifest ?? parseManifest(undefined);
  const name = options.name ?? 'lockstep';
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)
    throw new TypeError(`concurrency must be a whole number from 1 to 64; got ${concurrency}`);
  if (options.rate !== undefined && !(options.rate > 0))
    throw new TypeError(`rate must be a positive number of requests per second; got ${options.rate}`);
  const warn = options.onWarning ?? (() => {});
  const attacks = catalogue.filter(
    (attack) => options.only === undefined || options.only.some((prefix) => attack.id.startsWith(prefix)),
  );
  if (attacks.length === 0) throw new TypeError(`no attack id starts with ${options.only?.join(', ')}`);

  const noRole: ScanUser = {
    sub: manifest.users.a.sub,
    roles: [],
    ...(manifest.users.a.tenant === undefined ? {} : { tenant: manifest.users.a.tenant }),
  };
  const testUsers = [manifest.users.a, manifest.users.b, noRole];
  const { kit, keyPem, privateKey, txnJwks } = await obtainScanKit(options.controlPlane, name, testUsers);
  const [tokenA, tokenB, tokenNoRole] = kit.tokens.users as [string, string, string];
  const users = { a: testUser('a', manifest.users.a, kit.users[0]), b: testUser('b', manifest.users.b, kit.users[1]) };
  const { services, workloads } = await discover(options.controlPlane, manifest, kit.trustDomain, warn);
  if (services.length === 0)
    throw new ScanSetupError(
      'nothing to scan: the registry lists no live service with an address, and the manifest names none — start the services (their guards register themselves), or name unregistered ones under services: in --manifest',
    );

  const scope = new Map(
    services.flatMap((service) => service.endpoints.map((endpoint) => [endpoint, service.spiffeId] as const)),
  );
  const sender = createSender({ scope, trustBundle: kit.trustBundle, trustDomain: kit.trustDomain, concurrency });
  const credential = (credentialName: string, cert: string): Credential => ({
    name: credentialName,
    cert,
    key: keyPem,
  });
  const context: ScanContext = {
    trustDomain: kit.trustDomain,
    scanner: credential('scanner', kit.svid),
    noCertificate: { name: 'no-certificate' },
    foreignCa: await foreignCaCredential(kit.scanner),
    probeCertificates: Object.fromEntries(
      Object.entries(kit.probeCertificates).map(([probe, pem]) => [probe, credential(probe, pem)]),
    ) as ScanContext['probeCertificates'],
    tokens: {
      a: tokenA,
      b: tokenB,
      noRole: tokenNoRole,
      defective: kit.tokens.defective,
      crafted: await craftTokens(tokenA, kit.trustDomain, txnJwks),
    },
  };
  // A transport attack (any certificate but the scanner's SVID) proves to the guard that it is this
  // scan's probe, so that the monitor counts it apart from real traffic (@lockstep/guard's probe proofs).
  const proven = async (attempt: Attempt): Promise<Attempt> => {
    const audience = scope.get(attempt.endpoint);
    if (attempt.via === 'plaintext' || attempt.via === context.scanner || audience === undefined || audience === null) {
      return attempt;
    }
    const { method, path: target } = attempt;
    const proof = await createProbeProof({ token: kit.tokens.probe, key: privateKey, method, target, audience });
    return { ...attempt, headers: [...attempt.headers, [PROBE_PROOF_HEADER, proof]] };
  };
  const send = rateLimited(sender, options.rate, proven);
  try {
    const search: TargetSearch = { manifest, users, context, workloads, send, warn };
    const targetsOfService = (service: ServiceTarget) => targetsOf(service, search);
    const targets = await Promise.all(services.map(targetsOfService));
    const plans: { service: string; attack: Attack; index: number; plan: Plan }[] = [];
    services.forEach((service, s) => {
      attacks.forEach((attack, index) => {
        for (const target of targets[s] as Target[]) {
          if ((attack.on === 'endpoint') !== (target.kind === 'endpoint')) continue;
          for (const plan of attack.plan(target, context)) plans.push({ service: service.name, attack, index, plan });
        }
      });
    });
    let done = 0;
    const reasons = new Map<string, number>();
    const results = await pool(plans, concurrency, async (entry) => {
      const result = accepted(await runPlan(entry.service, entry.attack, entry.plan, send), manifest);
      options.onProgress?.(++done, plans.length);
      if (result.outcome === 'inconclusive') {
        const reason = entry.plan.inconclusive ?? "an answer that is not the guard's (each result shows it)";
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      }
      return result;
    });
    const finished = Date.now();
    const summary = {
      enforced: results.filter((result) => result.outcome === 'enforced').length,
      weak: results.filter((result) => result.outcome === 'weak').length,
      inconclusive: results.filter((result) => result.outcome === 'inconclusive').length,
      skipped: results.filter((result) => result.outcome === 'skipped').length,
    };
    return {
      tool: { name: 'lockstep-scan', version: SCANNER_VERSION },
      runId: randomUUID(),
      trustDomain: kit.trustDomain,
      scanner: kit.scanner,
      startedAt: new Date(started).toISOString(),
      finishedAt: new Date(finished).toISOString(),
      durationMs: finished - started,
      services: services.map((service): ScannedService => ({
        name: service.name,
        spiffeId: service.spiffeId,
        endpoints: service.endpoints,
        routes: service.routes.length,
        source: service.source,
      })),
      attacks: attacks.map(({ id, title, category, severity, cwe, owasp, nist, description, enforced }) => ({
        id,
        title,
        category,
        severity,
        cwe,
        owasp,
        nist,
        description,
        enforced,
      })),
      results,
      summary,
      inconclusiveReasons: [...reasons]
        .map(([reason, count]): InconclusiveReason => ({ reason, results: count }))
        .sort((a, b) => b.results - a.results || a.reason.localeCompare(b.reason)),
      exitCode: summary.weak > 0 ? 1 : summary.inconclusive > 0 ? 2 : 0,
    };
  } finally {
    sender.close();
  }
}

function isWorkloadOf(trustDomain: string, spiffeId: string): boolean {
  const id = parseSpiffeId(spiffeId);
  return id !== null && id.trustDomain === trustDomain && id.service !== null;
}

/**
 * Live registered services (their own trust domain only), then the manifest's; and every registered
 * workload, which the controls try as the caller a route's policy permits.
 */
async function discover(
  access: ControlPlaneAccess,
  manifest: ScanManifest,
  trustDomain: string,
  warn: (message: string) => void,
): Promise<{ services: ServiceTarget[]; workloads: string[] }> {
  const found: ServiceTarget[] = [];
  const registered = (await registeredServices(access))
    .filter((entry) => isWorkloadOf(trustDomain, entry.spiffeId))
    .sort((a, b) => a.service.localeCompare(b.service));
  for (const entry of registered) {
    if (entry.stale) {
      warn(`${entry.service}: not scanned — its guard has not reported for over a minute (stopped?)`);
      continue;
    }
    const { endpoints } = entry;
    if (endpoints.length === 0) {
      // A guard used only for outbound calls (an edge gateway) serves nothing to attack; a guard that
      // declares routes but reports no address is older than the scanner.
      if (entry.routes.some((route) => !route.public))
        warn(
          `${entry.service}: not scanned — its guard declares routes but reports no listening address (upgrade its guard)`,
        );
      continue;
    }
    found.push({
      name: entry.service,
      spiffeId: entry.spiffeId,
      endpoints,
      source: 'registry',
      routes: entry.routes.map((route): ScanRoute => ({
        method: route.method,
        template: route.template,
        action: route.action,
        public: route.public,
        owner: route.owner === true,
        validatesBody: route.validatesBody === true,
      })),
    });
  }
  for (const service of manifest.services) {
    if (found.some((entry) => entry.name === service.name))
      throw new ScanSetupError(
        `the manifest names ${service.name}, which is registered: scan it from the registry, or rename the manifest's entry`,
      );
    found.push({
      name: service.name,
      spiffeId: null,
      endpoints: service.endpoints,
      routes: service.routes,
      source: 'manifest',
    });
  }
  return { services: found, workloads: registered.map((entry) => entry.spiffeId) };
}

function fill(template: string, params: Readonly<Record<string, string>> = {}): string {
  return template.replace(/:([A-Za-z0-9_]+)|\*/g, (_match, param: string | undefined) =>
    encodeURIComponent(param === undefined ? PLACEHOLDER : (params[param] ?? PLACEHOLDER)),
  );
}

const guardAnswered = (answer: Answer) => answer.code !== null || answer.probeAdmitted;

/** What finding a service's targets needs from the scan. */
interface TargetSearch {
  readonly manifest: ScanManifest;
  readonly users: { readonly a: TestUser; readonly b: TestUser };
  readonly context: ScanContext;
  readonly workloads: readonly string[];
  readonly send: Send;
  readonly warn: (message: string) => void;
}

async function targetsOf(service: ServiceTarget, search: TargetSearch): Promise<Target[]> {
  const { manifest, users, context, workloads, send, warn } = search;
  const enforced = service.routes.filter((route) => !route.public);
  const objectPath = (route: ScanRoute) => {
    // The object a path addresses is the same whatever the method (GET and its HEAD, DELETE…).
    const object = manifest.objects.find(
      (entry) => entry.service === service.name && entry.route.slice(entry.route.indexOf(' ') + 1) === route.template,
    );
    return object === undefined ? null : fill(route.template, object.params);
  };
  const targets: Target[] = [];
  for (const endpoint of [...service.endpoints].sort()) {
    const first = enforced[0];
    const method = first?.method ?? 'GET';
    const path = first === undefined ? `/${PLACEHOLDER}` : (objectPath(first) ?? fill(first.template));
    // The control: the scanner's genuine SVID and token must reach the guard and be decided by it.
    const asUser = (token: string) => {
      return send({
        endpoint,
        method,
        path,
        headers: [
          ['host', endpoint],
          ['txn-token', token],
        ],
        via: context.scanner,
      });
    };
    const answer = await asUser(context.tokens.a);
    const step = stepOf(answer);
    const described = describeAnswer(answer);
    const inconclusive = !guardAnswered(answer)
      ? `the scanner's genuine credentials got no guard decision from ${endpoint} (${described}): no guard to test here`
      : step === 'transport'
        ? `the guard at ${endpoint} refused the scanner's own SVID (${described}), so none of its refusals says which ` +
          'step held: is the scanner revoked (lockstep revoke spiffeId), or its trust bundle out of date?'
        : null;
    targets.push({ kind: 'endpoint', service, endpoint, method, path, inconclusive } satisfies EndpointTarget);
    // Every route check sends test user a's token, or one like it: they stand or fall with it.
    const userA =
      inconclusive ?? users.a.refused ?? (step === 'token' ? tokenRefused(users.a, endpoint, answer) : null);
    let userB = users.b.refused ?? users.b.roles;
    if (userA === null && userB === null && enforced.some((route) => route.owner)) {
      const answerB = await asUser(context.tokens.b);
      if (stepOf(answerB) === 'token') userB = tokenRefused(users.b, endpoint, answerB);
    }
    for (const route of service.routes) {
      if (route.public) continue;
      const object = route.owner ? objectPath(route) : null;
      const path = object ?? fill(route.template);
      // No control is searched for as a user that cannot act, or whose roles mean nothing to the policy.
      const found =
        userA === null && users.a.roles === null
          ? await findControl(endpoint, route.method, path, workloads, context, send)
          : null;
      const control = found ?? { problem: userA ?? users.a.roles ?? noControl(users.a.named) };
      const methodsOfPath = service.routes
        .filter((other) => other.template === route.template)
        .map((other) => other.method);
      const candidates = bodyCandidates(service, route, manifest);
      const asFound =
        found === null ? null : { service: service.name, endpoint, method: route.method, path, control: found };
      const permittedBody =
        asFound === null || !BODY_METHODS.has(route.method)
          ? null
          : await findPermittedBody(asFound, candidates, context, send, warn);
      targets.push({
        kind: 'route',
        service,
        route,
        endpoint,
        path,
        inconclusive: userA,
        control,
        userBProblem: userB,
        objectPath: object,
        methodsOfPath,
        permittedBody,
      } satisfies RouteTarget);
    }
  }
  return targets;
}

/** At most this many workloads are tried as a stand-in requester (the search is workloads × requesters). */
const REQUESTER_CANDIDATES = 20;

/**
 * A request the policy permits on this route for test user a: decided as each registered workload in
 * turn; then, for a policy that also names the transaction's requester, with each workload as that
 * requester. Passing authorization (admitted, or refused only by the input step) is what counts.
 */
async function findControl(
  endpoint: string,
  method: string,
  path: string,
  workloads: readonly string[],
  context: ScanContext,
  send: Send,
): Promise<Control | null> {
  const permits = async (control: Control) => {
    const headers = controlHeaders(endpoint, control, context);
    const answer = await send({ endpoint, method, path, headers, via: context.scanner });
    const step = stepOf(answer);
    return step === 'input' || (step === 'admitted' && answer.probeAdmitted);
  };
  for (const principal of workloads)
    if (await permits({ principal, requester: null })) return { principal, requester: null };
  for (const requester of workloads.slice(0, REQUESTER_CANDIDATES)) {
    for (const principal of workloads) if (await permits({ principal, requester })) return { principal, requester };
  }
  return null;
}

/** The headers of a request as `control`, with test user a's token. */
function controlHeaders(endpoint: string, control: Control, context: ScanContext): [string, string][] {
  const headers: [string, string][] = [
    ['host', endpoint],
    ['txn-token', context.tokens.a],
    ['lockstep-probe-as', control.principal],
  ];
  if (control.requester !== null) headers.push(['lockstep-probe-requester', control.requester]);
  return headers;
}

/** Bodies to try as the one a route admits: the manifest's example for it, then an empty object. */
type BodyCandidate = { readonly body: string; readonly fromManifest: boolean };

function bodyCandidates(service: ServiceTarget, route: ScanRoute, manifest: ScanManifest): BodyCandidate[] {
  const named = `${route.method} ${route.template}`;
  const example = manifest.bodies.find((entry) => entry.service === service.name && entry.route === named);
  const empty: BodyCandidate = { body: '{}', fromManifest: false };
  return example === undefined ? [empty] : [{ body: example.body, fromManifest: true }, empty];
}

/**
 * The first candidate body that the guard admits on this route as its control (admitted, not merely
 * past authorization), or null. A manifest example that is refused is worth a warning: the input
 * checks then vary a weaker body, or none.
 */
async function findPermittedBody(
  request: { service: string; endpoint: string; method: string; path: string; control: Control },
  candidates: readonly BodyCandidate[],
  context: ScanContext,
  send: Send,
  warn: (message: string) => void,
): Promise<string | null> {
  const { service, endpoint, method, path, control } = request;
  for (const { body, fromManifest } of candidates) {
    const headers = controlHeaders(endpoint, control, context);
    headers.push(['content-type', 'application/json']);
    const answer = await send({ endpoint, method, path, headers, body, via: context.scanner });
    if (answer.probeAdmitted) return body;
    if (!fromManifest) continue;
    warn(
      `${service}: ${method} ${path} @ ${endpoint}: the manifest's body was not admitted (${describeAnswer(answer)}), ` +
        "so the input checks cannot vary it — give one that the route's schema accepts",
    );
  }
  return null;
}

async function runPlan(service: string, attack: Attack, plan: Plan, send: Send): Promise<AttackResult> {
  const base = { attack: attack.id, service, target: plan.target };
  if (plan.skipped !== undefined)
    return {
      ...base,
      outcome: 'skipped',
      evidence: plan.skipped,
      status: null,
      reason: null,
      requestId: null,
      durationMs: 0,
    };
  if (plan.inconclusive !== undefined)
    return {
      ...base,
      outcome: 'inconclusive',
      evidence: plan.inconclusive,
      status: null,
      reason: null,
      requestId: null,
      durationMs: 0,
    };
  const startedAt = performance.now();
  let last: { attempt: Attempt; answer: Answer } | null = null;
  let unclear: { attempt: Attempt; answer: Answer } | null = null;
  for (const attempt of plan.attempts) {
    const answer = await send(attempt);
    last = { attempt, answer };
    const enforced = plan.enforced !== undefined ? plan.enforced(answer, attempt) : refusedBy(answer, plan.enforcedBy);
    if (enforced) continue;
    const step = stepOf(answer);
    if (step === 'unknown' && plan.enforced === undefined) {
      unclear ??= last;
      continue;
    }
    return result(
      base,
      'weak',
      `${describeAttempt(attempt)} → ${describeAnswer(answer)}: ${step === 'admitted' ? 'admitted' : `got past the ${plan.enforcedBy} step`}`,
      answer,
      startedAt,
    );
  }
  if (unclear !== null)
    return result(
      base,
      'inconclusive',
      `${describeAttempt(unclear.attempt)} → ${describeAnswer(unclear.answer)}: not an answer of the guard`,
      unclear.answer,
      startedAt,
    );
  if (last === null)
    return {
      ...base,
      outcome: 'skipped',
      evidence: 'nothing to send',
      status: null,
      reason: null,
      requestId: null,
      durationMs: 0,
    };
  const count = plan.attempts.length;
  return result(
    base,
    'enforced',
    `${count === 1 ? describeAttempt(last.attempt) : `${count} attempts, last ${describeAttempt(last.attempt)}`} → ${describeAnswer(last.answer)}`,
    last.answer,
    startedAt,
  );
}

function result(
  base: Pick<AttackResult, 'attack' | 'service' | 'target'>,
  outcome: AttackResult['outcome'],
  evidence: string,
  answer: Answer,
  startedAt: number,
): AttackResult {
  return {
    ...base,
    outcome,
    evidence,
    status: answer.status,
    reason: answer.code,
    requestId: answer.requestId,
    durationMs: Math.round((performance.now() - startedAt) * 10) / 10,
  };
}

function describeAttempt(attempt: Attempt): string {
  const via = attempt.via === 'plaintext' ? 'plain HTTP' : attempt.via.name;
  const path = attempt.path.length > 80 ? `${attempt.path.slice(0, 77)}…` : attempt.path;
  return `${attempt.method} ${path} via ${via}`;
}

/** A weak or inconclusive result that the manifest accepts, with its reason, becomes a skip. */
function accepted(result: AttackResult, manifest: ScanManifest): AttackResult {
  if (result.outcome !== 'weak' && result.outcome !== 'inconclusive') return result;
  const acceptance = manifest.accept.find(
    (entry) =>
      entry.attack === result.attack &&
      entry.service === result.service &&
      (entry.route === undefined || entry.route === result.target || result.target.startsWith(`${entry.route} @ `)),
  );
  return acceptance === undefined
    ? result
    : {
        ...result,
        outcome: 'skipped',
        evidence: `accepted in the manifest: ${acceptance.reason} (found: ${result.evidence})`,
      };
}

type Send = (attempt: Attempt) => Promise<Answer>;

/** Sends at most `rate` attempts a second; each is `prepare`d just before it leaves (a proof's time is fresh). */
function rateLimited(sender: Sender, rate: number | undefined, prepare: (attempt: Attempt) => Promise<Attempt>): Send {
  if (rate === undefined) return async (attempt) => sender.send(await prepare(attempt));
  const interval = 1000 / rate;
  let next = 0;
  return async (attempt) => {
    const now = performance.now();
    const at = Math.max(now, next);
    next = at + interval;
    if (at > now) await new Promise((resolve) => setTimeout(resolve, at - now));
    return sender.send(await prepare(attempt));
  };
}

/** Runs `work` over `items` with at most `limit` at once; results in the items' order. */
async function pool<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let nextIndex = 0;
  const worker = async () => {
    while (nextIndex < items.length) {
      const index = nextIndex++;
      results[index] = await work(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
