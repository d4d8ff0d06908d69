/**
 * What a web framework or Node would answer on its own, asked by someone without a client
 * certificate: Express's router answers OPTIONS with `200 Allow: …`, frameworks answer HEAD from the
 * GET route, 404 an undeclared path and 404/405/501 a method nobody declared, Node answers a request
 * line it cannot parse. Each such answer is a door around the whole pipeline, unaudited; a guard
 * decides every one of them (401, or its own 400 for a request Node cannot parse).
 *
 * The unparsable request line goes with the scanner's own SVID: Node refuses it before any router or
 * identity is consulted, so a certificate changes nothing about the door — but it lets the guard
 * record the attempt as the scan's probe (a request it cannot parse carries no header to prove it).
 */
import type { Answer, Attempt } from '../../send.ts';
import { stepOf } from '../../verdict.ts';
import { attempt, NIST, OWASP, type Attack, type EndpointTarget, type ScanContext } from '../attack.ts';
import { onEndpoint } from './define.ts';

/** A method token no HTTP parser knows: Node refuses the request line before any router sees it. */
export const UNPARSABLE_METHOD = 'LOCKSTEP-SCAN';
const UNDECLARED_PATH = '/lockstep-scan-undeclared';

/** Method and path of each attempt; the endpoint's enforced route stands in for a declared path. */
function requests(endpoint: EndpointTarget): [method: string, path: string][] {
  const declared = endpoint.path;
  return [
    ['OPTIONS', declared],
    ['OPTIONS', '*'],
    ['HEAD', declared],
    ['TRACE', declared],
    ['PROPFIND', declared],
    [UNPARSABLE_METHOD, declared],
    ['GET', UNDECLARED_PATH],
  ];
}

function attempts(endpoint: EndpointTarget, context: ScanContext): Attempt[] {
  return requests(endpoint).map(([method, path]) => {
    const via = method === UNPARSABLE_METHOD ? context.scanner : context.noCertificate;
    return attempt(endpoint, context, { via, method, path, token: null });
  });
}

/** The guard's answer to a caller without a certificate, whatever the framework would have said. */
export function decidedByGuard(answer: Answer, sent: Attempt): boolean {
  // Refused during the TLS handshake: no request was read, so nobody could answer it.
  if (answer.status === null) return true;
  // No router can take a request line Node cannot parse: the guard answers it in its words.
  if (sent.method === UNPARSABLE_METHOD) return answer.code !== null;
  return stepOf(answer) === 'transport';
}

export default {
  id: 'transport.framework-auto-answer',
  title: 'Framework answers without a certificate',
  category: 'transport',
  severity: 'high',
  cwe: ['CWE-288', 'CWE-650'],
  owasp: OWASP.api8,
  nist: NIST.authentication,
  description:
    'Without a client certificate: OPTIONS (a path and *), HEAD, TRACE, PROPFIND (declared by no route) ' +
    `and GET of an undeclared path; and a method no HTTP parser knows (${UNPARSABLE_METHOD}, refused before any ` +
    'identity is read) — what a framework or Node answers on its own (200 Allow: …, 404, 405, 501) unless the guard ' +
    'decides first.',
  enforced:
    'Each answered by the guard: 401 LOCKSTEP_ERR_PEER_* (400 LOCKSTEP_ERR_INPUT_INVALID for the unparsable ' +
    'method) or refused in the TLS handshake.',
  on: 'endpoint',
  plan: (target, context) =>
    onEndpoint(target, (endpoint) => ({
      attempts: attempts(endpoint, context),
      enforcedBy: 'transport',
      enforced: decidedByGuard,
    })),
} satisfies Attack;
