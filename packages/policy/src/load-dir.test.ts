import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PolicyError } from './errors.ts';
import { globalPolicies, ordersPolicies, paymentsPolicies, shopSchema, writePolicyDir } from './fixtures/shop.ts';
import { policySetFromSources } from './from-sources.ts';
import { loadPolicyDir } from './load-dir.ts';

describe('loadPolicyDir', () => {
  it('loads the *.cedarschema and *.cedar files of a directory, ignoring other files and subdirectories', async (t) => {
    const repo = await writePolicyDir({
      'shop.cedarschema': shopSchema,
      'orders.cedar': ordersPolicies,
      'payments.cedar': paymentsPolicies,
      'global.cedar': globalPolicies,
      'README.md': 'not a policy',
      'tests/cases.cedar': 'this is not parsed: subdirectories are not loaded',
    });
    t.after(repo.remove);
    const set = await loadPolicyDir(repo.dir);
    assert.deepEqual(set.sources['orders-read-admin'], { file: join(repo.dir, 'orders.cedar'), line: 9 });
    assert.equal(Object.keys(set.policies).length, 4);
    // Same content through the in-memory path, under other file names: same version.
    const inMemory = policySetFromSources({
      schema: { 'x.cedarschema': shopSchema },
      policies: { 'a.cedar': globalPolicies, 'b.cedar': paymentsPolicies, 'c.cedar': ordersPolicies },
    });
    assert.equal(set.version, inMemory.version);
  });

  it('names errors by the directory as given plus the file name and line', async (t) => {
    const repo = await writePolicyDir({
      'shop.cedarschema': shopSchema,
      'orders.cedar': `${ordersPolicies}\npermit(principal, action, resource);\n`,
    });
    t.after(repo.remove);
    await assert.rejects(loadPolicyDir(repo.dir), (error: unknown) => {
      assert.ok(error instanceof PolicyError);
      assert.equal(error.code, 'LOCKSTEP_POLICY_MISSING_ID');
      assert.equal(error.message.split(': ')[0], `${join(repo.dir, 'orders.cedar')}:13`);
      return true;
    });
  });

  it('refuses a directory without .cedar files', async (t) => {
    const repo = await writePolicyDir({ 'shop.cedarschema': shopSchema });
    t.after(repo.remove);
    await assert.rejects(loadPolicyDir(repo.dir), { name: 'PolicyError', code: 'LOCKSTEP_POLICY_EMPTY' });
  });

  it('reports a missing directory as LOCKSTEP_POLICY_READ naming it', async () => {
    const missing = join('/nonexistent', 'lockstep-policies');
    await assert.rejects(loadPolicyDir(missing), (error: unknown) => {
      assert.ok(error instanceof PolicyError);
      assert.equal(error.code, 'LOCKSTEP_POLICY_READ');
      assert.ok(error.message.startsWith(`${missing}: `));
      return true;
    });
  });
});
