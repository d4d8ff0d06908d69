/**
 * `createSidecar`: an unmodified HTTP service joins Lockstep. The sidecar joins the control plane as
 * the service's workload (join token, SVID renewal, policy stream, registry with its routes — so the
 * scanner finds it), serves inbound mTLS through the guard's node:http adapter (the same pipeline as
 * an embedded guard: transport, Txn-Token, Cedar, input, audit shipped to the monitor), forwards what
 * the guard admitted to the upstream with the verified identity in `x-lockstep-*` headers, and
 * originates mTLS for the app's outbound calls on a loopback egress.
 *
 *   const sidecar = await createSidecar({ config: loadSidecarConfig('sidecar.yaml'), joinToken });
 *   // … on stop:
 *   await sidecar.close();
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createGuard, type Guard, type GuardLogger } from '@lockstep/guard';
import { lockstepHttp } from '@lockstep/guard/http';
import { joinAsWorkload, type AgentEvent, type WorkloadAgent } from '@lockstep/workload';
import type { SidecarConfig } from './config.ts';
import { startEgress } from './egress.ts';
import { createUpstream } from './upstream.ts';

export interface SidecarOptions {
  readonly config: SidecarConfig;
  /** `lockstep join-token create <service>`: one use, 15 minutes. */
  readonly joinToken: string;
  /** Default: the guard's (JSON lines on stderr). */
  readonly logger?: GuardLogger;
  /** Renewals, stream and heartbeat events of the workload agent. */
  readonly onEvent?: (event: AgentEvent) => void;
}

export interface Sidecar {
  /** `https://<host>:<port>` the sidecar serves. */
  readonly url: string;
  /** `http://127.0.0.1:<port>` or `unix:<path>` of the egress, or null without one. */
  readonly egressUrl: string | null;
  readonly agent: WorkloadAgent;
  readonly guard: Guard;
  /** Stops serving, leaves the registry, ships the last decisions. */
  close(): Promise<void>;
}

export async function createSidecar(options: SidecarOptions): Promise<Sidecar> {
  const { config } = options;
  const agent = await joinAsWorkload({
    url: config.controlPlane,
    trustDomain: config.trustDomain,
    joinToken: options.joinToken,
    service: config.service,
    ...(config.stateDir === undefined ? {} : { stateDir: config.stateDir }),
    ...(options.onEvent === undefined ? {} : { onEvent: options.onEvent }),
  });
  // What has started is stopped again, in reverse, when a later piece fails (a port in use).
  const started: (() => Promise<unknown>)[] = [() => agent.close()];
  const stop = async () => {
    for (const close of started.reverse()) await close().catch(() => {});
  };
  try {
    const { bodyBytes, headerBytes } = config.limits;
    const guard = await createGuard({
      ...agent.guardOptions(),
      limits: { bodyBytes, headerBytes },
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
    started.unshift(() => guard.close()); // closed last: it ships the last decisions
    agent.attach(guard);
    if ('origin' in config.upstream)
      guard.options.logger.warn(
        `upstream ${config.upstream.origin} is a loopback port: any local user can call it directly with forged ` +
          'x-lockstep-* headers, or listen on it while the service is down and receive verified Txn-Tokens. ' +
          'Prefer upstream: unix:/run/<service>/app.sock in a directory only the service and the sidecar can reach.',
        { service: config.service },
      );
    const upstream = createUpstream(config.upstream, config.limits, guard);
    started.push(() => upstream.close());
    const server = guard.createServer(
      // A target the upstream could read as another route than the one decided for matches no route (404).
      lockstepHttp(
        guard,
        config.routes,
        (request, response, { admission, body }) => upstream.forward(request, response, admission, body),
        { foreignServer: true },
      ),
    );
    await listen(server, config.listen.port, config.listen.host);
    started.push(() => closeServer(server));
    const { port } = server.address() as { port: number };
    const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
    let egressUrl: string | null = null;
    if (config.egress !== null) {
      const egress = await startEgress({
        agent,
        ...config.egress,
        limits: config.limits,
        logger: guard.options.logger,
      });
      started.push(() => closeServer(egress.server));
      egressUrl = egress.url;
    }
    return { url: `https://${host}:${port}`, egressUrl, agent, guard, close: stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

function listen(server: HttpsServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Stops accepting, lets answers in flight end, then cuts idle keep-alive connections. */
function closeServer(server: HttpServer | HttpsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
