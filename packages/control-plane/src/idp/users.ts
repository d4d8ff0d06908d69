/**
 * Adding users: the password policy is applied here, once, for every way in (admin API, CLI,
 * `npm start`'s demo users). Without a password, one is generated and returned — shown once, never
 * stored in clear.
 */
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore, UserRecord } from '../store/store.ts';
import { generatePassword, hashPassword, passwordProblem } from './passwords.ts';

export interface NewUser {
  readonly username: string;
  readonly roles?: readonly string[];
  readonly tenant?: string;
  /** Omit to have one generated. */
  readonly password?: string;
}

export const USERNAME = /^[a-z0-9][a-z0-9._@-]{0,63}$/;
const ROLE = /^[a-z][a-z0-9_-]{0,31}$/;

/** Creates the user; returns the record and the password (the generated one when none was given). */
export async function createUser(
  store: ControlPlaneStore,
  user: NewUser,
  now: number = Date.now(),
): Promise<{ user: UserRecord; password: string }> {
  if (!USERNAME.test(user.username))
    throw new ControlPlaneError(
      'LOCKSTEP_CP_REQUEST_INVALID',
      `a user name is 1–64 lower-case letters, digits and . _ @ -, starting with a letter or digit; got ${JSON.stringify(user.username)}`,
    );
  const roles = [...new Set(user.roles ?? [])];
  const badRole = roles.find((role) => !ROLE.test(role));
  if (badRole !== undefined)
    throw new ControlPlaneError(
      'LOCKSTEP_CP_REQUEST_INVALID',
      `a role is a short lower-case word such as "customer"; got ${JSON.stringify(badRole)}`,
    );
  if (user.tenant !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(user.tenant))
    throw new ControlPlaneError(
      'LOCKSTEP_CP_REQUEST_INVALID',
      `a tenant is 1–64 letters, digits and . _ -; got ${JSON.stringify(user.tenant)}`,
    );
  const password = user.password ?? generatePassword(user.username);
  const problem = passwordProblem(password, user.username);
  if (problem !== null) throw new ControlPlaneError('LOCKSTEP_CP_PASSWORD_POLICY', problem);
  const record: UserRecord = {
    username: user.username,
    passwordHash: await hashPassword(password),
    roles,
    tenant: user.tenant ?? null,
    createdAt: now,
    disabledAt: null,
  };
  if (!(await store.createUser(record)))
    throw new ControlPlaneError('LOCKSTEP_CP_USER_EXISTS', `user ${user.username} already exists`);
  return { user: record, password };
}
