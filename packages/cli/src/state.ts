/**
 * Where a local Lockstep keeps its state (default `.lockstep/` in the current directory, or
 * LOCKSTEP_HOME): CA and signing keys, the SQLite store, admin credentials, `control-plane.lock`
 * (state-lock.ts) and `control-plane.json` — the running control plane's URL, written when it
 * starts, so that the other commands find it. Everything secret is 0600 in 0700 directories.
 *
 * Replicas (`control-plane --replica <name>`, PostgreSQL only) share the directory on one host: each
 * has its own lock (`control-plane.<name>.lock`), runtime file (`replicas/<name>.json`) and
 * administrator SVID (`replicas/<name>/admin.pem`); the keys and the store are shared. The admin
 * commands try every replica in turn, with the newest administrator SVID any of them left.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { controlPlaneEndpoints } from '@lockstep/identity';

export interface LocalState {
  readonly home: string;
  readonly keyDir: string;
  readonly database: string;
  /** This control plane's administrator SVID: `admin/`, or `replicas/<name>/` for a replica. */
  readonly adminDir: string;
  /** Its URL while it runs: `control-plane.json`, or `replicas/<name>.json`. */
  readonly runtimeFile: string;
  /** `control-plane.lock`, or `control-plane.<name>.lock`. */
  readonly lockFile: string;
  /** The replica's name (`--replica`), or null: the one control plane of the directory. */
  readonly replica: string | null;
  /** Every replica's runtime file and administrator SVID. */
  readonly replicasDir: string;
}

/** A replica's name: a short lower-case word (it names files), e.g. r0, cp-a. */
export const REPLICA_NAME = /^[a-z][a-z0-9-]{0,31}$/;

/**
 * The state directory, the same for every command (`lockstep …`, `npm start`, `npm run scan`):
 * LOCKSTEP_HOME, or LOCKSTEP_DATA_DIR — its other name, which `npm start` read first — or
 * `./.lockstep`. Two different directories under the two names are refused: which one was meant?
 */
export function stateDirectory(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.LOCKSTEP_HOME === '' ? undefined : env.LOCKSTEP_HOME;
  const alias = env.LOCKSTEP_DATA_DIR === '' ? undefined : env.LOCKSTEP_DATA_DIR;
  if (home !== undefined && alias !== undefined && resolve(home) !== resolve(alias)) {
    throw new UsageError(
      `LOCKSTEP_HOME=${home} and LOCKSTEP_DATA_DIR=${alias} name two different state directories: ` +
        'set only LOCKSTEP_HOME (LOCKSTEP_DATA_DIR is another name for it)',
    );
  }
  return resolve(home ?? alias ?? '.lockstep');
}

/** The files of `home`; those of the replica `replica` when one is named. */
export function localState(home = stateDirectory(), replica: string | null = null): LocalState {
  const root = resolve(home);
  if (replica !== null && !REPLICA_NAME.test(replica))
    throw new UsageError(
      `--replica names this replica's files: a short lower-case word (letters, digits, -), e.g. --replica r0; got ${JSON.stringify(replica)}`,
    );
  const replicasDir = join(root, 'replicas');
  return {
    home: root,
    keyDir: join(root, 'keys'),
    database: join(root, 'control-plane.db'),
    adminDir: replica === null ? join(root, 'admin') : join(replicasDir, replica),
    runtimeFile: replica === null ? join(root, 'control-plane.json') : join(replicasDir, `${replica}.json`),
    lockFile: join(root, replica === null ? 'control-plane.lock' : `control-plane.${replica}.lock`),
    replica,
    replicasDir,
  };
}

export interface Runtime {
  readonly url: string;
  readonly trustDomain: string;
  readonly pid: number;
}

/**
 * Writes `file` whole or not at all (a temporary file renamed over it): replicas on one host write the
 * bundle at the same time, and an admin command may read any file while it is rewritten.
 */
function replaceFile(file: string, text: string, mode: number): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode });
  renameSync(temporary, file);
}

/**
 * What a started control plane leaves for the other commands: the local administrator's SVID and
 * key (0600), the trust bundle, and last the runtime file (its URL), which says that it runs.
 */
export function writeControlPlaneState(
  state: LocalState,
  runtime: Runtime,
  admin: { readonly chainPem: string; readonly keyPem: string },
  bundlePem: string,
): void {
  mkdirSync(state.adminDir, { recursive: true, mode: 0o700 });
  replaceFile(join(state.adminDir, 'admin.key.pem'), admin.keyPem, 0o600);
  replaceFile(join(state.adminDir, 'admin.pem'), admin.chainPem, 0o600);
  replaceFile(join(state.home, 'bundle.pem'), bundlePem, 0o644);
  replaceFile(state.runtimeFile, `${JSON.stringify(runtime, null, 2)}\n`, 0o600);
}

export function readRuntime(state: LocalState): Runtime {
  if (!existsSync(state.runtimeFile))
    throw new UsageError(
      `no control plane found (${state.runtimeFile} is missing): start one with \`lockstep control-plane\` (the reference shop: \`npm start\`), or set LOCKSTEP_HOME to its directory`,
    );
  let runtime: Partial<Runtime>;
  try {
    runtime = JSON.parse(readFileSync(state.runtimeFile, 'utf8')) as Partial<Runtime>;
  } catch (error) {
    throw new OperatorError(
      `${state.runtimeFile} is unreadable (${(error as Error).message}): the control plane writes it ` +
        'again when it starts; restart it',
    );
  }
  if (typeof runtime.url !== 'string' || typeof runtime.trustDomain !== 'string' || typeof runtime.pid !== 'number') {
    throw new OperatorError(
      `${state.runtimeFile} does not name a control plane (url, trustDomain, pid): the control plane ` +
        'writes it again when it starts; restart it',
    );
  }
  return runtime as Runtime;
}

