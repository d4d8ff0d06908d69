/**
 * Input attacks, on every enforced route with a body method: as the workload the policy permits on
 * the route (so that the request gets past authorization), with bodies the input step must refuse.
 */
import { attempt, NIST, OWASP, routeLabel, type Attack, type Plan, type RouteTarget, type ScanContext, type Target } from './attack.ts';
import type { Answer } from '../send.ts';

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

function asControl(target: Target, context: ScanContext, build: (target: RouteTarget, control: string) => Omit<Plan, 'target'>, bodyOnly = true): Plan[] {
  if (target.kind !== 'route' || target.route.public || (bodyOnly && !BODY_METHODS.has(target.route.method))) return [];
  const label = routeLabel(target);
  if (target.unreachable !== null) return [{ target: label, attempts: [], enforcedBy: 'input', inconclusive: target.unreachable }];
  if (target.control === null) return [{ target: label, attempts: [], enforcedBy: 'input', skipped: 'no workload is permitted on this route for test user a, so no request gets as far as the input step' }];
  void context;
  return [{ target: label, ...build(target, target.control) }];
}

const sizeLimited = (code: string) => (answer: Answer) => answer.status === null || answer.code === code;

export const inputAttacks: readonly Attack[] = [
  {
    id: 'input.schema-bypass', title: 'Body outside the schema', category: 'input', severity: 'medium', cwe: ['CWE-20', 'CWE-915'],
    owasp: OWASP.api3, nist: null,
    description: 'A JSON body with nothing but a property no schema names, as the permitted workload: a route without a schema takes it.',
    enforced: 'Refused by the input step (400 LOCKSTEP_ERR_INPUT_INVALID).',
    on: 'route',
    plan: (target, context) => asControl(target, context, (route, control) => ({
      attempts: [attempt(route, context, { probeAs: control, body: '{"lockstep_scan_unknown":{"nested":[1,2,3]}}', ...(route.objectPath === null ? {} : { path: route.objectPath }) })],
      enforcedBy: 'input',
    })),
  },
  {
    id: 'input.prototype-pollution', title: 'Prototype pollution keys', category: 'input', severity: 'high', cwe: ['CWE-1321'],
    owasp: OWASP.api3, nist: null,
    description: 'JSON bodies with "__proto__" and "constructor": { "prototype": … } members, as the permitted workload.',
    enforced: 'Refused by the input step (400).',
    on: 'route',
    plan: (target, context) => asControl(target, context, (route, control) => ({
      attempts: ['{"__proto__":{"isAdmin":true}}', '{"constructor":{"prototype":{"isAdmin":true}}}'].map((body) => attempt(route, context, { probeAs: control, body, ...(route.objectPath === null ? {} : { path: route.objectPath }) })),
      enforcedBy: 'input',
    })),
  },
  {
    id: 'input.oversized-body', title: 'Oversized body', category: 'input', severity: 'medium', cwe: ['CWE-770'],
    owasp: OWASP.api4, nist: NIST.resilience,
    description: 'A 2 MiB JSON body, as the permitted workload.',
    enforced: 'Refused with 413 LOCKSTEP_ERR_BODY_TOO_LARGE (or the connection closed).',
    on: 'route',
    plan: (target, context) => asControl(target, context, (route, control) => ({
      attempts: [attempt(route, context, { probeAs: control, body: `{"pad":"${'a'.repeat(2 * 1024 * 1024)}"}`, ...(route.objectPath === null ? {} : { path: route.objectPath }) })],
      enforcedBy: 'input',
      enforced: sizeLimited('LOCKSTEP_ERR_BODY_TOO_LARGE'),
    })),
  },
  {
    id: 'input.wrong-content-type', title: 'Wrong content type', category: 'input', severity: 'low', cwe: ['CWE-436'],
    owasp: OWASP.api8, nist: null,
    description: 'A text/plain body where JSON is expected, as the permitted workload.',
    enforced: 'Refused with 415 LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE (or 400).',
    on: 'route',
    plan: (target, context) => asControl(target, context, (route, control) => ({
      attempts: [attempt(route, context, { probeAs: control, body: 'item=tea&quantity=1', contentType: 'text/plain', ...(route.objectPath === null ? {} : { path: route.objectPath }) })],
      enforcedBy: 'input',
    })),
  },
  {
    id: 'input.oversized-headers', title: 'Oversized headers', category: 'input', severity: 'medium', cwe: ['CWE-770'],
    owasp: OWASP.api4, nist: NIST.resilience,
    description: 'Request headers of 64 KiB.',
    enforced: 'Refused with 431 LOCKSTEP_ERR_HEADERS_TOO_LARGE (or the connection closed).',
    on: 'route',
    plan: (target, context) => asControl(target, context, (route, control) => ({
      attempts: [attempt(route, context, { probeAs: control, headers: [['x-lockstep-scan-padding', 'a'.repeat(64 * 1024)]], ...(route.objectPath === null ? {} : { path: route.objectPath }) })],
      enforcedBy: 'input',
      enforced: sizeLimited('LOCKSTEP_ERR_HEADERS_TOO_LARGE'),
    }), false),
  },
];
