/**
 * The local administrator's SVID (8 h) is renewed while the control plane runs: at half its life the
 * admin files and the bundle are written again, so that the admin commands still work on a control
 * plane started the day before. Real CA; the first SVID's life is shortened for the test.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { issueAdminCredentials, openWorkloadCa } from '@lockstep/control-plane';
import { keepAdministratorFresh } from '../src/main.ts';
import { localState, writeControlPlaneState } from '../src/state.ts';

const home = mkdtempSync(join(tmpdir(), 'lockstep-admin-renewal-'));
after(() => rmSync(home, { recursive: true, force: true }));

describe('keepAdministratorFresh', () => {
  it("rewrites the administrator's SVID at half its life, and stops when told", async () => {
    const ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir: join(home, 'keys') });
    const state = localState(home);
    const first = await issueAdminCredentials(ca, 'admin', 60);
    const running = { ca, url: 'https://127.0.0.1:1', bundlePem: ca.bundlePem, admin: first };
    writeControlPlaneState(
      state,
      { url: running.url, trustDomain: 'shop.test', pid: process.pid },
      first,
      ca.bundlePem,
    );
    const soon = new Date(Date.now() + 2_000); // renewed at half of that: 1 s from now
    const renewing = keepAdministratorFresh(state, running, soon, (line) => assert.fail(line));
    try {
      const read = () => new X509Certificate(readFileSync(join(state.adminDir, 'admin.pem')));
      const before = read().serialNumber;
      for (let i = 0; i < 100 && read().serialNumber === before; i++) await new Promise((r) => setTimeout(r, 50));
      const renewed = read();
      assert.notEqual(renewed.serialNumber, before, 'a new SVID was written');
      assert.ok(renewed.validToDate.getTime() > Date.now() + 7 * 3600_000, 'for another working day');
      assert.match(renewed.subjectAltName ?? '', /spiffe:\/\/shop\.test\/admin\/admin/);
    } finally {
      renewing.stop();
    }
  });
});
