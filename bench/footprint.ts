/**
 * `npm run bench:footprint` — what the guard side adds to a service: its node_modules and its memory.
 * A hello-world service on node:http, in a process of its own for each variant:
 *
 *   bare                       node:http, no Lockstep: the baseline of this run
 *   bare over mTLS             node:https asking for client certificates, the same certificates: what TLS alone costs
 *   guarded                    joins with @lockstep/workload, `createGuard(agent.guardOptions({ auditSpoolDir }))`
 *                              (decisions shipped to the collector), served through @lockstep/guard/http
 *   guarded, joined through    the same, with joinAsWorkload from @lockstep/control-plane: every service
 *   @lockstep/control-plane    before the workload side became a package of its own
 *
 * node_modules: the packages a project gets that installs only what the variant imports (bench/lib/
 * install-size.ts; no framework), each as it is on disk here. RSS and V8 heap: right after start (a guarded
 * service has joined and its policy is in force) and after BENCH_FOOTPRINT_REQUESTS requests (default 5,000;
 * 16 at a time over 4 keep-alive connections, each with the caller's SVID and a Txn-Token from the control
 * plane), the median of BENCH_FOOTPRINT_RUNS fresh processes (default 3). One more run of each variant records
 * the files it loaded (--import RECORD_LOADS of @lockstep/testkit), so the table says which installed
 * packages the running service loaded. Each memory sample follows a full garbage collection
 * (--expose-gc). The control plane (assembled as `lockstep control-plane` does) and the load run in
 * this process.
 *
 * The services run the build (`npm run build`: what an installed package runs) when every Lockstep
 * package they load has one; otherwise their TypeScript sources, and Node's type stripper then adds to
 * their RSS — the page says which. Any answer but 200 fails the run.
 * Writes its section of docs/benchmarks.md; progress goes to stderr, the last line of stdout is JSON.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair } from 'jose';
import { Agent, request } from 'undici';
import { assembleControlPlane } from '@lockstep/monitor';
import { createJoinToken } from '@lockstep/control-plane';
import { loadPolicyDir, signBundle } from '@lockstep/policy';
import { packageOf, RECORD_LOADS } from '@lockstep/testkit';
import {
  controlPlaneAgent,
  joinControlPlane,
  requestTxnToken,
  signSelfSignedSubjectToken,
  type WorkloadCredentials,
} from '@lockstep/workload';
import { writeSection } from './lib/docs-section.ts';
import { installClosure, type InstalledPackage } from './lib/install-size.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DOCS_FILE = join(ROOT, 'docs/benchmarks.md');
const TD = 'footprint.test';
const CALLER = `spiffe://${TD}/svc/caller`;
const REQUESTS = whole('BENCH_FOOTPRINT_REQUESTS', 5_000, 100, 1_000_000);
const RUNS = whole('BENCH_FOOTPRINT_RUNS', 3, 1, 15);
const CONCURRENCY = 16;
const MB = 1_000_000;
const GOAL = { diskMb: 15, rssMb: 20 };
const progress = (line: string) => console.error(`[bench:footprint] ${line}`);

function whole(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new TypeError(
      `${name} must be a whole number from ${min} to ${max}, e.g. ${name}=${fallback}; got ${JSON.stringify(raw)}`,
    );
  return value;
}

interface Variant {
  readonly name: string;
  readonly label: string;
  readonly entry: 'footprint-bare.mjs' | 'footprint-guarded.mjs';
  /** What its package.json would list (the framework aside): the roots of its node_modules. */
  readonly installs: readonly string[];
  readonly tls?: boolean;
  readonly joinFrom?: '@lockstep/workload' | '@lockstep/control-plane';
}

