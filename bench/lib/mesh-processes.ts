/**
 * The processes bench/mesh.ts starts — its servers (bench/lib/mesh-server.ts), nginx, and one load
 * generator per slice (bench/lib/mesh-load.ts) — each bounded in time, and each registered so that
 * `killEverything()` ends whatever is still running however the bench stops (an error, Ctrl-C, a
 * crash): call it from a `process.on('exit')` handler. Servers and generators also exit by themselves
 * when the bench's IPC channel closes.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MeshLoadJob, MeshLoadMessage, MeshLoadReport, MeshServerStart } from './mesh-protocol.ts';
import { childPids } from './proc-stat.ts';

const SERVER_SCRIPT = fileURLToPath(new URL('./mesh-server.ts', import.meta.url));
const LOAD_SCRIPT = fileURLToPath(new URL('./mesh-load.ts', import.meta.url));
const START_TIMEOUT_MS = 60_000;

const live = new Set<number>();

/** SIGKILLs every process started here that has not been closed (synchronous: safe in an exit handler). */
export function killEverything(): void {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

function track(child: ChildProcess): void {
  if (child.pid === undefined) return;
  const pid = child.pid;
  live.add(pid);
  child.once('exit', () => live.delete(pid));
}

/** The next IPC message of `child`, which must be of type `expected`. */
function nextMessage(child: ChildProcess, expected: string, what: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      child.kill('SIGKILL');
      reject(new Error(`${what} did not answer "${expected}" within ${START_TIMEOUT_MS / 1000} s`));
    }, START_TIMEOUT_MS);
    const onMessage = (message: Record<string, unknown>) => {
      cleanup();
      if (message.type === expected) resolve(message);
      else reject(new Error(`${what} failed: ${String(message.message)}`));
    };
    const onExit = (code: number | null, signal: string | null) => {
      cleanup();
      reject(new Error(`${what} exited (${signal ?? code}) before "${expected}"`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

/**
 * `BENCH_MESH_PROFILE=<dir>`: each server process writes a V8 CPU profile `<role>-<pid>.cpuprofile` there
 * when it exits (read them with `node bench/cpuprofile-top.ts <file>`). Otherwise execArgv [], so that a
 * profiled bench does not profile its servers.
 */
function profileArgs(role: string): string[] {
  const dir = process.env.BENCH_MESH_PROFILE;
  if (dir === undefined || dir === '') return [];
  mkdirSync(dir, { recursive: true });
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${role}-\${pid}.cpuprofile`];
}

export interface ServerHandle {
  readonly url: string;
  /** The decision service's gRPC ext_authz `host:port`, or null. */
  readonly grpcAddress: string | null;
  /** The processes whose CPU and memory count as this server's. */
  pids(): number[];
  close(): Promise<void>;
}

export async function startMeshServer(command: MeshServerStart): Promise<ServerHandle> {
  const what = `the ${command.role} process`;
  const child = fork(SERVER_SCRIPT, [], {
    execPath: process.execPath,
    execArgv: profileArgs(command.role),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  track(child);
  const listening = nextMessage(child, 'listening', what);
  child.send(command);
  let url: string;
  let grpcAddress: string | null;
  try {
    const answer = await listening;
    url = String(answer.url);
    grpcAddress = typeof answer.grpcAddress === 'string' ? answer.grpcAddress : null;
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const pid = child.pid as number;
  let closing: Promise<void> | null = null;
  return {
    url,
    grpcAddress,
    pids: () => [pid],
    close() {
      closing ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        if (child.connected) {
          const closed = nextMessage(child, 'closed', what);
          child.send({ type: 'close' });
          await closed.catch((error: Error) => console.error(`[bench:mesh] ${error.message}`));
        }
        const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killer);
      })();
      return closing;
    },
  };
}

/** A free TCP port on 127.0.0.1 (nginx needs one named in its configuration). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
}

export interface NginxSettings {
  readonly binary: string;
  readonly dir: string;
  readonly upstreamPort: number;
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly bundlePem: string;
}

/**
 * The mesh-style baseline: nginx terminating mTLS (client certificate required and verified against the
 * trust bundle, TLS 1.3, one worker like the single-threaded Node sidecar) and proxying over keep-alive
 * connections to the upstream. No authorization: what a transport-only proxy hop costs.
 */
function nginxConfig(settings: NginxSettings, port: number): string {
  const { dir } = settings;
  return `
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream service {
    server 127.0.0.1:${settings.upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${dir}/server.pem; ssl_certificate_key ${dir}/server.key;
    ssl_client_certificate ${dir}/bundle.pem; ssl_verify_client on; ssl_verify_depth 2;
    location / {
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

export async function startNginx(settings: NginxSettings): Promise<ServerHandle> {
  const { dir } = settings;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'server.pem'), settings.certChainPem);
  writeFileSync(join(dir, 'server.key'), settings.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, 'bundle.pem'), settings.bundlePem);
  const port = await freePort();
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig(settings, port));
  const master = spawn(settings.binary, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  track(master);
  let stderr = '';
  master.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const pid = master.pid as number;
  const workers = () => childPids(pid);
  const log = () => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8').trim();
    } catch {
      return '';
    }
  };
  // Ready when it accepts connections and its worker runs.
  const started = Date.now();
  for (;;) {
    if (master.exitCode !== null) throw new Error(`nginx exited at start (${master.exitCode}): ${stderr} ${log()}`);
    const accepting = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(true)); // in use: nginx holds it
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
    });
    if (accepting && workers().length > 0) break;
    if (Date.now() - started > 10_000) {
      master.kill('SIGKILL');
      throw new Error(`nginx did not start within 10 s: ${stderr} ${log()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const worker of workers()) live.add(worker);
  let closing: Promise<void> | null = null;
  return {
    url: `https://127.0.0.1:${port}`,
    grpcAddress: null,
    pids: () => [pid, ...workers()],
    close() {
      closing ??= (async () => {
        const workerPids = workers();
        if (master.exitCode === null && master.signalCode === null) {
          const exited = new Promise((resolve) => master.once('exit', resolve));
          master.kill('SIGTERM'); // fast shutdown: the workers exit with the master
          const killer = setTimeout(() => master.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(killer);
        }
        for (const worker of workerPids) {
          live.delete(worker);
          try {
            process.kill(worker, 'SIGKILL'); // only if one outlived its master
          } catch {
            // gone, as it should be
          }
        }
      })();
      return closing;
    },
  };
}

/**
 * Runs one load job in a fresh generator process (bench/guard.ts uses it too, for its open loop).
 * `onMark` is called as each measured window opens and closes (the bench reads the servers' CPU then);
 * resolves with the generator's report.
 */
export function runMeshLoad(
  job: MeshLoadJob,
  onMark: (phase: string, edge: 'start' | 'end', answered: number) => void,
): Promise<MeshLoadReport> {
  const budgetMs =
    job.phases.reduce(
      (total, phase) => total + (phase.kind === 'open' ? phase.warmupMs : phase.maxWarmupMs) + phase.measureMs,
      0,
    ) + 60_000;
  return new Promise((resolve, reject) => {
    const child = fork(LOAD_SCRIPT, [], {
      execPath: process.execPath,
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    track(child);
    let settled = false;
    const finish = (error: Error | null, report?: MeshLoadReport) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (error) {
        child.kill('SIGKILL');
        reject(error);
      } else resolve(report as MeshLoadReport);
    };
    const deadline = setTimeout(
      () => finish(new Error(`the load generator did not report within ${budgetMs / 1000} s`)),
      budgetMs,
    );
    child.on('message', (message: MeshLoadMessage) => {
      if (message.type === 'mark') onMark(message.phase, message.edge, message.answered);
      else if (message.type === 'report') finish(null, message.report);
      else finish(new Error(`the load generator failed: ${message.message}`));
    });
    child.on('error', (error) => finish(error));
    child.on('exit', (code, signal) =>
      finish(new Error(`the load generator exited (${signal ?? code}) without a report`)),
    );
    child.send(job);
  });
}
