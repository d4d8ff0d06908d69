/**
 * StrykerJS configuration of the mutation run on the guard's security decisions (issue 12, item 6).
 * Run it with `npm run mutation` (tools/mutation/run.ts), which copies the repository first: this
 * run mutates files in place (see `inPlace` below). docs/mutation.md says what is mutated, why, and
 * what the last run found.
 *
 * An area is the lines of one group of decisions plus the smallest set of tests that exercises them:
 * their unit tests first, then the tests over real mTLS. The command runner runs an area's whole
 * command for each mutant; its steps are chained with `&&`, fastest first, so most mutants are
 * killed by the first step. Where the code under test is the same for every adapter (identity,
 * Txn-Token, pipeline), the integration tests run for the node:http adapter only; the adapters area
 * runs them for all three. The area is chosen with LOCKSTEP_MUTATION_AREA.
 *
 * Lines. The ranges below leave out comments and the lines that only build an error message or a log
 * line; what remains of messages on a decision's own line is skipped by the `lockstep-messages`
 * ignore-plugin (ignore-messages.mjs). The ranges are line numbers of one version of each file, pinned
 * by its SHA-256 in PINNED: when a file changes, the run stops and names it, so that its ranges are
 * checked before the new hash is written here (LOCKSTEP_MUTATION_ALLOW_DRIFT=1 runs anyway).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import process from 'node:process';

const GUARD = 'packages/guard/src';
const GUARD_TEST = 'packages/guard/test';
const IDENTITY = 'packages/identity/src';
/** Integration tests, node:http adapter only (the code under test is the same behind every adapter). */
const HTTP_ONLY = '/fastify|express/i';

/**
 * The steps of an adapter's area: its own tests (the others skipped by name, case-sensitive: suites
 * are named after their adapter), edge cases first, the full table of answers last.
 */
function adapterSteps(skip, first) {
  return [
    {
      files: [
        ...first,
        `${GUARD_TEST}/adapter-edges.test.ts`,
        `${GUARD_TEST}/probes.test.ts`,
        `${GUARD_TEST}/dispatch-and-numbers.test.ts`,
      ],
      skip,
    },
    { files: [`${GUARD_TEST}/attacks.test.ts`, `${GUARD_TEST}/behaviour.test.ts`], skip },
    { files: [`${GUARD_TEST}/every-answer.test.ts`], skip },
  ];
}

/**
 * @typedef {{ files: string[], pattern?: string, skip?: string }} Step
 * @typedef {{ mutate: string[], steps: Step[] }} Area
 * @type {Record<string, Area>}
 */