const VARIANTS: readonly Variant[] = [
  { name: 'bare', label: 'bare: node:http', entry: 'footprint-bare.mjs', installs: [] },
  {
    name: 'bare-mtls',
    label: 'bare over mTLS: node:https, client certificates, no guard',
    entry: 'footprint-bare.mjs',
    installs: [],
    tls: true,
  },
  {
    name: 'guarded',
    label: 'guarded: @lockstep/guard + @lockstep/workload, node:http adapter',
    entry: 'footprint-guarded.mjs',
    installs: ['@lockstep/guard', '@lockstep/workload'],
    joinFrom: '@lockstep/workload',
  },
  {
    name: 'guarded-via-control-plane',
    label: 'guarded, joined through @lockstep/control-plane (before the split)',
    entry: 'footprint-guarded.mjs',
    installs: ['@lockstep/guard', '@lockstep/control-plane'],
    joinFrom: '@lockstep/control-plane',
  },
];

interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
  /** Memory the process allocated itself (Linux); null elsewhere. */
  readonly anonymous: number | null;
}
interface Stage extends Memory {
  readonly stage: string;
}
interface RunResult {
  readonly stages: readonly Stage[];
  readonly started: Memory;
  readonly loaded: Memory;
  readonly files: readonly string[];
}

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-footprint-'));
const policyDir = join(scratch, 'policies');
mkdirSync(policyDir);
writeFileSync(
  join(policyDir, 'hello.cedarschema'),
  'namespace Lockstep {\n  action "hello:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };\n}\n',
);
writeFileSync(
  join(policyDir, 'hello.cedar'),
  `@id("the-caller-says-hello")
permit (principal == Lockstep::Workload::"${CALLER}", action == Lockstep::Action::"hello:read", resource == Lockstep::Service::"hello");
@id("the-caller-runs-as-itself")
permit (principal == Lockstep::Workload::"${CALLER}", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
`,
);

// Build when every Lockstep package a guarded service loads has one; else the sources (and the type stripper).
const lockstepPackages = installClosure(['@lockstep/guard', '@lockstep/control-plane'], ROOT).filter(
  (entry) => entry.workspace,
);
const fromBuild =
  process.env.BENCH_FOOTPRINT_SOURCES !== '1' &&
  lockstepPackages.every((entry) => existsSync(join(entry.dir, 'dist/index.js')));
const conditions = fromBuild ? [] : ['--conditions=@lockstep/source'];

// The hello service's policy, signed as the control plane signs a bundle, for the Cedar rows.
const helloBundle = await (async () => {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = 'footprint-policy';
  const jws = await signBundle(await loadPolicyDir(policyDir), { privateKey, kid, service: 'hello' });
  return JSON.stringify({
    jws,
    keys: { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256' }] },
    service: 'hello',
    principal: CALLER,
    action: 'hello:read',
  });
})();

const controlPlane = await assembleControlPlane({
  trustDomain: TD,
  keyDir: join(scratch, 'keys'),
  store: { sqlite: join(scratch, 'cp.db') },
  policyDir,
  watchPolicy: false,
  detection: { sweepMs: 3_600_000 },
  output: { warning: () => {} },
});
const { ca, store } = controlPlane;
const join_ = async (service: string) =>
  joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service, createdBy: 'bench' })).token,
    service,
  });
const caller = await join_('caller');
const bareServer = await join_('hello-bare');
const client = new Agent({
  connections: 4,
  connect: { cert: caller.chainPem, key: caller.keyPem, ca: caller.bundlePem, checkServerIdentity: () => undefined },
});
const plainClient = new Agent({ connections: 4 });
const tokenPool = controlPlaneAgent(TD, { cert: caller.chainPem, key: caller.keyPem, ca: caller.bundlePem });

/** A Txn-Token for the caller's own job (a self-signed subject token): valid 5 minutes, so one per run. */
async function txnToken(as: WorkloadCredentials): Promise<string> {
  const subjectToken = await signSelfSignedSubjectToken({
    trustDomain: TD,
    spiffeId: as.spiffeId,
    keyPem: as.keyPem,
    scope: 'hello:read',
  });
  return requestTxnToken(
    { url: controlPlane.url, trustDomain: TD, dispatcher: tokenPool },
    { subjectToken, subjectTokenType: 'self_signed', scope: 'hello:read' },
  );
}

