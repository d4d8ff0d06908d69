import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AuthzServerConfigError, loadAuthzServerConfig, parseAuthzServerConfig } from './config.ts';

const valid = {
  service: 'orders',
  controlPlane: 'https://127.0.0.1:8443',
  trustDomain: 'shop.test',
  listen: { port: 9191 },
  trustedProxies: ['spiffe://shop.test/svc/edge'],
  routes: { 'GET /health': { public: true }, 'GET /orders/:id': { action: 'orders:read' } },
};

describe('parseAuthzServerConfig', () => {
  it('fills in the defaults: loopback, no gRPC, no AuthZEN callers, one XFCC element, bounded inputs', () => {
    const config = parseAuthzServerConfig(valid);
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 9191 });
    assert.equal(config.grpc, undefined);
    assert.deepEqual(config.authzenCallers, []);
    assert.equal(config.xfccElements, 'refuse');
    assert.deepEqual(config.limits, {
      bodyBytes: 65_536,
      headerBytes: 32_768,
      evaluations: 64,
      grpcMessageBytes: 65_536,
      grpcHeaders: 128,
    });
    assert.deepEqual(config.routes['GET /orders/:id'], { action: 'orders:read' });
    assert.deepEqual(config.controlPlane, ['https://127.0.0.1:8443']);
    assert.ok(Object.isFrozen(config));
  });

  it("takes the control plane's replicas, as a list or comma-separated", () => {
    const replicas = ['https://cp-0:8443', 'https://cp-1:8443'];
    assert.deepEqual(parseAuthzServerConfig({ ...valid, controlPlane: replicas }).controlPlane, replicas);
    assert.deepEqual(parseAuthzServerConfig({ ...valid, controlPlane: replicas.join(', ') }).controlPlane, replicas);
  });

  it('takes the gRPC listener, AuthZEN callers, XFCC and limits', () => {
    const config = parseAuthzServerConfig({
      ...valid,
      grpc: { host: '0.0.0.0', port: 9192 },
      trustedProxies: ['spiffe://shop.test/svc/edge', 'spiffe://cluster.local/ns/shop/sa/istio-ingress'],
      authzenCallers: ['spiffe://shop.test/svc/edge'],
      xfccElements: 'last',
      limits: { grpcHeaders: 64 },
      stateDir: '/var/lib/lockstep/orders-authz',
    });
    assert.deepEqual(config.grpc, { host: '0.0.0.0', port: 9192 });
    assert.equal(config.trustedProxies.length, 2);
    assert.equal(config.xfccElements, 'last');
    assert.equal(config.limits.grpcHeaders, 64);
    assert.equal(config.limits.grpcMessageBytes, 65_536);
    assert.equal(config.stateDir, '/var/lib/lockstep/orders-authz');
  });

  it('refuses each mistake, naming the field and what to write', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ upstream: 'http://127.0.0.1:3000' }, /upstream: unknown field; the fields are service, controlPlane/],
      [{ trustedProxies: undefined }, /trustedProxies: must be a list of SPIFFE IDs, e\.g\. trustedProxies: \[spiffe:/],
      [{ trustedProxies: [] }, /trustedProxies: list the SPIFFE IDs of the proxies that may ask/],
      [
        { trustedProxies: ['edge'] },
        /trustedProxies\[0\]: must be a SPIFFE ID, e\.g\. spiffe:\/\/shop\.test\/svc\/edge/,
      ],
      [
        { authzenCallers: ['spiffe://shop.test/svc/bff'] },
        /authzenCallers: spiffe:\/\/shop\.test\/svc\/bff is not in trustedProxies/,
      ],
      [{ xfccElements: 'first' }, /xfccElements: must be refuse \(the default\) or last/],
      [{ grpc: { port: 70_000 } }, /grpc\.port: must be a whole number from 0 to 65535/],
      [{ grpc: { host: 'authz.local', port: 1 } }, /grpc\.host: must be an IP address/],
      [{ grpc: 9192 }, /grpc: must be a mapping, e\.g\. grpc: \{ host: 127\.0\.0\.1, port: 9192 \}/],
      [{ listen: { prot: 1 } }, /listen\.prot: unknown field; the fields are host, port/],
      [{ limits: { grpcMessageBytes: 0 } }, /limits\.grpcMessageBytes: must be a whole number from 1/],
      [{ routes: { 'GET /x': { acton: 'a' } } }, /routes\["GET \/x"\]\.acton: unknown field; the fields are action/],
      [{ controlPlane: 'http://cp:8443' }, /controlPlane: must be an https origin/],
      [{ controlPlane: ['https://cp-0:8443', 'http://cp-1:8443'] }, /controlPlane\[1\]: must be an https origin/],
      [{ controlPlane: [] }, /controlPlane: list at least one URL/],
    ];
    for (const [change, message] of cases) {
      assert.throws(
        () => parseAuthzServerConfig({ ...valid, ...change }, 'authz.yaml'),
        (error: unknown) =>
          error instanceof AuthzServerConfigError &&
          error.code === 'LOCKSTEP_AUTHZ_CONFIG_INVALID' &&
          error.message.startsWith('authz.yaml: ') &&
          message.test(error.message),
        JSON.stringify(change),
      );
    }
  });
});

describe('loadAuthzServerConfig', () => {
  it('reads YAML, and names the file when it cannot', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-authz-config-'));
    try {
      const file = join(dir, 'authz.yaml');
      writeFileSync(
        file,
        'service: orders\ncontrolPlane: https://127.0.0.1:8443\ntrustDomain: shop.test\nlisten: { port: 0 }\n' +
          'grpc: { port: 0 }\ntrustedProxies: [spiffe://shop.test/svc/edge]\nroutes:\n  GET /health: { public: true }\n',
      );
      assert.deepEqual(loadAuthzServerConfig(file).grpc, { host: '127.0.0.1', port: 0 });
      writeFileSync(file, 'service: orders\nservice: payments\n');
      assert.throws(() => loadAuthzServerConfig(file), /authz\.yaml: not YAML or JSON/);
      assert.throws(() => loadAuthzServerConfig(join(dir, 'none.yaml')), /none\.yaml: cannot be read \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
