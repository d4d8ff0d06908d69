/**
 * The consumer test: docs/guide/secure-a-service.md followed as a new user follows it, in an empty
 * directory outside the repository, on Node 24 and Node 22.
 *
 *   node tools/consumer/run.ts [--node 24] [--node 22]      (npm run test:consumer; default: both)
 *
 * Every public package is packed once (`npm pack`); then, for each Node version, the guide's steps run
 * in order as the guide prints them (guide.ts reads them from the Markdown): files are written, shell
 * lines run with `bash -c`, long-running ones in the background until they say they are ready. The one
 * change: `npm install @lockstep/…` installs the packed tarballs (packages.ts). Third-party packages
 * come from the npm registry. The checks below then hold the guide to its promises: the installed
 * `lockstep` is the packed version, the guarded service enforces the policy, a permitted call reaches
 * its handler with the caller and its subject, a forbidden one is refused with its reason code, and both
 * decisions reach the monitor. Every process started is stopped, also on failure; a failed step prints
 * its output, and the project directory is kept for a look.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { readGuideSteps, type GuideStep } from './guide.ts';
import { cacheDirectory, nodeBinDirectory, provideNode, type NodeMajor } from './node-runtime.ts';
import { checkInstalledFromTarballs, packPublicPackages, withTarballs, type PackedPackage } from './packages.ts';
import { Background, runCommand, StepFailure, type ShellContext } from './shell.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const GUIDE = 'docs/guide/secure-a-service.md';
const VISITOR = 'spiffe://hello.test/svc/visitor';
const TIMEOUT_MS = { install: 300_000, command: 90_000, ready: 90_000, retry: 30_000 };

const say = (line: string) => process.stdout.write(`${line}\n`);

/** What one run has seen so far: later checks compare with earlier answers. */
interface Seen {
  cliVersion: string;
  deniedRequestId?: string;
}

/** A promise of the guide, checked on the output of the command it names. */
interface Check {
  readonly command: string | RegExp;
  /** How long to run the command again while it succeeds but the check does not hold yet (shipping takes a moment). */
  readonly retryForMs: number;
  /** Null when the output keeps the promise, else what is wrong. */
  problem(output: string, seen: Seen): string | null;
}

interface Refusal {
  readonly error?: unknown;
  readonly requestId?: unknown;
}
interface StoredEvent {
  readonly service?: unknown;
  readonly decision?: unknown;
  readonly reason?: unknown;
  readonly action?: unknown;
  readonly method?: unknown;
  readonly caller?: unknown;
  readonly sub?: unknown;
  readonly requestId?: unknown;
  readonly txn?: unknown;
}

const CHECKS: readonly Check[] = [
  {
    command: 'npx lockstep --version',
    retryForMs: 0,
    problem: (output, seen) =>
      output.trim() === `lockstep ${seen.cliVersion}`
        ? null
        : `expected "lockstep ${seen.cliVersion}", the packed @lockstep/cli`,
  },
  {
    command: 'npx lockstep policy status',
    retryForMs: TIMEOUT_MS.retry,
    problem: (output) =>
      /^greeter\s+expects (\S+)\s+enforces \1\s+in sync$/m.test(output)
        ? null
        : 'greeter does not enforce the policy in force',
  },
  { command: /\bnode visitor\.js$/, retryForMs: 0, problem: visitorProblem },
  { command: 'npx lockstep events --service greeter', retryForMs: TIMEOUT_MS.retry, problem: eventLinesProblem },
  {
    command: 'npx lockstep events --service greeter --json',
    retryForMs: TIMEOUT_MS.retry,
    problem: storedEventsProblem,
  },
];

function parseJson<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

/** visitor prints `<method> <status> <body>` per call: GET reaches the handler, DELETE is refused by the policy. */
function visitorProblem(output: string, seen: Seen): string | null {
  const answers = new Map(
    [...output.matchAll(/^(GET|DELETE) (\d{3}) (\{.*\})$/gm)].map((match) => [
      match[1],
      { status: Number(match[2]), body: match[3] ?? '' },
    ]),
  );
  const get = answers.get('GET');
  const permitted = get === undefined ? null : parseJson<{ onBehalfOf?: unknown; caller?: unknown }>(get.body);
  if (get?.status !== 200 || permitted?.onBehalfOf !== VISITOR || permitted.caller !== VISITOR) {
    return `expected "GET 200" with onBehalfOf and caller ${VISITOR}: the handler sees who calls, on whose behalf`;
  }
  const denied = answers.get('DELETE');
  const refusal = denied === undefined ? null : parseJson<Refusal>(denied.body);
  if (denied?.status !== 403 || refusal?.error !== 'LOCKSTEP_ERR_DENIED' || typeof refusal.requestId !== 'string') {
    return 'expected "DELETE 403" with error LOCKSTEP_ERR_DENIED and a requestId';
  }
  seen.deniedRequestId = refusal.requestId;
  return null;
}

