/**
 * shipping — the Python service (shipping.py, standard library only) and the Lockstep sidecar in front of
 * it (@lockstep/proxy's `createSidecar`, what `lockstep sidecar --config` runs), started as one unit by
 * the launcher like any shop service. The sidecar joins with the one-time token the launcher made, serves
 * mTLS on the shop's port for shipping and runs the guard's pipeline on every request; shipping.py listens
 * on a Unix socket in its data directory (0600 in a 0700 directory: no port, nothing on loopback reaches
 * it past the sidecar) and calls inventory through the sidecar's egress, another such socket (no other
 * local user can borrow shipping's identity through it).
 *
 * The pair lives and dies together: if shipping.py exits, this process exits too, and the supervisor
 * starts both again with a fresh join token; if this process is killed, shipping.py sees its standard
 * input close and stops. In perimeter-only mode (the drill's "before") there is no sidecar: shipping.py
 * serves plain HTTP on the shop's port and believes whoever calls, as the other services do then.
 *
 * Its decisions go to <data>/shipping/audit.jsonl, like the embedded guards', and to the monitor.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { createAuditFileSink } from '@lockstep/guard';
import { createSidecar, loadSidecarConfig, type Sidecar, type SidecarConfig } from '@lockstep/proxy';
import { requirePython } from './python-interpreter.ts';
import { log, onStop, ready, settings } from './runtime.ts';

const SHIPPING_PY = fileURLToPath(new URL('./shipping.py', import.meta.url));
const SIDECAR_CONFIG = fileURLToPath(new URL('./shipping.sidecar.yaml', import.meta.url));
/** Longest path a Unix socket may have (sun_path is 108 bytes on Linux, 104 on macOS, with the NUL). */
const MAX_SOCKET_PATH = 100;
const SOCKET_NAMES = { shipping: 'shipping.sock', egress: 'egress.sock' } as const;
const HEALTHY_WITHIN_MS = 15_000;

const config = settings();
const python = requirePython();
const logger = {
  info: (message: string, fields?: Record<string, unknown>) => log('info', message, fields),
  warn: (message: string, fields?: Record<string, unknown>) => log('warn', message, fields),
  error: (message: string, fields?: Record<string, unknown>) => log('error', message, fields),
};

let sidecar: Sidecar | null = null;
let child: ChildProcess | null = null;
let stopping = false;
/** A directory of its own for the sockets, made when the data directory's path is too long for them. */
let socketDir: string | null = null;
const audit =
  config.controlPlane === null
    ? null
    : createAuditFileSink(join(config.dataDir, 'audit.jsonl'), { service: 'shipping' });

/** Stops the sidecar first (answers in flight end), then shipping.py, then the audit file. */
async function stop(): Promise<void> {
  stopping = true;
  await sidecar?.close();
  await stopPython();
  await audit?.close();
  if (socketDir !== null) rmSync(socketDir, { recursive: true, force: true });
}

