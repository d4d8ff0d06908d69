import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createTestCa, createTxnTokenMinter } from '@lockstep/testkit';
import { GuardConfigError } from './errors.ts';
import { consoleLogger, resolveOptions, type GuardOptions } from './options.ts';

let base: GuardOptions;

before(async () => {
  const ca = await createTestCa({ trustDomain: 'shop.test' });
  const svid = await ca.issueSvid({ service: 'orders' });
  const minter = await createTxnTokenMinter({ trustDomain: 'shop.test' });
  base = {
    service: 'orders',
    trustDomain: 'shop.test',
    trustBundle: ca.bundlePem,
    svid: { cert: svid.chainPem, key: svid.keyPem },
    txnTokenKeys: { jwks: { keys: [...minter.jwks.keys] } },
    policy: { keys: { keys: [...minter.jwks.keys] } },
  };
});

/** Options with `changes` merged over the valid base; a member set to undefined is removed. */
function withOptions(changes: Record<string, unknown>): GuardOptions {
  const options: Record<string, unknown> = { ...base, ...changes };
  for (const [name, value] of Object.entries(changes)) if (value === undefined) delete options[name];
  return options as unknown as GuardOptions;
}

/** Asserts that resolving `options` refuses to start with a config error whose message holds every fragment. */
function assertRefused(options: GuardOptions, ...fragments: string[]): void {
  assert.throws(
    () => resolveOptions(options),
    (error: unknown) => {
      assert.ok(error instanceof GuardConfigError, `expected a GuardConfigError, got ${String(error)}`);
      assert.ok(error instanceof TypeError);
      assert.equal(error.code, 'LOCKSTEP_CONFIG_INVALID');
      assert.equal(error.name, 'GuardConfigError');
      assert.ok(error.message.startsWith('Lockstep guard: '), error.message);
      for (const fragment of fragments)
        assert.ok(error.message.includes(fragment), `"${error.message}" should include "${fragment}"`);
      return true;
    },
  );
}