async function run(variant: Variant, recordLoads: boolean): Promise<RunResult> {
  const dataDir = mkdtempSync(join(scratch, `${variant.name}-`));
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '', FOOTPRINT_DATA_DIR: dataDir };
  if (variant.tls === true)
    env.FOOTPRINT_TLS = JSON.stringify({ cert: bareServer.chainPem, key: bareServer.keyPem, ca: bareServer.bundlePem });
  if (variant.joinFrom !== undefined) {
    Object.assign(env, {
      FOOTPRINT_JOIN_FROM: variant.joinFrom,
      FOOTPRINT_CP_URL: controlPlane.url,
      FOOTPRINT_TRUST_DOMAIN: TD,
      FOOTPRINT_JOIN_TOKEN: (await createJoinToken(store, ca, { service: 'hello', createdBy: 'bench' })).token,
    });
  }
  const entry = fileURLToPath(new URL(`./lib/${variant.entry}`, import.meta.url));
  const child = fork(entry, [], {
    env,
    execArgv: ['--expose-gc', ...conditions, ...(recordLoads ? ['--import', RECORD_LOADS] : [])],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const replies: Array<(message: { type: string } & Record<string, unknown>) => void> = [];
  child.on('message', (message: { type: string } & Record<string, unknown>) => replies.shift()?.(message));
  const next = (ask?: string) =>
    new Promise<{ type: string } & Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`${variant.name}: no answer${ask === undefined ? ' (start)' : ` to ${ask}`} within 60 s`)),
        60_000,
      );
      replies.push((message) => {
        clearTimeout(timer);
        resolve(message);
      });
      if (ask !== undefined) child.send({ type: ask });
    });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const ready = await Promise.race([
      next(),
      exited.then((code) => Promise.reject(new Error(`${variant.name} exited with ${code} before it was ready`))),
    ]);
    const memory = async (): Promise<Memory> => {
      const answer = await next('memory');
      return {
        rss: Number(answer.rss),
        heapUsed: Number(answer.heapUsed),
        anonymous: answer.anonymous === null ? null : Number(answer.anonymous),
      };
    };
    const started = await memory();
    const origin = `${variant.tls === true || variant.joinFrom !== undefined ? 'https' : 'http'}://127.0.0.1:${String(ready.port)}`;
    await load(origin, origin.startsWith('https') ? client : plainClient, await txnToken(caller));
    const loaded = await memory();
    const files = recordLoads ? ((await next('modules')).files as string[]) : [];
    child.send({ type: 'close' });
    if ((await exited) !== 0) throw new Error(`${variant.name} did not stop cleanly`);
    return { stages: ready.stages as Stage[], started, loaded, files };
  } finally {
    child.kill();
  }
}

