/**
 * `lockstep <command>`:
 *
 *   init [--trust-domain td]
 *   control-plane [--trust-domain td] [--host h] [--port p] [--policy-dir dir] [--postgres url [--schema s]]
 *                 [--kek-file f] [--replica name] [--issuer url] [--idp-config file] [--svid-lifetime s]
 *                 [--svid-recovery-window 7d]
 *   join-token create <service> [--ttl seconds]
 *   user add <name> [--role r]... [--tenant t]
 *   keys rotate <txn-token|idp>  |  keys new-kek <file>  |  keys rewrap --postgres url [--schema s] [--kek-file f]
 *   ca status | ca prepare | ca activate
 *   drill                                  (the shop's breach drill: examples/shop/drill)
 *   audit verify [--keys jwks.json] [--postgres url [--schema s]] [--kek-file f] [--as-of time] [--against checkpoint]
 *   audit checkpoint [--postgres url [--schema s]]   |   audit keys [--postgres url [--schema s]] [--kek-file f]
 *   revoke [--lift] <sub|txn|spiffeId|kid> <value> --reason <why>
 *   services
 *   events [--service s] [--decision allow|deny|dry-run] [--reason r] [--sub u] [--txn t] [--limit n] [--json] [--probes]
 *                                          (events-command.ts)
 *   policy status | policy validate [dir] | policy test [dir] [--cases file]
 *   scan [--manifest file] [--json|--sarif|--junit|--html file] …   (scan-command.ts)
 *   sidecar --config <file>                (sidecar-command.ts: @lockstep/proxy in front of any HTTP service)
 *   authz-server --config <file>           (authz-server-command.ts: the decision service for existing proxies)
 *   <command> --help | help <command> | --version                   (help.ts)
 *
 * State lives in LOCKSTEP_HOME (or LOCKSTEP_DATA_DIR; default ./.lockstep). `control-plane` parses its
 * arguments, locks the state directory (state-lock.ts), starts `assembleControlPlane` (@lockstep/monitor:
 * the one composition root, shared with the tests) and writes the state files. The admin commands talk
 * to the running control plane over mTLS with the local administrator's SVID, which `control-plane`
 * issues at every start; to its replicas in turn when several run (`--replica`, state.ts), as the
 * workloads do (@lockstep/workload's `withFailover`).
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { controlPlaneEndpoints, isFailover } from '@lockstep/identity';
import { callControlPlane, refusalOf } from '@lockstep/workload';
import {
  createKekText,
  fileKeyVault,
  issueAdminCredentials,
  readKek,
  rewrapKeyDocuments,
  sealedKeyVault,
  type KeyVault,
} from '@lockstep/control-plane';
import {
  assembleControlPlane,
  AUDIT_HEAD_FILE,
  openAuditKeys,
  openControlPlaneKeys,
  openStoreAt,
  verifyTrail,
  type AssembledControlPlane,
  type ControlPlaneAssemblyOptions,
  type ExternalIssuer,
} from '@lockstep/monitor';
import type { JSONWebKeySet, JWK } from 'jose';
import { loadPolicyDir, runPolicyTests } from '@lockstep/policy';
import { parsePolicyCases } from './policy-cases.ts';
import { scanCommand } from './scan-command.ts';
import { eventsCommand } from './events-command.ts';
import { sidecarCommand } from './sidecar-command.ts';
import { authzServerCommand } from './authz-server-command.ts';
import { cliVersion, commandHelp, USAGE } from './help.ts';
import { lockStateDirectory } from './state-lock.ts';
import {
  adminAccess,
  localState,
  OperatorError,
  UsageError,
  writeControlPlaneState,
  type LocalState,
} from './state.ts';

export { checkStateDirectoryFree } from './state-lock.ts';
export { localState, stateDirectory } from './state.ts';

type Out = (line: string) => void;

export async function main(
  argv: readonly string[],
  out: Out = (line) => process.stdout.write(`${line}\n`),
  err: Out = (line) => process.stderr.write(`${line}\n`),
): Promise<number> {
  try {
    const [command, ...rest] = argv;
    const help = command === 'help' ? rest[0] : rest.includes('--help') || rest.includes('-h') ? command : undefined;
    const text = help === undefined ? undefined : commandHelp(help);
    if (text !== undefined) {
      out(text);
      return 0;
    }
    switch (command) {
      case 'init':
        return await init(rest, out, err);
      case 'control-plane':
        return await controlPlane(rest, out, err);
      case 'join-token':
        return await joinToken(rest, out);
      case 'user':
        return await user(rest, out);
      case 'keys':
        return await keys(rest, out);
      case 'ca':
        return await caCommand(rest, out);
      case 'drill':
        return await drill(rest, err);
      case 'audit':
        return await audit(rest, out);
      case 'revoke':
        return await revoke(rest, out);
      case 'services':
        return await services(out);
      case 'events':
        return await eventsCommand(rest, out, admin);
      case 'scan':
        return await scanCommand(rest, out, err);
      case 'sidecar':
        return await sidecarCommand(rest, out, err);
      case 'authz-server':
        return await authzServerCommand(rest, out, err);
      case 'policy':
        return rest[0] === 'validate'
          ? await policyValidate(rest.slice(1), out)
          : rest[0] === 'test'
            ? await policyTest(rest.slice(1), out)
            : await policyStatus(rest, out);
      case '--version':
      case 'version':
        out(`lockstep ${cliVersion()}`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        if (rest.length > 0) {
          err(`lockstep: no command ${JSON.stringify(rest[0])}\n${USAGE}`);
          return 2;
        }
        out(USAGE);
        return 0;
      default:
        err(USAGE);
        return 2;
    }
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (
      error instanceof UsageError ||
      code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ||
      code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' ||
      code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'
    ) {
      err(`lockstep: ${(error as Error).message}`);
      return 2;
    }
    // Lockstep's own coded errors (a key file, the store, a port or state directory in use) name their fix.
    if (error instanceof OperatorError || (typeof code === 'string' && code.startsWith('LOCKSTEP_'))) {
      err(`lockstep: ${(error as Error).message}`);
      return 1;
    }
    err(`lockstep: ${(error as Error).stack ?? String(error)}`);
    return 1;
  }
}

async function controlPlane(argv: readonly string[], out: Out, err: Out): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      'trust-domain': { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8443' },
      'policy-dir': { type: 'string', default: 'policies' },
      postgres: { type: 'string' },
      'idp-config': { type: 'string' },
      'svid-lifetime': { type: 'string' },
      'svid-recovery-window': { type: 'string' },
      'kek-file': { type: 'string' },
      issuer: { type: 'string' },
      replica: { type: 'string' },
      schema: { type: 'string' },
    },
  });
  const state = localState(undefined, values.replica ?? null);
  const svidLifetime = values['svid-lifetime'] === undefined ? undefined : Number(values['svid-lifetime']);
  if (svidLifetime !== undefined && (!Number.isInteger(svidLifetime) || svidLifetime < 60 || svidLifetime > 86_400))
    throw new UsageError(
      `--svid-lifetime is in seconds, from 60 to 86400 (an SVID lives at most 24 h), e.g. --svid-lifetime 3600; got ${JSON.stringify(values['svid-lifetime'])}`,
    );
  const recoveryWindow = durationSeconds(values['svid-recovery-window']);
  if (recoveryWindow !== undefined && (recoveryWindow === null || recoveryWindow > 90 * 86_400))
    throw new UsageError(
      `--svid-recovery-window is how long after expiry a workload's SVID may still recover: seconds, or with a unit (30m, 12h, 7d), at most 90d; 0 turns recovery off. Got ${JSON.stringify(values['svid-recovery-window'])}`,
    );
  const trustDomain = rememberTrustDomain(state, values['trust-domain']);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw new UsageError(`--port must be a port number, e.g. --port 8443; got ${JSON.stringify(values.port)}`);
  const idpConfig = readIdpConfig(state, trustDomain, values['idp-config'], out);
  if (values.issuer !== undefined && !/^https:\/\/[^/]+\/oidc$/.test(values.issuer))
    throw new UsageError(
      `--issuer is the identity provider's URL as users reach it, https://<host[:port]>/oidc, the same for every replica; got ${JSON.stringify(values.issuer)}`,
    );
  const idp: IdpConfig = values.issuer === undefined ? idpConfig : { ...idpConfig, issuer: values.issuer };
  const alertWebhook = alertWebhookFromEnvironment();
  const kek = readKekOption(values['kek-file']);
  if (values.schema !== undefined && values.postgres === undefined)
    throw new UsageError('--schema names the PostgreSQL schema of --postgres: give --postgres <url> too');
  if (state.replica !== null) refuseUnsharedReplica(state.replica, values.postgres, kek);
  const options: ControlPlaneStart = {
    trustDomain,
    keyDir: state.keyDir,
    kek,
    store: storeLocation(state, values.postgres, values.schema),
    ...(svidLifetime === undefined ? {} : { svidLifetimeSeconds: svidLifetime }),
    ...(recoveryWindow === undefined ? {} : { svidRecoveryWindowSeconds: recoveryWindow }),
    host: values.host,
    port,
    policyDir: values['policy-dir'],
    idp,
    ...(alertWebhook === undefined ? {} : { alertWebhook }),
    output: {
      line: out,
      warning: (text) => err(`lockstep: WARNING ${text}`),
      error: (text) => err(`lockstep: ${text}`),
    },
  };
  // Before any key or the store is opened, and before a state file is written.
  const lock = lockStateDirectory(state, (text) => err(`lockstep: WARNING ${text}`));
  try {
    return await serveControlPlane(state, options, out);
  } finally {
    lock.release();
  }
}

/**
 * Replicas share one store and one identity, or they are not replicas: PostgreSQL (SQLite is one
 * process's file), and a key-encryption key, under which the keys live in the database. Without one
 * each would read and create key files in the one key directory of the state directory, racing.
 */
