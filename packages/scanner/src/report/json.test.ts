import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HOSTILE_EVIDENCE, sampleReport } from '../../test/sample-report.ts';
import type { ScanReport } from '../types.ts';
import { renderJson } from './json.ts';

/** The same report with every object's keys in reverse order. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .reverse()
      .map(([key, inner]) => [key, reversedKeys(inner)]),
  );
}

describe('renderJson', () => {
  it('round-trips: parsing it gives the report back, evidence exactly as captured', () => {
    const report = sampleReport();
    const parsed = JSON.parse(renderJson(report)) as ScanReport;
    assert.deepEqual(parsed, report);
    assert.equal(parsed.results.find((result) => result.attack === 'input.unknown-field')?.evidence, HOSTILE_EVIDENCE);
  });

  it('is stable: the same bytes whatever order the report was built in', () => {
    const report = sampleReport();
    assert.equal(renderJson(reversedKeys(report) as ScanReport), renderJson(report));
    assert.match(
      renderJson(report),
      /^\{\n {2}"tool": \{\n {4}"name": "lockstep-scan",\n {4}"version": "0\.1\.0"\n {2}\},\n {2}"runId"/,
    );
    assert.ok(renderJson(report).endsWith('}\n'));
  });

  it("writes only the data model's fields", () => {
    const report = { ...sampleReport(), debug: 'not part of the report' } as ScanReport;
    assert.ok(!renderJson(report).includes('debug'));
  });

  it('keeps the text JSON-safe: control characters escaped, a lone surrogate escaped', () => {
    const text = renderJson(sampleReport());
    assert.ok(text.includes('\\u0000NUL \\u001b[31mRED'));
    assert.ok(text.includes('\\ud800'));
    // eslint-disable-next-line no-control-regex -- raw control characters would make the file unreadable as text
    assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f]/);
  });
});
