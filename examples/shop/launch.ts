/**
 * Starts the whole reference system — the control plane and the five shop services, each its own
 * process — and stops it again. `npm start` (start.ts), the drill and the end-to-end test use it.
 *
 *   control plane   `lockstep control-plane` with its state in <dataDir> (SQLite, dev CA and keys
 *                   created on the first run, loudly), the shop's policies, the gateway registered
 *                   as an OpenID client that authenticates with its SVID
 *   services        each joins with a one-time token made for this start; logs go to <dataDir>/logs.
 *                   shipping is Python (services/shipping.py, `python3` or LOCKSTEP_PYTHON, 3.9+): the
 *                   process started is its Lockstep sidecar (services/shipping-sidecar.ts), which joins
 *                   with the token and runs shipping.py behind it on a Unix socket; the two live and die
 *                   together. A missing Python stops the start before anything runs, naming the fix.
 *   demo users      alice and bob (customers), ops (admin: the dashboard), passwords generated once, kept in
 *                   <dataDir>/demo-users.json (0600)
 *
 * Ports: gateway = portBase, control plane +1, orders +2, inventory +3, payments +4, shipping +5 (its
 * sidecar; shipping.py itself in perimeter-only mode). Behind the sidecar, shipping.py and the egress it
 * calls out through are Unix sockets in shipping's data directory: no ports.
 *
 * It is ready only when the system can serve: every port free, the state directory not in use by
 * another control plane, a valid policy in force, every service ready; otherwise it rejects with the
 * reason (the port, the pid, the policy file and line, the process's own last words) and stops what
 * it started. Then it supervises (supervise.ts): a process that dies is said so and restarted with
 * backoff — a service with a fresh one-time join token, since its identity lives in its memory. A
 * service that cannot rejoin because the control plane does not answer waits for it (retried, never
 * given up); a control plane given up on stops the whole shop (`onFailed`): nothing serves without it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkStateDirectoryFree, localState, main as lockstep, stateDirectory } from '@lockstep/cli';
import { controlPlaneAgent } from '@lockstep/workload';
import { workloadId } from '@lockstep/guard';
import { request } from 'undici';
import { requirePython } from './services/python-interpreter.ts';
import { supervise, terminate, WaitingFor, type Supervised } from './supervise.ts';

export const TRUST_DOMAIN = 'shop.test';
export const SHOP_POLICIES = fileURLToPath(new URL('./policies/', import.meta.url));
const CLI = fileURLToPath(new URL('../../packages/cli/bin/lockstep.js', import.meta.url));
// Started in this order: each after the services it calls.
const SERVICES = ['payments', 'inventory', 'shipping', 'orders', 'gateway'] as const;
/** The program each service runs; shipping's is its sidecar, which runs the Python service behind it. */
const ENTRY_POINTS: Readonly<Record<string, string>> = { shipping: 'shipping-sidecar.ts' };
const DEMO_CUSTOMERS = ['alice', 'bob'] as const;
/** A join token is made in milliseconds; a control plane that has not answered by then is not answering. */
const JOIN_TOKEN_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 3_000;
export type ShopService = (typeof SERVICES)[number];

export interface ShopOptions {
  /** Where the control plane and the services keep their state. Default: LOCKSTEP_HOME (or LOCKSTEP_DATA_DIR) or ./.lockstep */
  readonly dataDir?: string;
  /** Default: LOCKSTEP_PORT_BASE or 8440. */
  readonly portBase?: number;
  readonly mode?: 'lockstep' | 'perimeter-only';
  readonly policyDir?: string;
  /** Progress lines (default: none). */
  readonly onProgress?: (line: string) => void;
  /**
   * TLS at the edge: the gateway's certificate and key (PEM files) for a name browsers reach it by
   * (`localhost`). Default: GATEWAY_TLS_CERT and GATEWAY_TLS_KEY when both are set; otherwise the
   * gateway serves plain HTTP on 127.0.0.1 only.
   */
  readonly gatewayTls?: { readonly certFile: string; readonly keyFile: string };
  /** Loud lines from the control plane (dev material, refused policies…). */
  readonly onWarning?: (line: string) => void;
  /** A process that died, its restart, or giving up on it (default: stderr; never silent). */
  readonly onSupervision?: (line: string) => void;
  /**
   * The shop stopped serving after it was ready — the control plane was given up on — and every process
   * is stopped: `npm start` exits 1 (default: stderr).
   */
  readonly onFailed?: (reason: string) => void;
}