function refuseUnsharedReplica(name: string, postgres: string | undefined, kek: unknown): void {
  if (postgres === undefined)
    throw new UsageError(
      `--replica ${name} runs one of several control planes on one store: that needs PostgreSQL (--postgres <url>). ` +
        'SQLite is single-replica: drop --replica to run one control plane on SQLite',
    );
  if (kek === null)
    throw new UsageError(
      `--replica ${name}: replicas share their keys sealed in PostgreSQL: give every replica the same key-encryption key ` +
        'with --kek-file <file> (or LOCKSTEP_KEK_FILE); `lockstep keys new-kek <file>` creates one',
    );
}

/** `90`, `30m`, `12h`, `7d` in seconds; undefined when not given, null when unreadable. */
function durationSeconds(text: string | undefined): number | null | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d{1,9})([smhd]?)$/.exec(text.trim());
  if (match === null) return null;
  const unit = { '': 1, s: 1, m: 60, h: 3_600, d: 86_400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit;
}

type ControlPlaneStart = ControlPlaneAssemblyOptions & {
  readonly host: string;
  readonly port: number;
  readonly idp: IdpConfig;
};

async function serveControlPlane(state: LocalState, options: ControlPlaneStart, out: Out): Promise<number> {
  const { trustDomain, idp } = options;
  let running;
  try {
    running = await assembleControlPlane(options);
  } catch (error) {
    throw cannotListen(error as NodeJS.ErrnoException, options.host, options.port) ?? error;
  }
  const { admin: administrator, url } = running;
  writeControlPlaneState(state, { url, trustDomain, pid: process.pid }, administrator, running.bundlePem);
  const replica = state.replica === null ? '' : ` (replica ${state.replica})`;
  out(`lockstep control plane for ${trustDomain}${replica} listening on ${url} (store: ${running.store.kind})`);
  out(
    `trust bundle: ${join(state.home, 'bundle.pem')}; ` +
      `local administrator: ${administrator.spiffeId} (until ${administrator.expiresAt.toISOString()})`,
  );
  const clients = `${idp.clients.length} client${idp.clients.length === 1 ? '' : 's'}`;
  out(`identity provider: ${running.idp?.issuer ?? 'off'} (${clients}); dashboard: ${url}/dashboard (role admin)`);
  // The local administrator's SVID lives 8 h: renewed at half its life (with the bundle, which a root
  // rotation changes), so that `lockstep revoke` still works at 3 a.m. on a control plane started the day before.
  const renewing = keepAdministratorFresh(state, running, administrator.expiresAt, (line) => out(line));

  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  out('lockstep control plane: stopping');
  renewing.stop();
  await running.close();
  return 0;
}

