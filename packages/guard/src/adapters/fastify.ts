/**
 * The Fastify adapter — the primary one. One line secures every route of the instance:
 *
 *   await app.register(lockstep, { guard });
 *
 * Hooks apply to the whole instance (the plugin is not encapsulated): onRequest runs transport,
 * Txn-Token and authorization before the body is read — the one hook with work to do on the
 * steady-state path (the preHandler hook reads two fields) — and it runs for Fastify's 404s and its
 * automatic HEAD routes too (a HEAD is decided as its GET route).
 * Register the plugin first: an onRequest hook added before it could answer before the guard decides,
 * so registering after one is refused. What Fastify would answer on its own is taken over:
 * - URLs its router cannot take (a bad escape, a parameter over maxParamLength: `frameworkErrors`)
 *   are decided as a request that matches no route;
 * - bodies are read by the guard's one strict JSON parser (every other content-type parser is
 *   removed: multipart and form bodies are refused 415), a body on a route without `schema.body` is
 *   refused 400 (the POST/PUT/PATCH routes without one are listed in a warning at start-up), and
 *   validation failures are refused by the guard's preHandler hook (`attachValidation` is set on
 *   every route), so a child scope's error handler cannot answer them in its own words;
 * - an error the guard maps to a refusal (onError) is answered with the guard's refusal, whichever
 *   error handler answered it (Fastify's, or the app's own, at the root or in a child scope): the
 *   onSend hook writes the refusal instead, before a later onSend hook of the app could change it (on
 *   every other request the hook reads one symbol). The guard sets no error handler of its own, so
 *   the app's errors stay the app's to answer;
 * - the validator compiler rejects unknown properties (never strips them) and does not coerce a
 *   body's types (`"1"` stays a string) unless the route asks with `lockstep: { coerceBody: true }`.
 * Every route handler is wrapped so that it runs inside the request's async context (`guard.client`
 * propagates its Txn-Token from there). Refusals are written by `writeRefusal` (adapters/inbound.ts).
 */
import ajvModule, { type ValidateFunction } from 'ajv';
import { createRequire } from 'node:module';
import type { Server as TlsServer } from 'node:tls';
import type { Readable } from 'node:stream';
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  FastifySchemaCompiler,
  FastifySchemaValidationError,
  RouteOptions,
} from 'fastify';
import { admissionStorage } from '../context.ts';
import { GuardConfigError, GuardError } from '../errors.ts';
import type { Guard } from '../guard.ts';
import { PROBE_ANSWER_HEADERS, probeAnswer, type Admission } from '../pipeline.ts';
import { routeSecurity, type RouteConfig, type RouteSecurity } from '../routes.ts';
import {
  checkBodyHeaders,
  continueIfExpected,
  guardErrorFromFastify,
  hasBody,
  parseJsonBody,
  readBodyBytes,
} from '../steps/validate.ts';
import { writeRefusal } from './inbound.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    lockstep?: RouteConfig;
  }
}

export interface LockstepFastifyOptions {
  guard: Guard;
}

const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH']);
const kSecurity = Symbol('lockstep.route');
const kBodyLimit = Symbol('lockstep.bodyLimit');
const kAdmission = Symbol('lockstep.admission');
const kRefusal = Symbol('lockstep.refusal');
const kInputRefusal = Symbol('lockstep.inputRefusal');

type GuardedRequest = FastifyRequest & {
  [kAdmission]?: Admission | null;
  [kRefusal]?: Admission;
  [kInputRefusal]?: GuardError;
};
type SecurityByMethod = Record<string, RouteSecurity>;
type RouteContextConfig = { [kSecurity]?: SecurityByMethod; [kBodyLimit]?: number } | undefined;
type FrameworkErrors = (error: Error, request: FastifyRequest, reply: FastifyReply) => void;

const fastifySymbols: Record<string, unknown> = (() => {
  try {
    return createRequire(import.meta.url)('fastify/lib/symbols.js') as Record<string, unknown>;
  } catch {
    return {};
  }
})();

