/**
 * Whether the manifest's test users can stand in for real ones. A check that acts as a user the
 * guards refuse (revoked), or whose roles mean nothing to the policy, says nothing about the guard:
 * refused, it would look "enforced" for the wrong reason. Such checks are inconclusive, and the
 * reason says which user and what to do — never a skip, never a pass.
 */
import type { ScanUser, TestUserStatus } from '@lockstep/control-plane';
import { describeAnswer } from './verdict.ts';
import type { Answer } from './send.ts';

export interface TestUser {
  /** `a (alice, roles customer)`: how every reason names the user. */
  readonly named: string;
  /** Why the guards refuse the user's Txn-Tokens (so no check acting as it can run), or null. */
  readonly refused: string | null;
  /** Why the user's roles cannot stand for a real user's (a role no policy tests for), or null. */
  readonly roles: string | null;
}

export function testUser(label: 'a' | 'b', user: ScanUser, status: TestUserStatus | undefined): TestUser {
  const named = `${label} (${user.sub}, ${user.roles.length === 0 ? 'no roles' : `roles ${user.roles.join(', ')}`})`;
  const revoked = status?.revoked ?? null;
  const refused =
    revoked === null
      ? null
      : `test user ${named} is revoked (at ${revoked.at} by ${revoked.actor}: ${revoked.reason}), so the guards ` +
        'refuse its Txn-Tokens and no check that acts as it can run: lift the revocation, or name another user as ' +
        `users.${label} in the manifest`;
  const unknown = status?.unknownRoles ?? [];
  const policyRoles = status?.policyRoles?.join(', ') || 'none';
  const roles =
    unknown.length === 0
      ? null
      : `test user ${named} has ${unknown.length === 1 ? 'the role' : 'the roles'} ${unknown.join(', ')}, which no ` +
        `policy in force tests for (the policy's roles: ${policyRoles}), so a check acting as it does not test what ` +
        `a real user meets: give users.${label}.roles in the manifest roles the policy names`;
  return { named, refused, roles };
}

/** Why a test user cannot act, read from a guard that refused its genuine Txn-Token at the token step. */
export function tokenRefused(user: TestUser, endpoint: string, answer: Answer): string {
  return (
    `the guard at ${endpoint} refused the genuine Txn-Token of test user ${user.named} ` +
    `(${describeAnswer(answer)}), so no check that acts as it can run: check that the user is not revoked and ` +
    "that the control plane's Txn-Token keys are the ones this guard trusts"
  );
}
