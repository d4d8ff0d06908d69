/**
 * Paths that the guard and the upstream could read as two different resources. The guard matches the
 * raw path (find-my-way), while many upstreams normalise it first — Tomcat and Spring resolve `..`
 * (also `..;`), decode `%2F`, treat `\` as `/`; many Python frameworks collapse `//` — so
 * `/public/../admin/users` would be admitted as the public route and served as `/admin/users`. No
 * legitimate client needs these spellings, so the sidecar refuses them rather than guess the
 * upstream's rules.
 */

const ENCODED_SEPARATOR = /%(?:2f|5c)/iu;
const ENCODED_DOT = /%2e/giu;

/**
 * Why `requestTarget` (the request line's target, query included) is refused, or null when its path
 * means the same to every server: origin-form (`/…`), no `//`, no `\`, no `%2F` / `%5C`, and no
 * `.` or `..` segment, raw or encoded as `%2e`, with or without `;parameters` after it.
 */
export function ambiguousPath(requestTarget: string): string | null {
  if (!requestTarget.startsWith('/')) return 'the request target is not a path (origin-form /…)';
  const path = requestTarget.split('?', 1)[0] as string;
  if (path.includes('\\')) return 'the path contains a backslash';
  if (ENCODED_SEPARATOR.test(path)) return 'the path contains an encoded slash or backslash (%2F, %5C)';
  if (path.includes('//')) return 'the path contains an empty segment (//)';
  for (const segment of path.split('/')) {
    const name = (segment.split(';', 1)[0] as string).replace(ENCODED_DOT, '.');
    if (name === '.' || name === '..') return `the path contains a dot segment (${segment})`;
  }
  return null;
}
