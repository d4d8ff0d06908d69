import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { CONTROL_PLANE_ERRORS, ControlPlaneError } from './errors.ts';

describe('control-plane error catalogue', () => {
  it('is documented in the README error table: every code, and no code that does not exist', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const rows = readme.split('\n').filter((line) => line.trimStart().startsWith('|'));
    const documented = new Map(
      rows.flatMap((row) => {
        const match = /`(LOCKSTEP_CP_[A-Z_]+)`\s*\|\s*(\d{3})/.exec(row);
        return match ? [[match[1] as string, Number(match[2])] as const] : [];
      }),
    );
    assert.deepEqual([...documented.keys()].sort(), Object.keys(CONTROL_PLANE_ERRORS).sort());
    for (const [code, status] of documented)
      assert.equal(status, CONTROL_PLANE_ERRORS[code as keyof typeof CONTROL_PLANE_ERRORS].status, code);
  });

  it('carries the code and status, and the detail after the summary', () => {
    const error = new ControlPlaneError('LOCKSTEP_CP_CSR_INVALID', 'extra SAN');
    assert.equal(error.code, 'LOCKSTEP_CP_CSR_INVALID');
    assert.equal(error.status, 400);
    assert.equal(error.message, 'certificate signing request refused: extra SAN');
  });
});
