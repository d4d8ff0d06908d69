/**
 * The sidecar tests' control plane: a real one (assembleControlPlane) on SQLite in `scratch`, with a
 * Cedar schema and policy of the test's own, checkpoints and detection out of the way, and one-time
 * join tokens for the workloads the test starts.
 *
 *   const controlPlane = await startControlPlane(scratch, { schema: SCHEMA, policy: POLICY });
 *   const token = await joinTokenFor(controlPlane, 'orders');
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createJoinToken } from '@lockstep/control-plane';
import { assembleControlPlane, type AssembledControlPlane } from '@lockstep/monitor';

export async function startControlPlane(
  scratch: string,
  { schema, policy, trustDomain = 'shop.test' }: { schema: string; policy: string; trustDomain?: string },
): Promise<AssembledControlPlane> {
  const policyDir = join(scratch, 'policies');
  mkdirSync(policyDir);
  writeFileSync(join(policyDir, 'shop.cedarschema'), schema);
  writeFileSync(join(policyDir, 'shop.cedar'), policy);
  return assembleControlPlane({
    trustDomain,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'store.db') },
    policyDir,
    watchPolicy: false,
    checkpointIntervalMs: 3_600_000,
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
}

export async function joinTokenFor(controlPlane: AssembledControlPlane, service: string): Promise<string> {
  return (await createJoinToken(controlPlane.store, controlPlane.ca, { service, createdBy: 'cli' })).token;
}
