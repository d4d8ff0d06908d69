/**
 * Where a local Lockstep keeps its state (default `.lockstep/` in the current directory, or
 * LOCKSTEP_HOME): CA and signing keys, the SQLite store, admin credentials, `control-plane.lock`
 * (state-lock.ts) and `control-plane.json` — the running control plane's URL, written when it
 * starts, so that the other commands find it. Everything secret is 0600 in 0700 directories.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface LocalState {
  readonly home: string;
  readonly keyDir: string;
  readonly database: string;
  readonly adminDir: string;
  readonly runtimeFile: string;
  readonly lockFile: string;
}

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

export function localState(home = stateDirectory()): LocalState {
  const root = resolve(home);
  return {
    home: root,
    keyDir: join(root, 'keys'),
    database: join(root, 'control-plane.db'),
    adminDir: join(root, 'admin'),
    runtimeFile: join(root, 'control-plane.json'),
    lockFile: join(root, 'control-plane.lock'),
  };
}

export interface Runtime {
  readonly url: string;
  readonly trustDomain: string;
  readonly pid: number;
}

function writeRuntime(state: LocalState, runtime: Runtime): void {
  mkdirSync(state.home, { recursive: true, mode: 0o700 });
  writeFileSync(state.runtimeFile, `${JSON.stringify(runtime, null, 2)}\n`, { mode: 0o600 });
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
  writeFileSync(join(state.adminDir, 'admin.pem'), admin.chainPem, { mode: 0o600 });
  writeFileSync(join(state.adminDir, 'admin.key.pem'), admin.keyPem, { mode: 0o600 });
  writeFileSync(join(state.home, 'bundle.pem'), bundlePem, { mode: 0o644 });
  writeRuntime(state, runtime);
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

/** The running control plane and the local administrator's credentials (issued by `control-plane` at start). */
export function adminAccess(state: LocalState): {
  url: string;
  trustDomain: string;
  admin: { cert: string; key: string; ca: string };
} {
  const runtime = readRuntime(state);
  const certFile = join(state.adminDir, 'admin.pem');
  if (!existsSync(certFile))
    throw new UsageError(
      `no administrator credentials in ${state.adminDir}: they are issued when \`lockstep control-plane\` starts`,
    );
  return {
    url: runtime.url,
    trustDomain: runtime.trustDomain,
    admin: {
      cert: readFileSync(certFile, 'utf8'),
      key: readFileSync(join(state.adminDir, 'admin.key.pem'), 'utf8'),
      ca: readFileSync(join(state.home, 'bundle.pem'), 'utf8'),
    },
  };
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
