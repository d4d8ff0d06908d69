/** The catalogue, in the order the reports show it: one module per attack, under its category. */
import type { Attack } from './attack.ts';
import { authorizationAttacks } from './authorization/index.ts';
import { inputAttacks } from './input/index.ts';
import { transportAttacks } from './transport/index.ts';
import { txnTokenAttacks } from './txn-token/index.ts';

export const catalogue: readonly Attack[] = Object.freeze([
  ...transportAttacks,
  ...txnTokenAttacks,
  ...authorizationAttacks,
  ...inputAttacks,
]);
export type {
  Attack,
  Control,
  ScanContext,
  ServiceTarget,
  ScanRoute,
  Target,
  RouteTarget,
  EndpointTarget,
  CraftedToken,
} from './attack.ts';
