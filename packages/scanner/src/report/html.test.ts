import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { sampleReport } from '../../test/sample-report.ts';
import { renderHtml } from './html.ts';

describe('renderHtml', () => {
  const html = renderHtml(sampleReport());

  it('is one self-contained page: no script, no external resource, nothing fetched', () => {
    assert.match(html, /^<!doctype html>\n<html lang="en">/);
    assert.doesNotMatch(html, /<script/i);
    // Tags are the page's own: the report's text is escaped, so markup in evidence is not a tag.
    for (const [tag] of html.matchAll(/<[a-z][^>]*>/gi))
      assert.doesNotMatch(tag, /\s(src|href|srcset|action|formaction|poster|data|style|on\w+)\s*=/i, tag);
    assert.doesNotMatch(html, /https?:\/\//i);
    assert.doesNotMatch(html, /url\(|@import/i);
    assert.doesNotMatch(html, /<(link|img|iframe|object|embed|base|form)\b/i);
  });

  it('allows only its own stylesheet by hash in its Content-Security-Policy', () => {
    const css = /<style>([\s\S]*?)<\/style>/.exec(html)?.[1];
    assert.ok(css !== undefined);
    const hash = createHash('sha256').update(css).digest('base64');
    assert.ok(
      html.includes(
        `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'sha256-${hash}';`,
      ),
    );
  });

  it('escapes the evidence and writes control characters as visible escapes', () => {
    assert.ok(!html.includes('<img'));
    assert.ok(
      html.includes('{&quot;note&quot;:&quot;&lt;img src=x onerror=alert(1)&gt;&quot;} &amp; &#39;quoted&#39;'),
    );
    assert.ok(html.includes('\\x00NUL \\x1b[31mRED\\x1b[0m \\u{202e}gnp.exe\\u{202c} \ufffd'));
    // eslint-disable-next-line no-control-regex -- the point: none of these may reach the page
    assert.doesNotMatch(html, /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202e]/);
  });

  it('shows every service as a matrix column header and every attack as a row header', () => {
    const report = sampleReport();
    const head =
      /<thead><tr><th scope="col">Attack<\/th><th scope="col">Severity<\/th>(.*?)<\/tr><\/thead>/.exec(html)?.[1] ?? '';
    assert.deepEqual(
      [...head.matchAll(/<th scope="col">([^<]*)<\/th>/g)].map((match) => match[1]),
      report.services.map((service) => service.name),
    );
    for (const attack of report.attacks)
      assert.ok(html.includes(`<tr><th scope="row"><code>${attack.id}</code>`), attack.id);
    assert.match(html, /<table class="matrix">\n<caption>/);
  });

  it('tells each cell by mark and word, not colour alone', () => {
    const cells = [
      ...html.matchAll(
        /<td class="cell (\w+)" title="[^"]*"><span aria-hidden="true">(.)<\/span><span class="sr">([^<]+)<\/span><\/td>/g,
      ),
    ];
    const report = sampleReport();
    assert.equal(cells.length, report.attacks.length * report.services.length);
    const seen = new Map(cells.map((match) => [match[1], [match[2], match[3]]]));
    assert.deepEqual(seen.get('weak'), ['✗', 'weak on at least one target']);
    assert.deepEqual(seen.get('enforced'), ['✓', 'enforced on every target']);
    assert.deepEqual(seen.get('inconclusive'), ['?', 'inconclusive on at least one target']);
    assert.deepEqual(seen.get('skipped'), ['–', 'not applicable']);
  });

  it('the orders row for txn.alg-none is weak: one target got through, the other did not', () => {
    const row = /<tr><th scope="row"><code>txn\.alg-none<\/code>.*<\/tr>/.exec(html)?.[0] ?? '';
    const outcomes = [...row.matchAll(/<td class="cell (\w+)"/g)].map((match) => match[1]);
    assert.deepEqual(outcomes, ['skipped', 'weak', 'skipped', 'skipped']);
  });

  it('lists every weak link with its evidence and the standards it maps to', () => {
    const findings = [...html.matchAll(/<article class="finding">([\s\S]*?)<\/article>/g)].map(
      (match) => match[1] ?? '',
    );
    assert.equal(findings.length, 3);
    const algNone = findings[0] ?? '';
    assert.match(algNone, /<code>txn\.alg-none<\/code> Txn-Token with alg &quot;none&quot;/);
    assert.match(algNone, /<dt>Service<\/dt><dd>orders<\/dd>/);
    assert.match(algNone, /<dt>Target<\/dt><dd><code>GET \/orders\/:id<\/code><\/dd>/);
    assert.match(algNone, /<code class="evidence">alg none Txn-Token → 200 OK with the order body<\/code>/);
    assert.match(
      algNone,
      /<dt>Standards<\/dt><dd>CWE-347 · OWASP API2:2023 Broken Authentication · NIST SP 800-204: Token-based authorization<\/dd>/,
    );
    assert.match(html, /<h2 id="inconclusive">Inconclusive \(2\)<\/h2>/);
    assert.match(html, /<summary>Skipped as not applicable \(3\)<\/summary>/);
  });

  it('says so when nothing got through', () => {
    const clean = renderHtml(
      sampleReport({ results: [], summary: { enforced: 0, weak: 0, inconclusive: 0, skipped: 0 }, exitCode: 0 }),
    );
    assert.match(
      clean,
      /<p class="verdict enforced"><span aria-hidden="true">✓<\/span> Exit 0: nothing got through<\/p>/,
    );
    assert.match(clean, /<h2 id="weak">Weak links \(0\)<\/h2>\n<p>None/);
    assert.doesNotMatch(clean, /id="inconclusive"/);
  });
});
