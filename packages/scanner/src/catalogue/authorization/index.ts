/** The authorization attacks, in catalogue order. */
import type { Attack } from '../attack.ts';
import unlistedCaller from './unlisted-caller.ts';
import pathTricks from './path-tricks.ts';
import bola from './bola.ts';
import missingRole from './missing-role.ts';
import functionLevel from './function-level.ts';

export const authorizationAttacks: readonly Attack[] = [unlistedCaller, pathTricks, bola, missingRole, functionLevel];