/**
 * Re-issues the local administrator's SVID at half its life and rewrites the admin files and the
 * bundle; a failure is said and retried a minute later (the old SVID still works until it expires).
 */
export function keepAdministratorFresh(
  state: LocalState,
  running: Pick<AssembledControlPlane, 'ca' | 'url' | 'bundlePem'> & { readonly admin: { readonly spiffeId: string } },
  expiresAt: Date,
  say: (line: string) => void,
): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const name = running.admin.spiffeId.split('/').pop() ?? 'admin';
  const schedule = (at: number) => {
    if (stopped) return;
    timer = setTimeout(renew, Math.max(1_000, at - Date.now()));
    timer.unref();
  };
  const renew = () => {
    issueAdminCredentials(running.ca, name).then(
      (fresh) => {
        if (stopped) return;
        const runtime = { url: running.url, trustDomain: running.ca.trustDomain, pid: process.pid };
        writeControlPlaneState(state, runtime, fresh, running.bundlePem);
        schedule(Date.now() + (fresh.expiresAt.getTime() - Date.now()) / 2);
      },
      (error: Error) => {
        say(
          `lockstep control plane: the local administrator's SVID could not be renewed (${error.message}); retrying in 60 s`,
        );
        schedule(Date.now() + 60_000);
      },
    );
  };
  schedule(Date.now() + (expiresAt.getTime() - Date.now()) / 2);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** Why the server could not listen, said with the option that changes it; undefined for any other failure. */
function cannotListen(error: NodeJS.ErrnoException, host: string, port: number): OperatorError | undefined {
  switch (error.code) {
    case 'EADDRINUSE':
      return new OperatorError(
        `port ${port} on ${host} is in use (another program listens there, or another control plane): ` +
          'stop it, or choose another port with --port (npm start: LOCKSTEP_PORT_BASE, which moves all six ports of the shop)',
      );
    case 'EACCES':
      return new OperatorError(
        `port ${port} on ${host} needs privileges this user does not have: choose a port from 1024 up with --port`,
      );
    case 'EADDRNOTAVAIL':
      return new OperatorError(
        `${host} is not an address of this machine: pass one of its addresses with --host, e.g. --host 127.0.0.1`,
      );
    default:
      return undefined;
  }
}

type IdpOptions = NonNullable<ControlPlaneAssemblyOptions['idp']>;
type IdpConfig = Required<Pick<IdpOptions, 'clients' | 'resource'>> & Pick<IdpOptions, 'externalIssuers' | 'issuer'>;

