/**
 * The Fastify adapter — the primary one. One line secures every route of the instance:
 *
 *   await app.register(lockstep, { guard });
 *
 * Hooks apply to the whole instance (the plugin is not encapsulated): onRequest runs transport,
 * Txn-Token and authorization before the body is read — the only hook on the steady-state path.
 * Fastify's own validation runs with a strict compiler (unknown properties are rejected where the
 * schema says `additionalProperties: false`, never silently stripped); its failures, and body-parser
 * failures, are audited in onError and answered in the guard's format by the error handler. Every
 * route handler is wrapped so that it runs inside the request's async context (`guard.client`
 * propagates its Txn-Token from there).
 */
import ajvModule from 'ajv';
import { createRequire } from 'node:module';
import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { admissionStorage } from '../context.ts';
import { ERROR_HEADER, GuardError, errorBody } from '../errors.ts';
import type { Guard } from '../guard.ts';
import { PROBE_ANSWER_HEADERS, probeAnswer, type Admission } from '../pipeline.ts';
import { routeSecurity, type RouteConfig, type RouteSecurity } from '../routes.ts';
import { guardErrorFromFastify } from '../steps/validate.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    lockstep?: RouteConfig;
  }
}

export interface LockstepFastifyOptions {
  guard: Guard;
}

const kSecurity = Symbol('lockstep.route');
const kAdmission = Symbol('lockstep.admission');
const kRefusal = Symbol('lockstep.refusal');

type GuardedRequest = FastifyRequest & { [kAdmission]?: Admission | null; [kRefusal]?: Admission | null };
type SecurityByMethod = Record<string, RouteSecurity>;
type RouteContextConfig = { [kSecurity]?: SecurityByMethod } | undefined;

/**
 * Fastify keeps the matched route's context (whose `config` the public `request.routeOptions.config`
 * returns) under an internal symbol. `routeOptions` is a getter that builds a twelve-field object on
 * every call, about a microsecond per request, so the hook reads the context directly when this
 * Fastify has it, and falls back to the public getter otherwise (another Fastify copy or version).
 */
export const fastifyRouteContext: symbol | null = (() => {
  try {
    const symbols = createRequire(import.meta.url)('fastify/lib/symbols.js') as { kRouteContext?: unknown };
    return typeof symbols.kRouteContext === 'symbol' ? symbols.kRouteContext : null;
  } catch {
    return null;
  }
})();

function routeConfigOf(request: FastifyRequest): RouteContextConfig {
  const context = fastifyRouteContext === null ? undefined : (request as unknown as Record<symbol, { config?: RouteContextConfig } | undefined>)[fastifyRouteContext];
  return context !== undefined ? context.config : request.routeOptions.config as RouteContextConfig;
}

function send(reply: FastifyReply, error: GuardError, requestId: string): FastifyReply {
  return reply.code(error.status).header('content-type', 'application/json; charset=utf-8').header(ERROR_HEADER, error.code).send(errorBody(error.code, requestId));
}

async function lockstepPlugin(fastify: FastifyInstance, options: LockstepFastifyOptions): Promise<void> {
  const { guard } = options;
  if (!guard || typeof guard.pipeline?.admit !== 'function') {
    throw new TypeError('register(lockstep, { guard }) needs the guard from `await createGuard({...})`');
  }
  const { pipeline } = guard;
  if (typeof (fastify.server as { setSecureContext?: unknown }).setSecureContext === 'function') {
    guard.attach(fastify.server as unknown as TlsServer);
  } else {
    guard.options.logger.warn('Fastify instance is not HTTPS: every guarded request will be refused (no client certificate). Create it with Fastify({ https: guard.tlsOptions() }).');
  }

  // Only JSON bodies: a text/plain body is refused (415) instead of reaching a handler as a string.
  fastify.removeContentTypeParser('text/plain');
  const ajv = new ajvModule.default({ removeAdditional: false, useDefaults: true, coerceTypes: 'array', allErrors: false, strict: false });
  fastify.setValidatorCompiler(({ schema }) => ajv.compile(schema));

  const routes: RouteSecurity[] = [];
  fastify.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const config = route.config as { lockstep?: RouteConfig } | undefined;
    const securities = methods.map((method) => routeSecurity(method, route.url, config?.lockstep, `route ${method} ${route.url}`, (route.schema as { body?: unknown } | undefined)?.body !== undefined));
    routes.push(...securities);
    const byMethod = Object.fromEntries(securities.map((security) => [security.method, security]));
    route.config = { ...route.config, [kSecurity]: byMethod } as NonNullable<typeof route.config>;
    route.bodyLimit ??= guard.options.limits.bodyBytes;
    const handler = route.handler;
    route.handler = function lockstepHandler(this: FastifyInstance, request: GuardedRequest, reply: FastifyReply) {
      const admission = request[kAdmission];
      if (admission === undefined || admission === null) throw new GuardError('LOCKSTEP_ERR_INTERNAL', 'request reached a handler without an admission');
      // A scanner's request was decided and validated like any other; it never runs the handler.
      if (admission.probe) return reply.code(200).headers(PROBE_ANSWER_HEADERS).send(probeAnswer(admission.requestId));
      return admissionStorage.run(admission, () => handler.call(this, request, reply));
    };
  });
  fastify.addHook('onReady', async () => guard.declareRoutes(routes));

  function settle(request: GuardedRequest, reply: FastifyReply, admission: Admission, done: () => void): void {
    request[kAdmission] = admission;
    // A refusal is answered here; not calling done() ends the hook chain (Fastify's early reply).
    if (!admission.allowed) send(reply, admission.refusal as GuardError, admission.requestId);
    else done();
  }

  // Callback style: in the steady state `admit` is synchronous and no promise is made per request.
  fastify.addHook('onRequest', (request: GuardedRequest, reply, done) => {
    const byMethod = routeConfigOf(request)?.[kSecurity];
    const security = byMethod?.[request.method] ?? null;
    const admitted = pipeline.admit(request.raw, security, security?.owner ? request.params as Record<string, string | undefined> : undefined);
    if (admitted instanceof Promise) admitted.then((admission) => settle(request, reply, admission, done), done);
    else settle(request, reply, admitted, done);
  });

  // Errors after admission (body parser, validation) are recorded here, before any error handler runs,
  // so that they are audited even where the service sets its own error handler in a child scope.
  fastify.addHook('onError', (request: GuardedRequest, _reply, error: Error & { code?: string; statusCode?: number; validation?: unknown }, done) => {
    const mapped = error instanceof GuardError ? error : guardErrorFromFastify(error);
    if (mapped !== null) {
      const admission = request[kAdmission];
      request[kRefusal] = admission ? pipeline.refuseInput(admission, mapped) : pipeline.refuseEarly(request.raw, null, mapped);
    }
    done();
  });

  fastify.setErrorHandler((error: Error, request: GuardedRequest, reply) => {
    const refused = request[kRefusal];
    if (refused === undefined || refused === null || refused.refusal === null) {
      reply.send(error);
      return;
    }
    send(reply, refused.refusal, refused.requestId);
  });
}

// Not encapsulated: the hooks must cover every route of the instance, including those registered later.
(lockstepPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(lockstepPlugin as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'lockstep';

export const lockstep = lockstepPlugin;
export default lockstepPlugin;
