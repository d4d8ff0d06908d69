/** The input attacks, in catalogue order. */
import type { Attack } from '../attack.ts';
import schemaBypass from './schema-bypass.ts';
import prototypePollution from './prototype-pollution.ts';
import duplicateKeys from './duplicate-keys.ts';
import nulInBody from './nul-in-body.ts';
import oversizedBody from './oversized-body.ts';
import wrongContentType from './wrong-content-type.ts';
import oversizedHeaders from './oversized-headers.ts';

export const inputAttacks: readonly Attack[] = [
  schemaBypass,
  prototypePollution,
  duplicateKeys,
  nulInBody,
  oversizedBody,
  wrongContentType,
  oversizedHeaders,
];
