/**
 * Starts the whole reference system — the control plane and the four shop services, each its own
 * process — and stops it again. `npm start` (start.ts), the drill and the end-to-end test use it.
 *
 *   control plane   `lockstep control-plane` with its state in <dataDir> (SQLite, dev CA and keys
 *                   created on the first run, loudly), the shop's policies, the gateway registered
 *                   as an OpenID client that authenticates with its SVID
 *   services        each joins with a one-time token made for this start; logs go to <dataDir>/logs
 *   demo users      alice and bob (customers), ops (admin: the dashboard), passwords generated once, kept in
 *                   <dataDir>/demo-users.json (0600)
 *
 * Ports: gateway = portBase, control plane +1, orders +2, inventory +3, payments +4.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main as lockstep } from '@lockstep/cli';
import { workloadId } from '@lockstep/guard';

export const TRUST_DOMAIN = 'shop.test';
export const SHOP_POLICIES = fileURLToPath(new URL('./policies/', import.meta.url));
const CLI = fileURLToPath(new URL('../../packages/cli/bin/lockstep.ts', import.meta.url));
const SERVICES = ['payments', 'inventory', 'orders', 'gateway'] as const;
const DEMO_CUSTOMERS = ['alice', 'bob'] as const;
export type ShopService = (typeof SERVICES)[number];

export interface ShopOptions {
  /** Where the control plane and the services keep their state. Default: LOCKSTEP_DATA_DIR or ./.lockstep */
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
  /** Stops one service (a drill's "downstream is down"), or the control plane. */
  kill(what: ShopService | 'controlPlane'): Promise<void>;
  /** Runs a `lockstep` admin command against this shop's control plane; returns its output lines (throws unless it exits 0). */
  admin(...argv: string[]): Promise<string[]>;
  /** The same, returning the exit code (e.g. `policy status` exits 3 on drift). */
  adminExit(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }>;
  /** Sends a signal to a service process (the drill pauses one with SIGSTOP to make it miss an update). */
  signal(service: ShopService, signal: NodeJS.Signals): void;
  stop(): Promise<void>;
}

