// bench/footprint.ts: what loading each package of a guarded service costs — the specifiers in argv,
// imported one after the other in this order, the memory after each sent to the bench (an import pays
// only for what the ones before it did not load already). Then what Cedar costs at run time, as the
// guard uses it: FOOTPRINT_BUNDLE ({ jws, keys, service, principal, action }) verified the way the guard
// verifies a bundle it is sent (signature, then Cedar's strict validation), loaded, and asked
// FOOTPRINT_DECISIONS distinct questions with the decision cache off.
import process from 'node:process';
import { memory } from './footprint-child.mjs';

const steps = [{ stage: 'node started', ...memory() }];
for (const specifier of process.argv.slice(2)) {
  await import(specifier);
  steps.push({ stage: `import ${specifier}`, ...memory() });
}
const { createPolicyEngine, verifyBundle } = await import('@lockstep/policy');
const { jws, keys, service, principal, action } = JSON.parse(process.env.FOOTPRINT_BUNDLE);
const set = await verifyBundle(jws, { keys, service });
steps.push({ stage: 'Cedar: the policy bundle verified and validated (verifyBundle)', ...memory() });
const engine = createPolicyEngine({ cacheSize: 0 });
engine.load(set);
steps.push({ stage: 'Cedar: the policy set loaded (engine.load)', ...memory() });
const decisions = Number(process.env.FOOTPRINT_DECISIONS);
for (let i = 0; i < decisions; i++) {
  const context = { sub: `user-${i}`, roles: [], scope: [action], requester: principal, callerService: 'caller' };
  if (engine.authorize({ principal, action, resource: service, context }).decision !== 'allow')
    throw new Error(`Cedar denied decision ${i}`);
}
steps.push({ stage: `Cedar: ${decisions.toLocaleString('en-US')} decisions, decision cache off`, ...memory() });
process.send({ type: 'imports', steps }, () => process.exit(0));
