/**
 * One server of bench/mesh.ts in a process of its own, so that the bench can read each one's CPU and
 * memory from /proc: the bench forks it, sends { type: 'start', role, … }, gets { type: 'listening',
 * url } once it serves (and, for a guard, once it holds its policy), and on { type: 'close' } it
 * closes, answers { type: 'closed' } and exits. It also exits when the bench goes away (IPC closes).
 *
 *   upstream  node:http on 127.0.0.1, plain HTTP: the service every hop is measured against
 *   guard     the same handler in the embedded guard (node:http + lockstepHttp), joined as `orders`
 *   sidecar   @lockstep/proxy createSidecar, joined as `orders`, in front of the upstream
 *   authz     the decision service (createAuthzServer), joined as `orders`, trusting the `edge` proxy
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Guard, GuardLogger } from '@lockstep/guard';
import { ROUTES, SERVICE, type MeshServerStart } from './mesh-protocol.ts';

const POLICY_WAIT_MS = 15_000;

/** Warnings and errors only: a guard that complains during a benchmark should be seen. */
const logger: GuardLogger = {
  info() {},
  warn: (message, fields) => console.error(`[mesh server warn] ${message}`, fields ?? ''),
  error: (message, fields) => console.error(`[mesh server error] ${message}`, fields ?? ''),
};

/** The service's one answer, the same behind every hop: a tiny JSON order. */
function answerOrder(response: ServerResponse, id: string): void {
  const body = JSON.stringify({ ok: true, id, item: 'book', quantity: 1 });
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

function plainUpstream(request: IncomingMessage, response: ServerResponse): void {
  const url = request.url ?? '/';
  if (request.method !== 'GET' || !url.startsWith('/orders/')) {
    response.writeHead(404).end();
    return;
  }
  answerOrder(response, url.slice('/orders/'.length));
}

async function untilPolicy(guard: Guard): Promise<void> {
  const started = Date.now();
  while (guard.policyVersion === null) {
    if (Date.now() - started > POLICY_WAIT_MS)
      throw new Error(`no policy bundle for ${SERVICE} within ${POLICY_WAIT_MS / 1000} s: is the policy stream up?`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function listening(server: { listen(port: number, host: string, done: () => void): unknown }): Promise<void> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
}

/**
 * Each role imports only what it runs (dynamic imports below): the bare upstream is a plain node:http
 * process, so that its memory is the baseline the others are read against.
 */
interface Started {
  readonly url: string;
  /** The decision service's gRPC ext_authz `host:port`, when it serves one. */
  readonly grpcAddress?: string | null;
  close(): Promise<void>;
}

async function start(command: MeshServerStart): Promise<Started> {
  switch (command.role) {
    case 'upstream': {
      // Long keep-alive: a proxy's pooled connection must not be cut under it between two requests.
      const server = createServer({ keepAliveTimeout: 65_000 }, plainUpstream);
      await listening(server);
      return {
        url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
        close: () =>
          new Promise((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      };
    }
    case 'guard': {
      const [{ createGuard }, { lockstepHttp }, { joinAsWorkload }] = await Promise.all([
        import('@lockstep/guard'),
        import('@lockstep/guard/http'),
        import('@lockstep/workload'),
      ]);
      const agent = await joinAsWorkload({
        url: command.controlPlane,
        trustDomain: command.trustDomain,
        joinToken: command.joinToken,
        service: SERVICE,
        stateDir: command.stateDir,
      });
      const guard = await createGuard({ ...agent.guardOptions(), logger });
      agent.attach(guard);
      const server = guard.createServer(
        lockstepHttp(guard, ROUTES, (_request, response, { params }) => answerOrder(response, params.id ?? '')),
      );
      await untilPolicy(guard);
      await listening(server);
      return {
        url: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
        async close() {
          server.closeAllConnections();
          await new Promise((resolve) => server.close(resolve));
          await agent.close();
          await guard.close();
        },
      };
    }
    case 'sidecar': {
      const { createSidecar, parseSidecarConfig } = await import('@lockstep/proxy');
      const sidecar = await createSidecar({
        config: parseSidecarConfig({
          service: SERVICE,
          controlPlane: command.controlPlane,
          trustDomain: command.trustDomain,
          listen: { host: '127.0.0.1', port: 0 },
          upstream: command.upstream,
          routes: ROUTES,
          stateDir: command.stateDir,
        }),
        joinToken: command.joinToken,
        logger,
      });
      await untilPolicy(sidecar.guard);
      return { url: sidecar.url, close: () => sidecar.close() };
    }
    case 'authz': {
      const { createAuthzServer } = await import('@lockstep/proxy');
      const authz = await createAuthzServer({
        service: SERVICE,
        trustDomain: command.trustDomain,
        controlPlane: command.controlPlane,
        joinToken: command.joinToken,
        routes: ROUTES,
        trustedProxies: command.trustedProxies,
        // Envoy's gRPC ext_authz beside the HTTP endpoints, on a port of its own.
        grpc: { host: '127.0.0.1', port: 0 },
        stateDir: command.stateDir,
        logger,
      });
      await untilPolicy(authz.guard);
      return { url: authz.url, grpcAddress: authz.grpcAddress ?? null, close: () => authz.close() };
    }
  }
}

if (typeof process.send !== 'function') {
  console.error('bench/lib/mesh-server.ts is a server of bench/mesh.ts; run `npm run bench:mesh` instead.');
  process.exit(2);
}

const reply = (message: Record<string, unknown>, then: () => void = () => {}) => process.send?.(message, () => then());
let running: Started | null = null;
// Gone with the bench, whatever state it left us in.
process.on('disconnect', () => process.exit());

process.on('message', (command: MeshServerStart | { type: 'close' }) => {
  if (command.type === 'start') {
    start(command).then(
      (server) => {
        running = server;
        reply({ type: 'listening', url: server.url, grpcAddress: server.grpcAddress ?? null });
      },
      (error: Error) => {
        process.exitCode = 1;
        reply({ type: 'failed', message: error.stack ?? error.message }, () => process.disconnect());
      },
    );
  } else {
    const closing = running?.close() ?? Promise.resolve();
    closing.then(
      () => reply({ type: 'closed' }, () => process.disconnect()),
      (error: Error) => {
        process.exitCode = 1;
        reply({ type: 'failed', message: error.stack ?? error.message }, () => process.disconnect());
      },
    );
  }
});