/**
 * The identity provider's clients and protected resource, from a JSON file (`--idp-config`, default
 * <home>/idp.json); its keys and cookie secret live with the other keys:
 *
 *   { "resource": { "indicator": "https://shop.example/api", "scopes": ["orders:read"] },
 *     "clients": [{ "client_id": "gateway", "token_endpoint_auth_method": "tls_client_auth",
 *                   "tls_client_auth_san_uri": "spiffe://shop.example/svc/gateway",
 *                   "redirect_uris": ["https://shop.example/callback"] }] }
 */
function readIdpConfig(state: LocalState, trustDomain: string, configFile: string | undefined, out: Out): IdpConfig {
  const file = configFile ?? join(state.home, 'idp.json');
  if (!existsSync(file)) {
    if (configFile !== undefined) throw new UsageError(`--idp-config ${configFile} does not exist`);
    out(`identity provider: no clients registered (write them to ${file}, or pass --idp-config)`);
    return { clients: [], resource: { indicator: `https://${trustDomain}/api`, scopes: [] } };
  }
  let config: { resource?: IdpConfig['resource']; clients?: IdpConfig['clients']; externalIssuers?: ExternalIssuer[] };
  try {
    config = JSON.parse(readFileSync(file, 'utf8')) as typeof config;
  } catch (error) {
    throw new UsageError(`${file} is not JSON: ${(error as Error).message}`);
  }
  if (config.resource === undefined || !Array.isArray(config.clients))
    throw new UsageError(
      `${file} must hold { "resource": { "indicator", "scopes" }, "clients": [...], "externalIssuers"?: [{ "issuer", "audience" }] }`,
    );
  const externalIssuers = config.externalIssuers ?? [];
  if (
    !Array.isArray(externalIssuers) ||
    externalIssuers.some((entry) => typeof entry?.issuer !== 'string' || typeof entry.audience !== 'string')
  ) {
    throw new UsageError(
      `${file}: externalIssuers is a list of { "issuer": "https://…", "audience": "<the aud of its access tokens for us>" }`,
    );
  }
  return { clients: config.clients, resource: config.resource, externalIssuers };
}

/** LOCKSTEP_ALERT_WEBHOOK_URL and _SECRET: alerts are also posted there, signed. */
function alertWebhookFromEnvironment(): { url: string; secret: string } | undefined {
  const url = process.env.LOCKSTEP_ALERT_WEBHOOK_URL;
  if (url === undefined || url === '') return undefined;
  const secret = process.env.LOCKSTEP_ALERT_WEBHOOK_SECRET ?? '';
  if (secret.length < 32) {
    throw new UsageError(
      'LOCKSTEP_ALERT_WEBHOOK_SECRET must hold a secret of 32 characters or more: ' +
        'the webhook body is signed with it',
    );
  }
  return { url, secret };
}

/**
 * Creates what `control-plane` would on its first start — CA, signing keys, key rings, cookie secret
 * — and says loudly that it is development material. Existing keys are kept (and checked).
 */
async function init(argv: readonly string[], out: Out, err: Out): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { 'trust-domain': { type: 'string' } } });
  const state = localState();
  const trustDomain = rememberTrustDomain(state, values['trust-domain']);
  const created: string[] = [];
  const loud = (message: string) => {
    created.push(message);
    err(`lockstep: WARNING ${message}`);
  };
  await openControlPlaneKeys(trustDomain, state.keyDir, loud);
  out(
    created.length === 0
      ? `${state.home} is ready for ${trustDomain}: every key exists already (nothing created)`
      : `${state.home} is ready for ${trustDomain}. These keys are DEVELOPMENT material: for production, provision the CA yourself and keep the root key offline. Start with: npx lockstep control-plane`,
  );
  return 0;
}

/** The audit ring's document, in a key directory and in the vault (import-keys.ts names it too). */
const AUDIT_KEYS_DOCUMENT = 'audit-keys.json';

/**
 * The public keys of the audit ring: from the shared vault when the control plane keeps its keys in
 * PostgreSQL (a key-encryption key is given), else from this state directory. Read only: a ring that is
 * not there is not created (that is the control plane's first start), and nothing is written.
 */
async function auditJwks(
  state: LocalState,
  postgres: string | undefined,
  schema: string,
  kekFile: string | undefined,
): Promise<JSONWebKeySet> {
  const kek = readKekOption(kekFile);
  if (postgres === undefined || kek === null) {
    if (!existsSync(join(state.keyDir, AUDIT_KEYS_DOCUMENT)))
      throw new UsageError(
        `no audit keys exist in ${state.keyDir} yet: the control plane creates them at its first start. Run this where ` +
          'it keeps its keys, or give --postgres <url> and the key-encryption key when its keys are in PostgreSQL',
      );
    return publicAuditJwks(readOnly(fileKeyVault(state.keyDir)));
  }
  const store = await openStoreAt({ postgres, schema });
  try {
    const vault = await sealedKeyVault({ store, kek, schema });
    try {
      if ((await vault.read(AUDIT_KEYS_DOCUMENT)) === null)
        throw new UsageError(
          `no audit keys exist in ${vault.where} yet: a control plane creates them at its first start with this ` +
            'database and key-encryption key (is --schema right?)',
        );
      return await publicAuditJwks(readOnly(vault));
    } finally {
      await vault.close();
    }
  } finally {
    await store.close();
  }
}