/**
 * Fastify keeps the matched route's context (whose `config` the public `request.routeOptions.config`
 * returns) under an internal symbol. `routeOptions` is a getter that builds a twelve-field object on
 * every call, about a microsecond per request, so the hook reads the context directly when this
 * Fastify has it, and falls back to the public getter otherwise (another Fastify copy or version).
 */
export const fastifyRouteContext: symbol | null = symbolOr(fastifySymbols.kRouteContext);

/**
 * The server options Fastify reads `frameworkErrors` from when its router cannot take a URL; there
 * is no public way to set it after `Fastify(...)`, and without it Fastify answers such a request with
 * a body of its own, unaudited.
 */
export const fastifyOptionsSymbol: symbol | null = symbolOr(fastifySymbols.kOptions);

function symbolOr(value: unknown): symbol | null {
  return typeof value === 'symbol' ? value : null;
}

function routeConfigOf(request: FastifyRequest): RouteContextConfig {
  const context =
    fastifyRouteContext === null
      ? undefined
      : (request as unknown as Record<symbol, { config?: RouteContextConfig } | undefined>)[fastifyRouteContext];
  return context !== undefined ? context.config : (request.routeOptions.config as RouteContextConfig);
}

/** Hands the connection to the guard's writer: nothing of Fastify's reply is sent. */
function refuse(request: FastifyRequest, reply: FastifyReply, error: GuardError, requestId: string): void {
  reply.hijack();
  writeRefusal(request.raw, reply.raw, error, requestId);
}

