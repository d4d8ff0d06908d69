/**
 * The route the guard decided must be the route Express runs. The guard matches its own table (first
 * match in table order) before Express's router has chosen anything; Express then runs the first
 * route the app *registered* that matches — after whatever middleware ran in between, which may have
 * rewritten `req.url` or `req.method` (method-override). Either can make Express run a route the
 * guard never decided (`GET /orders/export` decided as `GET /orders/:id`).
 *
 * So the check happens when Express dispatches. Its router (router 2.x, lib/index.js and
 * lib/route.js) assigns `req.route = route` when it has matched a route layer, runs the app's param
 * callbacks, and `Route.prototype.dispatch` assigns `req.route = this` again right before the
 * route's handlers run, inside the route layer's try/catch. The guard gives every admitted request
 * its own `route` accessor (one `Object.defineProperty`; the getter returns what Express assigned):
 * - the first assignment of a route is checked: its full template (the mount paths of the routers
 *   it sits in, then its own path) must be the decided template, and the method the decided one
 *   (a HEAD served by the GET route is fine). A route with a non-string path (array, RegExp) equals
 *   no template and is refused. A mismatch is refused at once: a second audit event for the request
 *   (LOCKSTEP_ERR_ROUTE_UNKNOWN, the detail names both routes), the guard's refusal, and an error
 *   logged once per pair of routes with the fix;
 * - at the second assignment (the dispatch) the params are the route's: on a route with an owner rule
 *   they must be those the owner was looked up with (else refused as above). The dispatch of a refused
 *   route throws, so none of its handlers runs.
 *   Only there is a throw safe: at the first assignment it would surface in whatever called
 *   `next()`, possibly a callback outside any try/catch. For a route of the app's own router the
 *   throw is the routing signal `'router'`: the router ends and Express's final handler, seeing the
 *   answer sent, does nothing else. Deeper (a sub-router or sub-app), `'router'` would end only the
 *   inner router and the outer one would carry on with its next layers, so an error is thrown: it
 *   reaches only error handlers (which cannot write: the answer is sent) and then the final handler,
 *   which closes the connection after the answer (the refusal says `connection: close`).
 */
import type { Request, Response } from 'express';
import { GuardError } from '../errors.ts';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import type { RouteSecurity } from '../routes.ts';
import { writeRefusal } from './inbound.ts';

export type Params = Readonly<Record<string, string | undefined>>;

/** What this module reads of Express's router objects (router 2.x; Express 4's have the same shape). */
interface ExpressRoute {
  readonly path?: unknown;
  readonly methods?: Readonly<Record<string, boolean | undefined>>;
}
interface ExpressLayer {
  readonly route?: ExpressRoute | undefined;
  readonly handle?: unknown;
  readonly rawPath?: unknown;
}
export interface ExpressRouter {
  readonly stack?: readonly ExpressLayer[];
}

/** Where a route sits in the app: every full template it is reachable at, and whether at the top. */
interface Placement {
  readonly templates: readonly string[];
  readonly topLevel: boolean;
}
/** A route the walk did not find (a sub-app's, or added since): its template comes from `req.baseUrl`. */
const UNPLACED: Placement = Object.freeze({ templates: Object.freeze([]), topLevel: false });

interface DispatchState {
  readonly admission: Admission & { readonly route: RouteSecurity };
  readonly response: Response;
  readonly params: Params;
  /** The route Express assigned last. */
  route: unknown;
  refused: boolean;
}

/** Why a dispatched route is not the decided one, for the audit detail and the log. */
interface Mismatch {
  readonly served: string;
  readonly why: string;
  readonly fix: string;
}

const kDispatch = Symbol('lockstep.express.dispatch');
type WatchedRequest = Request & { [kDispatch]: DispatchState };

const MAX_MOUNT_DEPTH = 16;
const MAX_LOGGED_PAIRS = 256;

export interface DispatchCheck {
  /** Called once per admitted request, before `next()`. */
  watch(request: Request, response: Response, admission: Admission, params: Params): void;
}