async function publicAuditJwks(vault: KeyVault): Promise<JSONWebKeySet> {
  const ring = await openAuditKeys(vault);
  ring.close();
  return ring.publicJwks();
}

/** A vault that reads only: a read-only command never writes a key, whatever happens meanwhile. */
function readOnly(vault: KeyVault): KeyVault {
  return {
    ...vault,
    write: async (name) => {
      throw new UsageError(`${name} is not in ${vault.where} (any more): a read-only command writes no key`);
    },
  };
}

/** The key-encryption key of --kek-file (LOCKSTEP_KEK_FILE's meaning), else of the environment. */
function readKekOption(kekFile: string | undefined) {
  return readKek(kekFile === undefined ? process.env : { LOCKSTEP_KEK_FILE: kekFile });
}

/** The store of this state directory, or PostgreSQL with --postgres (and --schema). */
function storeLocation(state: LocalState, postgres: string | undefined, schema?: string) {
  if (!postgres) return { sqlite: state.database };
  return schema === undefined ? { postgres } : { postgres, schema };
}

function rememberTrustDomain(state: LocalState, requested: string | undefined): string {
  const file = join(state.home, 'trust-domain');
  const known = existsSync(file) ? readFileSync(file, 'utf8').trim() : null;
  if (known !== null && requested !== undefined && requested !== known) {
    throw new UsageError(
      `${state.home} belongs to trust domain ${known}, not ${requested}: use another LOCKSTEP_HOME for another trust domain`,
    );
  }
  const trustDomain = known ?? requested ?? 'lockstep.test';
  if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(trustDomain))
    throw new UsageError(
      `--trust-domain must be a lower-case DNS name such as shop.example; got ${JSON.stringify(trustDomain)}`,
    );
  mkdirSync(state.home, { recursive: true, mode: 0o700 });
  if (known === null) writeFileSync(file, `${trustDomain}\n`, { mode: 0o600 });
  return trustDomain;
}

/**
 * A call to the admin API with the local administrator's SVID, asked of each control plane (replica) in
 * turn until one answers (`callControlPlane`). A call that may have reached a replica before it failed is
 * asked again of the next only when `idempotent` (default: GETs): creating a join token, a user, or
 * rotating a key twice would not be. A refusal (4xx, a coded `LOCKSTEP_CP_…` answer) is the control
 * plane's answer, which another replica would give too: it never goes on to the next.
 */
async function admin(
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  options: { readonly idempotent?: boolean } = {},
): Promise<Record<string, unknown>> {
  const access = adminAccess(localState());
  const endpoints = controlPlaneEndpoints(access.urls);
  try {
    const { status, answer } = await callControlPlane(endpoints, access.trustDomain, access.admin, {
      method,
      path,
      body,
      ...(options.idempotent === undefined ? {} : { idempotent: options.idempotent }),
      deadlineMs: 60_000,
      attemptMs: 15_000,
    });
    if (status >= 400) throw new UsageError(refusalOf({ method, path }, status, answer));
    return answer;
  } catch (error) {
    // No replica could be reached at all (refused, unreachable, timed out): say how to start one.
    if (isFailover(error) && typeof (error as { status?: unknown }).status !== 'number')
      throw new UsageError(
        endpoints.urls.length > 1
          ? `no control plane answers at ${endpoints.urls.join(', ')}: start one with \`lockstep control-plane\` (${(error as Error).message})`
          : `the control plane at ${endpoints.urls.join(', ')} is not running: start it with \`lockstep control-plane\``,
      );
    if (typeof (error as { status?: unknown }).status === 'number') throw new UsageError((error as Error).message);
    throw error;
  }
}

async function joinToken(argv: readonly string[], out: Out): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: { ttl: { type: 'string' } },
  });
  if (positionals[0] !== 'create' || positionals.length !== 2)
    throw new UsageError('usage: lockstep join-token create <service> [--ttl <seconds>]');
  const ttlSeconds = values.ttl === undefined ? undefined : Number(values.ttl);
  const created = await admin('POST', '/v1/admin/join-tokens', {
    service: positionals[1],
    ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
  });
  out(String(created.token));
  return 0;
}

async function user(argv: readonly string[], out: Out): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: { role: { type: 'string', multiple: true }, tenant: { type: 'string' } },
  });
  if (positionals[0] !== 'add' || positionals.length !== 2)
    throw new UsageError('usage: lockstep user add <name> [--role <role>]... [--tenant <tenant>]');
  const created = await admin('POST', '/v1/admin/users', {
    username: positionals[1],
    roles: values.role ?? [],
    ...(values.tenant === undefined ? {} : { tenant: values.tenant }),
  });
  out(`user ${String(created.username)} created; password (shown once): ${String(created.password)}`);
  return 0;
}

