import type { EntityUidJson, Expr, PolicyJson, ResourceConstraint } from '@cedar-policy/cedar-wasm/nodejs';

const SERVICE_TYPE = 'Lockstep::Service';

/**
 * True only when the policy provably never applies to resource `Lockstep::Service::"<service>"`.
 * Anything not understood keeps the policy. Reasoning used:
 * - `==` / `is` compare type and id exactly;
 * - `in` a Service is equality, because the base schema gives Service no parent types (and a
 *   schema cannot redeclare it); `in` an entity of any other type is left alone (kept);
 * - a `when` clause that is a chain of `&&` with one provably false term is never satisfied
 *   (false, or an error, which Cedar also treats as not applying); an `unless` clause that is a
 *   chain of `||` with one provably true term likewise.
 */
export function excludesService(policy: PolicyJson, service: string): boolean {
  if (scopeMatches(policy.resource, service) === false) return true;
  for (const clause of policy.conditions) {
    const terms = clause.kind === 'when' ? flatten(clause.body, '&&') : flatten(clause.body, '||');
    const decisive = clause.kind === 'when' ? false : true;
    if (terms.some((term) => resourceTest(term, service) === decisive)) return true;
  }
  return false;
}

function scopeMatches(scope: ResourceConstraint, service: string): boolean | undefined {
  switch (scope.op) {
    case 'All':
      return true;
    case '==':
      return 'entity' in scope ? isService(scope.entity, service) : undefined;
    case 'in':
      return 'entity' in scope ? inEntity(scope.entity, service) : undefined;
    case 'is': {
      if (scope.entity_type !== SERVICE_TYPE) return false;
      if (!scope.in) return true;
      return 'entity' in scope.in ? inEntity(scope.in.entity, service) : undefined;
    }
    default:
      return undefined;
  }
}

function flatten(expr: Expr, op: '&&' | '||'): Expr[] {
  const node = (expr as Record<string, unknown>)[op] as { left: Expr; right: Expr } | undefined;
  return node ? [...flatten(node.left, op), ...flatten(node.right, op)] : [expr];
}

/** The value of a term that tests only `resource` against literals; undefined when unknown. */
function resourceTest(expr: Expr, service: string): boolean | undefined {
  const e = expr as Record<string, unknown>;
  if ('!' in e) {
    const inner = resourceTest((e['!'] as { arg: Expr }).arg, service);
    return inner === undefined ? undefined : !inner;
  }
  if ('==' in e || '!=' in e) {
    const { left, right } = (e['=='] ?? e['!=']) as { left: Expr; right: Expr };
    const other = isResource(left) ? right : isResource(right) ? left : undefined;
    const entity = other && entityLiteral(other);
    if (!entity) return undefined;
    const equal = isService(entity, service);
    return '==' in e ? equal : !equal;
  }
  if ('in' in e) {
    const { left, right } = e['in'] as { left: Expr; right: Expr };
    return isResource(left) ? inLiteral(right, service) : undefined;
  }
  if ('is' in e) {
    const test = e['is'] as { left: Expr; entity_type: string; in?: Expr };
    if (!isResource(test.left)) return undefined;
    if (test.entity_type !== SERVICE_TYPE) return false;
    return test.in === undefined ? true : inLiteral(test.in, service);
  }
  return undefined;
}

/** `resource in <entity>` or `resource in [<entities>]`. */
function inLiteral(expr: Expr, service: string): boolean | undefined {
  const single = entityLiteral(expr);
  if (single) return inEntity(single, service);
  const members = setLiteral(expr);
  if (!members) return undefined;
  const results = members.map((m) => {
    const entity = entityLiteral(m);
    return entity ? inEntity(entity, service) : undefined;
  });
  if (results.includes(true)) return true;
  return results.every((r) => r === false) ? false : undefined;
}

function inEntity(entity: EntityUidJson, service: string): boolean | undefined {
  return uidOf(entity).type === SERVICE_TYPE ? isService(entity, service) : undefined;
}

function isService(entity: EntityUidJson, service: string): boolean {
  const uid = uidOf(entity);
  return uid.type === SERVICE_TYPE && uid.id === service;
}

function uidOf(entity: EntityUidJson): { type: string; id: string } {
  return '__entity' in entity ? entity.__entity : entity;
}

function isResource(expr: Expr): boolean {
  return (expr as { Var?: unknown }).Var === 'resource';
}

function entityLiteral(expr: Expr): EntityUidJson | undefined {
  const value = (expr as { Value?: unknown }).Value;
  return isEntityJson(value) ? value : undefined;
}

function setLiteral(expr: Expr): Expr[] | undefined {
  const e = expr as { Set?: Expr[]; Value?: unknown };
  if (Array.isArray(e.Set)) return e.Set;
  // A set of literals may also arrive folded into a single Value.
  if (Array.isArray(e.Value)) return e.Value.map((v: unknown) => ({ Value: v }) as Expr);
  return undefined;
}

function isEntityJson(value: unknown): value is EntityUidJson {
  if (typeof value !== 'object' || value === null) return false;
  const uid = '__entity' in value ? (value as { __entity: unknown }).__entity : value;
  return (
    typeof uid === 'object' &&
    uid !== null &&
    typeof (uid as { type?: unknown }).type === 'string' &&
    typeof (uid as { id?: unknown }).id === 'string'
  );
}
