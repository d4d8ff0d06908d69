/**
 * The guard's attack suite covers every scanner attack id (guard-coverage.ts): the map names exactly
 * the catalogue's ids, and every guard test it names is declared in the named file of
 * packages/guard/test — read from the file's text, as a literal title or one row of a table-driven
 * title whose filled-in values are the file's own literals.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { txnTokenAttacks } from '@lockstep/testkit';
import { catalogue } from '../src/index.ts';
import { guardCoverage, type GuardTest } from './guard-coverage.ts';

const GUARD_TESTS = new URL('../../guard/test/', import.meta.url);
/** The loop and title with which attacks.test.ts declares one test per testkit Txn-Token attack. */
const TESTKIT_LOOP = 'for (const attack of txnTokenAttacks)';
const TESTKIT_TITLE = 'test(`${attack.id}: ${attack.description}`';

/** A JavaScript string literal's text without its quotes, with `\x` read as `x` (enough for test titles). */
const unescape = (body: string) => body.replace(/\\(.)/g, '$1');

interface Titles {
  readonly literals: ReadonlySet<string>;
  /** Template titles as their static parts, between which each `${…}` was. */
  readonly templates: readonly (readonly string[])[];
  /** Every string literal of the file: the values a table-driven title can be filled with. */
  readonly strings: ReadonlySet<string>;
  readonly source: string;
}

const STRING = /'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`/g;
const TITLE = /\b(?:test|it|describe)\(\s*('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`)/g;

function titlesOf(file: string): Titles {
  const source = readFileSync(new URL(file, GUARD_TESTS), 'utf8');
  const literals = new Set<string>();
  const templates: string[][] = [];
  for (const [, quoted = ''] of source.matchAll(TITLE)) {
    const body = quoted.slice(1, -1);
    if (quoted.startsWith('`') && body.includes('${')) templates.push(body.split(/\$\{[^}]*\}/).map(unescape));
    else literals.add(unescape(body));
  }
  const strings = new Set([...source.matchAll(STRING)].map(([quoted]) => unescape(quoted.slice(1, -1))));
  return { literals, templates, strings, source };
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A title the file declares: literally, or by a template whose holes take values the file itself holds. */
function declares(titles: Titles, title: string): boolean {
  if (titles.literals.has(title)) return true;
  const holds = (value: string) =>
    titles.strings.has(value) || (/^\d+$/.test(value) && new RegExp(`\\b${value}\\b`).test(titles.source));
  return titles.templates.some((parts) => {
    const match = new RegExp(`^${parts.map(escapeRegExp).join('(.+?)')}$`).exec(title);
    return match !== null && match.slice(1).every(holds);
  });
}

/** Why `entry` names no test of its file, or null when it does. */
function absence(entry: GuardTest, declared: Titles): string | null {
  if ('test' in entry) return declares(declared, entry.test) ? null : `${entry.file} has no test "${entry.test}"`;
  // The file declares `<id>: <description>` for every testkit attack: the id must be one of them.
  if (!declared.source.includes(TESTKIT_LOOP) || !declared.source.includes(TESTKIT_TITLE)) {
    return `${entry.file} no longer declares a test per testkit Txn-Token attack`;
  }
  const known = txnTokenAttacks.some((candidate) => candidate.id === entry.testkit);
  return known ? null : `@lockstep/testkit has no Txn-Token attack "${entry.testkit}" (for ${entry.file})`;
}

describe("the guard's attack suite covers the scanner's catalogue", () => {
  const cache = new Map<string, Titles>();
  const titles = (file: string) => {
    let found = cache.get(file);
    if (found === undefined) cache.set(file, (found = titlesOf(file)));
    return found;
  };

  it("names exactly the catalogue's attack ids, each with at least one guard test", () => {
    const ids = catalogue.map((attack) => attack.id);
    const missing = ids.filter((id) => !Object.hasOwn(guardCoverage, id));
    const unknown = Object.keys(guardCoverage).filter((id) => !ids.includes(id));
    const hint = 'name a guard test for each new attack id in guard-coverage.ts (write one if the guard has none)';
    assert.deepEqual({ missing, unknown }, { missing: [], unknown: [] }, hint);
    for (const [id, tests] of Object.entries(guardCoverage)) assert.ok(tests.length > 0, `${id}: no guard test`);
  });

  it('names only guard tests that exist', () => {
    const absent: string[] = [];
    for (const [id, tests] of Object.entries(guardCoverage)) {
      for (const entry of tests) {
        const why = absence(entry, titles(entry.file));
        if (why !== null) absent.push(`${id}: ${why}`);
      }
    }
    assert.deepEqual(absent, []);
  });

  it('tells a declared title from one that is not, table rows included', () => {
    const svidRules = titles('svid-rules.test.ts');
    const row = (what: string) => `refuses ${what}: 401 LOCKSTEP_ERR_PEER_ID_INVALID, audited, handler not run`;
    assert.equal(declares(svidRules, row('a leaf with keyCertSign')), true);
    assert.equal(declares(svidRules, row('a leaf with codeSigning')), false, 'a row the table does not have');
    assert.equal(declares(titles('attacks.test.ts'), 'no client certificate'), true);
    assert.equal(declares(titles('attacks.test.ts'), 'no client certificate at all'), false);
    assert.equal(absence({ file: 'attacks.test.ts', testkit: 'alg-none' }, titles('attacks.test.ts')), null);
    const unknownId = absence({ file: 'attacks.test.ts', testkit: 'alg-nothing' }, titles('attacks.test.ts'));
    assert.match(String(unknownId), /no Txn-Token attack "alg-nothing"/);
    const noLoop = absence({ file: 'svid-rules.test.ts', testkit: 'alg-none' }, titles('svid-rules.test.ts'));
    assert.match(String(noLoop), /no longer declares/);
  });
});
