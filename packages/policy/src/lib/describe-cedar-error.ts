import type { DetailedError } from '@cedar-policy/cedar-wasm/nodejs';

// Wrapper phrases Cedar puts in front of the actual complaint; they name the API call, not the problem.
const NOISE = /^(failed to parse (schema|polic(y|ies)) (with id `[^`]*` )?from string: )?(error parsing schema: )?/;

/** Cedar's message plus its hint ("did you mean `roles`?") when it has one. */
export function describeCedarError(error: DetailedError): string {
  const message = error.message.replace(NOISE, '');
  return error.help ? `${message} (${error.help})` : message;
}

/** The first source offset Cedar attached to an error, in UTF-8 bytes. */
export function firstByteOffset(error: DetailedError): number | undefined {
  return error.sourceLocations?.[0]?.start;
}
