/**
 * JSON.parse keeps the last of two equal keys; another parser may keep the first. A token whose
 * header or claims say two things at once is refused rather than interpreted. Runs on the cold path
 * only (first sight of a token), after JSON.parse has accepted the text as valid JSON.
 */
export function hasDuplicateKeys(json: string): boolean {
  const keysOf: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (end < json.length) {
        const d = json.charCodeAt(end);
        if (d === 0x5c /* \ */) end += 2;
        else if (d === 0x22) break;
        else end++;
      }
      const keys = keysOf[keysOf.length - 1];
      if (expectKey && keys) {
        const key = JSON.parse(json.slice(i, end + 1)) as string;
        if (keys.has(key)) return true;
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      keysOf.push(new Set());
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      keysOf.push(null);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      keysOf.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = Boolean(keysOf[keysOf.length - 1]);
    }
  }
  return false;
}

/** True when any string (key or value) anywhere in `value` holds a control character such as NUL. */
export function hasControlCharacters(value: unknown, depth = 0): boolean {
  if (depth > 16) return true;
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  if (typeof value === 'string') return /[\u0000-\u001f\u007f]/.test(value);
  if (Array.isArray(value)) return value.some((item) => hasControlCharacters(item, depth + 1));
  if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      if (hasControlCharacters(key, depth + 1) || hasControlCharacters(item, depth + 1)) return true;
    }
  }
  return false;
}
