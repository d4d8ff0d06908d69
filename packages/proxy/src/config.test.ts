import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadSidecarConfig, parseSidecarConfig, SidecarConfigError } from './config.ts';

const valid = {
  service: 'orders',
  controlPlane: 'https://127.0.0.1:8443',
  trustDomain: 'shop.test',
  listen: { port: 8444 },
  upstream: 'http://127.0.0.1:3000',
  routes: { 'GET /health': { public: true }, 'POST /orders': { action: 'orders:create', body: { type: 'object' } } },
};

describe('parseSidecarConfig', () => {
  it('fills in the defaults: loopback, 1 MiB bodies, bounded upstream timeouts, no egress', () => {
    const config = parseSidecarConfig(valid);
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 8444 });
    assert.deepEqual(config.upstream, { origin: 'http://127.0.0.1:3000' });
    assert.equal(config.egress, null);
    assert.equal(config.limits.bodyBytes, 1024 * 1024);
    assert.ok(Object.isFrozen(config));
    const safeParse = config.routes['POST /orders']?.body?.safeParse;
    assert.deepEqual(safeParse?.({}), { success: true, data: {} });
    assert.equal(safeParse?.([]).success, false);
  });

  it('refuses each mistake, naming the field and what to write', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ servce: 'x' }, /servce: unknown field; the fields are service, controlPlane/],
      [{ service: 'Orders!' }, /service: "Orders!" must be lower-case/],
      [{ controlPlane: 'http://cp:8443' }, /controlPlane: must be an https origin, e\.g\. controlPlane: https:/],
      [{ upstream: 'http://10.0.0.5:3000' }, /upstream: must be on loopback/],
      [{ upstream: 'unix:run.sock' }, /upstream: a Unix socket needs an absolute path/],
      [{ upstream: 'http://localhost:3000' }, /upstream: write 127\.0\.0\.1 or \[::1\], not localhost/],
      [{ listen: { port: 70_000 } }, /listen\.port: must be a whole number from 0 to 65535; got 70000/],
      [{ limits: { headersTimeoutMs: 0 } }, /limits\.headersTimeoutMs: must be a whole number from 1/],
      [{ routes: { 'get /x': {} } }, /routes\["get \/x"\]: the key must be "<METHOD> \/path"/],
      [{ routes: { 'GET /x': { acton: 'a' } } }, /routes\["GET \/x"\]\.acton: unknown field; the fields are action/],
      [{ routes: { 'POST /x': { body: { type: 'objekt' } } } }, /routes\["POST \/x"\]\.body: not a valid JSON Schema/],
      [{ routes: {} }, /routes: declare at least one route/],
      [{ egress: { port: 1, targets: { pay: 'http://pay' } } }, /egress\.targets\.pay: must be an https origin/],
      [{ egress: { port: 1, socket: '/run/e.sock' } }, /egress: give either port .* or socket .*, not both/],
      [{ egress: { targets: {} } }, /egress: give either port/],
      [{ egress: { socket: 'e.sock' } }, /egress\.socket: must be an absolute path/],
    ];
    for (const [change, message] of cases) {
      assert.throws(
        () => parseSidecarConfig({ ...valid, ...change }, 'sidecar.yaml'),
        (error: Error) => {
          assert.ok(error instanceof SidecarConfigError);
          assert.match(error.message, /^sidecar\.yaml: /);
          assert.match(error.message, message);
          return true;
        },
      );
    }
  });
});

describe('controlPlane: one URL or the replicas', () => {
  it('takes one https origin, a comma-separated list, or a YAML list: a frozen list for the agent', () => {
    assert.deepEqual(parseSidecarConfig(valid).controlPlane, ['https://127.0.0.1:8443']);
    const listed = parseSidecarConfig({ ...valid, controlPlane: ['https://cp-0:8443', 'https://cp-1:8443/'] });
    assert.deepEqual(listed.controlPlane, ['https://cp-0:8443', 'https://cp-1:8443']);
    assert.ok(Object.isFrozen(listed.controlPlane));
    const separated = parseSidecarConfig({
      ...valid,
      controlPlane: ' https://cp-0:8443, https://cp-1:8443,,https://cp-0:8443',
    });
    assert.deepEqual(separated.controlPlane, ['https://cp-0:8443', 'https://cp-1:8443'], 'trimmed, duplicates dropped');
  });

  it('reads a YAML list from the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-sidecar-config-'));
    try {
      const file = join(dir, 'sidecar.yaml');
      writeFileSync(
        file,
        'service: orders\ncontrolPlane:\n  - https://cp-0.internal:8443\n  - https://cp-1.internal:8443\n' +
          'trustDomain: shop.test\nlisten: { port: 0 }\nupstream: unix:/run/orders.sock\nroutes:\n  GET /x: { public: true }\n',
      );
      assert.deepEqual(loadSidecarConfig(file).controlPlane, [
        'https://cp-0.internal:8443',
        'https://cp-1.internal:8443',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a list that is empty or holds anything but https origins, naming the entry and the fix', () => {
    const cases: [unknown, RegExp][] = [
      [
        [],
        /controlPlane: list at least one URL, e\.g\. controlPlane: https:\/\/127\.0\.0\.1:8443, or for replicas controlPlane: \[https:/,
      ],
      [' , ', /controlPlane: list at least one URL/],
      [
        ['https://cp-0:8443', 'http://cp-1:8443'],
        /controlPlane\[1\]: must be an https origin, e\.g\. .*; got "http:\/\/cp-1:8443"/,
      ],
      [['https://cp-0:8443', 8443], /controlPlane\[1\]: required: e\.g\./],
      [
        'https://cp-0:8443,https://cp-1:8443/v1',
        /controlPlane: must be an https origin, .*; got "https:\/\/cp-1:8443\/v1"/,
      ],
      [{ url: 'https://cp-0:8443' }, /controlPlane: required: e\.g\. controlPlane: https:/],
    ];
    for (const [controlPlane, message] of cases) {
      assert.throws(
        () => parseSidecarConfig({ ...valid, controlPlane }, 'sidecar.yaml'),
        (error: Error) => error instanceof SidecarConfigError && message.test(error.message),
        JSON.stringify(controlPlane),
      );
    }
  });
});

describe('loadSidecarConfig', () => {
  it('reads YAML, and refuses duplicate keys and files that are not YAML', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-sidecar-config-'));
    try {
      const file = join(dir, 'sidecar.yaml');
      writeFileSync(
        file,
        `service: orders\ncontrolPlane: https://127.0.0.1:8443\ntrustDomain: shop.test\nlisten: { port: 0 }\n` +
          `upstream: unix:/run/orders.sock\nroutes:\n  GET /orders/:id: { action: orders:read }\n`,
      );
      assert.deepEqual(loadSidecarConfig(file).upstream, { socketPath: '/run/orders.sock' });
      writeFileSync(file, 'service: a\nservice: b\n');
      assert.throws(() => loadSidecarConfig(file), /sidecar\.yaml: not YAML or JSON: .*unique/i);
      assert.throws(() => loadSidecarConfig(join(dir, 'missing.yaml')), /missing\.yaml: cannot be read \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
