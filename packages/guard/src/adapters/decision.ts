/**
 * The decision adapter: the guard's pipeline on facts instead of a live socket, for the decision
 * service (`lockstep authz-server`) that nginx `auth_request`, Envoy `ext_authz`, Traefik
 * `forwardAuth` and AuthZEN clients ask. The facts are what a trusted fronting proxy saw: the
 * client's certificate chain (verified here against the trust bundle, then read under the X509-SVID
 * rules — the proxy's word is not taken), the method, the request target and the headers (Txn-Token,
 * traceparent). Routes are matched from the protected service's route table exactly as the node:http
 * adapter matches them; the answer is the catalogue's status and code, and every decision is audited
 * with `via: 'authz-server'`. No body is seen, so no body schema is checked: that stays the service's.
 * A target with dot segments, encoded slashes or backslashes, `;`, empty segments, or a declared route's
 * path in another letter case or with a trailing slash matches no route (404 LOCKSTEP_ERR_ROUTE_UNKNOWN,
 * after transport and the Txn-Token, like any undeclared path): the upstream may normalize it into another
 * route than the one decided for (`/public/../admin/users` is `/admin/users` to most servers, `/Admin` is
 * `/admin` to Express).
 *
 *   const decisions = lockstepDecisions(guard, { 'GET /orders/:id': { action: 'orders:read' } });
 *   const { allowed, status, code } = await decisions.decide({ peerCertificateChain: pem, method, path, headers });
 */
import { GuardError, statusOf, type GuardErrorCode } from '../errors.ts';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import { parseRouteTable, routeMatcher, type FoundRoute, type RouteTable } from '../route-table.ts';
import type { RouteSecurity } from '../routes.ts';
import type { PresentedChain } from '../steps/presented-chain.ts';

export interface DecisionFacts {
  /** The client's certificate chain as the proxy verified it: PEM text, or DER leaf first; absent if none. */
  readonly peerCertificateChain: PresentedChain | undefined;
  /**
   * Without a chain: the workload SPIFFE ID the caller asserts (AuthZEN's subject). Taken on the
   * caller's word: only a decision service that admits trusted callers alone may pass it.
   */
  readonly assertedSpiffeId?: string | undefined;
  /**
   * AuthZEN names actions: without a path, decide for the first enforced route performing it (refused
   * if that route looks up an owner: the owner needs the route's params); with a path, for the route the
   * path matches, which must perform this action.
   */
  readonly action?: string | undefined;
  readonly method: string;
  /** The request target: path and query, as the client sent it ('' with an action and no request). */
  readonly path: string;
  /** The request's headers, names in lower case (Txn-Token, traceparent). */
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
}

export interface Decision {
  readonly allowed: boolean;
  /** 200 when allowed, else the catalogue's status for `code`. */
  readonly status: number;
  /** The refusal's code, or null when allowed. */
  readonly code: GuardErrorCode | null;
  readonly requestId: string;
  readonly admission: Admission;
}

export interface Decisions {
  readonly routes: readonly RouteSecurity[];
  decide(facts: DecisionFacts): Promise<Decision>;
}

export function lockstepDecisions(guard: Guard, table: RouteTable): Decisions {
  const routes = parseRouteTable(table, 'lockstepDecisions');
  guard.declareRoutes(routes.map((route) => route.security));
  const matcher = routeMatcher(routes);

  /**
   * The route that performs `action`, not public: the first enforced one, else the first dry-run one (a
   * dry-run route declared first must not speak for an enforced route of the same action).
   */
  function byAction(action: string): FoundRoute {
    const performing = routes.filter((candidate) => candidate.security.action === action && !candidate.security.public);
    const route = performing.find((candidate) => !candidate.security.dryRun) ?? performing[0];
    return route === undefined ? null : { route, params: {} };
  }

  /**
   * The route to decide for: by path (and, when named, it must perform the action), else by action. A
   * path the upstream could read as another route matches none.
   */
  function routeFor(facts: DecisionFacts, method: string, headers: Record<string, string | string[]>): FoundRoute {
    if (facts.action !== undefined && facts.path === '') return byAction(facts.action);
    const found = matcher.findForForeignServer(method, facts.path, headers);
    return facts.action === undefined || found?.route.security.action === facts.action ? found : null;
  }

  /** Why an action cannot be decided without a request (its route looks up an owner from params), or null. */
  function undecidable(facts: DecisionFacts, found: FoundRoute): string | null {
    if (facts.action === undefined || facts.path !== '' || (found?.route.security.owner ?? null) === null) return null;
    return `the route performing ${facts.action} checks the resource's owner: name the request (method and path) so that its params are known`;
  }

  async function decide(facts: DecisionFacts): Promise<Decision> {
    const method = facts.method.toUpperCase();
    const headers = lowerCased(facts.headers);
    const found = routeFor(facts, method, headers);
    const request = {
      method,
      url: facts.path,
      headers,
      rawHeaders: rawHeadersOf(headers),
      peerCertificateChain: facts.peerCertificateChain,
      assertedSpiffeId: facts.assertedSpiffeId,
    };
    const ambiguity = undecidable(facts, found);
    if (ambiguity !== null)
      return decisionOf(
        guard.decisionPipeline.refuseEarly(request, null, new GuardError('LOCKSTEP_ERR_INPUT_INVALID', ambiguity)),
      );
    let admission: Admission;
    try {
      admission = await guard.decisionPipeline.admit(request, found?.route.security ?? null, found?.params ?? {});
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      guard.options.logger.error('guard failed before a decision; request refused', { error: detail });
      admission = guard.decisionPipeline.refuseEarly(request, null, new GuardError('LOCKSTEP_ERR_INTERNAL', detail));
    }
    return decisionOf(admission);
  }

  return { routes: routes.map((route) => route.security), decide };
}

function decisionOf(admission: Admission): Decision {
  const code = admission.allowed ? null : ((admission.refusal as GuardError).code ?? 'LOCKSTEP_ERR_INTERNAL');
  return {
    allowed: admission.allowed,
    status: code === null ? 200 : statusOf(code),
    code,
    requestId: admission.requestId,
    admission,
  };
}

function lowerCased(
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): Record<string, string | string[]> {
  const result: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const key = name.toLowerCase();
    const previous = result[key];
    const values = typeof value === 'string' ? [value] : [...value];
    if (previous === undefined) result[key] = values.length === 1 ? (values[0] as string) : values;
    else result[key] = [...(typeof previous === 'string' ? [previous] : previous), ...values];
  }
  return result;
}

/** As Node's `rawHeaders`: a name and one value per pair (the Txn-Token step counts duplicates there). */
function rawHeadersOf(headers: Record<string, string | string[]>): string[] {
  const raw: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of typeof value === 'string' ? [value] : value) raw.push(name, one);
  }
  return raw;
}