/** The replicas that ever ran in `state`'s directory, by name (from their runtime files). */
export function replicaNames(state: LocalState): string[] {
  if (!existsSync(state.replicasDir)) return [];
  return readdirSync(state.replicasDir)
    .filter((file) => file.endsWith('.json') && REPLICA_NAME.test(file.slice(0, -'.json'.length)))
    .map((file) => file.slice(0, -'.json'.length))
    .sort();
}

export interface AdminAccess {
  /** Where to ask, in turn: LOCKSTEP_CP_URLS, else every control plane that wrote a runtime file here. */
  readonly urls: readonly string[];
  readonly trustDomain: string;
  readonly admin: { readonly cert: string; readonly key: string; readonly ca: string };
}

/**
 * The running control plane(s) and the local administrator's credentials (issued by `control-plane` at
 * start). The URLs: LOCKSTEP_CP_URLS (comma-separated) when set, else every replica's runtime file and
 * `control-plane.json`, those whose process runs first. The SVID: the newest unexpired one any of them
 * left (they share one CA, so any will do).
 */
export function adminAccess(state: LocalState, env: NodeJS.ProcessEnv = process.env): AdminAccess {
  const listed = env.LOCKSTEP_CP_URLS === '' ? undefined : env.LOCKSTEP_CP_URLS;
  const runtimes = readRuntimes(state, listed === undefined);
  let urls: readonly string[];
  if (listed !== undefined) {
    try {
      urls = controlPlaneEndpoints(listed).urls;
    } catch (error) {
      throw new UsageError(`LOCKSTEP_CP_URLS: ${(error as Error).message}`);
    }
  } else {
    const running = (runtime: Runtime) => (isRunning(runtime.pid) ? 0 : 1);
    urls = [...runtimes].sort((a, b) => running(a) - running(b)).map((runtime) => runtime.url);
  }
  return { urls, trustDomain: trustDomainOf(state, runtimes), admin: newestAdministrator(state) };
}

/**
 * Every runtime file of the directory: `control-plane.json` and `replicas/*.json`. With none, the
 * error of a missing `control-plane.json` (when `required`); a broken one is left out when another
 * names a control plane.
 */
function readRuntimes(state: LocalState, required: boolean): Runtime[] {
  const alone = localState(state.home);
  const files = [
    ...(existsSync(alone.runtimeFile) ? [alone] : []),
    ...replicaNames(state).map((name) => localState(state.home, name)),
  ];
  const found: Runtime[] = [];
  let problem: unknown = null;
  for (const file of files) {
    try {
      found.push(readRuntime(file));
    } catch (error) {
      problem ??= error;
    }
  }
  if (found.length > 0 || !required) return found;
  if (problem !== null) throw problem;
  return [readRuntime(alone)]; // throws: no control plane found
}

function trustDomainOf(state: LocalState, runtimes: readonly Runtime[]): string {
  const named = runtimes[0]?.trustDomain;
  if (named !== undefined) return named;
  const file = join(state.home, 'trust-domain');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  throw new UsageError(
    `${state.home} names no trust domain (no control plane started here): start one with \`lockstep control-plane\`, or set LOCKSTEP_HOME to its directory`,
  );
}

/** The newest unexpired administrator SVID among `admin/` and every replica's, its key matching it. */
function newestAdministrator(state: LocalState): AdminAccess['admin'] {
  const dirs = [
    localState(state.home).adminDir,
    ...replicaNames(state).map((name) => localState(state.home, name).adminDir),
  ];
  let newest: { cert: string; key: string; from: number } | null = null;
  let expired = false;
  for (const dir of dirs) {
    const pair = readAdministrator(dir);
    if (pair === null) continue;
    if (pair.until <= Date.now()) expired = true;
    else if (newest === null || pair.from > newest.from) newest = pair;
  }
  if (newest === null)
    throw new UsageError(
      expired
        ? `the administrator credentials in ${state.home} have expired: they are issued when \`lockstep control-plane\` starts, and renewed while it runs; start it again`
        : `no administrator credentials in ${dirs.join(' or ')}: they are issued when \`lockstep control-plane\` starts`,
    );
  return { cert: newest.cert, key: newest.key, ca: readFileSync(join(state.home, 'bundle.pem'), 'utf8') };
}

/**
 * The SVID and key in `dir`, when both are there and belong together: a control plane renewing them
 * replaces one file, then the other, so a pair read in between is read again.
 */
function readAdministrator(dir: string): { cert: string; key: string; from: number; until: number } | null {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    let cert: string;
    let key: string;
    try {
      cert = readFileSync(join(dir, 'admin.pem'), 'utf8');
      key = readFileSync(join(dir, 'admin.key.pem'), 'utf8');
    } catch {
      return null;
    }
    try {
      const leaf = new X509Certificate(cert);
      if (leaf.checkPrivateKey(createPrivateKey(key)))
        return { cert, key, from: leaf.validFromDate.getTime(), until: leaf.validToDate.getTime() };
    } catch {
      // Not a certificate or a key (yet): read again, as for a pair that does not match.
    }
  }
  return null;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A mistake the user can fix: printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * The command cannot do its work for a reason the operator can fix — a port in use, a state
 * directory in use, an unreadable file: printed without a stack trace (it names the fix), exit code 1.
 */
export class OperatorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OperatorError';
  }
}
