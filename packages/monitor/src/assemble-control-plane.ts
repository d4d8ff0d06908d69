/**
 * The composition root of a running control plane with its monitor: what `lockstep control-plane`
 * runs, and what the tests and the reference shop (through the CLI) start. One call wires
 *
 *   keys        the workload CA, the policy signing key, the Txn-Token, identity-provider and audit
 *               key rings, the cookie secret (created on first start: development material, said loudly)
 *   store       SQLite or PostgreSQL
 *   policy      the policy service on a directory (watched), when there is one
 *   TTS, IdP    the Txn-Token Service and the identity provider (with external issuers by discovery)
 *   monitor     collector, detector (+ sign-ins, webhook), checkpointer, metrics, dashboard, scan receiver,
 *               the admin API's events (`GET /v1/admin/events`: `lockstep events`)
 *   admin trail every admin action and policy change as an event of the control plane's own source
 *   admin       a local administrator's SVID
 *
 * It lives here, in the monitor, because this is the lowest package that sees every piece (the
 * control plane's and the monitor's) without a dependency cycle; the CLI only parses arguments,
 * calls it and writes its state files.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import {
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  discoverIssuer,
  issueAdminCredentials,
  fileKeyVault,
  importKeyFiles,
  openCookieKeys,
  openKeyRing,
  openPostgresStore,
  openSigningKey,
  openSqliteStore,
  sealedKeyVault,
  openWorkloadCa,
  startControlPlane,
  subscribeLogins,
  toKeyVault,
  VAULT_GENERATIONS_FILE,
  type AdminCredentials,
  type ControlPlaneServerOptions,
  type ControlPlaneStore,
  type IdentityProvider,
  type Kek,
  type KeyRing,
  type KeyVault,
  type PolicyService,
  type RecoveryReuse,
  type RevocationKind,
  type RevocationRecord,
  type SigningKey,
  type SubjectVerifier,
  type TxnTokenService,
  type UnreachableReport,
  type WorkloadCa,
} from '@lockstep/control-plane';
import type { DecisionEvent } from '@lockstep/guard';
import { serveAdminEvents } from './admin-events.ts';
import { recordAdminTrail, type AdminTrail } from './admin-trail.ts';
import { AUDIT_HEAD_FILE, startCheckpointer, witnessAppends, type Checkpointer } from './checkpoints.ts';
import { createCollector, type Collector } from './collector.ts';
import { createDashboard } from './dashboard.ts';
import { createDetector, type Detector, type DetectorOptions } from './detector.ts';
import { createMonitorMetrics } from './metrics.ts';
import { createScanReceiver } from './scans.ts';
import { createWebhook } from './webhook.ts';

/** Txn-Tokens live 5 min at most: a retired key stays published 10 min. */
const TXN_KEY_RETAIN_MS = 10 * 60_000;
const IDP_KEY_RETAIN_MS = 24 * 3_600_000;
/** Retired checkpoint keys stay published for ten years, so that old checkpoints keep verifying. */
const AUDIT_KEY_RETAIN_MS = 10 * 365 * 24 * 3_600_000;
const EXTERNAL_ISSUER_RETRY_MS = 30_000;

type IdpServerOptions = NonNullable<ControlPlaneServerOptions['idp']>;

export interface ExternalIssuer {
  readonly issuer: string;
  /** The `aud` of its access tokens for us. */
  readonly audience: string;
}

/** Where the store is: a SQLite file, or a PostgreSQL database (and schema). */
export type StoreLocation = { readonly sqlite: string } | { readonly postgres: string; readonly schema?: string };

/** Where the lines a running control plane says go. */
export interface ControlPlaneOutput {
  /** Progress (a policy applied, an issuer trusted). Default: nowhere. */
  readonly line?: (text: string) => void;
  /** Development material, missing configuration. Default: stderr. */
  readonly warning?: (text: string) => void;
  /** Refused policy changes, alerts, failures (an admin event not written, a failed checkpoint). Default: stderr. */
  readonly error?: (text: string) => void;
}

