/**
 * Request targets that the guard and the server behind it could read as two different resources. The
 * guard matches the path as sent, while servers normalise it first, each in its own way: Tomcat and
 * Spring resolve `..` (also `..;x`) and drop `;parameters`, decode `%2F`, treat `\` as `/`; many
 * frameworks collapse `//`; some decode twice. `/public/..;/admin/users` would then be decided as the
 * public route and served as `/admin/users`. No legitimate client needs these spellings, so a guard
 * in front of another server (the sidecar, the decision service) refuses them rather than guess.
 */

/** Characters no path segment may hold once decoded: separators, `;`, `%` (double encoding), controls. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const FORBIDDEN_DECODED = /[/\\;%\u0000-\u001f\u007f]/u;

/**
 * Why `requestTarget` (the request line's target, query included) is refused, or null when its path
 * means the same to every server: origin-form (`/…`); no `\`, no `//`, no `;`; every segment decodes
 * as UTF-8 to neither `.` nor `..` and holds no separator, `;`, `%` or control character.
 */
export function ambiguousPath(requestTarget: string): string | null {
  if (!requestTarget.startsWith('/')) return 'the request target is not a path (origin-form /…)';
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
      return `the path segment ${JSON.stringify(segment)} encodes a separator, ";", "%" or a control character`;
    }
  }
  return null;
}
