/**
 * `npm run bench:control-plane` — how fast the control plane issues identities and Txn-Tokens, on one
 * core (everything in this one process). In process: the Txn-Token Service's exchange (subject
 * access-token verification + Cedar decision + ES256 signing) and SVID issuance from a CSR (CSR
 * checks + X.509 signing), each against a baseline measured in the same run: a bare jose ES256 JWT
 * signature and a bare node:crypto ECDSA P-256 signature. Over HTTPS: the same through
 * `POST /v1/token` and `POST /v1/renew` with mTLS keep-alive connections from a separate load
 * process; the server's CPU time per request gives its one-core rate. Writes its section of
 * docs/benchmarks.md.
 * Goals (issue #3): ≥ 2,000 Txn-Tokens/s and ≥ 500 SVIDs/s on one core.
 */
import { fork } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { x509 } from '../packages/control-plane/src/lib/x509.ts';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  singleKey,
  issueSvidFromCsr,
  joinControlPlane,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  TOKEN_EXCHANGE_GRANT,
  TOKEN_TYPE,
  type TxnTokenService,
} from '../packages/control-plane/src/index.ts';
import { writeSection } from './lib/docs-section.ts';

const DOCS_FILE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const TD = 'shop.test';
const IDP = 'https://idp.shop.test';
const AUDIENCE = 'https://gateway.shop.test';
const TOKENS = Number(process.env.BENCH_CP_TOKENS ?? 3_000);
const SVIDS = Number(process.env.BENCH_CP_SVIDS ?? 2_000);
const progress = (message: string) => console.error(`[bench:control-plane] ${message}`);

async function timed(count: number, run: (index: number) => Promise<unknown> | unknown): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < count; i++) await run(i);
  return count / ((performance.now() - started) / 1000);
}

async function accessTokens(key: CryptoKey, count: number): Promise<string[]> {
  const now = Math.floor(Date.now() / 1000);
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      new SignJWT({ scope: 'orders:read orders:create', roles: ['customer'] })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'idp-1' })
        .setIssuer(IDP)
        .setAudience(AUDIENCE)
        .setSubject(`customer-${i}`)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(key),
    ),
  );
}

async function csrs(count: number): Promise<string[]> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  // One key is enough: what is measured is the CA's work, not the workloads' key generation.
  return Promise.all(
    Array.from({ length: count }, async () =>
      (
        await x509.Pkcs10CertificateRequestGenerator.create({
          keys,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        })
      ).toString('pem'),
    ),
  );
}

/**
 * Runs a load job in a child process (bench/lib/http-load.ts) against the server in this process;
 * returns the client's rate and this process's CPU time per request while it measured.
 */