export interface ControlPlaneAssemblyOptions {
  /** e.g. `shop.example` (checked by the caller: the CLI ties a state directory to one trust domain). */
  readonly trustDomain: string;
  /** Keys of the CA, the signing keys and key rings (0700, files 0600); created when missing. */
  readonly keyDir: string;
  /**
   * The key-encryption key (`readKek()`: LOCKSTEP_KEK_FILE or LOCKSTEP_KEK). With PostgreSQL, the keys
   * are then sealed in the database and shared by every replica; without one they stay in `keyDir`.
   */
  readonly kek?: Kek | null;
  readonly store: StoreLocation;
  /** Lifetime of workloads' SVIDs, 60 s to 24 h (default 1 h): `startControlPlane`'s `svidLifetimeSeconds`. */
  readonly svidLifetimeSeconds?: number;
  /** How long after expiry an SVID may recover (default 7 days, 0: off): `startControlPlane`'s `svidRecoveryWindowSeconds`. */
  readonly svidRecoveryWindowSeconds?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (any free port). */
  readonly port?: number;
  /** The policy directory. None, or one that does not exist: guards get no policy (said loudly). */
  readonly policyDir?: string;
  /** Apply the directory's changes as they are saved (default true). */
  readonly watchPolicy?: boolean;
  /** The identity provider's clients and protected resource (default: no clients, `https://<td>/api`). */
  readonly idp?: {
    readonly clients?: IdpServerOptions['clients'];
    readonly resource?: IdpServerOptions['resource'];
    /** OpenID providers whose access tokens the TTS also exchanges; found by discovery, retried every 30 s. */
    readonly externalIssuers?: readonly ExternalIssuer[];
    /**
     * The identity provider's issuer (ending in /oidc): default this server's URL + /oidc. Replicas
     * must share one (the name users reach them by, e.g. a load balancer's), or each would refuse
     * the others' tokens.
     */
    readonly issuer?: string;
  };
  /** Signed checkpoints of every source, this often (default 60 s). */
  readonly checkpointIntervalMs?: number;
  readonly detection?: Pick<DetectorOptions, 'thresholds' | 'sweepMs' | 'verifyEveryMs'>;
  /** Alerts are also posted here, signed with `secret` (32 characters or more). */
  readonly alertWebhook?: { readonly url: string; readonly secret: string };
  /** The local administrator: `spiffe://<td>/admin/<adminName>` (default `admin`). */
  readonly adminName?: string;
  readonly output?: ControlPlaneOutput;
}

export interface AssembledControlPlane {
  readonly url: string;
  readonly trustDomain: string;
  /** The SPIFFE ID the server presents, and the source of its own events in the trail. */
  readonly spiffeId: string;
  readonly store: ControlPlaneStore;
  readonly ca: WorkloadCa;
  /** The trust bundle now (a root rotation changes it). */
  readonly bundlePem: string;
  readonly tts: TxnTokenService;
  readonly policy: PolicyService | null;
  readonly idp: IdentityProvider | null;
  /** The local administrator's SVID, issued at this start. */
  readonly admin: AdminCredentials;
  readonly auditKeys: KeyRing;
  readonly collector: Collector;
  readonly detector: Detector;
  readonly checkpointer: Checkpointer;
  readonly adminTrail: AdminTrail;
  /** Revokes and pushes to every connected guard (in process: not an admin API call). */
  revoke(entry: { kind: RevocationKind; value: string; reason: string; actor: string }): Promise<RevocationRecord>;
  /** Lifts a revocation made by mistake and pushes that to every connected guard; null when none holds. */
  lift(entry: { kind: RevocationKind; value: string; reason: string; actor: string }): Promise<RevocationRecord | null>;
  /** Stops serving, writes the queued admin events and a last checkpoint, then closes the store. */
  close(): Promise<void>;
}

/** The audit key ring: `lockstep audit keys` and `audit verify` read it too. `keys`: the vault, or a key directory. */
export function openAuditKeys(keys: KeyVault | string, onCreated?: (message: string) => void): Promise<KeyRing> {
  return openKeyRing(keys, 'audit', { retainMs: AUDIT_KEY_RETAIN_MS, ...(onCreated ? { onCreated } : {}) });
}

/**
 * Every key a control plane needs, created when missing (what `lockstep init` prepares). `keys`: the
 * key vault (shared by replicas), or a key directory (today's files).
 */