/** `appRouter()` is the router of the app the guard is mounted on (known from the first request). */
export function createDispatchCheck(guard: Guard, appRouter: () => ExpressRouter | undefined): DispatchCheck {
  const placements = new WeakMap<object, Placement>();
  const loggedPairs = new Set<string>();

  // One descriptor for every request: no closure per request.
  const descriptor: PropertyDescriptor = {
    configurable: true,
    enumerable: true,
    get(this: WatchedRequest) {
      return this[kDispatch].route;
    },
    set(this: WatchedRequest, route: unknown) {
      onRouteAssigned(this, route);
    },
  };

  function onRouteAssigned(request: WatchedRequest, route: unknown): void {
    const state = request[kDispatch];
    // Route.dispatch assigns again the route the router has just assigned (and that was checked then).
    const dispatching = route === state.route;
    state.route = route;
    if (dispatching) {
      // The params are the route's only now (the router sets them after its assignment).
      if (!state.refused && state.admission.route.owner !== null && paramsChanged(request.params, state.params)) {
        refuse(request, state, {
          served: `${request.method} ${templatesOf(route as ExpressRoute, request)[0] ?? ''}`,
          why: 'req.url was rewritten after the guard: the params differ from those its owner rule was checked with',
          fix: 'do not rewrite requests after the guard',
        });
      }
      if (state.refused) throw halt(route);
      return;
    }
    if (state.refused || typeof route !== 'object' || route === null) return;
    const mismatch = mismatchOf(request, route, state);
    if (mismatch !== null) refuse(request, state, mismatch);
  }

  function mismatchOf(request: Request, route: ExpressRoute, state: DispatchState): Mismatch | null {
    const decided = state.admission.route;
    const method = request.method;
    const templates = templatesOf(route, request);
    const served = `${method} ${templates[0] ?? '<a path that is not a string>'}`;
    if (!templates.includes(decided.template)) {
      if (templates.length === 0) {
        return {
          served,
          why: 'a route registered with a path that is not a string (array or RegExp), which equals no template',
          fix: 'register that route with one string path per table entry',
        };
      }
      return {
        served,
        why: 'Express runs the first route the app registered that matches, the guard the first route of its table',
        fix:
          "declare the table's routes in the same order as the app registers them, and give the table the " +
          'route the app really serves',
      };
    }
    const headByGet = method === 'HEAD' && decided.method === 'GET' && route.methods?.head !== true;
    if (method !== decided.method && !headByGet) {
      return {
        served,
        why:
          `the method changed after the guard decided (${state.admission.method} → ${method}: method-override?), ` +
          'or the app serves HEAD with a handler of its own',
        fix:
          'do not rewrite requests after the guard; declare the route the app really serves, e.g. ' +
          `'${method} ${decided.template}'`,
      };
    }
    return null;
  }

  function refuse(request: WatchedRequest, state: DispatchState, mismatch: Mismatch): void {
    state.refused = true;
    const { admission, response } = state;
    const decided = `${admission.route.method} ${admission.route.template}`;
    const detail =
      `the guard decided ${decided} (${admission.route.action}) but Express dispatched ` +
      `${mismatch.served}: ${mismatch.why}; ${mismatch.fix}`;
    const error = new GuardError('LOCKSTEP_ERR_ROUTE_UNKNOWN', detail);
    guard.pipeline.refuseAdmitted(admission, error);
    const placement = placementOf(state.route as ExpressRoute);
    writeRefusal(request, response, error, admission.requestId, !placement.topLevel);
    const pair = `${decided} → ${mismatch.served}`;
    if (!loggedPairs.has(pair) && loggedPairs.size < MAX_LOGGED_PAIRS) {
      loggedPairs.add(pair);
      guard.options.logger.error(`lockstepExpress: refused (404): ${detail}`, { service: guard.service });
    }
  }

  function halt(route: unknown): unknown {
    if (placementOf(route as ExpressRoute).topLevel) return 'router';
    const error = new GuardError(
      'LOCKSTEP_ERR_ROUTE_UNKNOWN',
      "Lockstep refused this request: Express dispatched a route the guard did not decide (see the guard's log)",
    );
    error.stack = `GuardError: ${error.message}`;
    return error;
  }

  /** The full templates of `route`; for a route the walk does not know, `req.baseUrl` + its path. */
  function templatesOf(route: ExpressRoute, request: Request): readonly string[] {
    const placement = placementOf(route);
    if (placement !== UNPLACED) return placement.templates;
    return typeof route.path === 'string' ? [joinPath(request.baseUrl, route.path)] : [];
  }

  function placementOf(route: ExpressRoute): Placement {
    let placement = placements.get(route);
    if (placement === undefined) {
      // Cold: once per route. Routes added since the last walk are found by walking again.
      const router = appRouter();
      if (router !== undefined) walk(router, '', 0, new Set());
      placement = placements.get(route);
      if (placement === undefined) placements.set(route, (placement = UNPLACED));
    }
    return placement;
  }

  /** Records the template of every route under `router`; `prefix` null: under a mount that is no string. */
  function walk(router: ExpressRouter, prefix: string | null, depth: number, ancestors: Set<object>): void {
    ancestors.add(router);
    for (const layer of router.stack ?? []) {
      if (layer.route !== undefined && layer.route !== null) {
        const path = layer.route.path;
        const template = prefix !== null && typeof path === 'string' ? joinPath(prefix, path) : null;
        place(layer.route, template, depth === 0);
      } else if (isRouter(layer.handle) && !ancestors.has(layer.handle) && depth < MAX_MOUNT_DEPTH) {
        const mount = prefix !== null && typeof layer.rawPath === 'string' ? joinPath(prefix, layer.rawPath) : null;
        walk(layer.handle, mount === '/' ? '' : mount, depth + 1, ancestors);
      }
    }
    ancestors.delete(router);
  }

  function place(route: object, template: string | null, topLevel: boolean): void {
    const known = placements.get(route);
    const templates = [...(known?.templates ?? [])];
    if (template !== null && !templates.includes(template)) templates.push(template);
    const placement = { templates: Object.freeze(templates), topLevel: known?.topLevel ?? topLevel };
    placements.set(route, Object.freeze(placement));
  }

  return {
    watch(request, response, admission, params) {
      if (admission.route === null) return;
      const state: DispatchState = {
        admission: admission as DispatchState['admission'],
        response,
        params,
        route: undefined,
        refused: false,
      };
      (request as WatchedRequest)[kDispatch] = state;
      Object.defineProperty(request, 'route', descriptor);
    },
  };
}

function isRouter(handle: unknown): handle is ExpressRouter {
  return typeof handle === 'function' && Array.isArray((handle as ExpressRouter).stack);
}

/** A mount path and a route path as one template, the way the table writes it. */
function joinPath(prefix: string, path: string): string {
  const base = prefix.replace(/\/+$/, '');
  if (base === '') return path;
  return path === '/' ? base : `${base}${path}`;
}

function paramsChanged(now: unknown, decided: Params): boolean {
  if (typeof now !== 'object' || now === null) return false;
  for (const [name, value] of Object.entries(now as Record<string, unknown>)) {
    if (!(name in decided)) continue;
    const flat = Array.isArray(value) ? value.join('/') : value;
    if (flat !== decided[name]) return true;
  }
  return false;
}