function eventLinesProblem(output: string): string | null {
  const who = `caller=${VISITOR}\\s+sub=${VISITOR}`.replaceAll('.', '\\.');
  const allowed = new RegExp(`\\sgreeter\\s+allow\\s+-\\s+hello:read\\s+${who}\\s`);
  const denied = new RegExp(`\\sgreeter\\s+deny\\s+LOCKSTEP_ERR_DENIED\\s+hello:delete\\s+${who}\\s`);
  if (!allowed.test(output)) return 'no line for the allowed GET /hello (hello:read) of visitor';
  if (!denied.test(output))
    return 'no line for the refused DELETE /hello (hello:delete, LOCKSTEP_ERR_DENIED) of visitor';
  return null;
}

function storedEventsProblem(output: string, seen: Seen): string | null {
  const events = parseJson<StoredEvent[]>(output);
  if (!Array.isArray(events)) return 'not a JSON array of events';
  const of = (decision: string, method: string, action: string, reason: string) =>
    events.find(
      (event) =>
        event.service === 'greeter' &&
        event.decision === decision &&
        event.method === method &&
        event.action === action &&
        event.reason === reason &&
        event.caller === VISITOR &&
        event.sub === VISITOR,
    );
  const allowed = of('allow', 'GET', 'hello:read', 'LOCKSTEP_ALLOW');
  const denied = of('deny', 'DELETE', 'hello:delete', 'LOCKSTEP_ERR_DENIED');
  if (allowed === undefined) return 'no stored event for the allowed GET /hello of visitor';
  if (denied === undefined) return 'no stored event for the refused DELETE /hello of visitor';
  if (denied.requestId !== seen.deniedRequestId)
    return `the refusal visitor got names request ${String(seen.deniedRequestId)}, the stored event ${String(denied.requestId)}`;
  if (typeof allowed.txn !== 'string' || allowed.txn !== denied.txn)
    return 'both calls carry one Txn-Token, so both events name its txn';
  return null;
}

const matches = (check: Check, command: string) =>
  typeof check.command === 'string' ? check.command === command : check.command.test(command);

/** The environment of a new user's shell: the chosen Node first in PATH, nothing of the repository or of npm run. */
function consumerEnvironment(nodeBin: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^(npm_|NODE_OPTIONS$|NODE_PATH$|LOCKSTEP_|INIT_CWD$)/i.test(name)) continue;
    env[name] = value;
  }
  const path = (process.env.PATH ?? '')
    .split(':')
    .filter((entry) => entry !== '' && !`${entry}${sep}`.startsWith(ROOT));
  env.PATH = [nodeBin, ...path].join(':');
  // Quieter and faster installs; the commands themselves are the guide's.
  Object.assign(env, { npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' });
  return env;
}

/** The loopback ports the guide's files and commands use: they must be free before the run starts. */
function portsOf(steps: readonly GuideStep[]): number[] {
  const text = steps.map((step) => (step.kind === 'file' ? step.content : step.command)).join('\n');
  return [...new Set([...text.matchAll(/127\.0\.0\.1:(\d+)/g)].map((match) => Number(match[1])))];
}

async function assertFree(port: number): Promise<void> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `port ${port} on 127.0.0.1 is in use (${error.code ?? error.message}), ` +
            `and ${GUIDE} uses it: stop what listens there, then run again`,
        ),
      ),
    );
    server.listen(port, '127.0.0.1', resolve);
  });
  await new Promise((resolve) => server.close(resolve));
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Runs a command until it exits 0 and its check holds (or once, when it has neither reason to retry). */
async function runChecked(
  command: string,
  mode: 'once' | 'until-success',
  context: ShellContext,
  timeoutMs: number,
  checks: readonly Check[],
  seen: Seen,
): Promise<number> {
  const retryForMs = Math.max(
    mode === 'until-success' ? TIMEOUT_MS.retry : 0,
    ...checks.map((check) => check.retryForMs),
  );
  const deadline = Date.now() + retryForMs;
  const started = Date.now();
  for (;;) {
    const finished = await runCommand(command, context, timeoutMs);
    const problem =
      finished.code !== 0
        ? `exit ${finished.code ?? finished.signal}`
        : (checks.map((check) => check.problem(finished.output, seen)).find((found) => found !== null) ?? null);
    if (problem === null) return Date.now() - started;
    if (Date.now() > deadline || (finished.code !== 0 && mode === 'once')) {
      throw new StepFailure(
        retryForMs > 0 ? `${problem} (still, after ${seconds(Date.now() - started)})` : problem,
        finished.output,
      );
    }
    await sleep(500);
  }
}

