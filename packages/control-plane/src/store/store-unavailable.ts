/**
 * Whether a failure says the store could not be reached — a connection refused, lost or timed out, a
 * database shutting down or out of connections — rather than what the store answered. The server
 * answers such a failure `503 LOCKSTEP_CP_STORE`, on which clients ask another replica (one whose
 * store is reachable may well answer); any other failure stays an internal error, which another
 * replica would most likely repeat.
 */

/** The network's codes (Node's), as pg passes them on. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const SQLSTATE = /^[0-9A-Z]{5}$/;
/**
 * PostgreSQL's SQLSTATE classes of an unusable database: 08 connection exception, 28 a login refused
 * (this replica's credentials, not the caller's), 53 insufficient resources (too many connections, disk
 * full), 57 operator intervention (a shutdown, a statement cancelled by statement_timeout), 58 system error.
 */
const SQLSTATE_CLASSES = new Set(['08', '28', '53', '57', '58']);
/** What pg and pg-pool say, with no code, when a connection breaks or cannot be had in time. */
const PG_MESSAGES = [
  'Connection terminated', // "… unexpectedly", "… due to connection timeout"
  'timeout exceeded when trying to connect', // a pool checkout (connectionTimeoutMillis)
  'Query read timeout', // query_timeout
  'is not queryable', // a client whose connection failed, or that was closed
];

export function isStoreUnavailable(error: unknown): boolean {
  return causes(error).some(({ code, message }) => {
    if (typeof code === 'string') {
      if (NETWORK_CODES.has(code)) return true;
      if (SQLSTATE.test(code) && SQLSTATE_CLASSES.has(code.slice(0, 2))) return true;
    }
    return typeof message === 'string' && PG_MESSAGES.some((text) => message.includes(text));
  });
}

/** The error, its causes and the errors it aggregates (a connection tried at several addresses), a few deep. */
function causes(error: unknown): { code?: unknown; message?: unknown }[] {
  const found: object[] = [];
  const visit = (item: unknown, depth: number) => {
    if (typeof item !== 'object' || item === null || depth > 4 || found.includes(item)) return;
    found.push(item);
    visit((item as { cause?: unknown }).cause, depth + 1);
    const { errors } = item as { errors?: unknown };
    if (Array.isArray(errors)) for (const each of errors as unknown[]) visit(each, depth + 1);
  };
  visit(error, 0);
  return found as { code?: unknown; message?: unknown }[];
}
