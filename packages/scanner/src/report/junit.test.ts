import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HOSTILE_EVIDENCE, sampleReport } from '../../test/sample-report.ts';
import { junitErrors as schemaErrors } from '../../test/schemas/validate.ts';
import type { Outcome } from '../types.ts';
import { renderJunit } from './junit.ts';

/** The attributes of every element with this name, in document order. */
function elements(xml: string, name: string): Record<string, string>[] {
  return [...xml.matchAll(new RegExp(`<${name}((?:\\s+[\\w.-]+="[^"]*")*)\\s*/?>`, 'g'))].map((match) =>
    Object.fromEntries(
      [...(match[1] ?? '').matchAll(/([\w.-]+)="([^"]*)"/g)].map((attribute) => [attribute[1], attribute[2]]),
    ),
  );
}

describe('renderJunit', () => {
  it('is valid against the Jenkins JUnit schema', async () => {
    assert.deepEqual(await schemaErrors(renderJunit(sampleReport())), []);
    assert.deepEqual(await schemaErrors(renderJunit(sampleReport({ results: [], exitCode: 0 }))), []);
  });

  it('the validator rejects what the schema forbids (so the check above can fail)', async () => {
    const xml = renderJunit(sampleReport());
    assert.notDeepEqual(
      await schemaErrors(xml.replace('<testcase name=', '<testcase title=')),
      [],
      'a test case without a name',
    );
    assert.notDeepEqual(
      await schemaErrors(xml.replace('</testsuites>', '<surprise/></testsuites>')),
      [],
      'an unknown element',
    );
    // Why a skip reason is the element's text: this schema gives <skipped> no attributes.
    assert.notDeepEqual(
      await schemaErrors(
        xml.replace('<skipped>route takes no body</skipped>', '<skipped message="route takes no body"/>'),
      ),
      [],
    );
    assert.notDeepEqual(
      await schemaErrors(xml.replace('&lt;img', '\u0000<img')),
      [],
      'a NUL and a raw tag: not even well-formed',
    );
  });

  it('has one suite per service and one case per attempt, named by attack and target', () => {
    const report = sampleReport();
    const xml = renderJunit(report);
    assert.deepEqual(
      elements(xml, 'testsuite').map((suite) => suite['name']),
      ['gateway', 'orders', 'payments', 'catalog'],
    );
    const cases = elements(xml, 'testcase');
    assert.equal(cases.length, report.results.length);
    assert.deepEqual(cases[7], {
      name: 'txn.alg-none GET /orders/:id',
      classname: 'lockstep.scan.orders',
      time: '0.013',
    });
  });

  it('counts tests, failures, errors and skipped per suite and in total', () => {
    const report = sampleReport();
    const xml = renderJunit(report);
    const count = (service: string | null, outcome: Outcome | null) =>
      String(
        report.results.filter(
          (result) =>
            (service === null || result.service === service) && (outcome === null || result.outcome === outcome),
        ).length,
      );
    for (const suite of elements(xml, 'testsuite')) {
      const service = suite['name'] ?? '';
      assert.equal(suite['tests'], count(service, null), service);
      assert.equal(suite['failures'], count(service, 'weak'), service);
      assert.equal(suite['errors'], count(service, 'inconclusive'), service);
      assert.equal(suite['skipped'], count(service, 'skipped'), service);
    }
    const [total] = elements(xml, 'testsuites');
    assert.deepEqual(total, {
      name: 'lockstep-scan shop.test',
      tests: count(null, null),
      failures: '3',
      errors: '2',
      time: '4.250',
    });
    assert.equal(xml.match(/<failure /g)?.length, 3);
    assert.equal(xml.match(/<error /g)?.length, 2);
    assert.equal(xml.match(/<skipped>/g)?.length, 3);
  });

  it('a weak link fails with its attack as type and its evidence as text', () => {
    const xml = renderJunit(sampleReport());
    assert.match(
      xml,
      /<failure message="weak \(critical\): Txn-Token with alg &quot;none&quot;" type="txn.alg-none">alg none Txn-Token → 200 OK with the order body<\/failure>/,
    );
    assert.match(xml, /<skipped>route takes no body<\/skipped>/);
    assert.match(
      xml,
      /<error message="inconclusive: connect ECONNREFUSED \[::1\]:4102: no answer, no control request passed" type="tls.no-client-cert"\/>/,
    );
  });

  it('escapes markup and quotes and writes characters XML forbids as visible escapes', () => {
    const xml = renderJunit(sampleReport());
    assert.ok(!xml.includes('<img'));
    assert.ok(
      xml.includes('{&quot;note&quot;:&quot;&lt;img src=x onerror=alert(1)&gt;&quot;} &amp; &apos;quoted&apos;'),
    );
    assert.ok(xml.includes('\\x00NUL \\x1b[31mRED'));
    // eslint-disable-next-line no-control-regex -- the point: none of these may reach the document
    assert.doesNotMatch(xml, /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202e\ud800]/);
    assert.ok(HOSTILE_EVIDENCE.includes('\u0000'));
  });

  it('carries the run and the service in suite properties', () => {
    const xml = renderJunit(sampleReport());
    const properties = Object.fromEntries(
      elements(xml, 'property')
        .slice(0, 7)
        .map((property) => [property['name'], property['value']]),
    );
    assert.deepEqual(properties, {
      'lockstep.runId': 'scan-20260314T101500Z-3f2a',
      'lockstep.trustDomain': 'shop.test',
      'lockstep.scanner': 'spiffe://shop.test/scanner/ci',
      'lockstep.spiffeId': 'spiffe://shop.test/svc/gateway',
      'lockstep.endpoints': '127.0.0.1:4100',
      'lockstep.routes': '6',
      'lockstep.source': 'registry',
    });
  });
});