describe('resolveOptions', () => {
  it('applies the safe defaults', () => {
    const resolved = resolveOptions(base);
    assert.equal(resolved.mode, 'enforce');
    assert.deepEqual(resolved.limits, { bodyBytes: 1024 * 1024, headerBytes: 16 * 1024, txnTokenBytes: 8 * 1024 });
    assert.deepEqual(resolved.txnToken, { maxLifetimeSeconds: 300, clockSkewSeconds: 30 });
    assert.deepEqual(resolved.cache, {
      tokens: 10_000,
      decisions: 10_000,
      tokenBytes: 8 * 1024 * 1024,
      decisionBytes: 4 * 1024 * 1024,
    });
    assert.equal(resolved.auditFile, undefined);
    assert.equal(resolved.policy.bundle, undefined);
    assert.equal(resolved.logger, consoleLogger);
    assert.equal(resolved.service, 'orders');
    assert.equal(resolved.trustDomain, 'shop.test');
  });

  it('keeps explicit values', () => {
    const resolved = resolveOptions(
      withOptions({
        mode: 'dry-run',
        audit: { file: '/tmp/audit.jsonl' },
        limits: { bodyBytes: 10, headerBytes: 20, txnTokenBytes: 30 },
        txnToken: { maxLifetimeSeconds: 60, clockSkewSeconds: 5 },
        cache: { tokens: 7, decisions: 8, tokenBytes: 9, decisionBytes: 10 },
      }),
    );
    assert.equal(resolved.mode, 'dry-run');
    assert.equal(resolved.auditFile, '/tmp/audit.jsonl');
    assert.deepEqual(resolved.limits, { bodyBytes: 10, headerBytes: 20, txnTokenBytes: 30 });
    assert.deepEqual(resolved.txnToken, { maxLifetimeSeconds: 60, clockSkewSeconds: 5 });
    assert.deepEqual(resolved.cache, { tokens: 7, decisions: 8, tokenBytes: 9, decisionBytes: 10 });
  });

  it('returns frozen options; assigning to them throws', () => {
    const resolved = resolveOptions(base);
    for (const part of [
      resolved,
      resolved.svid,
      resolved.txnTokenKeys,
      resolved.policy,
      resolved.limits,
      resolved.txnToken,
      resolved.cache,
    ]) {
      assert.ok(Object.isFrozen(part));
    }
    assert.throws(() => {
      (resolved as { mode: string }).mode = 'dry-run';
    }, TypeError);
    assert.throws(() => {
      (resolved.limits as { bodyBytes: number }).bodyBytes = 1e12;
    }, TypeError);
    assert.throws(() => {
      (resolved.txnToken as { maxLifetimeSeconds: number }).maxLifetimeSeconds = 86_400;
    }, TypeError);
    assert.equal(resolved.mode, 'enforce');
  });

  it("does not let later changes to the caller's objects reach the trusted policy keys", () => {
    const input = withOptions({ policy: { keys: { keys: [...base.policy.keys.keys] } } });
    const resolved = resolveOptions(input);
    const trusted = resolved.policy.keys.keys.length;
    input.policy.keys.keys.push({ kty: 'EC', crv: 'P-256', x: 'attacker', y: 'attacker', kid: 'attacker' });
    assert.equal(resolved.policy.keys.keys.length, trusted);
    assert.ok(Object.isFrozen(resolved.policy.keys.keys));
  });

  it('refuses an unknown option and lists the known ones', () => {
    assertRefused(
      withOptions({ trustdomain: 'shop.test' }),
      'unknown option "trustdomain"',
      'trustDomain',
      'txnTokenKeys',
    );
    assertRefused(withOptions({ unsafeSkipTls: true }), 'unknown option "unsafeSkipTls"');
  });

  it('refuses an unknown nested option instead of silently using the default', () => {
    assertRefused(withOptions({ txnToken: { maxLifetime: 30 } }), 'maxLifetime');
    assertRefused(withOptions({ limits: { bodyByte: 10 } }), 'bodyByte');
    assertRefused(withOptions({ cache: { token: 10 } }), 'token');
  });

  it('holds peer SVIDs to 24 h by default; svidRules.maxLifetimeSeconds can only lower it', () => {
    assert.deepEqual(resolveOptions(base).svidRules, { maxLifetimeSeconds: 86_400 });
    assert.ok(Object.isFrozen(resolveOptions(base).svidRules));
    const lowered = resolveOptions(withOptions({ svidRules: { maxLifetimeSeconds: 3_600 } }));
    assert.deepEqual(lowered.svidRules, { maxLifetimeSeconds: 3_600 });
    for (const maxLifetimeSeconds of [0, 86_401, 1.5, '3600', -1]) {
      const options = withOptions({ svidRules: { maxLifetimeSeconds } });
      assertRefused(options, 'svidRules.maxLifetimeSeconds must be an integer between 1 and 86400', 'e.g. 86400');
    }
    const typo = withOptions({ svidRules: { maxLifetime: 60 } });
    assertRefused(typo, 'unknown option "svidRules.maxLifetime"', 'maxLifetimeSeconds');
  });

  it('refuses options that are not an object', () => {
    assertRefused(null as unknown as GuardOptions, 'options must be an object', 'createGuard({');
  });

  it('refuses a bad service name and shows one', () => {
    assertRefused(withOptions({ service: undefined }), 'service must be', "service: 'orders'", 'got undefined');
    assertRefused(withOptions({ service: 'orders/admin' }), 'service must be', '"orders/admin"');
    assertRefused(withOptions({ service: '' }), 'service must be');
    assertRefused(withOptions({ service: 'x'.repeat(129) }), 'service must be');
  });

  it('refuses a trust domain with a scheme, upper case or a trailing dot', () => {
    for (const trustDomain of ['spiffe://shop.test', 'Shop.Test', 'shop.test.', '', 42]) {
      assertRefused(withOptions({ trustDomain }), 'trustDomain must be', "trustDomain: 'shop.example'");
    }
  });

  it('refuses a trust bundle that is not PEM certificates', () => {
    assertRefused(
      withOptions({ trustBundle: 'not a pem' }),
      'trustBundle must be',
      'readFileSync("bundle.pem", "utf8")',
    );
    assertRefused(withOptions({ trustBundle: undefined }), 'trustBundle must be');
  });

  it('refuses an SVID without a certificate or private key PEM', () => {
    assertRefused(withOptions({ svid: undefined }), 'svid must be { cert:', 'key:');
    assertRefused(withOptions({ svid: { cert: base.svid.cert, key: base.svid.cert } }), 'svid must be');
    assertRefused(withOptions({ svid: { cert: base.svid.key, key: base.svid.key } }), 'svid must be');
  });

  it('refuses txnTokenKeys with neither or both of jwks and url', () => {
    for (const txnTokenKeys of [undefined, {}, { jwks: { keys: [] }, url: 'https://cp.shop.test/jwks' }]) {
      assertRefused(
        withOptions({ txnTokenKeys }),
        'txnTokenKeys must be either',
        '{ jwks: { keys: [...] } }',
        '{ url: "https://…/jwks" }',
      );
    }
  });

  it('refuses a JWKS url that is not a URL or not https', () => {
    assertRefused(withOptions({ txnTokenKeys: { url: 'cp/jwks' } }), 'txnTokenKeys.url is not a URL', '"cp/jwks"');
    assertRefused(
      withOptions({ txnTokenKeys: { url: 'http://cp.shop.test/jwks' } }),
      'txnTokenKeys.url must use https',
      'got http:',
    );
    const keys = resolveOptions(withOptions({ txnTokenKeys: { url: 'https://cp.shop.test/jwks' } })).txnTokenKeys;
    assert.ok('url' in keys);
    assert.equal(keys.url, 'https://cp.shop.test/jwks');
  });

  it('takes the JWKS of each control-plane replica (urls): a list of https URLs, frozen', () => {
    const urls = ['https://cp-0.shop.test/jwks', 'https://cp-1.shop.test/jwks'];
    const keys = resolveOptions(withOptions({ txnTokenKeys: { urls } })).txnTokenKeys;
    assert.ok('urls' in keys);
    assert.deepEqual(keys.urls, urls);
    assert.ok(Object.isFrozen(keys.urls));
    assertRefused(withOptions({ txnTokenKeys: { urls: [] } }), 'txnTokenKeys.urls must be a list of one or more');
    assertRefused(withOptions({ txnTokenKeys: { urls: 'https://cp/jwks' } }), 'txnTokenKeys.urls must be a list');
    assertRefused(
      withOptions({ txnTokenKeys: { urls: [urls[0], 'http://cp-1.shop.test/jwks'] } }),
      'txnTokenKeys.urls[1] must use https',
    );
    assertRefused(withOptions({ txnTokenKeys: { url: urls[0], urls } }), 'txnTokenKeys must be either');
  });

  it('takes the collector of each control-plane replica (audit.collector.urls)', () => {
    const urls = ['https://cp-0.shop.test/v1/audit/events', 'https://cp-1.shop.test/v1/audit/events'];
    const single = resolveOptions(withOptions({ audit: { collector: { url: urls[0], spoolDir: '/tmp/spool' } } }));
    assert.deepEqual(single.auditCollector, { urls: [urls[0]], spoolDir: '/tmp/spool', maxSpoolBytes: undefined });
    const several = resolveOptions(withOptions({ audit: { collector: { urls, spoolDir: '/tmp/spool' } } }));
    assert.deepEqual(several.auditCollector?.urls, urls);
    const refused = (collector: object, fragment: string) =>
      assertRefused(withOptions({ audit: { collector: { spoolDir: '/tmp/spool', ...collector } } }), fragment);
    refused({}, 'audit.collector must have either url');
    refused({ url: urls[0], urls }, 'audit.collector must have either url');
    refused({ urls: [] }, 'audit.collector.urls must be a list of one or more https URLs');
    refused({ urls: ['http://cp/v1/audit/events'] }, 'audit.collector.urls[0] must use https');
    refused({ url: 'http://cp/v1/audit/events' }, 'audit.collector.url must use https');
  });

  it('refuses JWKS refresh and cooldown periods that are not positive integers', () => {
    for (const refreshSeconds of [0, -1, Number.NaN, '300']) {
      assertRefused(
        withOptions({ txnTokenKeys: { url: 'https://cp.shop.test/jwks', refreshSeconds } }),
        'txnTokenKeys.refreshSeconds',
      );
    }
    for (const cooldownSeconds of [-1, Number.NaN, '10']) {
      assertRefused(
        withOptions({ txnTokenKeys: { url: 'https://cp.shop.test/jwks', cooldownSeconds } }),
        'txnTokenKeys.cooldownSeconds',
      );
    }
  });

  it('refuses a policy without a JWKS, or a bundle that is not a string', () => {
    assertRefused(withOptions({ policy: undefined }), 'policy must be { keys:');
    assertRefused(withOptions({ policy: { keys: {} } }), 'policy must be { keys:');
    assertRefused(
      withOptions({ policy: { keys: base.policy.keys, bundle: 42 } }),
      'policy.bundle must be the compact JWS',
    );
  });

  it('refuses a mode other than enforce or dry-run', () => {
    assertRefused(withOptions({ mode: 'permissive' }), "mode must be 'enforce' or 'dry-run'", '"permissive"');
    assertRefused(withOptions({ mode: 'DRY-RUN' }), "mode must be 'enforce' or 'dry-run'");
  });

  it('refuses an audit file that is not a path', () => {
    assertRefused(withOptions({ audit: { file: 42 } }), 'audit.file must be a path');
  });

  it('refuses a Txn-Token lifetime over 300 s or a skew over 30 s and shows the range', () => {
    assertRefused(
      withOptions({ txnToken: { maxLifetimeSeconds: 301 } }),
      'txnToken.maxLifetimeSeconds',
      'between 1 and 300',
      'e.g. 300',
    );
    assertRefused(withOptions({ txnToken: { maxLifetimeSeconds: 0 } }), 'txnToken.maxLifetimeSeconds');
    assertRefused(withOptions({ txnToken: { maxLifetimeSeconds: 60.5 } }), 'txnToken.maxLifetimeSeconds');
    assertRefused(
      withOptions({ txnToken: { clockSkewSeconds: 31 } }),
      'txnToken.clockSkewSeconds',
      'between 1 and 30',
      'e.g. 30',
    );
    assert.equal(
      resolveOptions(withOptions({ txnToken: { maxLifetimeSeconds: 300 } })).txnToken.maxLifetimeSeconds,
      300,
    );
  });

  it('refuses limits and cache sizes that are not positive integers within range', () => {
    assertRefused(withOptions({ limits: { bodyBytes: -1 } }), 'limits.bodyBytes must be an integer', 'e.g. 1048576');
    assertRefused(withOptions({ limits: { bodyBytes: '1mb' } }), 'limits.bodyBytes');
    assertRefused(
      withOptions({ limits: { headerBytes: 1024 * 1024 + 1 } }),
      'limits.headerBytes',
      'between 1 and 1048576',
    );
    assertRefused(
      withOptions({ limits: { txnTokenBytes: 64 * 1024 + 1 } }),
      'limits.txnTokenBytes',
      'between 1 and 65536',
    );
    assertRefused(withOptions({ cache: { tokens: 0 } }), 'cache.tokens', 'e.g. 10000');
    assertRefused(withOptions({ cache: { decisions: 1.5 } }), 'cache.decisions');
    assertRefused(withOptions({ cache: { tokenBytes: -1 } }), 'cache.tokenBytes');
  });
});
