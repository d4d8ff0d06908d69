import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { DetailedError } from '@cedar-policy/cedar-wasm/nodejs';
import { PolicyError } from '../errors.ts';
import type { PolicyErrorCode, PolicyProblem } from '../errors.ts';
import type { PolicySet, PolicySource } from '../policy-set.ts';
import { assemblePolicySet } from './assemble-policy-set.ts';
import type { PolicyEntry } from './assemble-policy-set.ts';
import { describeCedarError, firstByteOffset } from './describe-cedar-error.ts';
import type { MergedSchema } from './merge-schema.ts';
import { indexOfByteOffset, lineAt } from './scan-cedar.ts';
import { splitPolicies } from './split-policies.ts';
import type { PolicyStatement } from './split-policies.ts';

export type PolicyFile = { readonly file: string; readonly text: string };

export type BuildInput = {
  readonly schema: MergedSchema;
  readonly policyFiles: readonly PolicyFile[];
  readonly service: string | null;
  /** A slice may legitimately be empty (deny all); a policy repo with no policy is a mistake. */
  readonly allowEmpty: boolean;
};

const ADVICE = {
  schema: 'fix this declaration in the schema',
  parse: 'fix the Cedar syntax of this policy',
  template: 'templates (?principal, ?resource) are not supported: write a static policy',
  missingId: 'policy has no @id: add @id("<unique-id>") on the line above it',
  validation: 'fix the policy, or declare what it uses in a .cedarschema file',
} as const;

/**
 * The one path every PolicySet goes through: schema check, parse each file into located
 * policies, ids from `@id`, strict validation, then version and freeze. Each phase reports all of
 * its problems at once (as file:line lines) and stops the build.
 */
export function buildPolicySet(input: BuildInput): PolicySet {
  checkSchema(input.schema);
  const entries = parsePolicyFiles(input.policyFiles);
  if (!input.allowEmpty && entries.length === 0) {
    const files = input.policyFiles.map((f) => f.file).join(', ') || 'the policy sources';
    throw PolicyError.fromProblems('LOCKSTEP_POLICY_EMPTY', [
      {
        file: files,
        message:
          'no policy found: add a .cedar file with at least one @id-annotated policy (with none, every request is denied)',
      },
    ]);
  }
  validateStrict(input.schema, entries);
  return assemblePolicySet(input.schema.text, input.service, entries);
}

function checkSchema(schema: MergedSchema): void {
  const answer = cedar.checkParseSchema(schema.text);
  if (answer.type === 'success') return;
  throw PolicyError.fromProblems(
    'LOCKSTEP_POLICY_SCHEMA',
    answer.errors.map((error) => schemaProblem(schema, error)),
  );
}

function schemaProblem(schema: MergedSchema, error: DetailedError): PolicyProblem {
  // For "declared twice" Cedar points at both declarations; the later one is the one to fix.
  const offsets = (error.sourceLocations ?? []).map((l) => l.start).sort((a, b) => b - a);
  const [first, ...others] = offsets.map((offset) => schema.locate(offset));
  const also = others.length ? ` (see also ${others.map((o) => `${o.file}:${o.line}`).join(', ')})` : '';
  const message = `${describeCedarError(error)}${also}; ${ADVICE.schema}`;
  return first ? { file: first.file, line: first.line, message } : { file: schema.locate(0).file, message };
}