/** REQUESTS GETs of /hello, CONCURRENCY at a time; every answer must be 200. */
async function load(origin: string, dispatcher: Agent, token: string): Promise<void> {
  let sent = 0;
  const worker = async () => {
    while (sent < REQUESTS) {
      sent++;
      const response = await request(`${origin}/hello`, { dispatcher, headers: { 'txn-token': token } });
      const body = await response.body.text();
      if (response.statusCode !== 200)
        throw new Error(`${origin}/hello answered ${response.statusCode}: ${body.slice(0, 200)}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/**
 * IMPORTS loaded one after the other in a fresh process, the memory after each: what each package's code
 * costs; then Cedar at run time, as the guard uses it (bench/lib/footprint-imports.mjs).
 */
const IMPORTS = [
  'undici',
  'jose',
  '@cedar-policy/cedar-wasm/nodejs',
  '@lockstep/identity',
  '@lockstep/policy',
  '@lockstep/guard',
  '@lockstep/guard/http',
  '@lockstep/workload',
];
async function importCosts(): Promise<Stage[]> {
  const entry = fileURLToPath(new URL('./lib/footprint-imports.mjs', import.meta.url));
  const env = {
    ...process.env,
    NODE_OPTIONS: '',
    FOOTPRINT_BUNDLE: helloBundle,
    FOOTPRINT_DECISIONS: String(REQUESTS),
  };
  const child = fork(entry, IMPORTS, {
    env,
    execArgv: ['--expose-gc', ...conditions],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const [message] = (await once(child, 'message')) as [{ steps: Stage[] }];
  await once(child, 'exit');
  return message.steps;
}

const median = (values: readonly number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;
const mb = (bytes: number | null) => (bytes === null ? '—' : (bytes / MB).toFixed(1));
/** The median of each field over runs (anonymous: null when the platform does not tell). */
function medianMemory(samples: readonly Memory[]): Memory {
  const anonymous = samples.map((sample) => sample.anonymous);
  return {
    rss: median(samples.map((sample) => sample.rss)),
    heapUsed: median(samples.map((sample) => sample.heapUsed)),
    anonymous: anonymous.every((value) => value !== null) ? median(anonymous) : null,
  };
}

interface Measured {
  readonly variant: Variant;
  readonly installed: readonly InstalledPackage[];
  readonly loadedDirs: ReadonlySet<string>;
  readonly stages: readonly Stage[];
  readonly started: Memory;
  readonly afterLoad: Memory;
}

const measured: Measured[] = [];
let imports: Stage[] = [];
try {
  progress("loading the guarded service's packages one by one");
  const importRuns: Stage[][] = [];
  for (let i = 0; i < RUNS; i++) importRuns.push(await importCosts());
  imports = (importRuns[0] ?? []).map(({ stage }, index) => ({
    stage,
    ...medianMemory(importRuns.map((steps) => steps[index] as Stage)),
  }));
  for (const variant of VARIANTS) {
    const runs: RunResult[] = [];
    for (let i = 0; i < RUNS; i++) {
      progress(`${variant.name}: run ${i + 1} of ${RUNS}`);
      runs.push(await run(variant, false));
    }
    progress(`${variant.name}: recording what it loads`);
    const { files } = await run(variant, true);
    const loadedDirs = new Set(files.flatMap((file) => packageOf(file)?.dir ?? []));
    measured.push({
      variant,
      installed: installClosure(variant.installs, ROOT),
      loadedDirs,
      stages: (runs[0]?.stages ?? []).map(({ stage }, index) => ({
        stage,
        ...medianMemory(runs.map((r) => r.stages[index] as Stage)),
      })),
      started: medianMemory(runs.map((r) => r.started)),
      afterLoad: medianMemory(runs.map((r) => r.loaded)),
    });
  }
} finally {
  await Promise.all([client.close(), plainClient.close(), tokenPool.close()]);
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
}

const [bare, , guarded] = measured as [Measured, Measured, Measured, Measured];
const diskOf = (entry: Measured) => entry.installed.reduce((sum, item) => sum + item.bytes, 0);
const addedDisk = diskOf(guarded) - diskOf(bare);
const addedRss = {
  started: guarded.started.rss - bare.started.rss,
  afterLoad: guarded.afterLoad.rss - bare.afterLoad.rss,
};
const cedar = guarded.installed.find((item) => item.name === '@cedar-policy/cedar-wasm');
const verdict = (value: number, goal: number) => (value <= goal * MB ? 'met' : '**NOT met**');

const rows = measured.map((entry) => {
  const loadedBytes = entry.installed
    .filter((item) => entry.loadedDirs.has(item.dir))
    .reduce((sum, item) => sum + item.bytes, 0);
  const disk =
    entry.installed.length === 0
      ? '0'
      : `${mb(diskOf(entry))} (${entry.installed.length} packages, ${mb(loadedBytes)} of it loaded)`;
  return (
    `| ${entry.variant.label} | ${disk} | ${mb(entry.started.rss)} | ${mb(entry.afterLoad.rss)} | ${mb(entry.afterLoad.anonymous)} | ${mb(entry.afterLoad.heapUsed)} | ` +
    `${(entry.afterLoad.rss / bare.afterLoad.rss).toFixed(2)} |`
  );
});
/** Rows of memory steps, each with what it added to the one before. */
const stepRows = (steps: readonly Stage[]) =>
  steps.map((step, index) => {
    const before = steps[index - 1];
    const added = (now: number | null, then: number | null | undefined) =>
      before === undefined || now === null || then === null || then === undefined ? '' : `+${mb(now - then)}`;
    return `| ${step.stage} | ${mb(step.rss)} | ${added(step.rss, before?.rss)} | ${mb(step.anonymous)} | ${added(step.anonymous, before?.anonymous)} |`;
  });
const afterLoadStep: Stage = { stage: `after ${REQUESTS.toLocaleString('en-US')} requests`, ...guarded.afterLoad };
const packageRows = guarded.installed.map(
  (item) =>
    `| ${item.name} | ${item.version} | ${(item.bytes / 1000).toFixed(0)} | ${guarded.loadedDirs.has(item.dir) ? 'yes' : 'no'} |`,
);
const unbuilt = guarded.installed.filter((item) => item.workspace && !item.built).map((item) => item.name);
const viaControlPlane = measured[3] as Measured;
/** What the loading table says each of the big three costs in RSS: Cedar (its import, then its first policy and decisions), undici, the rest. */
const stepCost = (match: (stage: string) => boolean) =>
  imports.reduce((sum, step, index) => {
    const before = imports[index - 1];
    return before === undefined || !match(step.stage) ? sum : sum + step.rss - before.rss;
  }, 0);
// Cedar's start: its import, then its first policy verified and loaded; the decisions step (cache off) apart.
const cedarRss = stepCost(
  (stage) => stage.includes('cedar') || (stage.startsWith('Cedar') && !stage.includes('decisions')),
);
const cedarDecisionsRss = stepCost((stage) => stage.startsWith('Cedar') && stage.includes('decisions'));
const undiciRss = stepCost((stage) => stage === 'import undici');
const largest =
  imports.length === 0
    ? ''
    : `Cedar's WebAssembly engine ${mb(cedarRss)} MB (its import, then compiling it and growing its memory ` +
      `for the first policy; ${mb(cedarDecisionsRss)} MB more for ${REQUESTS.toLocaleString('en-US')} distinct decisions with the cache off), undici ${mb(undiciRss)} MB (its HTTP parser is WebAssembly too, compiled when it is imported; ` +
      'node:https, whose parser is native, would save most of it)';
const requests = REQUESTS.toLocaleString('en-US');
const markdown = `## Footprint: what the guard side adds to a service

Written by \`npm run bench:footprint\` (bench/footprint.ts); re-run it to refresh this section. Knobs: \`BENCH_FOOTPRINT_REQUESTS\` (default 5,000),
\`BENCH_FOOTPRINT_RUNS\` (default 3), \`BENCH_FOOTPRINT_SOURCES=1\` (run the TypeScript sources even when there is a build).
Node ${process.version}; ${new Date().toISOString()}. ${RUNS} fresh processes per variant (medians), ${requests} requests each, ${CONCURRENCY} at a time over
4 keep-alive connections. MB = 10^6 bytes; each memory sample follows a full garbage collection. The services ran ${fromBuild ? 'the build (`npm run build`), as an installed package does' : "the TypeScript sources (no build yet): Node's type stripper is in the guarded services' memory"}.

The service is a hello world on node:http. Guarded, it joins a control plane (assembled as \`lockstep control-plane\` does, in the bench's
process) with a join token (\`joinAsWorkload\`), builds its guard from \`agent.guardOptions({ auditSpoolDir })\` (decisions shipped to the
collector), follows the stream, reports to the registry, and serves \`GET /hello\` (action \`hello:read\`) through \`@lockstep/guard/http\`;
each request carries the caller's SVID and a Txn-Token from the control plane. node_modules: what a project gets that installs only what
the variant imports (the framework aside: \`@lockstep/guard\` and \`@lockstep/workload\`), dependencies followed as npm installs them
(bench/lib/install-size.ts), each package as it is on disk here; "loaded": the part of it the running service loaded. Anonymous memory
(Linux, /proc/self/smaps_rollup) is what the process allocated itself; RSS also counts the pages of the node binary it touched (its TLS,
its WebAssembly compilers), which every Node process on a host shares on disk but each counts.

| Variant | node_modules, MB | RSS after start, MB | RSS after ${requests} requests, MB | anonymous then, MB | V8 heap used then, MB | RSS ÷ bare |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
${rows.join('\n')}

- The guard side adds **${mb(addedDisk)} MB** to node_modules: goal ≤ ${GOAL.diskMb} MB ${verdict(addedDisk, GOAL.diskMb)}.${cedar === undefined ? '' : ` Cedar's package alone (\`@cedar-policy/cedar-wasm\`) is ${mb(cedar.bytes)} MB: it ships the same 4.2 MB WebAssembly module three times (esm, nodejs and web builds), of which Node loads one; everything else the guard side installs is ${mb(addedDisk - cedar.bytes)} MB.`}
- It adds **${mb(addedRss.started)} MB** of RSS after start and **${mb(addedRss.afterLoad)} MB** after ${requests} requests: goal ≤ ${GOAL.rssMb} MB ${verdict(addedRss.afterLoad, GOAL.rssMb)}. Where it goes: the two tables below.${largest === '' ? '' : ` The largest parts, from the second table: ${largest}.`}
- Joining through \`@lockstep/control-plane\` (every service before \`@lockstep/workload\`) installed ${mb(diskOf(viaControlPlane))} MB and used ${mb(viaControlPlane.afterLoad.rss)} MB of RSS after ${requests} requests; the workload package saves ${mb(diskOf(viaControlPlane) - diskOf(guarded))} MB and ${mb(viaControlPlane.afterLoad.rss - guarded.afterLoad.rss)} MB.
${unbuilt.length === 0 ? '' : `- Counted by their sources (not built): ${unbuilt.join(', ')}.\n`}
### Where a guarded service's memory goes

Step by step through its start (medians), then after the requests:

| step | RSS, MB | added | anonymous, MB | added |
| --- | ---: | ---: | ---: | ---: |
${stepRows([...guarded.stages, afterLoadStep]).join('\n')}

Loading the code, then Cedar at run time: a fresh process imports the guarded service's packages one after the other (each pays only for
what the ones before it did not load; the first import also warms Node's module loader up), then verifies, loads and asks the hello
service's policy bundle as the guard does — Cedar's WebAssembly memory grows with what it is asked to do and is never given back:

| step | RSS, MB | added | anonymous, MB | added |
| --- | ---: | ---: | ---: | ---: |
${stepRows(imports).join('\n')}

### What a guarded service installs

| package | version | KB | loaded by the running service |
| --- | --- | ---: | --- |
${packageRows.join('\n')}
`;

console.log(markdown);
if (process.env.BENCH_FOOTPRINT_WRITE !== '0') writeSection(DOCS_FILE, 'footprint', markdown);
console.log(
  JSON.stringify({
    fromBuild,
    addedDiskMb: Number(mb(addedDisk)),
    addedRssStartMb: Number(mb(addedRss.started)),
    addedRssAfterLoadMb: Number(mb(addedRss.afterLoad)),
    variants: measured.map((entry) => ({
      name: entry.variant.name,
      diskMb: Number(mb(diskOf(entry))),
      rssStartMb: Number(mb(entry.started.rss)),
      rssAfterLoadMb: Number(mb(entry.afterLoad.rss)),
    })),
  }),
);