const KEYS_USAGE =
  'usage: lockstep keys rotate <txn-token|idp>  |  lockstep keys new-kek <file>  |  lockstep keys rewrap --postgres <url> [--schema <name>] [--kek-file <file>]';

async function keys(argv: readonly string[], out: Out): Promise<number> {
  if (argv[0] === 'new-kek') return newKek(argv.slice(1), out);
  if (argv[0] === 'rewrap') return rewrapKeys(argv.slice(1), out);
  if (argv[0] !== 'rotate' || argv.length !== 2) throw new UsageError(KEYS_USAGE);
  const rotation = await admin('POST', '/v1/admin/keys/rotate', { key: argv[1] });
  out(
    `${String(argv[1])} keys rotated: ${String(rotation.current)} signs now (it was published as next), ${String(rotation.retired)} stays published until its tokens expire, ${String(rotation.next)} is the new next key`,
  );
  return 0;
}

/** Writes a new key-encryption key to `file` (0600; an existing file is never replaced). */
function newKek(argv: readonly string[], out: Out): number {
  const [file] = argv;
  if (file === undefined || argv.length !== 1) throw new UsageError(KEYS_USAGE);
  try {
    writeFileSync(file, `${createKekText()}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw new UsageError(
        `${file} exists: a key-encryption key is never replaced (the keys sealed under it would no longer open). To rotate it, put a new line first in that file (\`lockstep keys new-kek <other file>\` makes one), run \`lockstep keys rewrap\`, then drop the old line`,
      );
    throw error;
  }
  chmodSync(file, 0o600);
  out(
    `key-encryption key written to ${file} (0600). Give every control-plane replica the same file (LOCKSTEP_KEK_FILE=${file}); keep it out of the database's backups`,
  );
  return 0;
}

/** Re-wraps the data key of every stored generation of every key document under the first line of the KEK. */
async function rewrapKeys(argv: readonly string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      postgres: { type: 'string' },
      schema: { type: 'string', default: 'public' },
      'kek-file': { type: 'string' },
    },
  });
  if (values.postgres === undefined) throw new UsageError(KEYS_USAGE);
  const kek = readKekOption(values['kek-file']);
  if (kek === null)
    throw new UsageError(
      'give the key-encryption key with --kek-file <file> (or LOCKSTEP_KEK_FILE): its first line seals from now on, the others open what they sealed',
    );
  const store = await openStoreAt({ postgres: values.postgres, schema: values.schema });
  try {
    const outcome = await rewrapKeyDocuments(store, kek, values.schema);
    out(
      `re-wrapped ${outcome.rewrapped.length} stored key document generation(s) under ${kek.activeId}; ` +
        `${outcome.current.length} were under it already` +
        (outcome.changed.length === 0
          ? ': the older key-encryption keys can go'
          : `; ${outcome.changed.join(', ')} still under another (written meanwhile by a replica without ${kek.activeId} ` +
            'first: give it to every replica and restart them), run this again'),
    );
    return outcome.changed.length === 0 ? 0 : 1;
  } finally {
    await store.close();
  }
}

async function caCommand(argv: readonly string[], out: Out): Promise<number> {
  const step = argv[0];
  if (argv.length !== 1 || (step !== 'status' && step !== 'prepare' && step !== 'activate'))
    throw new UsageError('usage: lockstep ca status | prepare | activate');
  const status = (await (step === 'status' ? admin('GET', '/v1/admin/ca') : admin('POST', `/v1/admin/ca/${step}`))) as {
    phase: string;
    roots: { role: string; subject: string; notAfter: string; retiresAt?: string }[];
  };
  out(
    `root rotation: ${status.phase === 'prepared' ? 'PREPARED (activate once every workload has the new bundle: one SVID lifetime)' : 'stable'}`,
  );
  for (const root of status.roots)
    out(
      `${root.role.padEnd(9)} ${root.subject}  valid until ${root.notAfter}${root.retiresAt ? `  leaves the bundle at ${root.retiresAt}` : ''}`,
    );
  return 0;
}

/** Runs the reference shop's drill (it lives with the shop, in examples/shop) and passes its exit code on. */
async function drill(argv: readonly string[], err: Out): Promise<number> {
  const script = fileURLToPath(new URL('../../../examples/shop/drill/main.ts', import.meta.url));
  if (!existsSync(script)) {
    err(
      `lockstep: the drill comes with the reference shop (${script}), which is not in this installation: run it from a checkout of the Lockstep repository`,
    );
    return 2;
  }
  const child = spawn(process.execPath, [script, ...argv], { stdio: 'inherit' });
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}

const AUDIT_USAGE =
  'usage: lockstep audit verify [--keys <jwks.json>] [--postgres <url> [--schema <name>]] [--kek-file <file>] [--as-of <time>] [--against <checkpoint file or JWS>]' +
  '  |  lockstep audit checkpoint [--postgres <url> [--schema <name>]]  |  lockstep audit keys [--postgres <url> [--schema <name>]] [--kek-file <file>]';

