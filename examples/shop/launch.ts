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
 * sidecar; shipping.py itself in perimeter-only mode).
 *
 * Replicas (`replicas` > 1, LOCKSTEP_REPLICAS; PostgreSQL required, LOCKSTEP_POSTGRES_URL): control plane
 * i listens on +6+i (`--replica r<i>`), all sharing one database and, through a key-encryption key
 * (LOCKSTEP_KEK_FILE or LOCKSTEP_KEK, else a development one created in <dataDir>/kek), one CA and one set
 * of keys. The services get neither the KEK nor the database's URL (serviceEnvironment). +1
 * is then a TCP passthrough to the first replica that answers (cp-front.ts): the identity provider's one
 * issuer and the dashboard. Each service is given every replica's URL, rotated by its index, and fails
 * over itself. Behind the sidecar, shipping.py and the egress it
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
import { chmodSync, createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkStateDirectoryFree, localState, main as lockstep, stateDirectory } from '@lockstep/cli';
import { createKekText } from '@lockstep/control-plane';
import { controlPlaneAgent } from '@lockstep/workload';
import { workloadId } from '@lockstep/guard';
import { request } from 'undici';
import { requirePython } from './services/python-interpreter.ts';
import { startControlPlaneFront, type ControlPlaneFront } from './cp-front.ts';
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
/** The control plane (one), or one replica of several: `controlPlane:0`, `controlPlane:1`… */
export type ControlPlaneProcess = 'controlPlane' | `controlPlane:${number}`;
const MAX_REPLICAS = 9;

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
  /** Control-plane replicas (default LOCKSTEP_REPLICAS or 1); more than one needs `postgres`. */
  readonly replicas?: number;
  /** The control plane's store: a PostgreSQL URL (default LOCKSTEP_POSTGRES_URL); else SQLite in dataDir. */
  readonly postgres?: string;
  /** Workloads' SVID lifetime in seconds (`--svid-lifetime`; default the control plane's, 1 h). */
  readonly svidLifetimeSeconds?: number;
  /**
   * Where replica i runs (the HA drill puts each in a network namespace): the address it listens on
   * (default 127.0.0.1) and how its process is started (default: forked here, with an IPC channel).
   */
  readonly replicaPlacement?: (index: number) => ReplicaPlacement;
}

export interface ReplicaPlacement {
  readonly host: string;
  /** Starts `node <cli> ...args` with `env`; the child must have stdout/stderr pipes. */
  readonly start?: (cli: string, args: readonly string[], env: NodeJS.ProcessEnv) => ChildProcess;
}

export interface DemoUser {
  readonly password: string;
  readonly roles: readonly string[];
}

