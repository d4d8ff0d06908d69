/**
 * What every shop service shares: its settings (from the environment the launcher sets), joining
 * the control plane with its one-time token, the guard built from what the agent hands over, an
 * audit file, and telling the launcher it is ready.
 *
 *   SHOP_SERVICE           gateway | orders | inventory | payments | shipping
 *   SHOP_MODE              lockstep (default) | perimeter-only (the "before" of the drill: no checks inside)
 *   SHOP_PORT              where it listens (127.0.0.1)
 *   SHOP_URLS              JSON { orders, inventory, payments, shipping, gateway, controlPlane }: where the others are
 *   SHOP_DATA_DIR          its data and audit log go to <dir>/<service>/
 *   LOCKSTEP_CP_URL, LOCKSTEP_TRUST_DOMAIN, LOCKSTEP_JOIN_TOKEN   how it joins (lockstep mode)
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createGuard, type Guard } from '@lockstep/guard';
import { joinAsWorkload, type WorkloadAgent } from '@lockstep/workload';

export type ShopMode = 'lockstep' | 'perimeter-only';

export interface ShopSettings {
  readonly service: string;
  readonly mode: ShopMode;
  readonly port: number;
  readonly urls: Readonly<
    Record<'orders' | 'inventory' | 'payments' | 'shipping' | 'gateway' | 'controlPlane', string>
  >;
  readonly dataDir: string;
  readonly controlPlane: { readonly url: string; readonly trustDomain: string; readonly joinToken: string } | null;
}

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '')
    throw new Error(
      `${name} is not set: shop services are started by \`npm start\` (examples/shop/start.ts), which sets it`,
    );
  return value;
}

export function settings(): ShopSettings {
  const mode = (process.env.SHOP_MODE ?? 'lockstep') as ShopMode;
  if (mode !== 'lockstep' && mode !== 'perimeter-only')
    throw new Error(`SHOP_MODE must be lockstep or perimeter-only; got ${mode}`);
  const service = required('SHOP_SERVICE');
  const dataDir = join(required('SHOP_DATA_DIR'), service);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const port = Number(required('SHOP_PORT'));
  // A port that is taken is the operator's to fix: one line that names it and says how (the launcher
  // shows it), before the process exits on the error as it would anyway.
  process.on('uncaughtExceptionMonitor', (error) => {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') return;
    log(
      'error',
      `port ${port} on 127.0.0.1 is in use: stop what listens there, or choose other ports with ` +
        'LOCKSTEP_PORT_BASE (npm start uses six from there)',
    );
  });
  return {
    service,
    mode,
    port,
    urls: JSON.parse(required('SHOP_URLS')) as ShopSettings['urls'],
    dataDir,
    // Every service joins in lockstep mode; in perimeter-only mode only the gateway does (for sign-in).
    controlPlane:
      mode === 'lockstep' || process.env.LOCKSTEP_JOIN_TOKEN !== undefined
        ? {
            url: required('LOCKSTEP_CP_URL'),
            trustDomain: required('LOCKSTEP_TRUST_DOMAIN'),
            joinToken: required('LOCKSTEP_JOIN_TOKEN'),
          }
        : null,
  };
}

/** Joins with the one-time token and builds the guard: one line of setup per service. */
export async function secure(config: ShopSettings): Promise<{ guard: Guard; agent: WorkloadAgent }> {
  if (config.controlPlane === null)
    throw new TypeError('secure() needs LOCKSTEP_CP_URL, LOCKSTEP_TRUST_DOMAIN and LOCKSTEP_JOIN_TOKEN');
  const agent = await joinAsWorkload({
    ...config.controlPlane,
    service: config.service,
    onEvent: (event) => {
      if (event.kind === 'renewal-failed') log('warn', `SVID renewal failed: ${event.reason}`);
      // Recovery after a long outage was refused for good (revoked, the SVID spent, past the window): only a
      // new join token helps, and the supervisor starts every process with one. 75: EX_TEMPFAIL.
      if (event.kind === 'recovery-refused') {
        log(
          'error',
          `the control plane refused to recover this service's expired SVID (${event.code}): ${event.message}. ` +
            `It must join again with a new join token: \`lockstep join-token create ${config.service}\`; ` +
            `exiting (${NEEDS_JOIN_EXIT_CODE}) for its supervisor to restart it with one`,
          { code: event.code },
        );
        stopWith(NEEDS_JOIN_EXIT_CODE);
      }
    },
  });
  // Decisions go to a local file and to the control plane's collector (spooled while it is away).
  const options = agent.guardOptions({ auditSpoolDir: join(config.dataDir, 'spool') });
  const guard = await createGuard({
    ...options,
    audit: { ...options.audit, file: join(config.dataDir, 'audit.jsonl') },
    logger: jsonLogger(config.service),
  });
  agent.attach(guard);
  return { guard, agent };
}

function jsonLogger(service: string) {
  const write = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, service, message, ...fields })}\n`);
  return { info: write('info'), warn: write('warn'), error: write('error') };
}

export function log(level: 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(
    `${JSON.stringify({ time: new Date().toISOString(), level, service: process.env.SHOP_SERVICE, message, ...fields })}\n`,
  );
}

/** Tells the launcher (IPC) that the service answers at `url`. */
export function ready(url: string): void {
  process.send?.({ ready: true, service: process.env.SHOP_SERVICE, url });
}

/** The exit code of a service whose agent needs a new join token (EX_TEMPFAIL: restart it, with one). */
const NEEDS_JOIN_EXIT_CODE = 75;

/** The stop `onStop` registered (it closes the service first), or a plain exit before there is one. */
let stopWith: (code: number) => void = (code) => process.exit(code);

/** Stops on SIGTERM/SIGINT: `close` lets running requests finish. */
export function onStop(close: () => Promise<void>): void {
  let stopping = false;
  const stop = (code = 0) => {
    if (stopping) return;
    stopping = true;
    close().then(
      () => process.exit(code),
      (error: Error) => {
        log('error', `stopping failed: ${error.message}`);
        process.exit(code === 0 ? 1 : code);
      },
    );
  };
  stopWith = stop;
  process.once('SIGTERM', () => stop());
  process.once('SIGINT', () => stop());
  process.once('disconnect', () => stop());
}