async function audit(argv: readonly string[], out: Out): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      keys: { type: 'string' },
      postgres: { type: 'string' },
      schema: { type: 'string' },
      'kek-file': { type: 'string' },
      'as-of': { type: 'string' },
      against: { type: 'string' },
    },
  });
  const state = localState();
  const command = positionals.length === 1 ? positionals[0] : undefined;
  if (values.schema !== undefined && values.postgres === undefined)
    throw new UsageError('--schema names the PostgreSQL schema of --postgres: give --postgres <url> too');
  const schema = values.schema ?? 'public';
  if (command === 'keys') {
    out(JSON.stringify(await auditJwks(state, values.postgres, schema, values['kek-file']), null, 2));
    return 0;
  }
  if (command !== 'verify' && command !== 'checkpoint') throw new UsageError(AUDIT_USAGE);
  if (values.postgres === undefined && !existsSync(state.database))
    throw new UsageError(
      `no store at ${state.database}: run this where the control plane keeps its state, or pass --postgres <url>`,
    );
  if (command === 'checkpoint') {
    // The newest link, alone on stdout: keep it outside the store (a witness) and later prove the
    // trail still extends it with `lockstep audit verify --against <file>`.
    const store = await openStoreAt(storeLocation(state, values.postgres, values.schema));
    try {
      const newest = await store.newestAuditLink();
      if (newest === null)
        throw new UsageError(
          'the trail has no checkpoint yet: start the control plane (it signs one at start and every minute)',
        );
      out(newest.jws);
      return 0;
    } finally {
      await store.close();
    }
  }
  let jwks;
  if (values.keys !== undefined) {
    try {
      jwks = JSON.parse(readFileSync(values.keys, 'utf8')) as { keys: JWK[] };
    } catch (error) {
      throw new UsageError(`--keys ${values.keys}: not a JWKS file (${(error as Error).message})`);
    }
  } else {
    jwks = await auditJwks(state, values.postgres, schema, values['kek-file']);
  }
  let asOf: number | undefined;
  if (values['as-of'] !== undefined) {
    asOf = Date.parse(values['as-of']);
    if (Number.isNaN(asOf))
      throw new UsageError(`--as-of ${values['as-of']}: not a time; give an ISO 8601 time, e.g. 2026-12-07T10:00:00Z`);
  }
  let against: string | undefined;
  if (values.against !== undefined) {
    against = existsSync(values.against) ? readFileSync(values.against, 'utf8').trim() : values.against.trim();
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(against))
      throw new UsageError(
        `--against ${values.against}: neither a file nor a checkpoint; give what \`lockstep audit checkpoint\` printed`,
      );
  }
  // The newest link the monitor signed here (beside the audit key): the store must still hold it.
  const headFile = join(state.keyDir, AUDIT_HEAD_FILE);
  let head: { n: number; digest: string; file: string; chain: string | null } | undefined;
  let headNote: string | null = null;
  if (!existsSync(headFile)) {
    headNote = `no head file at ${headFile}: a rollback to an earlier clean stop is not looked for (run this where the control plane keeps its keys)`;
  } else {
    try {
      const parsed = JSON.parse(readFileSync(headFile, 'utf8')) as { n?: unknown; digest?: unknown; chain?: unknown };
      if (typeof parsed.n !== 'number' || typeof parsed.digest !== 'string') throw new Error('it names no link');
      head = {
        n: parsed.n,
        digest: parsed.digest,
        file: headFile,
        chain: typeof parsed.chain === 'string' ? parsed.chain : null,
      };
    } catch (error) {
      headNote = `the head file ${headFile} is unreadable (${(error as Error).message}): a rollback to an earlier clean stop is not looked for; the control plane writes it again at its next checkpoint`;
    }
  }
  const store = await openStoreAt(storeLocation(state, values.postgres, values.schema));
  try {
    const report = await verifyTrail(store, jwks, {
      ...(asOf === undefined ? {} : { asOf }),
      ...(against === undefined ? {} : { against }),
      ...(head === undefined ? {} : { head }),
    });
    const newest = report.chain.newest;
    out(
      newest === null
        ? 'checkpoints: none'
        : `checkpoints: ${report.chain.links} links, newest ${newest.n} (${newest.kind}) at ${new Date(newest.at).toISOString()}`,
    );
    for (const source of report.sources)
      out(`${source.source}: ${source.events} events, ${source.checkpointed} checkpointed`);
    for (const note of headNote === null ? report.notes : [...report.notes, headNote]) out(`note  ${note}`);
    for (const problem of report.problems)
      out(
        `${problem.kind.toUpperCase()}  ${problem.source}${problem.seq === undefined ? '' : ` @${problem.seq}`}  ${problem.detail}`,
      );
    out(
      report.ok
        ? `audit trail verified: ${report.sources.length} sources, no problem found${values.keys === undefined ? ' (checked with the keys in this state directory; for an independent check pass --keys with a copy kept elsewhere)' : ''}`
        : `audit trail NOT intact: ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}`,
    );
    return report.ok ? 0 : 1;
  } finally {
    await store.close();
  }
}