export async function openControlPlaneKeys(
  trustDomain: string,
  keys: KeyVault | string,
  onCreated?: (message: string) => void,
) {
  const vault = toKeyVault(keys);
  const created = onCreated === undefined ? {} : { onCreated };
  return {
    ca: await openWorkloadCa({ trustDomain, vault, ...created }),
    policyKey: await openSigningKey(vault, 'policy', onCreated),
    txnKeys: await openKeyRing(vault, 'txn-token', { retainMs: TXN_KEY_RETAIN_MS, ...created }),
    idpKeys: await openKeyRing(vault, 'idp', { retainMs: IDP_KEY_RETAIN_MS, ...created }),
    cookieKeys: await openCookieKeys(vault, onCreated),
    auditKeys: await openAuditKeys(vault, onCreated),
  };
}

/**
 * Where this control plane's keys are. PostgreSQL with a key-encryption key: sealed in the database,
 * shared by every replica (what the key directory holds is imported once, if the database has no keys
 * yet). Otherwise the key directory, as a control plane that runs alone keeps them — said loudly on
 * PostgreSQL, where replicas would each have their own CA.
 */
async function openKeyVault(
  options: ControlPlaneAssemblyOptions,
  store: ControlPlaneStore,
  say: Say,
): Promise<KeyVault> {
  if (!('postgres' in options.store)) return fileKeyVault(options.keyDir);
  if (options.kek === undefined || options.kek === null) {
    say.warning(
      `the keys stay in ${options.keyDir}, not in PostgreSQL: replicas of this control plane would each have their own CA and ` +
        'signing keys, and the policy is per replica too (each applies its own policy directory; it is shared only ' +
        'with the keys). To share them, give every replica the same key-encryption key (LOCKSTEP_KEK_FILE; create ' +
        'one with `lockstep keys new-kek <file>`), see docs/operations.md "Replicas"',
    );
    return fileKeyVault(options.keyDir);
  }
  const schema = options.store.schema ?? 'public';
  const vault = await sealedKeyVault({
    store,
    kek: options.kek,
    schema,
    // What this replica has seen, so that a rollback made while it was down is refused too.
    generationsFile: {
      path: join(options.keyDir, VAULT_GENERATIONS_FILE),
      scope: `${databaseOf(options.store.postgres)} schema ${schema}`,
    },
    onError: (error) => say.error(`key vault: ${error.message}`),
  });
  try {
    const moved = await importKeyFiles(options.keyDir, vault);
    if (moved.imported.length > 0)
      say.warning(
        `imported ${moved.imported.join(', ')} from ${options.keyDir} into ${vault.where}: every replica shares them now; ` +
          'the files are no longer read',
      );
    if (moved.ignored.length > 0)
      say.warning(
        `${options.keyDir} holds keys of its own (${moved.ignored.join(', ')}) that ${vault.where} had already: this ` +
          'replica uses the shared ones; workloads that joined it before must join again if it had another CA',
      );
  } catch (error) {
    await vault.close();
    throw error;
  }
  return vault;
}