try {
  if (config.controlPlane === null) {
    // Perimeter-only: shipping.py on the shop's port, plain HTTP, no checks (the drill's "before").
    const listen = `127.0.0.1:${config.port}`;
    child = startPython(listen, config.urls.inventory);
    await healthy(`http://${listen}`, undefined, child);
    ready(`http://${listen}`);
  } else {
    const sockets = socketDirectory(config.dataDir);
    const socketPath = join(sockets, SOCKET_NAMES.shipping);
    // The checked-in file as `lockstep sidecar --config` reads it (validated, routes and body schemas
    // compiled); then what this start decides, from the launcher.
    const checked = loadSidecarConfig(SIDECAR_CONFIG);
    const sidecarConfig: SidecarConfig = Object.freeze({
      ...checked,
      controlPlane: config.controlPlane.url,
      trustDomain: config.controlPlane.trustDomain,
      listen: { host: checked.listen.host, port: config.port },
      upstream: { socketPath },
      egress: {
        listen: { socketPath: join(sockets, SOCKET_NAMES.egress) },
        targets: { inventory: config.urls.inventory },
      },
      stateDir: config.dataDir,
    });
    sidecar = await createSidecar({
      config: sidecarConfig,
      joinToken: config.controlPlane.joinToken,
      logger,
      onEvent: (event) => {
        if (event.kind === 'renewal-failed' || event.kind === 'heartbeat-failed')
          log('warn', `sidecar: ${event.kind}: ${event.reason}`);
      },
    });
    child = startPython(`unix:${socketPath}`, sidecar.egressUrl ?? '');
    await healthy('http://localhost', socketPath, child);
    log('info', `sidecar for shipping.py (Python ${python.version}) on ${sidecar.url}, upstream unix:${socketPath}`);
    ready(sidecar.url);
  }
} catch (error) {
  if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE')
    log(
      'error',
      `port ${config.port} on 127.0.0.1 is in use: stop what listens there, or choose other ports with ` +
        'LOCKSTEP_PORT_BASE (npm start uses six from there)',
    );
  else log('error', (error as Error).message);
  await stop();
  process.exit(1);
}
onStop(stop);

function startPython(listen: string, inventory: string): ChildProcess {
  // stdin stays open as a lifeline (see shipping.py); its log lines go where this process's go.
  // Its environment is this one's less the launcher's settings: the join token is the sidecar's alone.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('LOCKSTEP_') && !name.startsWith('SHOP_')),
  );
  const started = spawn(python.command, ['-u', '-B', SHIPPING_PY], {
    env: { ...env, SHIPPING_LISTEN: listen, SHIPPING_INVENTORY: inventory, SHIPPING_MODE: config.mode },
    stdio: ['pipe', 'inherit', 'inherit'],
  });
  started.once('exit', (code, signal) => {
    if (stopping) return;
    // The sidecar without its service answers only 502s: both go, and the supervisor starts both again.
    log('error', `shipping.py exited (${signal ?? `exit code ${String(code)}`}): stopping its sidecar too`);
    void stop().finally(() => process.exit(1));
  });
  return started;
}

async function stopPython(): Promise<void> {
  const running = child;
  if (running === null || running.exitCode !== null || running.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
  running.kill('SIGTERM');
  const timer = setTimeout(() => running.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Its data directory, unless that path is too long for a socket: then a private directory of its own. */
function socketDirectory(dataDir: string): string {
  const longest = Math.max(...Object.values(SOCKET_NAMES).map((name) => Buffer.byteLength(join(dataDir, name))));
  if (longest <= MAX_SOCKET_PATH) return dataDir;
  socketDir = mkdtempSync(join(tmpdir(), 'lockstep-shipping-'));
  log('warn', `${dataDir} is too long a path for Unix sockets: shipping's sockets are in ${socketDir} instead`);
  return socketDir;
}

/** Waits until shipping.py answers GET /health (on its socket, or its port); rejects if it exits first. */
async function healthy(origin: string, socketPath: string | undefined, started: ChildProcess): Promise<void> {
  const dispatcher = new Agent(socketPath === undefined ? {} : { connect: { socketPath } });
  const exited = new Promise<never>((_resolve, reject) =>
    started.once('exit', (code, signal) =>
      reject(
        new Error(`shipping.py exited while starting (${signal ?? `exit code ${String(code)}`}): see its lines above`),
      ),
    ),
  );
  exited.catch(() => {});
  const deadline = Date.now() + HEALTHY_WITHIN_MS;
  try {
    for (;;) {
      const answered = await Promise.race([
        request(`${origin}/health`, { dispatcher, signal: AbortSignal.timeout(1_000) }).then(
          async (response) => {
            await response.body.dump();
            return response.statusCode === 200;
          },
          () => false,
        ),
        exited,
      ]);
      if (answered) return;
      if (Date.now() > deadline)
        throw new Error(`shipping.py did not answer /health within ${HEALTHY_WITHIN_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await dispatcher.close();
  }
}