async function lockstepPlugin(fastify: FastifyInstance, options: LockstepFastifyOptions): Promise<void> {
  const { guard } = options;
  if (!guard || typeof guard.pipeline?.admit !== 'function') {
    throw new TypeError('register(lockstep, { guard }) needs the guard from `await createGuard({...})`');
  }
  if (onRequestHooks(fastify) > 0) {
    throw new GuardConfigError(
      'register(lockstep, { guard }) before adding any onRequest hook: ' +
        'a hook that runs before the guard can answer requests the guard never decided',
    );
  }
  const { pipeline } = guard;
  if (typeof (fastify.server as { setSecureContext?: unknown }).setSecureContext === 'function') {
    guard.attach(fastify.server as unknown as TlsServer);
  } else {
    guard.options.logger.warn(
      'Fastify instance is not HTTPS: every guarded request will be refused (no client certificate). Create it with Fastify({ https: guard.tlsOptions() }).',
    );
  }

  /** Records a refusal of an admitted request (input step, a late failure) and answers it. */
  function refuseAdmitted(request: GuardedRequest, reply: FastifyReply, admission: Admission, error: GuardError): void {
    const refused = pipeline.refuseAdmitted(admission, error);
    request[kRefusal] = refused;
    refuse(request, reply, error, admission.requestId);
  }

  /** A failure of the guard itself before a decision: refused and audited, fail closed. */
  function refuseFailure(request: FastifyRequest, reply: FastifyReply, error: unknown): void {
    guard.options.logger.error('guard failed before a decision; request refused', { error: describe(error, true) });
    const admission = pipeline.refuseEarly(request.raw, null, new GuardError('LOCKSTEP_ERR_INTERNAL', describe(error)));
    refuse(request, reply, admission.refusal as GuardError, admission.requestId);
  }

  takeOverFrameworkErrors(fastify, guard, (_error, request, reply) => {
    // The router could not take this URL: it matches no declared route (authenticated first: 401/404).
    // A throw of `admit` rejects the promise (it would otherwise escape into Fastify's router: a crash).
    new Promise<Admission>((resolve) => resolve(pipeline.admit(request.raw, null))).then(
      (admission) => refuse(request, reply, admission.refusal as GuardError, admission.requestId),
      (error: unknown) => refuseFailure(request, reply, error),
    );
  });

  // Only JSON, read by the one strict parser. The headers were checked in onRequest (a body on a route
  // without a body schema, a non-JSON type or an oversized declared length never get here).
  fastify.removeAllContentTypeParsers();
  type ParserDone = (error: Error | null, body?: unknown) => void;
  fastify.addContentTypeParser('*', (request: GuardedRequest, payload: Readable, done: ParserDone) => {
    const limit = routeConfigOf(request)?.[kBodyLimit] ?? guard.options.limits.bodyBytes;
    readBodyBytes(payload, limit)
      .then((bytes) => parseJsonBody(bytes))
      .then(
        (body) => done(null, body),
        (error: unknown) => {
          // Refused by the preHandler hook in the guard's words, not by an error handler in Fastify's.
          request[kInputRefusal] =
            error instanceof GuardError ? error : new GuardError('LOCKSTEP_ERR_INPUT_INVALID', describe(error));
          done(null, undefined);
        },
      );
  });

  // strictNumbers: NaN and ±Infinity are not numbers to a schema (`strict: false` would leave it off).
  const ajvOptions = {
    removeAdditional: false,
    useDefaults: true,
    allErrors: false,
    strict: false,
    strictNumbers: true,
  } as const;
  const strictAjv = new ajvModule.default({ ...ajvOptions, coerceTypes: false });
  // Query strings, params and headers are text by nature: their schemas coerce, as Fastify's do.
  const coercingAjv = new ajvModule.default({ ...ajvOptions, coerceTypes: 'array' });
  const coerceBody = new Set<string>();
  fastify.setValidatorCompiler(({ schema, method, url, httpPart }) => {
    const methods: readonly string[] = Array.isArray(method) ? method : [method];
    const coerce = httpPart !== 'body' || methods.some((name) => coerceBody.has(`${name} ${url}`));
    return coerce ? finiteAfterCoercion(coercingAjv.compile(schema)) : strictAjv.compile(schema);
  });

  const routes: RouteSecurity[] = [];
  // Routes whose method usually carries a body but that declare no body schema: they refuse any body.
  const bodiless: string[] = [];
  // GET routes by URL: Fastify's automatic HEAD route for one is decided as that GET route.
  const getRoutes = new Map<string, { handler: unknown; security: RouteSecurity }>();
  fastify.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const config = (route.config as { lockstep?: RouteConfig } | undefined)?.lockstep;
    const validatesBody = (route.schema as { body?: unknown } | undefined)?.body !== undefined;
    const byMethod: SecurityByMethod = {};
    for (const method of methods) {
      const get = method === 'HEAD' ? getRoutes.get(route.url) : undefined;
      if (get !== undefined && get.handler === route.handler) {
        // Decided as the GET route; still listed, so that the scanner also probes Fastify's HEAD route.
        byMethod.HEAD = get.security;
        routes.push(Object.freeze({ ...get.security, method: 'HEAD' }));
        continue;
      }
      const security = routeSecurity(method, route.url, config, `route ${method} ${route.url}`, validatesBody);
      routes.push(security);
      if (!validatesBody && BODY_METHODS.has(security.method)) bodiless.push(`${security.method} ${route.url}`);
      byMethod[security.method] = security;
      if (security.method === 'GET') getRoutes.set(route.url, { handler: route.handler, security });
      if (config?.coerceBody === true) coerceBody.add(`${security.method} ${route.url}`);
    }
    route.bodyLimit ??= guard.options.limits.bodyBytes;
    const guarded = { [kSecurity]: byMethod, [kBodyLimit]: route.bodyLimit };
    route.config = { ...route.config, ...guarded } as NonNullable<typeof route.config>;
    // Validation failures reach the guard's preHandler hook, not an error handler of the app's.
    route.attachValidation = true;
    const handler = route.handler;
    route.handler = function lockstepHandler(this: FastifyInstance, request: GuardedRequest, reply: FastifyReply) {
      const admission = request[kAdmission];
      if (admission === undefined || admission === null || !admission.allowed) {
        throw new GuardError('LOCKSTEP_ERR_INTERNAL', 'request reached a handler without an admission');
      }
      // A scanner's request was decided and validated like any other; it never runs the handler.
      if (admission.probe) return reply.code(200).headers(PROBE_ANSWER_HEADERS).send(probeAnswer(admission.requestId));
      return admissionStorage.run(admission, () => handler.call(this, request, reply));
    };
  });
  fastify.addHook('onReady', async () => {
    guard.declareRoutes(routes);
    if (bodiless.length > 0) {
      const listed = bodiless.join(', ');
      guard.options.logger.warn(
        `these routes refuse any body (400 LOCKSTEP_ERR_INPUT_INVALID): ${listed}; ` +
          'give them schema.body (a JSON schema) to accept a JSON body. Only JSON bodies are accepted: ' +
          'multipart and form bodies are refused 415',
        { service: guard.service },
      );
    }
  });

  function settle(request: GuardedRequest, reply: FastifyReply, admission: Admission, done: () => void): void {
    request[kAdmission] = admission;
    // A refusal is answered here; not calling done() ends the hook chain (Fastify's early reply).
    if (!admission.allowed) return refuse(request, reply, admission.refusal as GuardError, admission.requestId);
    if (hasBody(request.raw)) {
      // Before a byte of the body is read, and before 100 Continue.
      const limit = routeConfigOf(request)?.[kBodyLimit] ?? guard.options.limits.bodyBytes;
      const refusal = checkBodyHeaders(request.raw, admission.route?.validatesBody === true, limit);
      if (refusal !== null) return refuseAdmitted(request, reply, admission, refusal);
      continueIfExpected(request.raw, reply.raw);
    }
    done();
  }

  // Callback style: in the steady state `admit` is synchronous and no promise is made per request.
  fastify.addHook('onRequest', (request: GuardedRequest, reply, done) => {
    const byMethod = routeConfigOf(request)?.[kSecurity];
    const security = byMethod?.[request.method] ?? null;
    let admitted: Admission | Promise<Admission>;
    try {
      const params = security?.owner ? (request.params as Record<string, string | undefined>) : undefined;
      admitted = pipeline.admit(request.raw, security, params);
    } catch (error) {
      return refuseFailure(request, reply, error);
    }
    if (!(admitted instanceof Promise)) return settle(request, reply, admitted, done);
    admitted.then(
      (admission) => settle(request, reply, admission, done),
      (error: unknown) => refuseFailure(request, reply, error),
    );
  });

  // The body the parser refused, or a schema failure (attachValidation): refused before any handler
  // or later preHandler hook sees it.
  fastify.addHook('preHandler', (request: GuardedRequest, reply, done) => {
    const invalid = request.validationError;
    const refusal =
      request[kInputRefusal] ??
      (invalid === undefined ? undefined : new GuardError('LOCKSTEP_ERR_INPUT_INVALID', invalid.message));
    if (refusal === undefined) return done();
    const admission = request[kAdmission];
    if (admission === undefined || admission === null) return refuseFailure(request, reply, refusal);
    refuseAdmitted(request, reply, admission, refusal);
  });

  // Anything else Fastify raises about a request (e.g. a content-type header it cannot parse), and a
  // GuardError thrown by a handler or hook, is recorded here, before any error handler runs, so that
  // it is audited even where the service sets its own error handler; the onSend hook answers it.
  fastify.addHook(
    'onError',
    (
      request: GuardedRequest,
      _reply,
      error: Error & { code?: string; statusCode?: number; validation?: unknown },
      done,
    ) => {
      const mapped = error instanceof GuardError ? error : guardErrorFromFastify(error);
      if (mapped !== null && request[kRefusal] === undefined) {
        const admission = request[kAdmission];
        request[kRefusal] = admission
          ? pipeline.refuseAdmitted(admission, mapped)
          : pipeline.refuseEarly(request.raw, null, mapped);
      }
      done();
    },
  );

  // The answer of the error handler (Fastify's, or the app's own) to a request refused in onError is
  // not sent: the guard's writer takes over, and the hook chain ends here (no later onSend hook of the
  // app, nor Fastify's HEAD route, sees the refusal). Hijacked replies (every other refusal) never get
  // here, so this reads one symbol per answer.
  fastify.addHook('onSend', (request: GuardedRequest, reply, payload, done) => {
    const refused = request[kRefusal];
    if (refused === undefined) return done(null, payload);
    refuse(request, reply, refused.refusal as GuardError, refused.requestId);
  });
}

