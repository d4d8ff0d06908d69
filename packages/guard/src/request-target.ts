/**
 * Request targets that the guard and the server behind it could read as two different resources. The
 * guard matches the path as sent, while servers normalise it first, each in its own way: Tomcat and
 * Spring resolve `..` (also `..;x`) and drop `;parameters`, decode `%2F`, treat `\` as `/`; many
 * frameworks collapse `//`; some decode twice. `/public/..;/admin/users` would then be decided as the
 * public route and served as `/admin/users`. A `#` is no part of a request target (RFC 9112 §3.2), but
 * routers stop at it while Go's net/http and raw-path handlers keep it: `/docs/home#/edit` would be
 * decided as `/docs/:page` and served as `/docs/:page/edit`. No legitimate client needs these
 * spellings, so a guard in front of another server (the sidecar, the decision service) refuses them
 * rather than guess.
 */

/**
 * Characters no path segment may hold once decoded: separators, `;`, `%` (double encoding), `?` and `#`
 * (a decoder that runs before the router makes them the query or a fragment), controls.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const FORBIDDEN_DECODED = /[/\\;%?#\u0000-\u001f\u007f]/u;

/**
 * Why `requestTarget` (the request line's target, query included) is refused, or null when its path
 * means the same to every server: origin-form (`/…`); no `#` anywhere; no `\`, no `//`, no `;` in the
 * path; every segment decodes as UTF-8 to neither `.` nor `..` and holds no separator, `;`, `%`, `?`, `#`
 * or control character.
 */
export function ambiguousPath(requestTarget: string): string | null {
  if (!requestTarget.startsWith('/')) return 'the request target is not a path (origin-form /…)';
  if (requestTarget.includes('#')) return 'the request target contains a "#" (a fragment is never sent)';
  const path = requestTarget.split('?', 1)[0] as string;
  if (path.includes('\\')) return 'the path contains a backslash';
  if (path.includes('//')) return 'the path contains an empty segment (//)';
  if (path.includes(';')) return 'the path contains a ";" (path parameters, read differently by each server)';
  for (const segment of path.split('/').slice(1)) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return 'the path contains percent-encoding that does not decode as UTF-8';
    }
    if (decoded === '.' || decoded === '..') return `the path contains a dot segment (${segment})`;
    if (FORBIDDEN_DECODED.test(decoded)) {
      return `the path segment ${JSON.stringify(segment)} encodes a separator, ";", "%", "?", "#" or a control character`;
    }
  }
  return null;
}

/**
 * Headers by which frameworks let a request name another method or path than its request line: Rails
 * and Laravel (`X-HTTP-Method-Override`), Symfony (`X-HTTP-Method-Override` on POST; `X-Original-URL`
 * and `X-Rewrite-URL` before 2018), ASP.NET and IIS (`X-HTTP-Method`, `X-Original-URL`). The guard
 * decides the request line; a server behind it that applied one of these would serve another route.
 */
export const TARGET_OVERRIDE_HEADERS: readonly string[] = [
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
];

/**
 * Why a request names, beside its request line, another method or path that a server behind the guard
 * could apply (a header above, or `_method` in the query: Rails, Laravel, Symfony), or null.
 */
export function targetOverride(
  requestTarget: string,
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
): string | null {
  for (const name of TARGET_OVERRIDE_HEADERS) {
    if (headers[name] !== undefined) return `the request carries ${name}, which frameworks apply as its method or path`;
  }
  const query = requestTarget.indexOf('?');
  if (query !== -1 && new URLSearchParams(requestTarget.slice(query + 1)).has('_method'))
    return 'the query names a method (_method), which Rails, Laravel and Symfony apply';
  return null;
}