export async function assembleControlPlane(options: ControlPlaneAssemblyOptions): Promise<AssembledControlPlane> {
  const { trustDomain } = options;
  const say = outputOf(options.output);
  // Every append is witnessed: the checkpointer checks the tail it has not signed yet against it.
  const { store, witness } = witnessAppends(await openStoreAt(options.store));
  // Whatever started is stopped again when a later piece fails to start.
  const undo: (() => unknown)[] = [() => store.close()];
  try {
    const vault = await openKeyVault(options, store, say);
    undo.push(() => vault.close());
    const keys = await openControlPlaneKeys(trustDomain, vault, say.warning);
    const closeKeys = () => {
      for (const ring of [keys.txnKeys, keys.idpKeys, keys.auditKeys]) ring.close();
      keys.ca.close();
    };
    undo.push(closeKeys);
    const { ca } = keys;
    // Replicas share the policy only when they share the key that signs it: a policy in the database signed by
    // one replica's own key would not verify at the others.
    // Only the sealed vault (PostgreSQL and a KEK) is shared.
    const shared = vault.shared;
    const policy = await policyService(options, keys.policyKey, say, shared ? store : null);
    if (policy !== null) undo.push(() => policy.close());
    const adminTrail = recordAdminTrail({ store, trustDomain, onError: say.error });
    undo.push(() => adminTrail.close());
    // The policy in force at start: changes made while the control plane was down are in the trail too.
    if (policy !== null) adminTrail.record(policyAtStart(policy));

    const subjects = createSubjectVerifier({ issuers: [], txnTokenKeys: () => keys.txnKeys.publicJwks(), trustDomain });
    const tts = createTxnTokenService({
      trustDomain,
      keys: keys.txnKeys,
      subjects,
      isRevoked: (kind, value) => store.isRevoked(kind, value),
    });
    const resource = options.idp?.resource ?? { indicator: `https://${trustDomain}/api`, scopes: [] };
    const externalIssuers = options.idp?.externalIssuers ?? [];
    const stopIssuers = externalIssuers.map((external) => trustExternalIssuer(subjects, external, say));
    const stopTrusting = () => {
      for (const stop of stopIssuers) stop();
    };
    undo.push(stopTrusting);

    const expectedPolicyVersion =
      policy === null
        ? {}
        : { expectedPolicyVersion: async (service: string) => (await policy.bundleFor(service))?.version ?? null };
    const monitor = startMonitor(store, trustDomain, keys.auditKeys, expectedPolicyVersion, options, say);
    undo.push(monitor.stop);
    const { collector, detector } = monitor;
    const server = await startControlPlane({
      ca,
      store,
      tts,
      ...(policy === null ? {} : { policy }),
      idp: {
        keys: keys.idpKeys,
        cookieKeys: keys.cookieKeys,
        clients: options.idp?.clients ?? [],
        resource,
        ...(options.idp?.issuer === undefined ? {} : { issuer: options.idp.issuer }),
      },
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      ...(options.svidLifetimeSeconds === undefined ? {} : { svidLifetimeSeconds: options.svidLifetimeSeconds }),
      ...(options.svidRecoveryWindowSeconds === undefined
        ? {}
        : { svidRecoveryWindowSeconds: options.svidRecoveryWindowSeconds }),
      onInternalError: (error) => say.error(`internal error: ${error.stack ?? error.message}`),
      extensions: [
        ...monitor.extensions,
        createDashboard({ store, resource: resource.indicator, ...expectedPolicyVersion }),
        serveAdminEvents,
      ],
    });
    undo.push(() => server.close());
    const checkpointer = startCheckpointer({
      store,
      keys: keys.auditKeys,
      intervalMs: options.checkpointIntervalMs ?? 60_000,
      headFile: join(options.keyDir, AUDIT_HEAD_FILE),
      witness,
      onError: (error) => say.error(`audit checkpoint failed: ${error.message}`),
      onIncident: (incident) => detector.observeTrailIncident(incident),
    });
    undo.push(() => checkpointer.stop());
    const admin = await issueAdminCredentials(ca, options.adminName ?? 'admin');

    let closing: Promise<void> | null = null;
    const close = async () => {
      monitor.stop();
      stopTrusting();
      await server.close();
      // Batches whose connection the close cut still append: wait for them before the store closes.
      await collector.close();
      // Admin calls in flight waited for the trail; what is still queued (refused calls) before the checkpoint.
      await adminTrail.close();
      await checkpointer.stop();
      policy?.close();
      closeKeys();
      await vault.close();
      await store.close();
    };
    return {
      url: server.url,
      trustDomain,
      spiffeId: server.spiffeId,
      store,
      ca,
      tts,
      policy,
      idp: server.idp,
      admin,
      auditKeys: keys.auditKeys,
      collector,
      detector,
      checkpointer,
      adminTrail,
      get bundlePem() {
        return ca.bundlePem;
      },
      revoke: (entry) => server.revoke(entry),
      lift: (entry) => server.lift(entry),
      close: () => (closing ??= close()),
    };
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // The start failed already: that error is the one to report.
      }
    }
    throw error;
  }
}

function outputOf(output: ControlPlaneOutput | undefined): Say {
  return {
    line: output?.line ?? (() => {}),
    warning: output?.warning ?? ((text) => process.stderr.write(`lockstep: WARNING ${text}\n`)),
    error: output?.error ?? ((text) => process.stderr.write(`lockstep: ${text}\n`)),
  };
}