export interface DemoUser {
  readonly password: string;
  readonly roles: readonly string[];
}

export interface RunningShop {
  readonly mode: 'lockstep' | 'perimeter-only';
  readonly dataDir: string;
  readonly urls: Readonly<Record<ShopService | 'controlPlane', string>>;
  readonly users: Readonly<Record<string, DemoUser>>;
  readonly usersFile: string;
  /** Where each service's audit log is (lockstep mode). */
  auditFile(service: ShopService): string;
  /** Stops one service (a drill's "downstream is down"), or the control plane, on purpose: it is not restarted. */
  kill(what: ShopService | 'controlPlane'): Promise<void>;
  /** Runs a `lockstep` admin command against this shop's control plane; returns its output lines (throws unless it exits 0). */
  admin(...argv: string[]): Promise<string[]>;
  /** The same, returning the exit code (e.g. `policy status` exits 3 on drift). */
  adminExit(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }>;
  /** Sends a signal to a service process or the control plane (SIGSTOP: the drill makes one miss an update, a test makes it hang). */
  signal(service: ShopService | 'controlPlane', signal: NodeJS.Signals): void;
  stop(): Promise<void>;
}

export async function startShop(options: ShopOptions = {}): Promise<RunningShop> {
  const dataDir = resolve(options.dataDir ?? stateDirectory());
  const portBase = options.portBase ?? Number(process.env.LOCKSTEP_PORT_BASE ?? 8440);
  if (!Number.isInteger(portBase) || portBase < 1024 || portBase > 65_530)
    throw new Error(
      `LOCKSTEP_PORT_BASE must be a port from 1024 to 65530 (six ports from there are used); got ${String(portBase)}`,
    );
  const mode = options.mode ?? 'lockstep';
  const progress = options.onProgress ?? (() => {});
  const supervision = options.onSupervision ?? ((line: string) => process.stderr.write(`lockstep shop: ${line}\n`));
  const failed = options.onFailed ?? ((reason: string) => process.stderr.write(`lockstep shop: ${reason}\n`));
  const ports = {
    gateway: portBase,
    controlPlane: portBase + 1,
    orders: portBase + 2,
    inventory: portBase + 3,
    payments: portBase + 4,
    shipping: portBase + 5,
  };
  const scheme = mode === 'lockstep' ? 'https' : 'http';
  const envTls =
    process.env.GATEWAY_TLS_CERT !== undefined && process.env.GATEWAY_TLS_KEY !== undefined
      ? { certFile: process.env.GATEWAY_TLS_CERT, keyFile: process.env.GATEWAY_TLS_KEY }
      : undefined;
  const gatewayTls = options.gatewayTls ?? envTls;
  const urls = {
    gateway: `${gatewayTls === undefined ? 'http' : 'https'}://localhost:${ports.gateway}`,
    controlPlane: `https://127.0.0.1:${ports.controlPlane}`,
    orders: `${scheme}://127.0.0.1:${ports.orders}`,
    inventory: `${scheme}://127.0.0.1:${ports.inventory}`,
    payments: `${scheme}://127.0.0.1:${ports.payments}`,
    shipping: `${scheme}://127.0.0.1:${ports.shipping}`,
  };
  // Nothing is written (idp.json, logs) into a directory another control plane runs on.
  checkStateDirectoryFree(localState(dataDir));
  await refuseTakenPorts(ports, portBase);
  requirePython();
  mkdirSync(join(dataDir, 'logs'), { recursive: true, mode: 0o700 });
  const logFile = (name: ShopService | 'controlPlane') =>
    join(dataDir, 'logs', `${name === 'controlPlane' ? 'control-plane' : name}.log`);
  // The one name every command reads the state directory from (the other one, if set, would disagree).
  const stateEnv = { LOCKSTEP_HOME: dataDir, LOCKSTEP_DATA_DIR: dataDir };
  const running = new Map<ShopService | 'controlPlane', Supervised>();

  const stop = async () => {
    // Services first (running requests finish), then the control plane.
    await Promise.all(SERVICES.map((service) => running.get(service)?.stop()));
    await running.get('controlPlane')?.stop();
  };

  const adminExit = async (...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const previous = { LOCKSTEP_HOME: process.env.LOCKSTEP_HOME, LOCKSTEP_DATA_DIR: process.env.LOCKSTEP_DATA_DIR };
    Object.assign(process.env, stateEnv);
    try {
      return {
        code: await lockstep(
          argv,
          (line) => out.push(line),
          (line) => err.push(line),
        ),
        out,
        err,
      };
    } finally {
      for (const [name, value] of Object.entries(previous)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  };
  const admin = async (...argv: string[]) => {
    const { code, out, err } = await adminExit(...argv);
    if (code !== 0) throw new Error(`lockstep ${argv.join(' ')} failed (${code}): ${err.join(' ')}`);
    return out;
  };

  // A control plane that hangs (SIGSTOP) must not hang a restart with it: the supervisor would wait for ever.
  const joinTokenFor = async (service: ShopService): Promise<string> => {
    const made = admin('join-token', 'create', service, '--ttl', '300');
    // Abandoned at the deadline, its late failure is nobody's to report.
    made.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      const problem = `no join token: the control plane did not answer within ${JOIN_TOKEN_TIMEOUT_MS / 1000} s`;
      timer = setTimeout(() => reject(new Error(problem)), JOIN_TOKEN_TIMEOUT_MS);
    });
    try {
      return (await Promise.race([made, late]))[0] ?? '';
    } finally {
      clearTimeout(timer);
    }
  };

  // Whether a service's failed start is the control plane's doing: it does not answer its public bundle.
  const controlPlaneAnswers = async (): Promise<boolean> => {
    const agent = controlPlaneAgent(TRUST_DOMAIN, { ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
      const answer = await request(`${urls.controlPlane}/v1/bundle`, { dispatcher: agent, signal });
      await answer.body.dump();
      return answer.statusCode === 200;
    } catch {
      return false;
    } finally {
      void agent.destroy();
    }
  };

  // Nothing serves without the control plane (no sign-in, no Txn-Token, no SVID renewal): stop the rest, loudly.
  const controlPlaneGivenUp = () => {
    const reason =
      'STOPPED: the control plane could not be kept running ' +
      `(its log says why: ${logFile('controlPlane')}), and the shop cannot serve without it, so every service ` +
      'was stopped. Fix what the log says and run npm start again';
    stop().then(
      () => failed(reason),
      (error: unknown) => failed(`${reason} (stopping failed: ${(error as Error).message})`),
    );
  };

  try {
    // The gateway is an OpenID client of the control plane's provider: registered by its SPIFFE ID.
    writeFileSync(
      join(dataDir, 'idp.json'),
      `${JSON.stringify(
        {
          resource: { indicator: 'https://shop.test/api', scopes: ['orders:read', 'orders:create'] },
          clients: [
            {
              client_id: 'gateway',
              client_name: 'Lockstep Shop',
              token_endpoint_auth_method: 'tls_client_auth',
              tls_client_auth_san_uri: workloadId(TRUST_DOMAIN, 'gateway'),
              redirect_uris: [`${urls.gateway}/callback`],
            },
          ],
        },
        null,
        2,
      )}\n`,
      { mode: 0o600 },
    );

    const policyDir = options.policyDir ?? SHOP_POLICIES;
    progress(`starting the control plane on ${urls.controlPlane} (state in ${dataDir})`);
    running.set(
      'controlPlane',
      await supervise({
        name: 'the control plane',
        logFile: logFile('controlPlane'),
        say: supervision,
        onGiveUp: controlPlaneGivenUp,
        start: () =>
          startProcess(
            fork(
              CLI,
              [
                'control-plane',
                '--trust-domain',
                TRUST_DOMAIN,
                '--port',
                String(ports.controlPlane),
                '--policy-dir',
                policyDir,
              ],
              { env: { ...process.env, ...stateEnv }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
            ),
            'the control plane',
            logFile('controlPlane'),
            waitForLine('listening on', options.onWarning),
          ),
      }),
    );
    await requireValidPolicy(adminExit, policyDir);

    const usersFile = join(dataDir, 'demo-users.json');
    const users = await demoUsers(usersFile, admin, progress);

    for (const service of SERVICES) {
      const joins = mode === 'lockstep' || service === 'gateway';
      const how = joins ? 'joined with a one-time token' : 'perimeter-only: no identity, no checks';
      // shipping is Python: its sidecar joins for it (there is none in perimeter-only mode).
      progress(`starting ${service} (${service === 'shipping' && joins ? `Python behind its sidecar, ${how}` : how})`);
      const startService = async () => {
        const joinToken = joins ? await joinTokenFor(service) : '';
        return startProcess(
          fork(fileURLToPath(new URL(`./services/${ENTRY_POINTS[service] ?? `${service}.ts`}`, import.meta.url)), [], {
            env: {
              ...process.env,
              SHOP_SERVICE: service,
              SHOP_MODE: mode,
              SHOP_PORT: String(ports[service]),
              SHOP_URLS: JSON.stringify(urls),
              SHOP_DATA_DIR: join(dataDir, 'shop'),
              LOCKSTEP_CP_URL: urls.controlPlane,
              LOCKSTEP_TRUST_DOMAIN: TRUST_DOMAIN,
              ...(joins ? { LOCKSTEP_JOIN_TOKEN: joinToken } : {}),
              // One order each for the demo customers: something to look at, and what the scan's object-level check reads (scan.yaml).
              ...(service === 'orders' ? { SHOP_DEMO_ORDERS: DEMO_CUSTOMERS.join(',') } : {}),
              ...(service === 'gateway' && gatewayTls !== undefined
                ? { GATEWAY_TLS_CERT: gatewayTls.certFile, GATEWAY_TLS_KEY: gatewayTls.keyFile }
                : {}),
            },
            stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
          }),
          service,
          logFile(service),
          waitForReady,
        );
      };
      running.set(
        service,
        await supervise({
          name: service,
          logFile: logFile(service),
          say: supervision,
          // Every start joins afresh: a join token is good once, and a restarted process has no SVID. A start that
          // failed while the control plane does not answer (no join token, or no SVID for it) waits for it.
          start: async () => {
            try {
              return await startService();
            } catch (error) {
              if (!joins || (await controlPlaneAnswers())) throw error;
              const problem = `the control plane at ${urls.controlPlane} does not answer (${(error as Error).message})`;
              throw new WaitingFor(problem, { cause: error });
            }
          },
        }),
      );
    }

    return {
      mode,
      dataDir,
      urls,
      users,
      usersFile,
      auditFile: (service) => join(dataDir, 'shop', service, 'audit.jsonl'),
      async kill(what) {
        await running.get(what)?.stop();
        running.delete(what);
      },
      admin,
      adminExit,
      signal(service, signal) {
        running.get(service)?.child?.kill(signal);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Every port the shop listens on must be free: one taken is named, with how to move them all. */
async function refuseTakenPorts(
  ports: Readonly<Record<ShopService | 'controlPlane', number>>,
  portBase: number,
): Promise<void> {
  const taken: string[] = [];
  for (const [name, port] of Object.entries(ports)) {
    if (!(await isFree(port))) taken.push(`${port} (${name === 'controlPlane' ? 'control plane' : name})`);
  }
  if (taken.length === 0) return;
  throw new Error(
    `port${taken.length === 1 ? '' : 's'} ${taken.join(', ')} on 127.0.0.1 ${taken.length === 1 ? 'is' : 'are'} in use: ` +
      `stop what listens there, or choose other ports with LOCKSTEP_PORT_BASE (the shop uses six from there; now ${portBase})`,
  );
}

/**
 * Ready means able to serve: a policy in force. Without one, every guard answers 503 and the shop
 * shows an empty page; so it refuses to start, with the policy error's file and line.
 */
async function requireValidPolicy(
  adminExit: (...argv: string[]) => Promise<{ code: number; out: string[]; err: string[] }>,
  policyDir: string,
): Promise<void> {
  const status = await adminExit('policy', 'status');
  // 0: in force; 3: in force, with guards of an earlier run still registered at another version.
  if (status.code === 0 || status.code === 3) return;
  if (status.code !== 1) throw new Error(`lockstep policy status failed (${status.code}): ${status.err.join(' ')}`);
  const refusal = status.out
    .find((line) => line.startsWith('latest change REFUSED'))
    ?.replace(/^latest change REFUSED at \S+: /, '');
  // The first problem, with its file and line; the validator lists them all.
  const [first, ...more] = (refusal ?? `no policy set in ${policyDir}`).split('\n');
  throw new Error(
    `no valid policy is in force, so the shop cannot serve: ${first}` +
      `${more.length === 0 ? '' : ` (and ${more.length} more)`}. Fix it (\`lockstep policy validate ${policyDir}\` lists every problem) and start again`,
  );
}

async function demoUsers(
  file: string,
  admin: (...argv: string[]) => Promise<string[]>,
  progress: (line: string) => void,
): Promise<Record<string, DemoUser>> {
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as Record<string, DemoUser>;
    } catch (error) {
      throw new Error(
        `${file} is unreadable (${(error as Error).message}): it holds the demo users' generated passwords. ` +
          'Restore it, or start with a new state directory (LOCKSTEP_HOME): the users exist already, their passwords are not shown again',
      );
    }
  }
  const users: Record<string, DemoUser> = {};
  for (const [name, role] of [
    ['alice', 'customer'],
    ['bob', 'customer'],
    ['ops', 'admin'],
  ] as const) {
    const [line = ''] = await admin('user', 'add', name, '--role', role, '--tenant', 'demo');
    const password = /password \(shown once\): (\S+)$/.exec(line)?.[1];
    if (password === undefined) throw new Error(`could not read the generated password of ${name}: ${line}`);
    users[name] = { password, roles: [role] };
  }
  writeFileSync(file, `${JSON.stringify(users, null, 2)}\n`, { mode: 0o600 });
  progress(
    `created the demo users alice and bob (customers) and ops (admin, for the dashboard); their generated passwords are in ${file}`,
  );
  return users;
}

type Readiness = (child: ChildProcess, name: string, file: string) => Promise<void>;

/** Logs `child` to `file` and waits until it is ready; one that is not is stopped, and the error says why. */
async function startProcess(child: ChildProcess, name: string, file: string, ready: Readiness): Promise<ChildProcess> {
  const log = createWriteStream(file, { flags: 'a', mode: 0o600 });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('exit', () => log.end());
  try {
    await ready(child, name, file);
    return child;
  } catch (error) {
    await terminate(child);
    throw error;
  }
}

/** Ready when `marker` appears in its output (the control plane); loud lines go to `onWarning` meanwhile. */
function waitForLine(marker: string, onWarning?: (line: string) => void): Readiness {
  return (child, name, file) =>
    new Promise((resolvePromise, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s; see ${file}`)), 30_000);
      const read = (chunk: Buffer) => {
        const text = chunk.toString();
        seen += text;
        for (const line of text.split('\n'))
          if (line.includes('WARNING') || line.includes('REFUSED')) onWarning?.(line.replace(/^lockstep: /, ''));
        if (seen.includes(marker)) {
          clearTimeout(timer);
          child.stdout?.off('data', read);
          child.stderr?.off('data', read);
          resolvePromise();
        }
      };
      child.stdout?.on('data', read);
      child.stderr?.on('data', read);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new Error(
            `${name} could not start (${signal ?? `exit code ${String(code)}`}): ${lastWords(seen)} (its log: ${file})`,
          ),
        );
      });
    });
}

/** The reason a process gave as it exited: its last error line (not a warning, not a stack frame). */
function lastWords(output: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const error = lines.findLast((line) => line.startsWith('lockstep: ') && !line.startsWith('lockstep: WARNING'));
  return (error ?? lines.slice(-3).join(' | ')).replace(/^lockstep: /, '');
}

/** Ready when it says so over IPC (a shop service, runtime.ts). */
const waitForReady: Readiness = (child, name, file) =>
  new Promise((resolvePromise, reject) => {
    let seen = '';
    const collect = (chunk: Buffer) => {
      seen = (seen + chunk.toString()).slice(-4_096);
    };
    child.stderr?.on('data', collect);
    const timer = setTimeout(() => reject(new Error(`${name} did not become ready within 30 s; see ${file}`)), 30_000);
    child.on('message', (message: { ready?: boolean }) => {
      if (message.ready === true) {
        clearTimeout(timer);
        child.stderr?.off('data', collect);
        resolvePromise();
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `${name} exited (${signal ?? `exit code ${String(code)}`}) while starting: ${serviceLastWords(seen)} (its log: ${file})`,
        ),
      );
    });
  });

/** A service logs JSON lines: its last error's message, else its last line. */
function serviceLastWords(output: string): string {
  const lines = output
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  for (const line of lines.toReversed()) {
    try {
      const entry = JSON.parse(line) as { level?: unknown; message?: unknown };
      if (entry.level === 'error' && typeof entry.message === 'string') return entry.message;
    } catch {
      // Not a log entry (an uncaught error's text): looked at below.
    }
  }
  return lines.at(-1) ?? 'no output';
}

/** Six consecutive free loopback ports (as many as the shop uses), for tests and parallel runs. */
export async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const free = await Promise.all([0, 1, 2, 3, 4, 5].map((offset) => isFree(base + offset)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no six consecutive free ports found');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => resolvePromise(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePromise(true)));
  });
}