export async function startShop(options: ShopOptions = {}): Promise<RunningShop> {
  const dataDir = resolve(options.dataDir ?? process.env.LOCKSTEP_DATA_DIR ?? '.lockstep');
  const portBase = options.portBase ?? Number(process.env.LOCKSTEP_PORT_BASE ?? 8440);
  if (!Number.isInteger(portBase) || portBase < 1024 || portBase > 65_530) throw new Error(`LOCKSTEP_PORT_BASE must be a port from 1024 to 65530 (five ports from there are used); got ${String(portBase)}`);
  const mode = options.mode ?? 'lockstep';
  const progress = options.onProgress ?? (() => {});
  const ports = { gateway: portBase, controlPlane: portBase + 1, orders: portBase + 2, inventory: portBase + 3, payments: portBase + 4 };
  const scheme = mode === 'lockstep' ? 'https' : 'http';
  const envTls = process.env.GATEWAY_TLS_CERT !== undefined && process.env.GATEWAY_TLS_KEY !== undefined ? { certFile: process.env.GATEWAY_TLS_CERT, keyFile: process.env.GATEWAY_TLS_KEY } : undefined;
  const gatewayTls = options.gatewayTls ?? envTls;
  const urls = {
    gateway: `${gatewayTls === undefined ? 'http' : 'https'}://localhost:${ports.gateway}`,
    controlPlane: `https://127.0.0.1:${ports.controlPlane}`,
    orders: `${scheme}://127.0.0.1:${ports.orders}`,
    inventory: `${scheme}://127.0.0.1:${ports.inventory}`,
    payments: `${scheme}://127.0.0.1:${ports.payments}`,
  };
  mkdirSync(join(dataDir, 'logs'), { recursive: true, mode: 0o700 });
  const children = new Map<ShopService | 'controlPlane', ChildProcess>();

  const stop = async () => {
    // Services first (running requests finish), then the control plane.
    await Promise.all(SERVICES.map((service) => terminate(children.get(service))));
    await terminate(children.get('controlPlane'));
  };

  try {
    // The gateway is an OpenID client of the control plane's provider: registered by its SPIFFE ID.
    writeFileSync(join(dataDir, 'idp.json'), `${JSON.stringify({
      resource: { indicator: 'https://shop.test/api', scopes: ['orders:read', 'orders:create'] },
      clients: [{
        client_id: 'gateway', client_name: 'Lockstep Shop', token_endpoint_auth_method: 'tls_client_auth',
        tls_client_auth_san_uri: workloadId(TRUST_DOMAIN, 'gateway'), redirect_uris: [`${urls.gateway}/callback`],
      }],
    }, null, 2)}\n`, { mode: 0o600 });

    progress(`starting the control plane on ${urls.controlPlane} (state in ${dataDir})`);
    const controlPlane = fork(CLI, ['control-plane', '--trust-domain', TRUST_DOMAIN, '--port', String(ports.controlPlane), '--policy-dir', options.policyDir ?? SHOP_POLICIES], {
      env: { ...process.env, LOCKSTEP_HOME: dataDir }, stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    children.set('controlPlane', controlPlane);
    await waitForLine(controlPlane, 'listening on', join(dataDir, 'logs', 'control-plane.log'), options.onWarning);

    const adminExit = async (...argv: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const previous = process.env.LOCKSTEP_HOME;
      process.env.LOCKSTEP_HOME = dataDir;
      try {
        return { code: await lockstep(argv, (line) => out.push(line), (line) => err.push(line)), out, err };
      } finally {
        if (previous === undefined) delete process.env.LOCKSTEP_HOME;
        else process.env.LOCKSTEP_HOME = previous;
      }
    };
    const admin = async (...argv: string[]) => {
      const { code, out, err } = await adminExit(...argv);
      if (code !== 0) throw new Error(`lockstep ${argv.join(' ')} failed (${code}): ${err.join(' ')}`);
      return out;
    };

    const usersFile = join(dataDir, 'demo-users.json');
    const users = await demoUsers(usersFile, admin, progress);

    for (const service of SERVICES) {
      const joins = mode === 'lockstep' || service === 'gateway';
      const joinToken = joins ? (await admin('join-token', 'create', service, '--ttl', '300'))[0] ?? '' : '';
      progress(`starting ${service} (${joins ? 'joined with a one-time token' : 'perimeter-only: no identity, no checks'})`);
      const child = fork(fileURLToPath(new URL(`./services/${service}.ts`, import.meta.url)), [], {
        env: {
          ...process.env,
          SHOP_SERVICE: service, SHOP_MODE: mode, SHOP_PORT: String(ports[service]), SHOP_URLS: JSON.stringify(urls), SHOP_DATA_DIR: join(dataDir, 'shop'),
          LOCKSTEP_CP_URL: urls.controlPlane, LOCKSTEP_TRUST_DOMAIN: TRUST_DOMAIN, ...(joins ? { LOCKSTEP_JOIN_TOKEN: joinToken } : {}),
          // One order each for the demo customers: something to look at, and what the scan's object-level check reads (scan.yaml).
          ...(service === 'orders' ? { SHOP_DEMO_ORDERS: DEMO_CUSTOMERS.join(',') } : {}),
          ...(service === 'gateway' && gatewayTls !== undefined ? { GATEWAY_TLS_CERT: gatewayTls.certFile, GATEWAY_TLS_KEY: gatewayTls.keyFile } : {}),
        },
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      children.set(service, child);
      await waitForReady(child, service, join(dataDir, 'logs', `${service}.log`));
    }

    return {
      mode, dataDir, urls, users, usersFile,
      auditFile: (service) => join(dataDir, 'shop', service, 'audit.jsonl'),
      async kill(what) {
        await terminate(children.get(what));
        children.delete(what);
      },
      admin,
      adminExit,
      signal(service, signal) {
        children.get(service)?.kill(signal);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function demoUsers(file: string, admin: (...argv: string[]) => Promise<string[]>, progress: (line: string) => void): Promise<Record<string, DemoUser>> {
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Record<string, DemoUser>;
  const users: Record<string, DemoUser> = {};
  for (const [name, role] of [['alice', 'customer'], ['bob', 'customer'], ['ops', 'admin']] as const) {
    const [line = ''] = await admin('user', 'add', name, '--role', role, '--tenant', 'demo');
    const password = /password \(shown once\): (\S+)$/.exec(line)?.[1];
    if (password === undefined) throw new Error(`could not read the generated password of ${name}: ${line}`);
    users[name] = { password, roles: [role] };
  }
  writeFileSync(file, `${JSON.stringify(users, null, 2)}\n`, { mode: 0o600 });
  progress(`created the demo users alice and bob (customers) and ops (admin, for the dashboard); their generated passwords are in ${file}`);
  return users;
}

function logTo(child: ChildProcess, file: string): void {
  const log = createWriteStream(file, { flags: 'a', mode: 0o600 });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('exit', () => log.end());
}

function waitForLine(child: ChildProcess, marker: string, file: string, onWarning?: (line: string) => void): Promise<void> {
  logTo(child, file);
  return new Promise((resolvePromise, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`the control plane did not start within 30 s; see ${file}`)), 30_000);
    const read = (chunk: Buffer) => {
      const text = chunk.toString();
      seen += text;
      for (const line of text.split('\n')) if (line.includes('WARNING') || line.includes('REFUSED')) onWarning?.(line.replace(/^lockstep: /, ''));
      if (seen.includes(marker)) {
        clearTimeout(timer);
        child.stdout?.off('data', read);
        child.stderr?.off('data', read);
        resolvePromise();
      }
    };
    child.stdout?.on('data', read);
    child.stderr?.on('data', read);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the control plane exited (${String(code)}): ${seen.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}

function waitForReady(child: ChildProcess, service: string, file: string): Promise<void> {
  logTo(child, file);
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not become ready within 30 s; see ${file}`)), 30_000);
    child.on('message', (message: { ready?: boolean }) => {
      if (message.ready === true) {
        clearTimeout(timer);
        resolvePromise();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${service} exited (${String(code)}) while starting; see ${file}`));
    });
  });
}

async function terminate(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolvePromise) => child.once('exit', () => resolvePromise()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Five consecutive free loopback ports, for tests and parallel runs. */
export async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const free = await Promise.all([0, 1, 2, 3, 4].map((offset) => isFree(base + offset)));
    if (free.every(Boolean)) return base;
  }
  throw new Error('no five consecutive free ports found');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => resolvePromise(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolvePromise(true)));
  });
}
