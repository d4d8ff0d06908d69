import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { it } from 'node:test';
import * as testkit from './index.ts';

const PUBLIC_API = [
  'MAX_TXN_TOKEN_LIFETIME_SECONDS',
  'RECORD_LOADS',
  'createMtlsClient',
  'createTestBrowser',
  'createTestCa',
  'createTxnTokenMinter',
  'issueCertificate',
  'packageOf',
  'packagesLoadedBy',
  'rawTlsRequest',
  'revokedKeyMinter',
  'revokedKidToken',
  'startTcpRelay',
  'testPostgres',
  'txnTokenAttacks',
];

it('exports exactly the documented runtime API, and the README names each of it', async () => {
  assert.deepEqual(Object.keys(testkit).sort(), PUBLIC_API);
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  for (const name of PUBLIC_API) assert.ok(readme.includes(name), `README does not mention ${name}`);
  assert.match(readme, /tests and examples only/);
});
