/**
 * `lockstep authz-server --config <file>`: runs @lockstep/proxy's decision service (nginx auth_request,
 * Traefik forwardAuth, Envoy ext_authz over HTTP and gRPC, AuthZEN) for one protected service until
 * SIGINT or SIGTERM. The join token comes from LOCKSTEP_JOIN_TOKEN, never from the command line (where
 * `ps` would show it).
 */
import { parseArgs } from 'node:util';
import { createAuthzServer, loadAuthzServerConfig } from '@lockstep/proxy';
import { OperatorError, UsageError } from './state.ts';

type Out = (line: string) => void;

export const AUTHZ_SERVER_USAGE =
  'usage: LOCKSTEP_JOIN_TOKEN=$(lockstep join-token create <service>) lockstep authz-server --config <file>';

export async function authzServerCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { config: { type: 'string' } } });
  if (values.config === undefined) throw new UsageError(`--config <file> is required\n${AUTHZ_SERVER_USAGE}`);
  const joinToken = process.env.LOCKSTEP_JOIN_TOKEN ?? '';
  if (joinToken === '') throw new UsageError(`LOCKSTEP_JOIN_TOKEN is not set\n${AUTHZ_SERVER_USAGE}`);
  const config = loadAuthzServerConfig(values.config);
  const server = await createAuthzServer({
    ...config,
    joinToken,
    logger: {
      info() {},
      warn: (message, fields) => err(`lockstep authz-server: ${message} ${JSON.stringify(fields ?? {})}`),
      error: (message, fields) => err(`lockstep authz-server: ${message} ${JSON.stringify(fields ?? {})}`),
    },
  }).catch((error: NodeJS.ErrnoException) => {
    // grpc-js says "No address added out of total 1 resolved errors: [listen EADDRINUSE: …]".
    const listening = error.code === 'EADDRINUSE' || error.code === 'EACCES' || /^No address added/.test(error.message);
    if (!listening) throw error;
    // The join token is spent by now: the fix needs a new one.
    const fix = `change listen.port or grpc.port in ${values.config}, and create a new join token`;
    throw new OperatorError(
      `cannot listen (${error.code === undefined ? '' : `${error.code}: `}${error.message}): ${fix}`,
    );
  });
  out(`authz-server ${config.service} listening on ${server.url} (nginx, Traefik, Envoy HTTP, AuthZEN)`);
  if (server.grpcAddress !== null)
    out(`authz-server ${config.service} gRPC ext_authz on ${server.grpcAddress} (envoy.service.auth.v3.Authorization)`);
  out(`authz-server ${config.service} trusts the proxies ${config.trustedProxies.join(', ')}`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out(`authz-server ${config.service}: stopping`);
  await server.close();
  return 0;
}
