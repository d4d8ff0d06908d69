/**
 * `lockstep sidecar --config <file>` as an operator runs it: joined with LOCKSTEP_JOIN_TOKEN, it says
 * where it listens, and stops cleanly on SIGTERM; a bad config or a missing token is refused with the fix.
 * (What the sidecar does is @lockstep/proxy's test.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { controlPlaneForCommands, runMain, startCommand } from './joined-command.ts';

const world = controlPlaneForCommands('lockstep-sidecar-cli-');

function writeConfig(extra = ''): string {
  return world.writeConfig('sidecar.yaml', 'upstream: http://127.0.0.1:9\negress: { port: 0 }\n', extra);
}

describe('lockstep sidecar', () => {
  it('joins, says where it listens, and stops on SIGTERM', async () => {
    const child = await startCommand(
      ['sidecar', '--config', writeConfig()],
      await world.joinToken('orders'),
      'egress on',
    );
    assert.match(
      child.output(),
      /sidecar orders listening on https:\/\/127\.0\.0\.1:\d+ \(upstream http:\/\/127\.0\.0\.1:9\)/,
    );
    assert.match(child.output(), /sidecar orders egress on http:\/\/127\.0\.0\.1:\d+/);
    assert.equal(await child.stop(), 0, child.output());
    assert.match(child.output(), /sidecar orders: stopping/);
  });

  it('refuses a bad config naming the field, and a missing join token', async () => {
    const missing = await runMain(['sidecar', '--config', writeConfig()], { LOCKSTEP_JOIN_TOKEN: undefined });
    assert.equal(missing.code, 2);
    assert.match(missing.err.join('\n'), /LOCKSTEP_JOIN_TOKEN is not set/);
    const bad = await runMain(['sidecar', '--config', writeConfig('limits: { bodyByte: 1 }\n')], {
      LOCKSTEP_JOIN_TOKEN: 'ljt1.x.y',
    });
    assert.equal(bad.code, 1);
    assert.match(bad.err.at(-1) ?? '', /sidecar\.yaml: limits\.bodyByte: unknown field; the fields are bodyBytes/);
  });
});