/** The store cannot be opened: which one, why, and what to do. */
export class StoreUnavailableError extends Error {
  readonly code = 'LOCKSTEP_STORE_UNAVAILABLE';
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** The store at `location` (`lockstep audit verify` and tests open it again after a stop). */
export async function openStoreAt(location: StoreLocation): Promise<ControlPlaneStore> {
  if ('sqlite' in location) {
    try {
      return openSqliteStore(location.sqlite);
    } catch (error) {
      throw new StoreUnavailableError(
        `the store ${location.sqlite} cannot be opened (${(error as Error).message}). ` +
          'Fix: restore it from a backup, or move it away to start with an empty store (its users, revocations and ' +
          'audit trail stay in the moved file)',
        { cause: error },
      );
    }
  }
  const schema = location.schema === undefined ? {} : { schema: location.schema };
  try {
    return await openPostgresStore({ connectionString: location.postgres, ...schema });
  } catch (error) {
    if (error instanceof TypeError) throw error;
    const where = URL.canParse(location.postgres) ? withoutPassword(location.postgres) : 'given with --postgres';
    throw new StoreUnavailableError(
      `the PostgreSQL store ${where} cannot be opened (${(error as Error).message}): ` +
        'start it, or check the URL and its credentials',
      { cause: error },
    );
  }
}

/** The database a connection string names, without credentials: `host:port/database`. */
function databaseOf(connectionString: string): string {
  if (!URL.canParse(connectionString)) return 'postgres';
  const { host, pathname } = new URL(connectionString);
  return `${host}${pathname}`;
}

function withoutPassword(url: string): string {
  const parsed = new URL(url);
  if (parsed.password !== '') parsed.password = '***';
  return parsed.toString();
}

type Say = Required<ControlPlaneOutput>;

async function policyService(
  options: ControlPlaneAssemblyOptions,
  signingKey: SigningKey,
  say: Say,
  /** The store replicas share the policy through (PostgreSQL with a KEK); null: the directory is the policy. */
  sharedStore: ControlPlaneStore | null,
): Promise<PolicyService | null> {
  const dir = options.policyDir;
  if (dir === undefined || !existsSync(dir)) {
    say.warning(
      `no policy directory at ${dir ?? '(none given)'}: ` +
        'guards get no policy (they answer 503) until you pass --policy-dir',
    );
    return null;
  }
  const watch = options.watchPolicy ?? true;
  // Replicas sharing their keys share one policy too: the store's head, signed, which a directory edit publishes.
  const shared = sharedStore !== null;
  const policy = await createPolicyService({
    dir,
    signingKey,
    watch,
    ...(sharedStore === null ? {} : { shared: { store: sharedStore } }),
  });
  policy.onChange((change) =>
    change.kind === 'applied'
      ? say.line(
          `policy ${change.version} applied (${change.policies} policies` +
            `${change.appliedBy === undefined ? '' : `, published by ${change.appliedBy}`})`,
        )
      : say.error(`policy change REFUSED, keeping ${change.keptVersion ?? 'nothing'}: ${change.reason}`),
  );
  if (policy.version === null && shared && policy.directoryVersion !== null) {
    // The directory is valid, the shared head is not: said by the refusal, with what fixes it.
    say.warning(
      `no policy in force: the shared policy was REFUSED (${policy.lastRefusal?.reason ?? 'unknown'}); ` +
        'guards will answer 503 until a valid one is published',
    );
  } else if (policy.version === null) {
    // Why, with the file and line: the change listener above was not there yet to say it.
    const refused = policy.lastRefusal === null ? '' : ` (REFUSED: ${policy.lastRefusal.reason})`;
    say.warning(
      `the policy directory ${dir} holds no valid policy set yet${refused}: guards will answer 503 until it does`,
    );
  } else if (!shared) {
    const applied = watch ? '; changes are applied as they are saved' : '';
    say.line(`policy ${policy.version} in force (from ${dir}${applied})`);
  } else {
    const published = watch ? '; changes saved there are published to every replica' : '';
    say.line(`policy ${policy.version} in force (shared by the replicas in the store; directory ${dir}${published})`);
    if (policy.directoryVersion !== policy.version) {
      const holds =
        policy.directoryVersion === null
          ? `no valid policy set${policy.lastRefusal === null ? '' : ` (REFUSED: ${policy.lastRefusal.reason})`}`
          : `policy ${policy.directoryVersion}`;
      say.warning(
        `the policy directory ${dir} holds ${holds}, NOT the shared policy ${policy.version} in force: ` +
          'this replica adopted the shared one and leaves its directory alone (a stale copy never rolls policy back). ' +
          `Bring it up to date from ${policy.publishedBy ?? 'the replica that published it'}: ` +
          'a change saved there is published to every replica',
      );
    }
  }
  return policy;
}

/**
 * The policy set found at start, as the event a policy change is (`admin:policy.apply`, no caller:
 * nobody authenticated wrote the directory): applied with its version, or refused, keeping nothing.
 */
function policyAtStart(policy: PolicyService): DecisionEvent {
  const { version } = policy;
  return {
    time: new Date().toISOString(),
    service: 'control-plane',
    requestId: randomUUID(),
    caller: null,
    sub: null,
    txn: null,
    method: 'START',
    route: 'policy directory',
    action: 'admin:policy.apply',
    resource: version ?? 'none',
    decision: version === null ? 'deny' : 'allow',
    policyIds: [],
    policyVersion: null,
    reason: version === null ? 'LOCKSTEP_POLICY_REFUSED' : 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 0,
    traceId: null,
  };
}

/**
 * The monitor's pieces on the control plane's server: the collector feeding the detector (also told
 * about every sign-in), alerts printed and sent, metrics and the scan receiver. Admin events are not
 * fed to the detector: its rules read guards' decisions (an administrator's refused typo is no denial
 * burst, the admin API no service edge); the trail, its checkpoints and the sweep's verify cover them.
 */
function startMonitor(
  store: ControlPlaneStore,
  trustDomain: string,
  auditKeys: KeyRing,
  expectedPolicyVersion: Pick<DetectorOptions, 'expectedPolicyVersion'>,
  options: ControlPlaneAssemblyOptions,
  say: Say,
) {
  const detector = createDetector({
    store,
    auditKeys: () => auditKeys.publicJwks(),
    ...expectedPolicyVersion,
    ...options.detection,
    onError: (error) => say.error(`detection failed: ${error.message}`),
  });
  const stopLogins = subscribeLogins((event) => detector.observeLogin(event));
  sendAlerts(detector, options.alertWebhook, say);
  const collector = createCollector({ store, trustDomain, onAppended: (batch) => detector.observeDecisions(batch) });
  const metrics = createMonitorMetrics({ store, trustDomain, collector, detector });
  const scans = createScanReceiver({ store, trustDomain });
  const extensions = [
    (app: FastifyInstance) => collector.register(app),
    (app: FastifyInstance) => scans.register(app),
    (app: FastifyInstance) => metrics.register(app),
    // Guards tell of an outage only once they reach the control plane again: with their next heartbeat.
    () => ({
      onUnreachable: (report: UnreachableReport) => detector.observeUnreachable(report),
      onRecoveryReuse: (reuse: RecoveryReuse) => detector.observeRecoveryReuse(reuse),
    }),
  ];
  return {
    detector,
    collector,
    extensions,
    stop: () => {
      detector.stop();
      stopLogins();
    },
  };
}

/** Alerts: printed, and posted to the webhook when there is one. */
function sendAlerts(detector: Detector, webhookOptions: ControlPlaneAssemblyOptions['alertWebhook'], say: Say): void {
  if (webhookOptions !== undefined) {
    const webhook = createWebhook({
      ...webhookOptions,
      onFailure: (alert, error) =>
        say.error(`alert ${alert.id} (${alert.rule}) not delivered to the webhook: ` + error.message),
    });
    detector.onAlert((alert) => void webhook.deliver(alert));
  }
  detector.onAlert((alert) => say.error(`ALERT ${alert.severity} ${alert.rule}: ${alert.summary}`));
}

/**
 * An external OpenID provider whose access tokens the TTS exchanges: found by discovery. If it
 * cannot be reached now, the control plane starts anyway (its tokens are refused meanwhile) and
 * tries again every 30 s, until the returned function stops it.
 */
function trustExternalIssuer(subjects: SubjectVerifier, external: ExternalIssuer, say: Say): () => void {
  let retry: NodeJS.Timeout | null = null;
  let stopped = false;
  const attempt = () => {
    discoverIssuer(external.issuer, external.audience).then(
      (issuer) => {
        if (stopped) return;
        subjects.addIssuer(issuer);
        say.line(`external issuer ${external.issuer} trusted (keys from ${String(issuer.jwks)})`);
      },
      (error: Error) => {
        if (stopped) return;
        say.warning(`${error.message}; its access tokens are refused until it answers (next try in 30 s)`);
        retry = setTimeout(attempt, EXTERNAL_ISSUER_RETRY_MS);
        retry.unref();
      },
    );
  };
  attempt();
  return () => {
    stopped = true;
    if (retry !== null) clearTimeout(retry);
  };
}