export const AREAS = {
  // Peer identity: SPIFFE ID parsing, the X509-SVID leaf rules, the trust-domain match, the TLS
  // verdict, expiry during a connection, SPIFFE-ID revocation.
  identity: {
    mutate: [
      `${IDENTITY}/spiffe-id.ts:16-108`,
      `${IDENTITY}/x509-svid.ts:74-96`, // 97, 101: the text of SVID_ID_INVALID / SVID_NO_PATH
      `${IDENTITY}/x509-svid.ts:98-100`,
      `${IDENTITY}/x509-svid.ts:102-128`, // 129: the text of a refused option
      `${IDENTITY}/x509-svid.ts:130-190`, // 191-194, 208-212: the words of SVID_LIFETIME
      `${IDENTITY}/x509-svid.ts:195-206`,
      `${IDENTITY}/tls-peer.ts:18-26`, // 27: OpenSSL's reason, only ever shown
      `${IDENTITY}/tls-peer.ts:28-29`,
      `${GUARD}/steps/transport.ts:47-54`, // 42-45, 55: the words of PEER_UNTRUSTED
      `${GUARD}/steps/transport.ts:56-121`,
    ],
    steps: [
      {
        files: [
          `${IDENTITY}/spiffe-id.test.ts`,
          `${IDENTITY}/x509-svid.test.ts`,
          `${IDENTITY}/tls-peer.test.ts`,
          `${IDENTITY}/server-identity.test.ts`,
          `${GUARD}/steps/transport.test.ts`,
        ],
      },
      {
        files: [`${GUARD_TEST}/svid-rules.test.ts`, `${GUARD_TEST}/behaviour.test.ts`, `${GUARD_TEST}/probes.test.ts`],
        skip: HTTP_ONLY,
      },
      { files: [`${GUARD_TEST}/attacks.test.ts`], pattern: 'transport', skip: HTTP_ONLY },
    ],
  },
  // The Txn-Token: JOSE header, signature, aud, exp/iat/nbf, lifetime, required claims and their
  // types, revocation of kid/sub/txn, the verified-token cache; the strict JSON of tokens and bodies.
  'txn-token': {
    mutate: [
      `${GUARD}/steps/txn-token.ts:19-23`,
      `${GUARD}/steps/txn-token.ts:70-77`, // 78-79, 129, 170, 175: the stats counters
      `${GUARD}/steps/txn-token.ts:80-128`,
      `${GUARD}/steps/txn-token.ts:130-169`,
      `${GUARD}/steps/txn-token.ts:171-174`,
      `${GUARD}/steps/txn-token.ts:179-183`,
      `${GUARD}/steps/txn-claims.ts:26-34`,
      `${GUARD}/steps/txn-claims.ts:90-171`, // 172: the text of a refused chain
      `${GUARD}/steps/txn-claims.ts:173-241`,
      `${GUARD}/revocations.ts:13-34`,
      // 42-68: hasControlCharacters (no caller outside its own tests) and the error class
      `${GUARD}/strict-json.ts:6-41`,
      `${GUARD}/strict-json.ts:70-139`, // 140: the refused key, only ever shown
      `${GUARD}/strict-json.ts:141-204`, // 205: the refused number, only ever shown
      `${GUARD}/strict-json.ts:206-215`,
    ],
    steps: [
      {
        files: [
          `${GUARD}/steps/txn-claims.test.ts`,
          `${GUARD}/steps/txn-token.test.ts`,
          `${GUARD}/strict-json.test.ts`,
          `${GUARD}/revocations.test.ts`,
        ],
      },
      { files: [`${GUARD_TEST}/behaviour.test.ts`, `${GUARD_TEST}/dispatch-and-numbers.test.ts`], skip: HTTP_ONLY },
      {
        files: [`${GUARD_TEST}/attacks.test.ts`, `${GUARD_TEST}/scanner-attacks.test.ts`],
        pattern: 'Txn-Token|input|txn\\.',
        skip: HTTP_ONLY,
      },
    ],
  },
  // Deny by default, the decision memo, dry run, probes, a scan's token replayed, and the refusal
  // path of the pipeline.
  pipeline: {
    mutate: [
      `${GUARD}/pipeline.ts:111-116`, // 100-104, 122-132, 168-191: request ids, audit formatting
      `${GUARD}/pipeline.ts:137-137`,
      `${GUARD}/pipeline.ts:140-140`, // 141, 148: traceparent
      `${GUARD}/pipeline.ts:142-147`,
      `${GUARD}/pipeline.ts:149-162`, // 163: latency
      `${GUARD}/pipeline.ts:164-166`,
      `${GUARD}/pipeline.ts:193-345`,
      `${GUARD}/steps/authorize.ts:38-85`, // 86-88: the words of a denial
      `${GUARD}/steps/authorize.ts:89-94`,
    ],
    steps: [
      { files: [`${GUARD}/steps/authorize.test.ts`, `${GUARD}/pipeline.test.ts`] },
      {
        files: [
          `${GUARD_TEST}/behaviour.test.ts`,
          `${GUARD_TEST}/probes.test.ts`,
          `${GUARD_TEST}/object-level.test.ts`,
          `${GUARD_TEST}/decision-edges.test.ts`,
        ],
        skip: HTTP_ONLY,
      },
      {
        files: [
          `${GUARD_TEST}/attacks.test.ts`,
          `${GUARD_TEST}/hot-swap.test.ts`,
          `${GUARD_TEST}/scanner-attacks.test.ts`,
          `${GUARD_TEST}/dispatch-and-numbers.test.ts`,
        ],
        skip: HTTP_ONLY,
      },
      { files: [`${GUARD_TEST}/every-answer.test.ts`], skip: HTTP_ONLY },
    ],
  },
  // The refusal path of each adapter: every request decided, nothing after a refusal reaches a handler.
  // One area per adapter, each with that adapter's tests only.
  fastify: {
    mutate: [
      `${GUARD}/adapters/inbound.ts:34-39`, // refusalFor: whether a refusal (Fastify's too) closes the connection
      `${GUARD}/adapters/fastify.ts:105-108`, // 110-124: registration checks; 149-209: parsers, schemas, routes
      `${GUARD}/adapters/fastify.ts:127-147`,
      `${GUARD}/adapters/fastify.ts:210-220`,
      `${GUARD}/adapters/fastify.ts:232-298`,
    ],
    steps: adapterSteps(/* skip */ 'express|Express|http', [
      `${GUARD}/adapters/fastify.test.ts`,
      `${GUARD_TEST}/fastify-adapter-faults.test.ts`,
    ]),
  },
  express: {
    mutate: [
      `${GUARD}/adapters/express.ts:61-96`,
      `${GUARD}/adapters/express.ts:106-111`, // 112, 116-124: the warning of a late mount
      `${GUARD}/adapters/express.ts:113-114`,
      `${GUARD}/adapters/express.ts:131-131`, // 132-134: the words of a mis-mount
      `${GUARD}/adapters/express.ts:135-169`,
      // 185-226: the walk that finds a route's templates; 113-117, 131, 133-145, 149-155: words of a mismatch
      `${GUARD}/adapters/express-dispatch.ts:105-112`,
      `${GUARD}/adapters/express-dispatch.ts:118-130`,
      `${GUARD}/adapters/express-dispatch.ts:132-132`,
      `${GUARD}/adapters/express-dispatch.ts:146-148`,
      `${GUARD}/adapters/express-dispatch.ts:156-162`, // 163-165, 170-174, 181: detail and log
      `${GUARD}/adapters/express-dispatch.ts:166-169`,
      `${GUARD}/adapters/express-dispatch.ts:175-180`,
      `${GUARD}/adapters/express-dispatch.ts:182-183`,
      `${GUARD}/adapters/express-dispatch.ts:228-237`,
    ],
    steps: adapterSteps('fastify|Fastify|http', [`${GUARD_TEST}/express-adapter-faults.test.ts`]),
  },
  // inbound.ts is shared by Express and node:http; node:http is its thinnest user.
  http: {
    mutate: [
      `${GUARD}/adapters/inbound.ts:19-45`, // 46-49, 58, 63-65: logging
      `${GUARD}/adapters/inbound.ts:50-57`,
      `${GUARD}/adapters/inbound.ts:59-61`,
      `${GUARD}/adapters/inbound.ts:71-99`,
      `${GUARD}/adapters/node-http.ts:29-65`,
    ],
    steps: adapterSteps('fastify|Fastify|express|Express', [
      `${GUARD_TEST}/http-adapter-faults.test.ts`,
      `${GUARD_TEST}/decision-edges.test.ts`,
    ]),
  },
};

