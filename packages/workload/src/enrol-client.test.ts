import assert from 'node:assert/strict';
import { it } from 'node:test';
import { joinControlPlane } from './enrol-client.ts';
import { EnrolmentError } from './errors.ts';

it('refuses a join token that is not one before connecting anywhere, and says how to get one', async () => {
  // Nothing listens on port 1: a connection attempt would fail with another error.
  await assert.rejects(
    joinControlPlane({
      url: 'https://127.0.0.1:1',
      trustDomain: 'shop.test',
      joinToken: 'ljt1.copied-in-part',
      service: 'orders',
    }),
    (error: unknown) =>
      error instanceof EnrolmentError &&
      error.code === 'LOCKSTEP_ENROL_TOKEN_MALFORMED' &&
      error.status === null &&
      error.message.includes('lockstep join-token create orders'),
  );
});
