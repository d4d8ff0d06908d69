/**
 * Moving a control plane's keys from its key directory into the shared vault: what a control plane
 * that ran alone (files) does on its first start with replicas (a key-encryption key and PostgreSQL).
 *
 * Each document the vault lacks is copied from the directory, if the directory has it; a document
 * the vault has already is never replaced (another replica, or an earlier start, put it there: that is
 * the identity every replica shares). Two replicas importing at once (replicas on one host, one
 * directory): one write wins, the other finds the same document there, which is neither imported by it
 * nor ignored. The files stay where they are, unused; a note beside them (`MOVED-TO-VAULT.txt`) says so, and
 * later starts leave the directory alone.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileCaStorage, vaultCaStorage } from './ca-storage.ts';
import { readPrivateFile, replacePrivateFile } from './key-files.ts';
import type { KeyVault } from './key-vault.ts';

export const MOVED_NOTE = 'MOVED-TO-VAULT.txt';

/** The documents kept as files of the same name. The CA is in several files, imported as `ca.json`. */
const DOCUMENTS = [
  'txn-token-keys.json',
  'idp-keys.json',
  'audit-keys.json',
  'policy-signing.key.pem',
  'idp-cookie.secret',
] as const;

export interface KeyImport {
  /** Documents copied into the vault now. */
  readonly imported: readonly string[];
  /** Files of the directory the vault had already, from elsewhere: not used by this replica. */
  readonly ignored: readonly string[];
}

export async function importKeyFiles(keyDir: string, vault: KeyVault): Promise<KeyImport> {
  const imported: string[] = [];
  const ignored: string[] = [];
  if (!existsSync(keyDir) || readdirSync(keyDir).length === 0 || existsSync(join(keyDir, MOVED_NOTE)))
    return { imported, ignored };
  for (const name of DOCUMENTS) {
    const text = readPrivateFile(keyDir, name);
    if (text === null) continue;
    // Read once; read again only when another replica's creation won the race.
    const found = await vault.read(name);
    if (found === null && (await vault.write(name, -1, text))) imported.push(name);
    else if ((found ?? (await vault.read(name)))?.text !== text) ignored.push(name);
  }
  const files = fileCaStorage(keyDir);
  const local = await files.load();
  if (local !== null) {
    const shared = vaultCaStorage(vault);
    if ((await shared.load()) === null && (await shared.save(-1, local.state))) imported.push('ca.json');
    else if ((await shared.load())?.state.current.rootPem !== local.state.current.rootPem)
      ignored.push('the CA (root.pem, intermediate.pem, intermediate.key.pem)');
  }
  if (imported.length + ignored.length > 0)
    replacePrivateFile(
      keyDir,
      MOVED_NOTE,
      `The keys of this directory were moved into ${vault.where} on ${new Date().toISOString()}.\n` +
        `Imported: ${imported.join(', ') || 'none'}. Not imported (the vault had its own): ${ignored.join(', ') || 'none'}.\n` +
        'The control plane no longer reads them. Delete them once the database and the key-encryption key are backed up.\n',
    );
  return { imported, ignored };
}