/**
 * SHA-256 of each mutated file when its ranges were chosen (commit 293db52; strict-json.ts as fixed after
 * the second run; the adapters as changed for the survivors of the fastify and express runs). A file that
 * no longer matches stops the run: read its ranges again, then write its new hash here.
 */
export const PINNED = {
  'packages/identity/src/spiffe-id.ts': '83cc94777f8d092dd08d1cc2fa6edea0253142d87809c5a87cefe37bfad1288f',
  'packages/identity/src/x509-svid.ts': 'df0638ea1f55fa89c09a2b400af1ca707cbb3b6018e97fc3e3ddaeb90f6a40af',
  'packages/identity/src/tls-peer.ts': 'c329501a6f6adabb850229ae345b36ad452990355fb87b2e0b2cb0e37b503f54',
  'packages/guard/src/steps/transport.ts': 'c47da412aa72e474787f52b83613057e85674b055d457240f91f2bed91f98f7a',
  'packages/guard/src/steps/txn-token.ts': 'aaf87786bcb3d45c3cb055472eb46741ce9eb821594605d88a1363dd383b6577',
  'packages/guard/src/steps/txn-claims.ts': '003ee962f2b00c3f8d2656177db7ce00f709233aa914667d8028e3c406ef01bb',
  'packages/guard/src/revocations.ts': '49cff38924da0212a37196c47e8ea82fb7ff8e199d904413095deef84e117211',
  'packages/guard/src/strict-json.ts': '7a4a9f845dbcace614427bf0e92e6d6f4f3f1eae371f79b723d2c5521c648dec',
  'packages/guard/src/pipeline.ts': 'cc2181d020eea20bd91aa4e89e5c60bc1484636bc211a4a5d4bb407a38782c77',
  'packages/guard/src/steps/authorize.ts': '6e0dde95791a8e51c1a2b169b342ccb849543e45f22733a447ff743ac3934add',
  'packages/guard/src/adapters/inbound.ts': '33a53940a27e5f309fec3ca57336903a17f2708fee34b6dad7746bce324b26b1',
  'packages/guard/src/adapters/node-http.ts': '3b18051200c2c21e588a37b31daae875d96f601b7c217b68818fc31a314fca55',
  'packages/guard/src/adapters/express.ts': 'c473fc83c2ccd832b46704d3e5246b850cac317a12906ac9b282d5f5d2bd7214',
  'packages/guard/src/adapters/express-dispatch.ts': 'f1ed1c6f14f4e5516779e68cdbc75a9960b4a30714b6025e4ac7240a6b129dc6',
  'packages/guard/src/adapters/fastify.ts': '298e75a0b6fc3baca1cdec8f755838a98451b8e0d228804c8cf7683a25f0ef79',
};