export interface RunningShop {
  readonly mode: 'lockstep' | 'perimeter-only';
  readonly dataDir: string;
  readonly urls: Readonly<Record<ShopService | 'controlPlane', string>>;
  /** Every control-plane replica's URL (one entry with a single control plane: urls.controlPlane). */
  readonly replicas: readonly string[];
  readonly users: Readonly<Record<string, DemoUser>>;
  readonly usersFile: string;
  /** Where each service's audit log is (lockstep mode). */
  auditFile(service: ShopService): string;
  /**
   * Stops one service (a drill's "downstream is down"), the control plane or one replica, on purpose: it
   * is not restarted (`signal: 'SIGKILL'` kills it without a clean stop, as a crash would).
   */
  kill(what: ShopService | ControlPlaneProcess, options?: { signal?: NodeJS.Signals }): Promise<void>;
  /** Starts again what `kill` stopped (a replica: it rejoins the others). */
  restart(what: ControlPlaneProcess): Promise<void>;
  /** Runs a `lockstep` admin command against this shop's control plane; returns its output lines (throws unless it exits 0). */
  admin(...argv: string[]): Promise<string[]>;
  /** The same, returning the exit code (e.g. `policy status` exits 3 on drift). */
  adminExit(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }>;
  /**
   * The same, asked of these control planes only (`urls`, comma-separated: the command's LOCKSTEP_CP_URLS),
   * whatever other admin commands run meanwhile ask.
   */
  adminVia(urls: string, ...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }>;
  /** Sends a signal to a service process or the control plane (SIGSTOP: the drill makes one miss an update, a test makes it hang). */
  signal(service: ShopService | ControlPlaneProcess, signal: NodeJS.Signals): void;
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
  const replicaCount = options.replicas ?? Number(process.env.LOCKSTEP_REPLICAS ?? 1);
  if (!Number.isInteger(replicaCount) || replicaCount < 1 || replicaCount > MAX_REPLICAS)
    throw new Error(
      `LOCKSTEP_REPLICAS is how many control planes run, 1 to ${MAX_REPLICAS}; got ${JSON.stringify(String(replicaCount))}`,
    );
  const postgres = options.postgres ?? (process.env.LOCKSTEP_POSTGRES_URL || undefined);
  if (replicaCount > 1 && postgres === undefined)
    throw new Error(
      `LOCKSTEP_REPLICAS=${replicaCount} needs PostgreSQL (SQLite is single-replica): set LOCKSTEP_POSTGRES_URL=postgres://user@host:5432/database`,
    );
  const replicated = replicaCount > 1;
  const placements = Array.from(
    { length: replicated ? replicaCount : 0 },
    (_, index): ReplicaPlacement => options.replicaPlacement?.(index) ?? { host: '127.0.0.1' },
  );
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
  const replicaPorts = placements.map((_, index) => portBase + 6 + index);
  const urls = {
    gateway: `${gatewayTls === undefined ? 'http' : 'https'}://localhost:${ports.gateway}`,
    controlPlane: `https://127.0.0.1:${ports.controlPlane}`,
    orders: `${scheme}://127.0.0.1:${ports.orders}`,
    inventory: `${scheme}://127.0.0.1:${ports.inventory}`,
    payments: `${scheme}://127.0.0.1:${ports.payments}`,
    shipping: `${scheme}://127.0.0.1:${ports.shipping}`,
  };
  const replicaUrls = replicated
    ? placements.map((placement, index) => `https://${placement.host}:${replicaPorts[index]}`)
    : [urls.controlPlane];
  // Nothing is written (idp.json, logs) into a directory another control plane runs on.
  checkStateDirectoryFree(localState(dataDir));
  await refuseTakenPorts(
    {
      ...ports,
      ...Object.fromEntries(
        placements.flatMap((placement, index) =>
          placement.host === '127.0.0.1' ? [[`controlPlane:${index}`, replicaPorts[index] as number]] : [],
        ),
      ),
    },
    portBase,
  );
  requirePython();
  mkdirSync(join(dataDir, 'logs'), { recursive: true, mode: 0o700 });
  const logFile = (name: ShopService | ControlPlaneProcess) =>
    join(
      dataDir,
      'logs',
      `${name.startsWith('controlPlane') ? name.replace('controlPlane', 'control-plane').replace(':', '-r') : name}.log`,
    );
  // The one name every command reads the state directory from (the other one, if set, would disagree).
  const stateEnv = { LOCKSTEP_HOME: dataDir, LOCKSTEP_DATA_DIR: dataDir };
  // Replicas share their keys through the database, sealed under one key-encryption key.
  // A development KEK only for replicas: one control plane on PostgreSQL keeps its keys in files unless given one.
  const controlPlaneEnv = { ...stateEnv, ...controlPlaneKek(process.env, postgres, dataDir, progress, replicated) };
  const running = new Map<ShopService | ControlPlaneProcess, Supervised>();
  const controlPlanes: ControlPlaneProcess[] = replicated
    ? placements.map((_, index): ControlPlaneProcess => `controlPlane:${index}`)
    : ['controlPlane'];
  const starters = new Map<ControlPlaneProcess, () => Promise<Supervised>>();
  let front: ControlPlaneFront | null = null;

  const stop = async () => {
    // Services first (running requests finish), then the control plane.
    await Promise.all(SERVICES.map((service) => running.get(service)?.stop()));
    await Promise.all(controlPlanes.map((name) => running.get(name)?.stop()));
    await front?.close();
  };

  // The admin commands run in this process and read the state directory from its environment: set while any
  // runs (the same for each), restored when the last one ends.
  let adminsRunning = 0;
  let outsideAdmin: Record<string, string | undefined> = {};
  /** `startEnv`: read as the command starts (the admin commands read LOCKSTEP_CP_URLS before their first await). */
  const runAdmin = async (startEnv: Readonly<Record<string, string>>, argv: readonly string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    if (adminsRunning === 0)
      outsideAdmin = { LOCKSTEP_HOME: process.env.LOCKSTEP_HOME, LOCKSTEP_DATA_DIR: process.env.LOCKSTEP_DATA_DIR };
    adminsRunning += 1;
    Object.assign(process.env, stateEnv);
    try {
      // Only while it starts: commands running at the same time do not see it.
      const before = Object.fromEntries(Object.keys(startEnv).map((name) => [name, process.env[name]]));
      Object.assign(process.env, startEnv);
      let running: Promise<number>;
      try {
        running = lockstep(
          argv,
          (line) => out.push(line),
          (line) => err.push(line),
        );
      } finally {
        restoreEnv(before);
      }
      return { code: await running, out, err };
    } finally {
      adminsRunning -= 1;
      if (adminsRunning === 0) restoreEnv(outsideAdmin);
    }
  };
  const adminExit = (...argv: string[]) => runAdmin({}, argv);
  const adminVia = (controlPlaneUrls: string, ...argv: string[]) =>
    runAdmin({ LOCKSTEP_CP_URLS: controlPlaneUrls }, argv);
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

