/**
 * A Stryker ignore-plugin: no mutants in the words of a refusal or a log line, only in the decisions.
 * The mutation run asks whether a broken decision would be caught; a changed error detail or log
 * message is not a broken decision (the code, the status and the audit event stay the same). Ignored:
 *
 *   - the detail of an error: `new GuardError(code, ▮)`, `new SvidError(code, ▮)`,
 *     `new StrictJsonError(problem, ▮)`, `new TypeError(▮)`, `new Error(▮)`, `new RefusedContent(▮)`,
 *     and `refuse(▮)` (txn-claims.ts's throw helper);
 *   - log calls: `logger.<level>(…)`, `<anything>.logger.<level>(…)`;
 *   - a string a `…Problem()` function returns to describe the problem it found (its null or not is
 *     the decision, and stays mutated).
 *
 * Stryker lists the ignored mutants in its report with the reason below, so nothing disappears silently.
 * Written without imports so that it loads wherever Stryker is installed (npm exec or devDependency).
 */
const DETAIL_ARGUMENT = new Map([
  ['GuardError', 1],
  ['SvidError', 1],
  ['StrictJsonError', 1],
  ['TypeError', 0],
  ['Error', 0],
  ['RefusedContent', 0],
]);
const LOG_LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

function calleeName(callee) {
  return callee?.type === 'Identifier' ? callee.name : null;
}

function isErrorDetail(path) {
  const parent = path.parentPath;
  if (parent === null || path.listKey !== 'arguments') return false;
  if (parent.isNewExpression()) return DETAIL_ARGUMENT.get(calleeName(parent.node.callee)) === path.key;
  if (parent.isCallExpression()) return calleeName(parent.node.callee) === 'refuse' && path.key === 0;
  return false;
}

function isLogCall(path) {
  if (!path.isCallExpression()) return false;
  const callee = path.node.callee;
  if (callee.type !== 'MemberExpression' || callee.property.type !== 'Identifier') return false;
  if (!LOG_LEVELS.has(callee.property.name)) return false;
  const target = callee.object;
  if (target.type === 'Identifier') return target.name === 'logger';
  return (
    target.type === 'MemberExpression' && target.property.type === 'Identifier' && target.property.name === 'logger'
  );
}

function isProblemDescription(path) {
  if (!path.isStringLiteral() && !path.isTemplateLiteral()) return false;
  if (!path.parentPath?.isReturnStatement()) return false;
  const fn = path.getFunctionParent();
  const name = fn?.node.id?.name ?? null;
  return typeof name === 'string' && name.endsWith('Problem');
}

const messagesIgnorer = {
  shouldIgnore(path) {
    if (isErrorDetail(path)) return 'the detail of an error (words, not a decision)';
    if (isLogCall(path)) return 'a log line (not a decision)';
    if (isProblemDescription(path)) return 'the words describing a refused input (not a decision)';
    return undefined;
  },
};

export const strykerPlugins = [{ kind: 'Ignore', name: 'lockstep-messages', value: messagesIgnorer }];