/** The files of `mutate` whose content is not the pinned one. */
export function driftedFiles(mutate) {
  const files = [...new Set(mutate.map((entry) => entry.replace(/:[\d:-]+$/, '')))];
  return files.filter((file) => {
    const hash = createHash('sha256').update(readFileSync(file)).digest('hex');
    return PINNED[file] !== hash;
  });
}

/** One `node --test` per step, chained: the first failing step ends the run (the mutant is killed). */
function command(steps) {
  // This Node (Stryker itself needs ≥ 22; the repository needs 24), not whichever `node` is on PATH.
  const node = JSON.stringify(process.execPath);
  return steps
    .map(({ files, pattern, skip }) =>
      [
        node,
        '--test',
        '--test-concurrency=2',
        '--test-timeout=60000',
        '--test-reporter=dot',
        ...(pattern === undefined ? [] : [`--test-name-pattern=${JSON.stringify(pattern)}`]),
        ...(skip === undefined ? [] : [`--test-skip-pattern=${JSON.stringify(skip)}`]),
        ...files,
      ].join(' '),
    )
    .join(' && ');
}

const areaName = process.env.LOCKSTEP_MUTATION_AREA ?? '';
const area = AREAS[areaName];
if (area === undefined) {
  const known = Object.keys(AREAS).join(', ');
  throw new Error(`set LOCKSTEP_MUTATION_AREA to one of ${known}; got ${JSON.stringify(areaName)}`);
}
const drifted = driftedFiles(area.mutate);
if (drifted.length > 0 && process.env.LOCKSTEP_MUTATION_ALLOW_DRIFT !== '1') {
  throw new Error(
    `changed since their line ranges were chosen: ${drifted.join(', ')}. Check their ranges in ` +
      'tools/mutation/stryker.config.mjs, then update their hashes in PINNED ' +
      '(or run with LOCKSTEP_MUTATION_ALLOW_DRIFT=1)',
  );
}

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'command',
  commandRunner: { command: command(area.steps) },
  mutate: area.mutate,
  // In place: the workspace packages (node_modules/@lockstep/* → packages/*) must resolve to the
  // mutated files, which a sandbox copy with a linked node_modules would not. run.ts copies the
  // repository first, so that no checkout is ever mutated.
  inPlace: true,
  // Node strips types and checks none: no `// @ts-nocheck` is needed, and no other file is touched.
  disableTypeChecks: false,
  checkers: [],
  coverageAnalysis: 'off',
  concurrency: Number(process.env.LOCKSTEP_MUTATION_CONCURRENCY ?? 2),
  // A mutant that hangs a request (a refusal never answered) ends as a timeout, not a stuck run.
  timeoutMS: 30_000,
  timeoutFactor: 1.5,
  dryRunTimeoutMinutes: 10,
  plugins: ['@stryker-mutator/*', './tools/mutation/ignore-messages.mjs'],
  ignorers: ['lockstep-messages'],
  reporters: ['clear-text', 'progress-append-only', 'json', 'html'],
  jsonReporter: { fileName: `test-output/mutation/${areaName}.json` },
  htmlReporter: { fileName: `test-output/mutation/${areaName}.html` },
  clearTextReporter: { allowColor: false, logTests: false, reportScoreTable: true, reportMutants: true },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