  // Whether a service's failed start is the control plane's doing: no replica answers its public bundle.
  const controlPlaneAnswers = async (): Promise<boolean> => {
    const agent = controlPlaneAgent(TRUST_DOMAIN, { ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      for (const url of replicaUrls) {
        try {
          const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
          const answer = await request(`${url}/v1/bundle`, { dispatcher: agent, signal });
          await answer.body.dump();
          if (answer.statusCode === 200) return true;
        } catch {
          // The next replica may answer.
        }
      }
      return false;
    } finally {
      void agent.destroy();
    }
  };

  // Nothing serves without the control plane (no sign-in, no Txn-Token, no SVID renewal): stop the rest, loudly.
  const givenUp = new Set<ControlPlaneProcess>();
  const controlPlaneGivenUp = (which: ControlPlaneProcess) => {
    givenUp.add(which);
    if (givenUp.size < controlPlanes.length) {
      supervision(`${which} is given up on; ${controlPlanes.length - givenUp.size} replica(s) still serve`);
      return;
    }
    const reason =
      `STOPPED: the control plane could not be kept running ` +
      `(its log says why: ${controlPlanes.map((name) => logFile(name)).join(', ')}), and the shop cannot serve without it, so every service ` +
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
    const common = [
      'control-plane',
      '--trust-domain',
      TRUST_DOMAIN,
      '--policy-dir',
      policyDir,
      ...(postgres === undefined ? [] : ['--postgres', postgres]),
      ...(options.svidLifetimeSeconds === undefined ? [] : ['--svid-lifetime', String(options.svidLifetimeSeconds)]),
    ];
    for (const [index, name] of controlPlanes.entries()) {
      const placement = placements[index];
      const args =
        placement === undefined
          ? [...common, '--port', String(ports.controlPlane)]
          : [
              ...common,
              '--replica',
              `r${index}`,
              '--host',
              placement.host,
              '--port',
              String(replicaPorts[index]),
              // One issuer for every replica: the front's address, where browsers sign in.
              '--issuer',
              `${urls.controlPlane}/oidc`,
            ];
      const title = placement === undefined ? 'the control plane' : `control plane r${index}`;
      const env = { ...process.env, ...controlPlaneEnv };
      const spawnIt = () =>
        placement?.start?.(CLI, args, env) ?? fork(CLI, args, { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
      starters.set(name, () =>
        supervise({
          name: title,
          logFile: logFile(name),
          say: supervision,
          onGiveUp: () => controlPlaneGivenUp(name),
          start: () => startProcess(spawnIt(), title, logFile(name), waitForLine('listening on', options.onWarning)),
        }),
      );
      progress(`starting ${title} on ${replicaUrls[index]} (state in ${dataDir})`);
      running.set(name, await (starters.get(name) as () => Promise<Supervised>)());
    }
    if (replicated) {
      front = await startControlPlaneFront(
        () => placements.map((placement, index) => ({ host: placement.host, port: replicaPorts[index] as number })),
        { host: '127.0.0.1', port: ports.controlPlane },
      );
      progress(`${urls.controlPlane} passes connections to the first replica that answers (sign-in, dashboard)`);
    }
    await requireValidPolicy(adminExit, policyDir);

    const usersFile = join(dataDir, 'demo-users.json');
    const users = await demoUsers(usersFile, admin, progress);

    for (const [serviceIndex, service] of SERVICES.entries()) {
      // Every replica, the first one differing from service to service: the load spreads, and each fails over.
      const controlPlaneUrls = [
        ...replicaUrls.slice(serviceIndex % replicaUrls.length),
        ...replicaUrls.slice(0, serviceIndex % replicaUrls.length),
      ].join(',');
      const joins = mode === 'lockstep' || service === 'gateway';
      const how = joins ? 'joined with a one-time token' : 'perimeter-only: no identity, no checks';
      // shipping is Python: its sidecar joins for it (there is none in perimeter-only mode).
      progress(`starting ${service} (${service === 'shipping' && joins ? `Python behind its sidecar, ${how}` : how})`);
      const startService = async () => {
        const joinToken = joins ? await joinTokenFor(service) : '';
        return startProcess(
          fork(fileURLToPath(new URL(`./services/${ENTRY_POINTS[service] ?? `${service}.ts`}`, import.meta.url)), [], {
            env: {
              ...serviceEnvironment(process.env),
              SHOP_SERVICE: service,
              SHOP_MODE: mode,
              SHOP_PORT: String(ports[service]),
              SHOP_URLS: JSON.stringify(urls),
              SHOP_DATA_DIR: join(dataDir, 'shop'),
              LOCKSTEP_CP_URL: controlPlaneUrls,
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
      replicas: replicaUrls,
      users,
      usersFile,
      auditFile: (service) => join(dataDir, 'shop', service, 'audit.jsonl'),
      async kill(what, killOptions = {}) {
        await running.get(what)?.stop(killOptions.signal);
        running.delete(what);
      },
      async restart(what) {
        const start = starters.get(what);
        if (start === undefined)
          throw new TypeError(`no control plane ${what}: this shop runs ${controlPlanes.join(', ')}`);
        if (running.has(what)) throw new TypeError(`${what} is running: kill it first`);
        givenUp.delete(what);
        running.set(what, await start());
      },
      admin,
      adminExit,
      adminVia,
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

/** What only the control plane is given: its key-encryption key and its database. */
const CONTROL_PLANE_ONLY = ['LOCKSTEP_KEK', 'LOCKSTEP_KEK_FILE', 'LOCKSTEP_POSTGRES_URL', 'LOCKSTEP_REPLICAS'] as const;

/** A service's share of the launcher's environment: all of it but what only the control plane is given. */
export function serviceEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const shared = { ...env };
  for (const name of CONTROL_PLANE_ONLY) delete shared[name];
  return shared;
}

/**
 * The key-encryption key the control plane is given on PostgreSQL: LOCKSTEP_KEK_FILE, or LOCKSTEP_KEK (its
 * text, passed on as it is), else a development one in the state directory. Empty is unset. SQLite: none.
 */
export function controlPlaneKek(
  env: NodeJS.ProcessEnv,
  postgres: string | undefined,
  dataDir: string,
  progress: (line: string) => void,
  /** Make a development KEK when none is given (replicas need one). */
  makeDevelopment = true,
): { LOCKSTEP_KEK_FILE?: string } {
  if (postgres === undefined) return {};
  if (env.LOCKSTEP_KEK_FILE) return { LOCKSTEP_KEK_FILE: env.LOCKSTEP_KEK_FILE };
  if (env.LOCKSTEP_KEK || !makeDevelopment) return {};
  return { LOCKSTEP_KEK_FILE: developmentKek(dataDir, progress) };
}

/**
 * The key-encryption key of a development shop on PostgreSQL: created once in the state directory
 * (0600), loudly. For production, give LOCKSTEP_KEK_FILE (docs/operations.md "Replicas").
 */
function developmentKek(dataDir: string, progress: (line: string) => void): string {
  const file = join(dataDir, 'kek');
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, `${createKekText()}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
    progress(
      `created a development key-encryption key in ${file}: the control plane's keys are sealed in PostgreSQL under it (for production, give LOCKSTEP_KEK_FILE)`,
    );
  }
  return file;
}

function restoreEnv(values: Readonly<Record<string, string | undefined>>): void {
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}

async function refuseTakenPorts(ports: Readonly<Record<string, number>>, portBase: number): Promise<void> {
  const taken: string[] = [];
  for (const [name, port] of Object.entries(ports)) {
    if (!(await isFree(port))) taken.push(`${port} (${name.startsWith('controlPlane') ? 'control plane' : name})`);
  }
  if (taken.length === 0) return;
  throw new Error(
    `port${taken.length === 1 ? '' : 's'} ${taken.join(', ')} on 127.0.0.1 ${taken.length === 1 ? 'is' : 'are'} in use: ` +
      `stop what listens there, or choose other ports with LOCKSTEP_PORT_BASE (the shop uses six from there, and one more per replica; now ${portBase})`,
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

/** `count` consecutive free loopback ports (the shop uses six, and one more per replica), for tests and parallel runs. */
export async function freePortBase(count = 6): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const free = await Promise.all(Array.from({ length: count }, (_, offset) => isFree(base + offset)));
    if (free.every(Boolean)) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => resolvePromise(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePromise(true)));
  });
}