async function overHttps(
  scratch: string,
  job: Record<string, unknown> & { bodies: readonly string[] },
): Promise<{ rate: number; cpuMicros: number }> {
  const file = join(scratch, `job-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(job));
  const child = fork(fileURLToPath(new URL('./lib/http-load.ts', import.meta.url)), [file], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  let cpuAtStart: NodeJS.CpuUsage | null = null;
  child.on('message', (message: { phase?: string }) => {
    if (message.phase === 'measuring') cpuAtStart = process.cpuUsage();
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const cpu = process.cpuUsage(cpuAtStart ?? undefined);
  if (code !== 0 || cpuAtStart === null) throw new Error(`the load generator failed (exit ${code}): ${output}`);
  const { count, elapsedMs } = JSON.parse(output) as { count: number; elapsedMs: number };
  return { rate: count / (elapsedMs / 1000), cpuMicros: (cpu.user + cpu.system) / count };
}

async function main(): Promise<void> {
  const scratch = mkdtempSync(join(os.tmpdir(), 'lockstep-bench-cp-'));
  try {
    progress('setting up: CA, policy, Txn-Token Service, IdP key');
    const policyDir = join(scratch, 'policies');
    cpSync(fileURLToPath(new URL('../packages/guard/example/policies/', import.meta.url)), policyDir, {
      recursive: true,
    });
    writeFileSync(
      join(policyDir, 'tts.cedar'),
      '@id("gateway-exchanges")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");\n',
    );
    const keyDir = join(scratch, 'keys');
    const ca = await openWorkloadCa({ trustDomain: TD, keyDir });
    const store = openSqliteStore(join(scratch, 'cp.db'));
    const policy = await createPolicyService({
      dir: policyDir,
      signingKey: await openSigningKey(keyDir, 'policy'),
      watch: false,
    });
    const idp = await generateKeyPair('ES256');
    const subjects = createSubjectVerifier({
      issuers: [
        {
          issuer: IDP,
          jwks: { keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256' }] },
          audience: AUDIENCE,
        },
      ],
      txnTokenKeys: () => tts.jwks,
      trustDomain: TD,
    });
    const signingKey = await openSigningKey(keyDir, 'txn-token');
    const tts: TxnTokenService = createTxnTokenService({
      trustDomain: TD,
      keys: singleKey(signingKey),
      subjects,
      isRevoked: (kind, value) => store.isRevoked(kind, value),
    });
    tts.usePolicy(
      policy.set ??
        (() => {
          throw new Error('policy did not load');
        })(),
    );
    const gateway = `spiffe://${TD}/svc/gateway`;
    const exchange = (token: string) =>
      tts.exchange(
        {
          grant_type: TOKEN_EXCHANGE_GRANT,
          requested_token_type: TOKEN_TYPE.txnToken,
          audience: TD,
          scope: 'orders:read',
          subject_token: token,
          subject_token_type: TOKEN_TYPE.accessToken,
        },
        { requester: gateway },
      );

    progress(`in process: ${TOKENS} Txn-Token exchanges, ${SVIDS} SVIDs, and their baselines`);
    const warm = await accessTokens(idp.privateKey, 300);
    for (const token of warm) await exchange(token);
    const tokens = await accessTokens(idp.privateKey, TOKENS);
    const ttsRate = await timed(TOKENS, (i) => exchange(tokens[i] as string));
    const joseRate = await timed(TOKENS, () =>
      new SignJWT({ txn: 'x', scope: 'orders:read' })
        .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: signingKey.kid })
        .setSubject('s')
        .setAudience(TD)
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(signingKey.privateKey),
    );
    const { privateKey: rawKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const payload = Buffer.alloc(400, 7);
    const rawRate = await timed(TOKENS, () => sign('sha256', payload, rawKey));
    const requests = await csrs(SVIDS);
    for (const csrPem of requests.slice(0, 50)) await issueSvidFromCsr(ca, { csrPem, service: 'orders' });
    const svidRate = await timed(SVIDS, (i) =>
      issueSvidFromCsr(ca, { csrPem: requests[i] as string, service: 'orders' }),
    );

    progress('over HTTPS (mTLS keep-alive; the load generator is a separate process, so the server keeps its core)');
    const server = await startControlPlane({ ca, store, policy, tts });
    try {
      const join_ = async (service: string) =>
        joinControlPlane({
          url: server.url,
          trustDomain: TD,
          joinToken: (await createJoinToken(store, ca, { service, createdBy: 'bench' })).token,
          service,
        });
      const [gw, orders] = [await join_('gateway'), await join_('orders')];
      const form = (token: string) =>
        new URLSearchParams({
          grant_type: TOKEN_EXCHANGE_GRANT,
          requested_token_type: TOKEN_TYPE.txnToken,
          audience: TD,
          scope: 'orders:read',
          subject_token: token,
          subject_token_type: TOKEN_TYPE.accessToken,
        }).toString();
      const httpTokens = await accessTokens(idp.privateKey, TOKENS);
      const ttsHttp = await overHttps(scratch, {
        url: server.url,
        tls: { cert: gw.chainPem, key: gw.keyPem, ca: ca.bundlePem },
        path: '/v1/token',
        contentType: 'application/x-www-form-urlencoded',
        bodies: httpTokens.map(form),
        warmup: warm.map(form),
        expected: 200,
        connections: 8,
      });
      const renewHttp = await overHttps(scratch, {
        url: server.url,
        tls: { cert: orders.chainPem, key: orders.keyPem, ca: ca.bundlePem },
        path: '/v1/renew',
        contentType: 'application/json',
        bodies: requests.map((csr) => JSON.stringify({ csr })),
        warmup: requests.slice(0, 50).map((csr) => JSON.stringify({ csr })),
        expected: 200,
        connections: 8,
      });
      const ttsHttpRate = ttsHttp.rate;
      const renewRate = renewHttp.rate;

      const rows = [
        `| Txn-Token exchange, in process (verify access token + Cedar + ES256 sign) | ${Math.round(ttsRate).toLocaleString('en-US')} | ${(ttsRate / joseRate).toFixed(2)} × jose ES256 JWT signing (${Math.round(joseRate).toLocaleString('en-US')}/s) |`,
        `| Txn-Token exchange over HTTPS, \`POST /v1/token\` (mTLS, 8 keep-alive connections) | ${Math.round(ttsHttpRate).toLocaleString('en-US')} | ${(ttsHttpRate / joseRate).toFixed(2)} × jose ES256 JWT signing; server CPU ${ttsHttp.cpuMicros.toFixed(0)} µs/request = ${Math.round(1e6 / ttsHttp.cpuMicros).toLocaleString('en-US')}/s per core |`,
        `| SVID issuance from a CSR, in process (CSR checks + X.509 signing) | ${Math.round(svidRate).toLocaleString('en-US')} | ${(svidRate / rawRate).toFixed(2)} × raw node:crypto P-256 signature (${Math.round(rawRate).toLocaleString('en-US')}/s) |`,
        `| SVID renewal over HTTPS, \`POST /v1/renew\` (mTLS, 8 connections, recorded in SQLite) | ${Math.round(renewRate).toLocaleString('en-US')} | ${(renewRate / rawRate).toFixed(2)} × raw node:crypto P-256 signature; server CPU ${renewHttp.cpuMicros.toFixed(0)} µs/request = ${Math.round(1e6 / renewHttp.cpuMicros).toLocaleString('en-US')}/s per core |`,
      ];
      const verdict = (ok: boolean) => (ok ? 'met' : '**NOT met**');
      const perCore = (run: { cpuMicros: number }) => 1e6 / run.cpuMicros;
      const markdown = [
        '## Control plane: issuance on one core',
        '',
        `Written by \`npm run bench:control-plane\` (bench/control-plane.ts). Node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}; ${new Date().toISOString()}. In-process rows run on one core: ${TOKENS.toLocaleString('en-US')} Txn-Token exchanges of distinct user access tokens, ${SVIDS.toLocaleString('en-US')} SVIDs. For the HTTPS rows the load generator is a separate process (bench/lib/http-load.ts) on the other core; the control plane is one single-threaded process, and its CPU time per request (process.cpuUsage) gives the rate one core sustains. Anchors: Keycloak ≈ 120 client-credential grants/s per vCPU; SPIRE signs up to 500 SVIDs/s per client by default.`,
        '',
        '| Operation | per second | vs baseline (same run) |',
        '| --- | ---: | --- |',
        ...rows,
        '',
        `- Goal ≥ 2,000 Txn-Tokens/s on one core: ${verdict(ttsRate >= 2_000)} in process, ${verdict(perCore(ttsHttp) >= 2_000)} over HTTPS (server CPU per request)`,
        `- Goal ≥ 500 SVIDs/s on one core: ${verdict(svidRate >= 500)} in process, ${verdict(perCore(renewHttp) >= 500)} over HTTPS (server CPU per request)`,
      ].join('\n');
      writeSection(DOCS_FILE, 'control-plane', markdown);
      process.stdout.write(`${markdown}\n`);
      process.stdout.write(
        `${JSON.stringify({ txnTokensPerSecond: Math.round(ttsRate), txnTokensPerSecondHttps: Math.round(ttsHttpRate), svidsPerSecond: Math.round(svidRate), svidsPerSecondHttps: Math.round(renewRate) })}\n`,
      );
    } finally {
      await server.close();
      policy.close();
      await store.close();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