function parsePolicyFiles(files: readonly PolicyFile[]): PolicyEntry[] {
  const problems: Record<'parse' | 'template' | 'missingId' | 'duplicateId', PolicyProblem[]> = {
    parse: [],
    template: [],
    missingId: [],
    duplicateId: [],
  };
  const entries: PolicyEntry[] = [];
  const seen = new Map<string, PolicySource>();
  for (const file of files) {
    const parts = cedar.policySetTextToParts(file.text);
    if (parts.type === 'failure') {
      for (const error of parts.errors) problems.parse.push(locatedProblem(file, 0, file.text, error, ADVICE.parse));
      continue;
    }
    const statements = locateStatements(file, [...parts.policies, ...parts.policy_templates]);
    const templates = new Set(parts.policy_templates);
    for (const statement of statements) {
      const source = { file: file.file, line: lineAt(file.text, statement.start) };
      if (templates.has(statement.text)) {
        problems.template.push({ ...source, message: ADVICE.template });
        continue;
      }
      const json = cedar.policyToJson(statement.text);
      if (json.type === 'failure') {
        for (const error of json.errors) {
          problems.parse.push(locatedProblem(file, statement.start, statement.text, error, ADVICE.parse));
        }
        continue;
      }
      // The d.ts says string, but a bare `@id` arrives as null.
      const id: unknown = json.json.annotations?.['id'];
      if (typeof id !== 'string' || id === '') {
        problems.missingId.push({ ...source, message: ADVICE.missingId });
        continue;
      }
      const earlier = seen.get(id);
      if (earlier) {
        problems.duplicateId.push({
          ...source,
          message: `@id(${JSON.stringify(id)}) is already used at ${earlier.file}:${earlier.line}: ids must be unique across the policy set, rename one`,
        });
        continue;
      }
      seen.set(id, source);
      entries.push({ id, text: statement.text, source });
    }
  }
  throwFirst('LOCKSTEP_POLICY_PARSE', problems.parse);
  throwFirst('LOCKSTEP_POLICY_TEMPLATE', problems.template);
  throwFirst('LOCKSTEP_POLICY_MISSING_ID', problems.missingId);
  throwFirst('LOCKSTEP_POLICY_DUPLICATE_ID', problems.duplicateId);
  return entries;
}

/**
 * Cedar's policySetTextToParts returns each policy's verbatim text but orders them by its own
 * generated ids ("policy0", "policy1", "policy10", ...) and drops positions. Our splitter keeps
 * positions; both must agree on the texts, or we refuse rather than report wrong lines.
 */
function locateStatements(file: PolicyFile, cedarTexts: readonly string[]): readonly PolicyStatement[] {
  const split = splitPolicies(file.text);
  const ours = split.ok ? split.statements.map((s) => s.text).sort() : [];
  const theirs = [...cedarTexts].sort();
  if (!split.ok || ours.length !== theirs.length || ours.some((text, i) => text !== theirs[i])) {
    throw new Error(`@lockstep/policy could not locate the policies of ${file.file}; please report this file`);
  }
  return split.statements;
}

function validateStrict(schema: MergedSchema, entries: readonly PolicyEntry[]): void {
  const byId = new Map(entries.map((e) => [e.id, e]));
  const answer = cedar.validate({
    schema: schema.text,
    policies: { staticPolicies: Object.fromEntries(entries.map((e) => [e.id, e.text])) },
    validationSettings: { mode: 'strict' },
  });
  if (answer.type === 'failure') {
    // checkSchema and the parse phase ran first, so this is a schema error Cedar only finds now.
    throw PolicyError.fromProblems(
      'LOCKSTEP_POLICY_SCHEMA',
      answer.errors.map((error) => schemaProblem(schema, error)),
    );
  }
  if (answer.validationErrors.length === 0) return;
  const problems = answer.validationErrors.map(({ policyId, error }) => {
    const entry = byId.get(policyId);
    if (!entry) return { file: '(policy set)', message: `${describeCedarError(error)}; ${ADVICE.validation}` };
    const offset = firstByteOffset(error);
    const lineInPolicy = offset === undefined ? 1 : lineAt(entry.text, indexOfByteOffset(entry.text, offset));
    const message = `${describeCedarError(error)}; ${ADVICE.validation}`;
    return { file: entry.source.file, line: entry.source.line + lineInPolicy - 1, message };
  });
  problems.sort((a, b) => a.file.localeCompare(b.file) || (a.line ?? 0) - (b.line ?? 0));
  throw PolicyError.fromProblems('LOCKSTEP_POLICY_VALIDATION', problems);
}

/** A problem at Cedar's byte offset within `text`, which starts at index `textStart` of the file. */
function locatedProblem(
  file: PolicyFile,
  textStart: number,
  text: string,
  error: DetailedError,
  advice: string,
): PolicyProblem {
  const message = `${describeCedarError(error)}; ${advice}`;
  const offset = firstByteOffset(error);
  if (offset === undefined) return { file: file.file, message };
  return { file: file.file, line: lineAt(file.text, textStart + indexOfByteOffset(text, offset)), message };
}

function throwFirst(code: PolicyErrorCode, problems: readonly PolicyProblem[]): void {
  if (problems.length) throw PolicyError.fromProblems(code, problems);
}