async function revoke(argv: readonly string[], out: Out): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: { reason: { type: 'string' }, lift: { type: 'boolean' } },
  });
  if (positionals.length !== 2 || !values.reason) {
    throw new UsageError('usage: lockstep revoke [--lift] <sub|txn|spiffeId|kid> <value> --reason <why>');
  }
  const body = { kind: positionals[0], value: positionals[1], reason: values.reason };
  // A revocation may be asked again of another replica: revoking what is revoked answers the entry that holds.
  // A lift is not: sent again after it worked (an answer lost), it would be refused as not revoked (exit 2).
  // It goes to the next replica only when no connection was made.
  if (values.lift === true) {
    const lifted = await admin('POST', '/v1/admin/revocations/lift', body);
    out(
      `lifted the revocation of ${String(lifted.kind)} ${String(lifted.value)} (feed position ${String(lifted.seq)}): ` +
        'guards accept it again within a second',
    );
    return 0;
  }
  const entry = await admin('POST', '/v1/admin/revocations', body, { idempotent: true });
  out(`revoked ${String(entry.kind)} ${String(entry.value)} (feed position ${String(entry.seq)})`);
  return 0;
}

async function services(out: Out): Promise<number> {
  const { services: list } = (await admin('GET', '/v1/services')) as {
    services: {
      service: string;
      spiffeId: string;
      policyVersion: string | null;
      mode: string;
      svidExpiresAt: number;
      stale: boolean;
      routes: unknown[];
    }[];
  };
  if (list.length === 0) {
    out('no guard has registered yet');
    return 0;
  }
  out('service            mode      policy        routes  SVID expires               status');
  for (const entry of list) {
    out(
      `${entry.service.padEnd(18)} ${entry.mode.padEnd(9)} ${(entry.policyVersion ?? 'none').slice(0, 12).padEnd(13)} ${String(entry.routes.length).padStart(6)}  ${new Date(entry.svidExpiresAt).toISOString().padEnd(26)} ${entry.stale ? 'STALE' : 'ok'}`,
    );
  }
  return 0;
}

async function policyValidate(argv: readonly string[], out: Out): Promise<number> {
  if (argv.length > 1) throw new UsageError('usage: lockstep policy validate [<policy directory>]');
  const dir = argv[0] ?? 'policies';
  try {
    const set = await loadPolicyDir(dir);
    out(`${dir}: valid — ${Object.keys(set.policies).length} policies, version ${set.version}`);
    return 0;
  } catch (error) {
    out(`${dir}: REFUSED — ${(error as Error).message}`);
    return 1;
  }
}

async function policyTest(argv: readonly string[], out: Out): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: { cases: { type: 'string' } },
  });
  if (positionals.length > 1)
    throw new UsageError('usage: lockstep policy test [<policy directory>] [--cases <file.yaml>]');
  const dir = positionals[0] ?? 'policies';
  const file = values.cases ?? join(dir, 'tests.yaml');
  if (!existsSync(file))
    throw new UsageError(`no test cases at ${file}: write them there (see lockstep help), or pass --cases`);
  const cases = parsePolicyCases(readFileSync(file, 'utf8'), file);
  let set;
  try {
    set = await loadPolicyDir(dir);
  } catch (error) {
    out(`${dir}: REFUSED — ${(error as Error).message}`);
    return 1;
  }
  const results = runPolicyTests(set, cases);
  for (const result of results)
    out(`${result.passed ? '✓' : '✗'} ${result.name}${result.passed ? '' : `\n    ${result.diff}`}`);
  const failed = results.filter((result) => !result.passed).length;
  out(`${results.length - failed} passed, ${failed} failed (${dir}, version ${set.version.slice(0, 12)})`);
  return failed === 0 ? 0 : 1;
}

async function policyStatus(argv: readonly string[], out: Out): Promise<number> {
  if (argv.length !== 1 || argv[0] !== 'status')
    throw new UsageError('usage: lockstep policy status | validate [<dir>] | test [<dir>] [--cases <file>]');
  const status = (await admin('GET', '/v1/admin/policy')) as {
    version: string | null;
    lastRefusal: { reason: string; at: string } | null;
    services: { service: string; expected: string | null; enforced: string | null; inSync: boolean }[];
  };
  out(`policy in force: ${status.version ?? 'none (no valid policy set)'}`);
  if (status.lastRefusal !== null)
    out(`latest change REFUSED at ${status.lastRefusal.at}: ${status.lastRefusal.reason}`);
  const short = (version: string | null) => (version ?? 'none').slice(0, 12);
  for (const entry of status.services) {
    out(
      `${entry.service.padEnd(18)} expects ${short(entry.expected).padEnd(12)}  enforces ${short(entry.enforced).padEnd(12)}  ${entry.inSync ? 'in sync' : 'DRIFT'}`,
    );
  }
  // Non-zero when nothing can be served (1) or any guard is behind (3), so that scripts and CI can act on it.
  if (status.version === null) return 1;
  const drifting = status.services.filter((entry) => !entry.inSync).length;
  return drifting === 0 ? 0 : 3;
}
