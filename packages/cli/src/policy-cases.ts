/**
 * The YAML file of policy test cases (`lockstep policy test`), read strictly: an unknown field or a
 * wrong type is an error that names the case and the field.
 *
 *   trustDomain: shop.test            # lets principals be written as service names
 *   cases:
 *     - name: a customer places an order through the gateway
 *       principal: gateway            # or spiffe://shop.test/svc/gateway
 *       action: orders:create
 *       resource: orders
 *       context: { sub: alice, roles: [customer] }     # requester defaults to the gateway; callerService to the principal's name
 *       expect: allow
 *       policy: gateway-customers-place-and-list-orders # optional: the policy expected to decide
 */
import { parse } from 'yaml';
import type { PolicyTestCase, RequestContext } from '@lockstep/policy';
import { parseSpiffeId, workloadId } from '@lockstep/identity';
import { UsageError } from './state.ts';

const CASE_FIELDS = new Set(['name', 'principal', 'action', 'resource', 'context', 'expect', 'policy']);
const CONTEXT_FIELDS = new Set(['sub', 'roles', 'scope', 'tenant', 'requester', 'callerService', 'owner']);

export function parsePolicyCases(text: string, file: string): PolicyTestCase[] {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new UsageError(`${file} is not YAML: ${(error as Error).message}`);
  }
  const { trustDomain, cases } = (document ?? {}) as { trustDomain?: unknown; cases?: unknown };
  if (trustDomain !== undefined && typeof trustDomain !== 'string')
    throw new UsageError(`${file}: trustDomain must be a DNS name such as shop.test`);
  if (!Array.isArray(cases) || cases.length === 0)
    throw new UsageError(`${file} must hold a list under "cases:" (see lockstep policy test --help)`);
  // A bare name is a workload of trustDomain; the formatter says what is wrong with a bad one.
  const workload = (service: string) => {
    try {
      return workloadId(trustDomain as string, service);
    } catch (error) {
      throw new UsageError(`${file}: ${(error as Error).message}`);
    }
  };
  const spiffe = (value: string) => {
    if (value.startsWith('spiffe://')) return value;
    return trustDomain === undefined ? null : workload(value);
  };
  return cases.map((entry, index) => {
    const where = `${file}, case ${index + 1}`;
    if (typeof entry !== 'object' || entry === null) throw new UsageError(`${where}: a case is a mapping`);
    const raw = entry as Record<string, unknown>;
    for (const key of Object.keys(raw))
      if (!CASE_FIELDS.has(key))
        throw new UsageError(`${where}: unknown field "${key}"; a case has ${[...CASE_FIELDS].join(', ')}`);
    for (const key of ['name', 'principal', 'action', 'resource'])
      if (typeof raw[key] !== 'string' || raw[key] === '') throw new UsageError(`${where}: ${key} must be text`);
    if (raw.expect !== 'allow' && raw.expect !== 'deny')
      throw new UsageError(`${where} (${String(raw.name)}): expect must be allow or deny`);
    if (raw.policy !== undefined && typeof raw.policy !== 'string')
      throw new UsageError(`${where}: policy must be a policy id`);
    const principal = spiffe(raw.principal as string);
    if (principal === null)
      throw new UsageError(
        `${where}: principal ${String(raw.principal)} is not a SPIFFE ID; write it in full or set trustDomain at the top`,
      );
    const context = (raw.context ?? {}) as Record<string, unknown>;
    if (typeof context !== 'object' || Array.isArray(context))
      throw new UsageError(`${where}: context must be a mapping`);
    for (const key of Object.keys(context))
      if (!CONTEXT_FIELDS.has(key))
        throw new UsageError(
          `${where}: unknown context field "${key}"; the context has ${[...CONTEXT_FIELDS].join(', ')}`,
        );
    const list = (key: string) => {
      const value = context[key] ?? [];
      if (!Array.isArray(value) || value.some((item) => typeof item !== 'string'))
        throw new UsageError(`${where}: context.${key} must be a list of text`);
      return value as string[];
    };
    const text = (key: string, fallback: string) => {
      const value = context[key] ?? fallback;
      if (typeof value !== 'string') throw new UsageError(`${where}: context.${key} must be text`);
      return value;
    };
    // As the guard reads it: the name of exactly spiffe://<td>/svc/<name>, else "".
    const callerService = parseSpiffeId(principal)?.service ?? '';
    const defaultRequester = trustDomain === undefined ? '' : workload('gateway');
    const named = context.requester === undefined ? null : text('requester', '');
    const requester = named === null ? defaultRequester : (spiffe(named) ?? named);
    const built: RequestContext = {
      sub: text('sub', ''),
      roles: list('roles'),
      scope: list('scope'),
      requester,
      callerService: text('callerService', callerService),
      ...(context.tenant === undefined ? {} : { tenant: text('tenant', '') }),
      ...(context.owner === undefined ? {} : { owner: text('owner', '') }),
    };
    return {
      name: raw.name as string,
      principal,
      action: raw.action as string,
      resource: raw.resource as string,
      context: built,
      expect: raw.expect,
      ...(raw.policy === undefined ? {} : { policy: raw.policy as string }),
    };
  });
}
