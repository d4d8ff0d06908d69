/**
 * `npm run mutation [-- <area>…] [--concurrency N]`: the mutation run on the guard's security
 * decisions (docs/mutation.md). Not part of `npm test` or CI: it takes about an hour on two cores.
 *
 * Stryker mutates files in place (stryker.config.mjs says why), so this copies the repository to a
 * temporary directory first — node_modules included, its workspace links still relative, so that they
 * point into the copy — and runs there, one area after the other. The reports (JSON and HTML per area)
 * land in test-output/mutation/; the summary is printed at the end. Exit code 1 when a mutant survived.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Pinned: run with `npm exec`, so that `npm ci` does not install Stryker's ~185 packages for everyone.
const STRYKER = '@stryker-mutator/core@10.1.1';
const AREAS = ['identity', 'txn-token', 'pipeline', 'fastify', 'express', 'http'] as const;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REPORTS = join(ROOT, 'test-output', 'mutation');
// Not copied: history, earlier runs' leftovers, outputs.
const SKIPPED = new Set(['.git', '.stryker-tmp', 'test-output', 'bench-profiles', '.lockstep']);

interface Options {
  areas: string[];
  concurrency: number;
}

function parseArguments(argv: readonly string[]): Options {
  const areas: string[] = [];
  let concurrency = 2;
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i] as string;
    if (argument === '--concurrency') {
      concurrency = Number(argv[++i]);
      if (!Number.isInteger(concurrency) || concurrency < 1) {
        throw new Error('--concurrency takes a whole number ≥ 1, e.g. --concurrency 2');
      }
    } else if ((AREAS as readonly string[]).includes(argument)) {
      areas.push(argument);
    } else {
      const expected = `name areas (${AREAS.join(', ')}) or --concurrency N`;
      throw new Error(`unknown argument ${JSON.stringify(argument)}: ${expected}`);
    }
  }
  return { areas: areas.length > 0 ? areas : [...AREAS], concurrency };
}

/** The repository without its history, its workspace links kept relative (into the copy). */
function copyRepository(): string {
  const copy = mkdtempSync(join(tmpdir(), 'lockstep-mutation-'));
  cpSync(ROOT, copy, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (source) => !SKIPPED.has(basename(source)) || relative(ROOT, source).includes('node_modules'),
  });
  return copy;
}

function runArea(copy: string, area: string, concurrency: number): number {
  console.error(`\nmutation: area ${area} (concurrency ${concurrency})`);
  const result = spawnSync(
    'npm',
    ['exec', '--yes', `--package=${STRYKER}`, '--', 'stryker', 'run', 'tools/mutation/stryker.config.mjs'],
    {
      cwd: copy,
      stdio: 'inherit',
      env: { ...process.env, LOCKSTEP_MUTATION_AREA: area, LOCKSTEP_MUTATION_CONCURRENCY: String(concurrency) },
    },
  );
  return result.status ?? 1;
}

interface Counts {
  [status: string]: number;
}

/** Mutant statuses per area from Stryker's JSON report (mutation-testing-report-schema). */
function countStatuses(file: string): Counts {
  const report = JSON.parse(readFileSync(file, 'utf8')) as { files: Record<string, { mutants: { status: string }[] }> };
  const counts: Counts = {};
  for (const { mutants } of Object.values(report.files)) {
    for (const { status } of mutants) counts[status] = (counts[status] ?? 0) + 1;
  }
  return counts;
}

function main(): number {
  const { areas, concurrency } = parseArguments(process.argv.slice(2));
  const started = Date.now();
  const minutes = new Map<string, number>();
  const copy = copyRepository();
  let failed = false;
  try {
    mkdirSync(REPORTS, { recursive: true });
    for (const area of areas) {
      const areaStarted = Date.now();
      if (runArea(copy, area, concurrency) !== 0) failed = true;
      minutes.set(area, Math.round((Date.now() - areaStarted) / 60_000));
      for (const extension of ['json', 'html']) {
        const report = join(copy, 'test-output', 'mutation', `${area}.${extension}`);
        if (existsSync(report)) cpSync(report, join(REPORTS, `${area}.${extension}`));
      }
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
  let survived = 0;
  const total = Math.round((Date.now() - started) / 60_000);
  console.error(`\nmutation: ${total} min; reports in ${relative(process.cwd(), REPORTS) || '.'}`);
  for (const area of areas) {
    const file = join(REPORTS, `${area}.json`);
    if (!existsSync(file)) {
      console.error(`  ${area}: no report (see the output above)`);
      failed = true;
      continue;
    }
    const counts = countStatuses(file);
    survived += (counts.Survived ?? 0) + (counts.NoCoverage ?? 0);
    const found = Object.entries(counts)
      .map(([status, n]) => `${status} ${n}`)
      .join(', ');
    console.error(`  ${area} (${minutes.get(area) ?? '?'} min): ${found}`);
  }
  return failed || survived > 0 ? 1 : 0;
}

process.exitCode = main();