async function runStep(
  step: GuideStep,
  context: ShellContext,
  background: Background,
  packages: ReadonlyMap<string, PackedPackage>,
  seen: Seen,
  used: Set<Check>,
): Promise<void> {
  if (step.kind === 'file') {
    const target = join(context.cwd, step.path);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, step.content);
    say(`  wrote ${step.path} (${GUIDE}:${step.line})`);
    return;
  }
  const command = withTarballs(step.command, packages);
  say(
    `  $ ${step.command}${
      command === step.command
        ? ''
        : '\n    (the packed tarballs: ' +
          command
            .split(' ')
            .filter((word) => word.endsWith('.tgz'))
            .map((word) => basename(word))
            .join(' ') +
          ')'
    }`,
  );
  const checks = CHECKS.filter((check) => matches(check, step.command));
  for (const check of checks) used.add(check);
  const mode = step.mode;
  switch (mode.kind) {
    case 'background': {
      const started = Date.now();
      await background.start(command, context, mode.ready, TIMEOUT_MS.ready);
      say(`    ready ("${mode.ready}") in ${seconds(Date.now() - started)}, running in the background`);
      return;
    }
    case 'once':
    case 'until-success': {
      const isInstall = command !== step.command;
      const ms = await runChecked(
        command,
        mode.kind,
        context,
        isInstall ? TIMEOUT_MS.install : TIMEOUT_MS.command,
        checks,
        seen,
      );
      if (isInstall) {
        const problems = checkInstalledFromTarballs(context.cwd, packages);
        if (problems.length > 0)
          throw new StepFailure(`not installed from the packed tarballs:\n${problems.join('\n')}`, '');
      }
      say(`    ok in ${seconds(ms)}${checks.length > 0 ? ' (checked)' : ''}`);
    }
  }
}

async function consumerRun(
  major: NodeMajor,
  steps: readonly GuideStep[],
  packages: ReadonlyMap<string, PackedPackage>,
  background: Background,
): Promise<void> {
  const started = Date.now();
  const work = mkdtempSync(join(tmpdir(), `lockstep-consumer-node${major}-`));
  if (`${work}${sep}`.startsWith(ROOT))
    throw new Error(`the temporary directory ${work} is inside the repository: set TMPDIR elsewhere`);
  const project = join(work, 'hello');
  mkdirSync(project);
  const repositoryNode = consumerEnvironment(dirname(process.execPath));
  const runtime = provideNode(major, ROOT, cacheDirectory(process.env), repositoryNode, say);
  const context: ShellContext = { cwd: project, env: consumerEnvironment(nodeBinDirectory(runtime, work)) };
  const version = await runCommand('node --version && npm --version', context, TIMEOUT_MS.command);
  const [nodeVersion, npmVersion] = version.output.trim().split('\n');
  if (nodeVersion !== runtime.version)
    throw new Error(`node in the project's PATH is ${String(nodeVersion)}, not ${runtime.version}`);
  say(`\n== Node ${major}: node ${String(nodeVersion)}, npm ${String(npmVersion)}, in ${project}`);
  for (const port of portsOf(steps)) await assertFree(port);

  const seen: Seen = { cliVersion: packages.get('@lockstep/cli')?.version ?? '?' };
  const used = new Set<Check>();
  let current: GuideStep | null = null;
  try {
    for (const step of steps) {
      current = step;
      await runStep(step, context, background, packages, seen, used);
    }
    current = null;
    const missing = CHECKS.filter((check) => !used.has(check));
    if (missing.length > 0) {
      throw new StepFailure(
        `${GUIDE} no longer runs ${missing.map((check) => String(check.command)).join(', ')}: ` +
          'each check of tools/consumer/run.ts must meet the command it checks; update the checks with the guide',
        '',
      );
    }
  } catch (error) {
    const where =
      current === null
        ? ''
        : ` at ${GUIDE}:${current.line} (${current.kind === 'file' ? current.path : current.command})`;
    say(`\n✗ Node ${major}: the guide failed${where}: ${(error as Error).message}`);
    if (error instanceof StepFailure && error.output !== '') say(`--- its output ---\n${error.output.trimEnd()}\n---`);
    for (const { command, output } of await background.stopAll())
      say(`--- output of \`${command}\` (stopped) ---\n${output.trimEnd()}\n---`);
    say(`the project is kept for a look: ${project}`);
    throw error;
  }
  await background.stopAll();
  rmSync(work, { recursive: true, force: true });
  say(`✓ Node ${major}: the guide works as printed (${seconds(Date.now() - started)})`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { node: { type: 'string', multiple: true } } });
  const majors = (values.node ?? ['24', '22']).map((value) => {
    if (value !== '22' && value !== '24') throw new Error(`--node takes 22 or 24; got ${JSON.stringify(value)}`);
    return Number(value) as NodeMajor;
  });
  const steps = readGuideSteps(readFileSync(join(ROOT, GUIDE), 'utf8'), GUIDE);
  const started = Date.now();
  const packDir = mkdtempSync(join(tmpdir(), 'lockstep-packed-'));
  const background = new Background();
  // Stopped from outside (Ctrl-C, a CI timeout): no process of ours outlives us.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      background.killAll();
      process.exit(130);
    });
  }
  try {
    const packages = packPublicPackages(ROOT, packDir, process.env);
    say(`packed ${packages.size} packages in ${seconds(Date.now() - started)}: ${[...packages.keys()].join(', ')}`);
    for (const major of majors) await consumerRun(major, steps, packages, background);
  } finally {
    rmSync(packDir, { recursive: true, force: true });
  }
  say(`\nconsumer test passed on Node ${majors.join(' and ')} in ${seconds(Date.now() - started)}`);
  return 0;
}

process.exitCode = await main().catch((error: unknown) => {
  if (!(error instanceof StepFailure)) console.error(error);
  return 1;
});
