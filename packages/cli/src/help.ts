/**
 * What `lockstep help`, `lockstep <command> --help` (or `help <command>`) and `lockstep --version`
 * print: one entry per command — its usage lines, then what it does and its exit codes.
 */
import { readFileSync } from 'node:fs';

const STATE =
  'state directory: LOCKSTEP_HOME (LOCKSTEP_DATA_DIR is another name for it), default ./.lockstep\n' +
  'admin commands ask every control plane (replica) that started there, in turn, or LOCKSTEP_CP_URLS (comma-separated)';

const COMMANDS: Readonly<Record<string, { readonly usage: string; readonly about: string }>> = {
  init: {
    usage: 'lockstep init [--trust-domain lockstep.test]      (dev CA and keys, without starting anything)',
    about: `Creates what control-plane would on its first start (CA, signing keys, key rings, cookie secret) and
says loudly that it is development material. Existing keys are kept and checked.`,
  },
  'control-plane': {
    usage:
      'lockstep control-plane [--trust-domain lockstep.test] [--host 127.0.0.1] [--port 8443] [--policy-dir ./policies] [--postgres <url> [--schema <name>]] [--kek-file <file>] [--replica <name>] [--issuer <https://host/oidc>] [--idp-config <file>] [--svid-lifetime <seconds>] [--svid-recovery-window <7d>]',
    about: `Runs the control plane with its state in the state directory (keys, SQLite store or --postgres, the
trust bundle, a local administrator's SVID) until SIGINT or SIGTERM. One control plane per state
directory (or per --replica name): a second start is refused with the first one's pid; a lock left by one that died is taken over.
--svid-lifetime: how long workloads' SVIDs live, 60 to 86400 s (default 3600); they renew at half of it.
--svid-recovery-window: how long after expiry a cut-off workload's newest SVID may still get a new one
(POST /v1/recover; default 7d, 0 turns it off).
--kek-file (or LOCKSTEP_KEK_FILE / LOCKSTEP_KEK): with --postgres, the keys are sealed in the database under
this key-encryption key and shared by every replica (docs/operations.md "Replicas").
--replica <name> (a short lower-case word, e.g. r0; needs --postgres and a key-encryption key): one of
several control planes on this state directory, each with its own lock (control-plane.<name>.lock), URL
(replicas/<name>.json) and administrator SVID (replicas/<name>/); the admin commands try them in turn.
--schema: the PostgreSQL schema of --postgres (default public).
--issuer: the identity provider's issuer, the same for every replica (default this server's URL + /oidc).
Exit 1 when it cannot start (port in use, state directory in use, an unusable key or store file: the
message names it and the fix); 2 for a mistake in the arguments.`,
  },
  'join-token': {
    usage: 'lockstep join-token create <service> [--ttl <seconds>]',
    about: 'Prints a one-time token with which <service> joins (gets its first SVID).',
  },
  user: {
    usage: 'lockstep user add <name> [--role <role>]... [--tenant <tenant>]',
    about: 'Adds a user of the identity provider; prints a generated password once.',
  },
  keys: {
    usage:
      'lockstep keys rotate <txn-token|idp>  |  lockstep keys new-kek <file>  |  lockstep keys rewrap --postgres <url> [--schema <name>] [--kek-file <file>]',
    about: `rotate: the published next key signs from now on; the retired one stays published until its tokens expire.
new-kek: writes a new key-encryption key (0600) for replicas on PostgreSQL. rewrap: re-wraps the data key of
every stored generation of every key document under the first line of --kek-file (or LOCKSTEP_KEK_FILE /
LOCKSTEP_KEK): a KEK rotation; exit 1 while a row is still under another line.`,
  },
  ca: {
    usage:
      'lockstep ca status | prepare | activate      (root rotation: prepare, wait until every workload has the new bundle, activate)',
    about:
      'Root rotation: `prepare` adds a new root to the bundle; `activate` (one SVID lifetime later) makes it sign.',
  },
  drill: {
    usage:
      'lockstep drill [ha]                          (the reference shop, perimeter-only and with Lockstep, against the same attacks; ha: the failover drill)',
    about: `Runs the reference shop's breach drill (examples/shop/drill); exit 0 when Lockstep stopped every attack.
lockstep drill ha: the failover drill on three control-plane replicas (LOCKSTEP_POSTGRES_URL; network namespaces
as root): load through the gateway, one replica killed, a user revoked through another, recovery after expiry;
prints one JSON line, exit 0 when no request failed, the revocation held within 1 s and recovery went as it must.`,
  },
  audit: {
    usage: `lockstep audit verify [--keys <jwks.json>] [--postgres <url> [--schema <name>]] [--kek-file <file>] [--as-of <time>] [--against <checkpoint>]
                                               (exit 1 when the trail was tampered with, is stale, or lost events)
  lockstep audit checkpoint [--postgres <url> [--schema <name>]]   (the newest signed checkpoint: keep it elsewhere, verify --against it later)
  lockstep audit keys [--postgres <url> [--schema <name>]] [--kek-file <file>]   (the checkpoint keys' JWKS: keep a copy away from this machine)`,
    about: `Reads the store of the state directory (or --postgres) directly: the control plane need not run. The
checkpoint keys come from the state directory, or, with --postgres and a key-encryption key (--kek-file, or
LOCKSTEP_KEK_FILE / LOCKSTEP_KEK), from the database; they are never created here.`,
  },
  revoke: {
    usage: `lockstep revoke <sub|txn|spiffeId|kid> <value> --reason <why>
  lockstep revoke --lift <sub|txn|spiffeId|kid> <value> --reason <why>   (undoes a revocation made by mistake)`,
    about: `Revokes a user (sub), a transaction (txn), a workload (spiffeId) or a Txn-Token signing key (kid):
pushed to every guard within a second. --lift takes a revocation back: guards accept the value again.
Both are admin calls over mTLS, recorded in the audit trail with the administrator's SPIFFE ID; a lift
of a value that is not revoked is refused (exit 2).`,
  },
  services: {
    usage: 'lockstep services',
    about: 'What every registered guard reports: mode, policy version, routes, SVID expiry, stale or not.',
  },
  events: {
    usage: `lockstep events [--service <name>] [--decision allow|deny|dry-run] [--reason <code>] [--sub <user>] [--txn <id>]
                  [--limit <n>] [--json] [--probes]      (the newest decisions the monitor holds, newest first)`,
    about: `The decisions guards shipped to the monitor, as the dashboard's events page shows them: newest first,
--limit of them (default 20, at most 500), real traffic only; --probes lists a scanner's probes instead.
Filters match exactly; dry-run is a denial that a guard in dry-run let through. --service control-plane
lists the control plane's own admin actions instead (every read of events is one: recorded in the audit
trail like every admin call). --json prints the events as stored.
Exit 0, also when nothing matches (a line says how to widen the filter); 2 for a mistake in the options
or when the control plane is not running.`,
  },
  policy: {
    usage: `lockstep policy status                       (exit 1 no valid policy in force, 3 a guard enforces another version: drift)
  lockstep policy validate [<dir>]             (strict validation of a policy directory; exit 1 when it would be refused)
  lockstep policy test [<dir>] [--cases <file>]   (the YAML test cases, default <dir>/tests.yaml; exit 1 on a failed case)`,
    about: `status: the version in force, the latest refused change (file:line and why), drift per guard.
Exit 0 when a valid policy is in force and every guard enforces it.`,
  },
  scan: {
    usage: `lockstep scan [--manifest <file>] [--name <scanner>] [--only <attack-id-prefix>]... [--concurrency <n>] [--rate <per-second>]
                [--json <file>] [--sarif <file>] [--junit <file>] [--html <file>] [--no-monitor]
                (attacks every registered service; exit 0 nothing got through, 1 a weak link, 2 the scan could not run or is inconclusive)`,
    about: `Attacks every registered service and route from outside with a scanner identity that the control plane
issues to the local administrator; prints the service × attack matrix.`,
  },
  sidecar: {
    usage: 'LOCKSTEP_JOIN_TOKEN=$(lockstep join-token create <service>) lockstep sidecar --config <sidecar.yaml>',
    about: `Runs the Lockstep sidecar (@lockstep/proxy) in front of an unmodified HTTP service in any language until
SIGINT or SIGTERM: it joins as <service>, serves mTLS with the guard's pipeline, forwards what it allows
to the upstream with the verified caller in x-lockstep-* headers, and carries the app's outbound calls
from a loopback egress over mTLS. The config file (service, controlPlane, trustDomain, listen, upstream,
egress, routes, limits) is described in the @lockstep/proxy README. Exit 1 when it cannot start (a bad
config names the field and the fix; a spent join token); 2 for a mistake in the arguments.`,
  },
  'authz-server': {
    usage: 'LOCKSTEP_JOIN_TOKEN=$(lockstep join-token create <service>) lockstep authz-server --config <authz.yaml>',
    about: `Runs the Lockstep decision service (@lockstep/proxy) for one protected service until SIGINT or SIGTERM,
for proxies that already exist: nginx auth_request, Traefik forwardAuth, Envoy ext_authz over HTTP and,
with grpc: { port }, over gRPC (Istio's CUSTOM action), and AuthZEN. It joins as <service> and answers
only the proxies listed in trustedProxies, over mTLS. The config file (service, controlPlane, trustDomain,
listen, grpc, trustedProxies, authzenCallers, xfccElements, routes, limits) is described in the
@lockstep/proxy authz README. Exit 1 when it cannot start (a bad config names the field and the fix; a
spent join token); 2 for a mistake in the arguments.`,
  },
};

export const USAGE = `usage:
${Object.values(COMMANDS)
  .map((entry) => `  ${entry.usage}`)
  .join('\n')}
  lockstep <command> --help | lockstep help <command>   (one command's usage)
  lockstep --version
${STATE}`;

/** One command's usage and description, or undefined for a command that does not exist. */
export function commandHelp(command: string): string | undefined {
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  return entry === undefined ? undefined : `usage:\n  ${entry.usage}\n\n${entry.about}\n\n${STATE}`;
}

/** The version of this package (@lockstep/cli). */
export function cliVersion(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
