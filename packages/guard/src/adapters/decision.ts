/**
 * The decision adapter: the guard's pipeline on facts instead of a live socket, for the decision
 * service (`lockstep authz-server`) that nginx `auth_request`, Envoy `ext_authz`, Traefik
 * `forwardAuth` and AuthZEN clients ask. The facts are what a trusted fronting proxy saw: the
 * client's certificate chain (verified here against the trust bundle, then read under the X509-SVID
 * rules — the proxy's word is not taken), the method, the request target and the headers (Txn-Token,
 * traceparent). Routes are matched from the protected service's route table exactly as the node:http
 * adapter matches them; the answer is the catalogue's status and code, and every decision is audited
 * with `via: 'authz-server'`. No body is seen, so no body schema is checked: that stays the service's.
 * A target with dot segments, encoded slashes or backslashes, or empty segments is refused (400,
 * LOCKSTEP_ERR_INPUT_INVALID) before any route is matched: the upstream may normalize it into another
 * route than the one decided for (`/public/../admin/users` is `/admin/users` to most servers).
 *
 *   const decisions = lockstepDecisions(guard, { 'GET /orders/:id': { action: 'orders:read' } });
 *   const { allowed, status, code } = await decisions.decide({ peerCertificateChain: pem, method, path, headers });
 */
import findMyWay from 'find-my-way';
import { GuardError, statusOf, type GuardErrorCode } from '../errors.ts';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import { parseRouteTable, type RouteTable, type TableRoute } from '../route-table.ts';
import { ambiguousPath } from '../request-target.ts';
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
  /** Without a path: decide for the route that performs this action (AuthZEN names actions, not paths). */
  readonly action?: string | undefined;
  readonly method: string;
  /** The request target: path and query, as the client sent it. */
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

type Found = { route: TableRoute; params: Record<string, string | undefined> } | null;

export function lockstepDecisions(guard: Guard, table: RouteTable): Decisions {
  const routes = parseRouteTable(table, 'lockstepDecisions');
  guard.declareRoutes(routes.map((route) => route.security));
  const router = findMyWay({ ignoreTrailingSlash: false, caseSensitive: true });
  for (const route of routes) router.on(route.security.method as 'GET', route.security.template, () => {}, { route });

  /** As the node:http adapter: a HEAD request without a declared HEAD route is the GET route's. */
  function find(method: string, path: string): Found {
    try {
      const found = router.find(method as 'GET', path) ?? (method === 'HEAD' ? router.find('GET', path) : null);
      const route = (found?.store as { route?: TableRoute } | undefined)?.route;
      return found && route ? { route, params: found.params } : null;
    } catch {
      return null; // a target the router cannot take matches no declared route
    }
  }

  /** The first enforced route that performs `action` (no params: such a route looks up no owner). */
  function byAction(action: string): Found {
    const route = routes.find((candidate) => candidate.security.action === action && !candidate.security.public);
    return route === undefined ? null : { route, params: {} };
  }

  async function decide(facts: DecisionFacts): Promise<Decision> {
    const method = facts.method.toUpperCase();
    const found = facts.action === undefined ? find(method, facts.path) : byAction(facts.action);
    const headers = lowerCased(facts.headers);
    const request = {
      method,
      url: facts.path,
      headers,
      rawHeaders: rawHeadersOf(headers),
      peerCertificateChain: facts.peerCertificateChain,
      assertedSpiffeId: facts.assertedSpiffeId,
    };
    const ambiguity = facts.action === undefined ? ambiguousPath(facts.path) : null;
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
