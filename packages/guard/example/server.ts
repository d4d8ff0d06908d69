/**
 * The guard example: an "orders" service secured by Lockstep in one `register` line, with a
 * throw-away CA, SVIDs, Txn-Tokens and a signed policy bundle made on start (DEV KEYS — for trying
 * it out only). It runs a short demonstration against itself, then keeps serving and prints the
 * curl commands to call it yourself.
 *
 *   node packages/guard/example/server.ts          # from the repository root
 *   node packages/guard/example/server.ts --once   # demonstration only, then exit
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import { exportJWK, generateKeyPair } from 'jose';
import { loadPolicyDir, signBundle } from '@lockstep/policy';
import { createMtlsClient, createTestCa, createTxnTokenMinter, rawTlsRequest } from '@lockstep/testkit';
import { createGuard } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';

const once = process.argv.includes('--once');
const port = Number(process.env.PORT ?? 8443);
const devDir = resolve(process.env.LOCKSTEP_DEV_DIR ?? '.lockstep/dev');
const trustDomain = 'shop.test';

console.warn(
  '⚠  DEV KEYS: this example makes a throw-away CA, token key and policy key on every start. Never use them for anything real.',
);

// --- What the control plane will provide (a later issue); made locally here. ---
const ca = await createTestCa({ trustDomain });
const [orders, gateway, reports] = await Promise.all(
  ['orders', 'gateway', 'reports'].map((service) => ca.issueSvid({ service })),
);
const minter = await createTxnTokenMinter({ trustDomain });
const policyKey = await generateKeyPair('ES256');
const policyJwks = { keys: [{ ...(await exportJWK(policyKey.publicKey)), kid: 'dev-policy-1', alg: 'ES256' }] };
const policySet = await loadPolicyDir(fileURLToPath(new URL('./policies/', import.meta.url)));
const bundle = await signBundle(policySet, {
  privateKey: policyKey.privateKey,
  kid: 'dev-policy-1',
  service: 'orders',
});
if (!orders || !gateway || !reports) throw new Error('unreachable');

// --- The service: this is all a team writes to secure it. ---
const guard = await createGuard({
  service: 'orders',
  trustDomain,
  trustBundle: ca.bundlePem,
  svid: { cert: orders.chainPem, key: orders.keyPem },
  txnTokenKeys: { jwks: minter.jwks },
  policy: { keys: policyJwks, bundle },
  audit: { file: join(devDir, 'audit.jsonl') },
});
const app = Fastify({ https: guard.tlsOptions() });
await app.register(lockstep, { guard });

app.get('/health', { config: { lockstep: { public: true } } }, async () => ({ ok: true }));
app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async (request) => ({
  id: (request.params as { id: string }).id,
  item: 'tea',
}));
app.delete('/orders/:id', { config: { lockstep: { action: 'orders:delete' } } }, async () => ({ deleted: true }));
app.post(
  '/orders',
  {
    config: { lockstep: { action: 'orders:create' } },
    schema: {
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['item'],
        properties: { item: { type: 'string', maxLength: 64 } },
      },
    },
  },
  async (request) => ({ created: request.body }),
);

await app.listen({ host: '127.0.0.1', port: once ? 0 : port });
const address = app.server.address();
const url = `https://127.0.0.1:${typeof address === 'object' && address ? address.port : port}`;

// --- Dev material for your own curl calls. ---
mkdirSync(devDir, { recursive: true });
const customer = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
const admin = await minter.mint({ sub: 'root', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
writeFileSync(join(devDir, 'bundle.pem'), ca.bundlePem);
writeFileSync(join(devDir, 'gateway.pem'), gateway.chainPem);
writeFileSync(join(devDir, 'gateway-key.pem'), gateway.keyPem, { mode: 0o600 });
writeFileSync(join(devDir, 'customer.txn'), customer);
writeFileSync(join(devDir, 'admin.txn'), admin);

// --- Demonstration: legitimate calls pass; lateral movement, missing identity, wrong role do not. ---
const asGateway = createMtlsClient({ certPem: gateway.chainPem, keyPem: gateway.keyPem, caPem: ca.bundlePem });
const asReports = createMtlsClient({ certPem: reports.chainPem, keyPem: reports.keyPem, caPem: ca.bundlePem });
const rows: string[][] = [];
async function show(label: string, call: () => Promise<{ status: number; text: string }>): Promise<void> {
  const { status, text } = await call();
  let reason = 'LOCKSTEP_ALLOW';
  try {
    const body = JSON.parse(text) as { error?: string };
    if (body.error) reason = body.error;
  } catch {
    /* not JSON */
  }
  rows.push([label, String(status), reason]);
}
const read = `${url}/orders/42`;
await show('gateway reads an order for a customer', () =>
  asGateway.request(read, { headers: { 'txn-token': customer } }),
);
await show('gateway deletes an order for a customer', () =>
  asGateway.request(read, { method: 'DELETE', headers: { 'txn-token': customer } }),
);
await show('gateway deletes an order for an admin', () =>
  asGateway.request(read, { method: 'DELETE', headers: { 'txn-token': admin } }),
);
await show('reports (compromised) reads an order', () =>
  asReports.request(read, { headers: { 'txn-token': customer } }),
);
await show('gateway reads without a Txn-Token', () => asGateway.request(read));
await show('caller without a client certificate', async () => {
  const raw = await rawTlsRequest({
    host: '127.0.0.1',
    port: Number(new URL(url).port),
    caPem: ca.bundlePem,
    raw: `GET /orders/42 HTTP/1.1\r\nhost: orders\r\ntxn-token: ${customer}\r\nconnection: close\r\n\r\n`,
  });
  if (typeof raw !== 'string') return { status: 0, text: raw.error };
  return { status: Number(raw.slice(9, 12)), text: raw.slice(raw.indexOf('\r\n\r\n') + 4) };
});
await asGateway.close();
await asReports.close();

const width = Math.max(...rows.map((row) => row[0]?.length ?? 0));
console.log(`\nLockstep guard example — orders service at ${url} (trust domain ${trustDomain})\n`);
for (const [label, status, reason] of rows) console.log(`  ${label?.padEnd(width)}  ${status}  ${reason}`);
console.log(`\nAudit log: ${join(devDir, 'audit.jsonl')}`);

if (once) {
  await app.close();
  await guard.close();
} else {
  const rel = (file: string) => join(process.env.LOCKSTEP_DEV_DIR ?? '.lockstep/dev', file);
  console.log(`\nTry it yourself (tokens expire in 5 minutes; restart for fresh ones):
  curl --cacert ${rel('bundle.pem')} --cert ${rel('gateway.pem')} --key ${rel('gateway-key.pem')} \\
       -H "Txn-Token: $(cat ${rel('customer.txn')})" ${url}/orders/42
  curl --cacert ${rel('bundle.pem')} ${url}/orders/42     # no client certificate → 401
\nCtrl-C to stop.`);
  const stop = async () => {
    await app.close();
    await guard.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}
