import { readFileSync } from 'node:fs';

/** The file name errors use for problems located in the base schema. */
export const BASE_SCHEMA_FILE = '@lockstep/policy/base.cedarschema';

/**
 * The Lockstep Cedar model (Workload, Service, RequestContext) every schema is merged with. The file sits at the
 * package's root, one level up from both src/ and the built dist/, and is exported as `@lockstep/policy/base.cedarschema`.
 */
export const baseSchemaText: string = readFileSync(new URL('../base.cedarschema', import.meta.url), 'utf8');
