/**
 * What a service that imports the guard really loads, in a fresh process: the core loads Cedar, jose
 * and undici and none of the optional peers — express and fastify (each needed by its own adapter
 * only), prom-client (only with `metrics: true`) — nor zod or ajv. And a guard asked for metrics
 * without prom-client installed refuses to start, saying what to install.
 */
import assert from 'node:assert/strict';
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { packagesLoadedBy } from '@lockstep/testkit';
import { GuardConfigError } from '../src/index.ts';
import { guardFor, world } from './fixture.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const OPTIONAL = ['ajv', 'express', 'fastify', 'prom-client', 'zod'];
const loadedBy = (...specifiers: string[]) =>
  packagesLoadedBy(specifiers.map((specifier) => `await import('${specifier}');`).join('\n'), {
    cwd: ROOT,
    conditions: ['@lockstep/source'],
  });

describe('what importing the guard loads', () => {
  it('the core: Cedar, jose, undici and the identity rules; no framework, no metrics library, no schema library', () => {
    const loaded = loadedBy('@lockstep/guard');
    for (const needed of ['@cedar-policy/cedar-wasm', '@lockstep/identity', '@lockstep/policy', 'jose', 'undici']) {
      assert.ok(loaded.includes(needed), `${needed} is loaded: ${loaded.join(', ')}`);
    }
    assert.deepEqual(
      loaded.filter((name) => OPTIONAL.includes(name)),
      [],
    );
  });

  it('the node:http adapter adds only its router', () => {
    const core = new Set(loadedBy('@lockstep/guard'));
    const added = loadedBy('@lockstep/guard', '@lockstep/guard/http').filter((name) => !core.has(name));
    assert.ok(added.includes('find-my-way'), added.join(', '));
    assert.deepEqual(
      added.filter((name) => OPTIONAL.includes(name)),
      [],
    );
  });

  it('each framework adapter loads from its own framework and nothing of the other one', () => {
    const fastify = loadedBy('@lockstep/guard/fastify');
    assert.ok(fastify.includes('fastify') && !fastify.includes('express'), fastify.join(', '));
    // Express's router, found through the express package the application installed.
    const express = loadedBy('@lockstep/guard/express');
    assert.ok(express.includes('path-to-regexp') && !express.includes('fastify'), express.join(', '));
  });
});

it('metrics: true without prom-client installed refuses to start and says what to install; a guard without metrics needs none', async () => {
  // As if prom-client were not installed: Node's own resolver fails on a package that does not exist.
  const hooks = registerHooks({
    resolve: (specifier, context, next) =>
      next(specifier === 'prom-client' ? 'prom-client-not-installed' : specifier, context),
  });
  try {
    const w = await world();
    await assert.rejects(
      guardFor(w, { metrics: true }),
      (error: unknown) =>
        error instanceof GuardConfigError &&
        /metrics: true needs prom-client .*npm install prom-client/.test(error.message),
    );
    const guard = await guardFor(w);
    try {
      await assert.rejects(guard.metrics(), /metrics: true/);
    } finally {
      await guard.close();
    }
  } finally {
    hooks.deregister();
  }
});