type AjvValidate = ValidateFunction & { schemaEnv?: unknown };
type CheckedValidate = ReturnType<FastifySchemaCompiler<unknown>> & { schemaEnv?: unknown };

/**
 * Ajv coerces after its type check, so strictNumbers does not see what coercion makes: `?n=Infinity`
 * or `?n=1e400` would reach a handler as Infinity. The coerced data is checked for it afterwards.
 */
function finiteAfterCoercion(validate: AjvValidate): CheckedValidate {
  const checked: CheckedValidate = (data: unknown, context?: Parameters<ValidateFunction>[1]) => {
    const valid = validate(data, context);
    checked.errors = (validate.errors ?? null) as FastifySchemaValidationError[] | null;
    if (!valid || !hasNonFiniteNumber(data, 0)) return valid;
    checked.errors = [
      {
        instancePath: '',
        schemaPath: '#',
        keyword: 'type',
        params: { type: 'number' },
        message: 'must be a finite number (Infinity and values beyond ±1.8e308 are refused)',
      },
    ];
    return false;
  };
  // Fastify passes the parent (so that Ajv can coerce a root value) only to Ajv's own functions.
  checked.schemaEnv = validate.schemaEnv;
  return checked;
}

function hasNonFiniteNumber(value: unknown, depth: number): boolean {
  if (typeof value === 'number') return !Number.isFinite(value);
  if (typeof value !== 'object' || value === null || depth > 8) return false;
  for (const item of Object.values(value)) if (hasNonFiniteNumber(item, depth + 1)) return true;
  return false;
}

