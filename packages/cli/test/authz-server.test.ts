/**
 * `lockstep authz-server --config <file>` as an operator runs it: joined with LOCKSTEP_JOIN_TOKEN, it says
 * where it listens (HTTPS and gRPC) and whom it trusts, and stops cleanly on SIGTERM; a bad config or a
 * missing token is refused with the fix. (What the decision service decides is @lockstep/proxy's test.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { controlPlaneForCommands, runMain, startCommand } from './joined-command.ts';

const world = controlPlaneForCommands('lockstep-authz-cli-');

function writeConfig(extra = ''): string {
  return world.writeConfig('authz.yaml', 'grpc: { port: 0 }\ntrustedProxies: [spiffe://shop.test/svc/edge]\n', extra);
}

describe('lockstep authz-server', () => {
  it('joins, says where it listens and whom it trusts, and stops on SIGTERM', async () => {
    const child = await startCommand(
      ['authz-server', '--config', writeConfig()],
      await world.joinToken('orders'),
      'trusts the proxies',
    );
    assert.match(child.output(), /authz-server orders listening on https:\/\/127\.0\.0\.1:\d+ /);
    assert.match(
      child.output(),
      /authz-server orders gRPC ext_authz on 127\.0\.0\.1:\d+ \(envoy\.service\.auth\.v3\.Authorization\)/,
    );
    assert.match(child.output(), /authz-server orders trusts the proxies spiffe:\/\/shop\.test\/svc\/edge/);
    assert.equal(await child.stop(), 0, child.output());
    assert.match(child.output(), /authz-server orders: stopping/);
  });

  it('refuses a bad config naming the field, and a missing join token', async () => {
    const missing = await runMain(['authz-server', '--config', writeConfig()], { LOCKSTEP_JOIN_TOKEN: undefined });
    assert.equal(missing.code, 2);
    assert.match(missing.err.join('\n'), /LOCKSTEP_JOIN_TOKEN is not set/);
    const bad = await runMain(
      ['authz-server', '--config', writeConfig('authzenCallers: [spiffe://shop.test/svc/bff]\n')],
      { LOCKSTEP_JOIN_TOKEN: 'ljt1.x.y' },
    );
    assert.equal(bad.code, 1);
    assert.match(
      bad.err.at(-1) ?? '',
      /authz\.yaml: authzenCallers: spiffe:\/\/shop\.test\/svc\/bff is not in trustedProxies: add it there too/,
    );
    const help = await runMain(['authz-server', '--help'], { LOCKSTEP_JOIN_TOKEN: 'ljt1.x.y' });
    assert.equal(help.code, 0);
    assert.match(help.out.join('\n'), /lockstep authz-server --config <authz\.yaml>/);
  });
});
