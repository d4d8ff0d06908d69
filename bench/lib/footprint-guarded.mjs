// bench/footprint.ts's guarded hello world, as a user writes it: it joins the control plane with a join
// token, builds the guard from what the agent hands over (decisions shipped to the collector), and
// serves through the guard's node:http adapter. FOOTPRINT_JOIN_FROM names the package joinAsWorkload
// comes from (@lockstep/workload, or @lockstep/control-plane as before the split). The memory after each
// step goes to the bench with the ready message; the imports are dynamic so that the first step is
// measured before them.
import { join } from 'node:path';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { memory, serveBench } from './footprint-child.mjs';

const stages = [];
const mark = (stage) => stages.push({ stage, ...memory() });
mark('node started');
const { createGuard } = await import('@lockstep/guard');
const { lockstepHttp } = await import('@lockstep/guard/http');
const { joinAsWorkload } = await import(process.env.FOOTPRINT_JOIN_FROM);
mark('modules loaded');
const agent = await joinAsWorkload({
  url: process.env.FOOTPRINT_CP_URL,
  trustDomain: process.env.FOOTPRINT_TRUST_DOMAIN,
  joinToken: process.env.FOOTPRINT_JOIN_TOKEN,
  service: 'hello',
});
mark('joined (SVID, policy keys)');
const quiet = () => {};
const logger = {
  info: quiet,
  warn: quiet,
  error: (message, fields) => process.stderr.write(`${message} ${JSON.stringify(fields ?? {})}\n`),
};
const guard = await createGuard({
  ...agent.guardOptions({ auditSpoolDir: join(process.env.FOOTPRINT_DATA_DIR, 'spool') }),
  logger,
});
mark('guard created (Txn-Token keys, audit shipping)');
agent.attach(guard);
const server = guard.createServer(
  lockstepHttp(guard, { 'GET /hello': { action: 'hello:read' } }, (_request, response) => response.end('hello')),
);
// Ready once its policy is in force: until then the guard refuses every request.
while (guard.policyVersion === null) await sleep(20);
mark('attached, policy in force (stream, heartbeat)');
serveBench(
  server,
  async () => {
    await new Promise((resolve) => server.close(resolve));
    await agent.close();
    await guard.close();
  },
  stages,
);