/** How many onRequest hooks run before the plugin's (0 when this Fastify does not say). */
function onRequestHooks(fastify: FastifyInstance): number {
  const kHooks = symbolOr(fastifySymbols.kHooks);
  if (kHooks === null) return 0;
  return (fastify as unknown as Record<symbol, { onRequest?: unknown[] } | undefined>)[kHooks]?.onRequest?.length ?? 0;
}

/** Points Fastify's `frameworkErrors` at the guard (see `fastifyOptionsSymbol`). */
function takeOverFrameworkErrors(fastify: FastifyInstance, guard: Guard, decide: FrameworkErrors): void {
  type Options = { frameworkErrors?: FrameworkErrors } | undefined;
  const serverOptions =
    fastifyOptionsSymbol === null ? undefined : (fastify as unknown as Record<symbol, Options>)[fastifyOptionsSymbol];
  const { logger } = guard.options;
  if (serverOptions === undefined || typeof serverOptions !== 'object') {
    logger.error(
      'this Fastify does not expose its options: URLs its router cannot take (bad escapes, over-long ' +
        'parameters) are answered by Fastify itself, unaudited',
      { service: guard.service },
    );
    return;
  }
  if (serverOptions.frameworkErrors !== undefined) {
    logger.warn('Fastify frameworkErrors replaced by the guard: such requests are decided by the pipeline', {
      service: guard.service,
    });
  }
  serverOptions.frameworkErrors = decide;
}

function describe(error: unknown, stack = false): string {
  return error instanceof Error ? (stack ? (error.stack ?? error.message) : error.message) : String(error);
}

// Not encapsulated: the hooks must cover every route of the instance, including those registered later.
(lockstepPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(lockstepPlugin as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'lockstep';

export const lockstep = lockstepPlugin;
export default lockstepPlugin;
