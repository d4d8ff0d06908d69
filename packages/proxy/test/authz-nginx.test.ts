/**
 * A real nginx (Debian's package; `.ci/run` installs it) in front of a plain upstream, asking the
 * decision service on every request with `auth_request`: nginx terminates the client's mTLS, forwards
 * the client's leaf in `X-Client-Cert`, and authenticates to the decision service with its own SVID
 * (`svc/edge`). A client that sets `X-Client-Cert` itself changes nothing: nginx overwrites it.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import type { WorkloadCredentials } from '@lockstep/workload';
import type { AuthzServer } from '../src/authz/index.ts';
import { startAuthzWorld, type AuthzWorld } from './authz-world.ts';

const nginxBinary = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((path) => spawnSync(path, ['-v']).status === 0);
const skip = nginxBinary === undefined ? 'nginx is not installed (apt-get install nginx-light; .ci/run does)' : false;

let world: AuthzWorld;
let authz: AuthzServer;
let upstream: Server;
let nginx: ChildProcess;
let nginxPort: number;
let gateway: WorkloadCredentials;
let payments: WorkloadCredentials;
let token: string;
const upstreamSaw: { caller: string | undefined; url: string | undefined }[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
}

function nginxConfig(dir: string, authzPort: number, upstreamPort: number): string {
  return `
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_certificate ${dir}/edge.pem; ssl_certificate_key ${dir}/edge.key;
    ssl_client_certificate ${dir}/bundle.pem; ssl_verify_client optional; ssl_verify_depth 2;
    location / {
      auth_request /_lockstep;
      auth_request_set $lockstep_caller $upstream_http_lockstep_caller;
      auth_request_set $lockstep_error $upstream_http_lockstep_error;
      add_header Lockstep-Error $lockstep_error always;
      proxy_set_header Lockstep-Caller $lockstep_caller;
      proxy_pass http://127.0.0.1:${upstreamPort};
    }
    location = /_lockstep {
      internal;
      proxy_pass https://127.0.0.1:${authzPort}/nginx/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Client-Cert $ssl_client_escaped_cert;
      proxy_ssl_certificate ${dir}/edge.pem; proxy_ssl_certificate_key ${dir}/edge.key;
      proxy_ssl_protocols TLSv1.3;
    }
  }
}
`;
}

before(async () => {
  if (skip !== false) return;
  world = await startAuthzWorld('lockstep-authz-nginx-');
  ({ gateway, payments, customerToken: token } = world);
  const { edge } = world;
  authz = await world.startOrdersAuthz({
    routes: { 'GET /orders/:id': { action: 'orders:read' }, 'DELETE /orders/:id': { action: 'orders:delete' } },
    trustedProxies: [edge.spiffeId],
  });

  upstream = createServer((req, res) => {
    const caller = req.headers['lockstep-caller'];
    upstreamSaw.push({ caller: typeof caller === 'string' ? caller : undefined, url: req.url });
    res.end('upstream answered');
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamPort = (upstream.address() as { port: number }).port;

  const dir = join(world.scratch, 'nginx');
  mkdirSync(dir);
  writeFileSync(join(dir, 'edge.pem'), edge.chainPem);
  writeFileSync(join(dir, 'edge.key'), edge.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, 'bundle.pem'), world.ca.bundlePem);
  nginxPort = await freePort();
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, authz.port, upstreamPort));
  nginx = spawn(nginxBinary as string, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  nginx.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  // Ready when it answers on its port.
  for (let tries = 0; ; tries++) {
    try {
      await get('/orders/1', null, null);
      break;
    } catch (error) {
      if (tries > 100) {
        const log = (() => {
          try {
            return readFileSync(join(dir, 'error.log'), 'utf8');
          } catch {
            return '';
          }
        })();
        throw new Error(`nginx did not start: ${String(error)} ${stderr} ${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
});

after(async () => {
  if (skip !== false) return;
  nginx.kill('SIGTERM');
  await new Promise((resolve) => nginx.once('exit', resolve));
  upstream.close();
  await world.close();
});

async function get(
  path: string,
  client: WorkloadCredentials | null,
  txnToken: string | null,
  extra: Record<string, string> = {},
  method = 'GET',
): Promise<{ status: number; error: string | undefined; body: string }> {
  const dispatcher = new Agent({
    connect: {
      ...(client === null ? {} : { cert: client.chainPem, key: client.keyPem }),
      ca: world.ca.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`https://127.0.0.1:${nginxPort}${path}`, {
      dispatcher,
      method: method as 'GET',
      headers: { ...(txnToken === null ? {} : { 'txn-token': txnToken }), ...extra },
    });
    const error = response.headers['lockstep-error'];
    return {
      status: response.statusCode,
      error: typeof error === 'string' && error !== '' ? error : undefined,
      body: await response.body.text(),
    };
  } finally {
    await dispatcher.close();
  }
}

describe('nginx auth_request in front of a plain upstream', { skip }, () => {
  it('passes a permitted request on, naming the verified caller to the upstream', async () => {
    upstreamSaw.length = 0;
    const answer = await get('/orders/42', gateway, token);
    assert.equal(answer.status, 200);
    assert.equal(answer.body, 'upstream answered');
    assert.deepEqual(upstreamSaw, [{ caller: gateway.spiffeId, url: '/orders/42' }]);
  });

  it('stops what the policy forbids, a missing token and a missing certificate before the upstream', async () => {
    upstreamSaw.length = 0;
    const forbidden = await get('/orders/42', gateway, token, {}, 'DELETE');
    assert.deepEqual([forbidden.status, forbidden.error], [403, 'LOCKSTEP_ERR_DENIED']);
    const otherCaller = await get('/orders/42', payments, token);
    assert.deepEqual([otherCaller.status, otherCaller.error], [403, 'LOCKSTEP_ERR_DENIED']);
    const noToken = await get('/orders/42', gateway, null);
    assert.deepEqual([noToken.status, noToken.error], [401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING']);
    const noCertificate = await get('/orders/42', null, token);
    assert.deepEqual([noCertificate.status, noCertificate.error], [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING']);
    assert.deepEqual(upstreamSaw, [], 'the upstream saw none of them');
  });

  it('ignores an X-Client-Cert the client sets itself', async () => {
    upstreamSaw.length = 0;
    const gatewayLeaf = encodeURIComponent(gateway.chainPem.split(/(?<=-----END CERTIFICATE-----)/)[0] as string);
    const spoofed = await get('/orders/42', null, token, { 'x-client-cert': gatewayLeaf });
    assert.deepEqual([spoofed.status, spoofed.error], [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING']);
    const asOther = await get('/orders/42', payments, token, { 'x-client-cert': gatewayLeaf });
    assert.deepEqual([asOther.status, asOther.error], [403, 'LOCKSTEP_ERR_DENIED']);
    assert.deepEqual(upstreamSaw, []);
  });
});
