import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BASE_SCHEMA_FILE } from './base-schema.ts';
import { PolicyError } from './errors.ts';
import type { PolicyErrorCode } from './errors.ts';
import { shopSchema, shopSources } from './fixtures/shop.ts';
import { INLINE_SCHEMA_FILE, policySetFromSources } from './from-sources.ts';
import type { PolicySources } from './from-sources.ts';

/** Asserts a PolicyError with `code` whose message starts with `where` (file:line). */
function assertPolicyError(
  sources: PolicySources,
  code: PolicyErrorCode,
  where: string,
  mentions?: RegExp,
): PolicyError {
  let caught: unknown;
  try {
    policySetFromSources(sources);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof PolicyError, `expected a PolicyError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.ok(caught.message.startsWith(`${where}: `), `expected "${where}: ..." in:\n${caught.message}`);
  if (mentions) assert.match(caught.message, mentions);
  return caught;
}

const withPolicy = (text: string): PolicySources => ({
  schema: shopSchema,
  policies: { 'policies/extra.cedar': text },
});

describe('policySetFromSources', () => {
  it('builds a frozen set keyed by @id with the file and line of each policy', () => {
    const set = policySetFromSources(shopSources);
    assert.deepEqual(Object.keys(set.policies), [
      'deny-blocked-tenant',
      'orders-create-from-gateway',
      'orders-read-admin',
      'payments-charge-from-orders',
    ]);
    assert.deepEqual(set.sources['orders-create-from-gateway'], { file: 'policies/orders.cedar', line: 2 });
    assert.deepEqual(set.sources['orders-read-admin'], { file: 'policies/orders.cedar', line: 9 });
    assert.deepEqual(set.sources['deny-blocked-tenant'], { file: 'policies/global.cedar', line: 2 });
    assert.match(set.policies['orders-read-admin'] ?? '', /^@id\("orders-read-admin"\)\npermit[\s\S]*\};$/);
    assert.equal(set.service, null);
    assert.match(set.version, /^[0-9a-f]{64}$/);
    assert.ok(Object.isFrozen(set) && Object.isFrozen(set.policies) && Object.isFrozen(set.sources));
  });

  it('merges the base schema and every schema file into one namespace block', () => {
    const set = policySetFromSources({
      schema: { 'a.cedarschema': shopSchema, 'b.cedarschema': 'namespace Lockstep { entity Order in [Service]; }' },
      policies: { 'p.cedar': '@id("p") permit(principal, action, resource is Lockstep::Service);' },
    });
    assert.equal(set.schemaText.match(/namespace Lockstep/g)?.length, 1);
    assert.match(set.schemaText, /entity Workload;[\s\S]*action "orders:create"[\s\S]*entity Order in \[Service\];/);
  });

  it('accepts the schema as one string', () => {
    const set = policySetFromSources({ schema: shopSchema, policies: shopSources.policies });
    assert.equal(set.version, policySetFromSources(shopSources).version);
  });

  it('reports a schema syntax error at the line of the schema file', () => {
    const error = assertPolicyError(
      {
        schema: {
          'policies/shop.cedarschema': 'namespace Lockstep {\n  action "x" appliesTo { principal: Workload }\n}\n',
        },
        policies: shopSources.policies,
      },
      'LOCKSTEP_POLICY_SCHEMA',
      'policies/shop.cedarschema:3',
    );
    assert.deepEqual(
      error.problems.map((p) => [p.file, p.line]),
      [['policies/shop.cedarschema', 3]],
    );
  });

  it('reports an undeclared type in a later schema file at its line', () => {
    assertPolicyError(
      {
        schema: {
          'a.cedarschema': shopSchema,
          'b.cedarschema': '// b\nnamespace Lockstep {\n  entity Order in [Shop];\n}\n',
        },
        policies: shopSources.policies,
      },
      'LOCKSTEP_POLICY_SCHEMA',
      'b.cedarschema:3',
      /Shop/,
    );
  });

  it('reports a redeclared base type at the user file, pointing at the base too', () => {
    assertPolicyError(
      {
        schema: { 'a.cedarschema': shopSchema + '\nnamespace Lockstep {\n  entity Service;\n}\n' },
        policies: shopSources.policies,
      },
      'LOCKSTEP_POLICY_SCHEMA',
      'a.cedarschema:9',
      new RegExp(`declared twice \\(see also ${BASE_SCHEMA_FILE}:3\\)`),
    );
  });

  it('reports an unclosed namespace block', () => {
    assertPolicyError(
      { schema: '\nnamespace Lockstep {\n', policies: shopSources.policies },
      'LOCKSTEP_POLICY_SCHEMA',
      `${INLINE_SCHEMA_FILE}:2`,
      /add the missing `}`/,
    );
  });

  it('reports a policy syntax error at its line in the file', () => {
    assertPolicyError(
      withPolicy(
        '@id("a") permit(principal, action, resource);\n\n@id("b")\npermit(principal, action, resource)\nwhen { 1 + };\n',
      ),
      'LOCKSTEP_POLICY_PARSE',
      'policies/extra.cedar:5',
      /Cedar syntax/,
    );
  });

  it('counts lines correctly after non-ASCII text (Cedar offsets are bytes)', () => {
    assertPolicyError(
      withPolicy('// commandes — réservé 😀\n@id("a")\npermit(principal, action, resource)\nwhen { 1 + };\n'),
      'LOCKSTEP_POLICY_PARSE',
      'policies/extra.cedar:4',
    );
  });

  it('refuses templates', () => {
    assertPolicyError(
      withPolicy('\n@id("t")\npermit(principal == ?principal, action, resource);\n'),
      'LOCKSTEP_POLICY_TEMPLATE',
      'policies/extra.cedar:2',
    );
  });

  it('requires an @id on every policy, naming the line', () => {
    assertPolicyError(
      withPolicy('@id("a") permit(principal, action, resource);\n\npermit(principal, action, resource);\n'),
      'LOCKSTEP_POLICY_MISSING_ID',
      'policies/extra.cedar:3',
      /add @id\("<unique-id>"\)/,
    );
    assertPolicyError(
      withPolicy('@id("")\npermit(principal, action, resource);\n'),
      'LOCKSTEP_POLICY_MISSING_ID',
      'policies/extra.cedar:1',
    );
    assertPolicyError(
      withPolicy('@id\npermit(principal, action, resource);\n'),
      'LOCKSTEP_POLICY_MISSING_ID',
      'policies/extra.cedar:1',
    );
  });

  it('refuses an @id used twice across files, naming both places', () => {
    assertPolicyError(
      {
        schema: shopSchema,
        policies: {
          ...shopSources.policies,
          'policies/zzz.cedar': '\n\n@id("orders-read-admin") permit(principal, action, resource);\n',
        },
      },
      'LOCKSTEP_POLICY_DUPLICATE_ID',
      'policies/zzz.cedar:3',
      /already used at policies\/orders\.cedar:9/,
    );
  });

  it('refuses a set without policies', () => {
    assertPolicyError(
      { schema: shopSchema, policies: { 'policies/empty.cedar': '// nothing yet\n' } },
      'LOCKSTEP_POLICY_EMPTY',
      'policies/empty.cedar',
    );
  });

  it('validates strictly, reporting the line inside a multi-line policy', () => {
    const error = assertPolicyError(
      withPolicy(
        '// header\n\n@id("typo")\npermit(principal, action == Lockstep::Action::"orders:read", resource)\nwhen {\n  context.rolez.contains("admin")\n};\n',
      ),
      'LOCKSTEP_POLICY_VALIDATION',
      'policies/extra.cedar:6',
      /did you mean `roles`\?/,
    );
    assert.equal(error.problems.length, 1);
  });

  it('rejects what only strict validation catches: unknown actions, unguarded optional attributes', () => {
    assertPolicyError(
      withPolicy('@id("a")\npermit(principal, action == Lockstep::Action::"orders:delete", resource);'),
      'LOCKSTEP_POLICY_VALIDATION',
      'policies/extra.cedar:2',
      /unrecognized action/,
    );
    assertPolicyError(
      withPolicy('@id("a")\npermit(principal, action, resource)\nwhen { context.tenant == "t" };'),
      'LOCKSTEP_POLICY_VALIDATION',
      'policies/extra.cedar:3',
      /context has tenant/,
    );
  });

  it('is a TypeError to pass something that is not sources', () => {
    assert.throws(() => policySetFromSources(null as unknown as PolicySources), TypeError);
    assert.throws(
      () => policySetFromSources({ schema: shopSchema, policies: { 'a.cedar': 1 as unknown as string } }),
      TypeError,
    );
  });
});
