/** The catalogue, in the order the reports show it. */
import type { Attack } from './attack.ts';
import { authorizationAttacks } from './authorization.ts';
import { inputAttacks } from './input.ts';
import { transportAttacks } from './transport.ts';
import { txnTokenAttacks } from './txn-token.ts';

export const catalogue: readonly Attack[] = Object.freeze([...transportAttacks, ...txnTokenAttacks, ...authorizationAttacks, ...inputAttacks]);
export type { Attack, ScanContext, ServiceTarget, ScanRoute, Target, RouteTarget, EndpointTarget, CraftedToken } from './attack.ts';
