/**
 * `lockstep sidecar --config <file>`: runs @lockstep/proxy's sidecar in front of an unmodified HTTP
 * service until SIGINT or SIGTERM. The join token comes from LOCKSTEP_JOIN_TOKEN, never from the
 * command line (where `ps` would show it).
 */
import { parseArgs } from 'node:util';
import { createSidecar, loadSidecarConfig } from '@lockstep/proxy';
import { OperatorError, UsageError } from './state.ts';

type Out = (line: string) => void;

export const SIDECAR_USAGE =
  'usage: LOCKSTEP_JOIN_TOKEN=$(lockstep join-token create <service>) lockstep sidecar --config <file>';

export async function sidecarCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { config: { type: 'string' } } });
  if (values.config === undefined) throw new UsageError(`--config <file> is required\n${SIDECAR_USAGE}`);
  const joinToken = process.env.LOCKSTEP_JOIN_TOKEN ?? '';
  if (joinToken === '') throw new UsageError(`LOCKSTEP_JOIN_TOKEN is not set\n${SIDECAR_USAGE}`);
  const config = loadSidecarConfig(values.config);
  const sidecar = await createSidecar({
    config,
    joinToken,
    onEvent: (event) => {
      if (event.kind === 'renewal-failed' || event.kind === 'heartbeat-failed')
        err(`lockstep sidecar: ${event.kind}: ${event.reason}`);
    },
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EADDRINUSE' && error.code !== 'EACCES') throw error;
    // The join token is spent by now: the fix needs a new one.
    const fix = `change listen.port, egress.port or egress.socket in ${values.config}, and create a new join token`;
    throw new OperatorError(`cannot listen (${error.code}: ${error.message}): ${fix}`);
  });
  const target = 'socketPath' in config.upstream ? `unix:${config.upstream.socketPath}` : config.upstream.origin;
  out(`sidecar ${config.service} listening on ${sidecar.url} (upstream ${target})`);
  if (sidecar.egressUrl !== null) {
    const targets = Object.keys(config.egress?.targets ?? {}).join(', ') || 'none';
    out(`sidecar ${config.service} egress on ${sidecar.egressUrl} (lockstep-target: ${targets})`);
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out(`sidecar ${config.service}: stopping`);
  await sidecar.close();
  return 0;
}
