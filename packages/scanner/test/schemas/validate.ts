/**
 * The schema checks the reporters' tests and the scan tests share: SARIF 2.1.0 (Ajv, strict) and the
 * Jenkins JUnit XSD (libxml2 compiled to wasm). Provenance of both schemas: README.md here.
 */
import { readFileSync } from 'node:fs';
import ajv2020 from 'ajv/dist/2020.js';
import ajvFormats from 'ajv-formats';
import { validateXML } from 'xmllint-wasm';

// The schema declares draft 2020-12. Strict, so a keyword Ajv did not understand would fail rather
// than be skipped; only its `required` inside `anyOf` (legal: "one of these properties") is let through.
const sarifSchema = JSON.parse(readFileSync(new URL('./sarif-schema-2.1.0.json', import.meta.url), 'utf8')) as object;
const ajv = new ajv2020.default({ allErrors: true, strict: true, strictRequired: false });
ajvFormats.default(ajv);
export const validateSarif = ajv.compile(sarifSchema);

/** The SARIF schema's violations of `document` (none: valid). */
export function sarifErrors(document: unknown): string[] {
  return validateSarif(document) ? [] : ajv.errorsText(validateSarif.errors, { separator: '\n' }).split('\n');
}

const xsd = {
  fileName: 'jenkins-junit.xsd',
  contents: readFileSync(new URL('./jenkins-junit.xsd', import.meta.url), 'utf8'),
};

/** The JUnit schema's violations of `xml` (none: valid). */
export async function junitErrors(xml: string): Promise<string[]> {
  const result = await validateXML({ xml: { fileName: 'report.xml', contents: xml }, schema: xsd });
  return result.valid ? [] : result.errors.map((error) => error.rawMessage);
}
