/**
 * Bodies that differ from one the route admitted (RouteTarget.permittedBody) in one way only a strict
 * JSON parser refuses: a refusal then says that the parser holds, not that the schema disliked the
 * body. Without an admitted body they fall back to a member of their own, which a strict schema may
 * refuse first: never a false finding, but a weaker signal.
 */
const OWN_MEMBER = 'lockstep_scan';

function admittedObject(permitted: string | null): Record<string, unknown> {
  if (permitted === null) return {};
  const value: unknown = JSON.parse(permitted);
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** The admitted body with its first member written once more at the end: first-wins and last-wins parsers agree. */
export function withDuplicateMember(permitted: string | null): string {
  const object = admittedObject(permitted);
  const [first] = Object.entries(object);
  if (first === undefined) return `{"${OWN_MEMBER}":1,"${OWN_MEMBER}":1}`;
  const text = JSON.stringify(object);
  return `${text.slice(0, -1)},${JSON.stringify(first[0])}:${JSON.stringify(first[1])}}`;
}

/** The admitted body with an escaped NUL (`\u0000`) at the end of its first string, or a member holding one. */
export function withEscapedNul(permitted: string | null): string {
  const object = admittedObject(permitted);
  const key = Object.keys(object).find((name) => typeof object[name] === 'string');
  const changed =
    key === undefined ? { ...object, [OWN_MEMBER]: '\u0000' } : { ...object, [key]: `${String(object[key])}\u0000` };
  // JSON.stringify writes U+0000 as the six characters \u0000: the escape the strict parser refuses.
  return JSON.stringify(changed);
}
