/**
 * A small scripted browser for tests: HTTPS over undici with a cookie jar (name, path, Secure,
 * HttpOnly honoured as far as a non-JS client can), following redirects by hand so that each hop
 * can be inspected, and posting HTML forms the way a browser does (Origin header, urlencoded).
 * It stops at a URL matching `stopAt` (an app's redirect URI it does not want to load).
 */
import { Agent, request } from 'undici';

export interface TestBrowserOptions {
  /** PEM of the CA(s) the browser trusts (the control plane's bundle in tests). */
  readonly ca: string;
  /**
   * The address to connect from, e.g. `127.0.0.2`: on Linux all of 127.0.0.0/8 is loopback, so tests
   * can play clients at several addresses.
   */
  readonly localAddress?: string;
}

export interface Page {
  readonly url: string;
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  /** Every URL visited on the way, redirects included, in order. */
  readonly visited: readonly string[];
}

interface Cookie {
  readonly value: string;
  readonly path: string;
  readonly host: string;
}

export interface TestBrowser {
  /** GET `url`, following redirects until a page answers or a URL matches `stopAt`. */
  open(url: string, options?: { stopAt?: (url: URL) => boolean }): Promise<Page>;
  /** Submits the first form on `page` (action, hidden fields kept) with `fields` filled in. */
  submit(
    page: Page,
    fields: Record<string, string>,
    options?: { stopAt?: (url: URL) => boolean; origin?: string | null },
  ): Promise<Page>;
  /** An API call as the page's script makes it: same cookies, JSON; no redirects followed. */
  request(
    url: string,
    options?: { method?: string; headers?: Record<string, string>; json?: unknown },
  ): Promise<{ status: number; headers: Page['headers']; body: unknown }>;
  cookies(host: string): Record<string, string>;
  close(): Promise<void>;
}

const MAX_REDIRECTS = 20;

export function createTestBrowser(options: TestBrowserOptions): TestBrowser {
  const agent = new Agent({
    connect: { ca: options.ca, checkServerIdentity: () => undefined },
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  });
  const jar = new Map<string, Cookie>();

  function store(url: URL, setCookie: string | string[] | undefined): void {
    for (const line of setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
      const split = pair.indexOf('=');
      if (split <= 0) continue;
      const name = pair.slice(0, split);
      const value = pair.slice(split + 1);
      const path = attributes.find((attribute) => attribute.toLowerCase().startsWith('path='))?.slice(5) || '/';
      const expired =
        attributes.some((attribute) => /^expires=/i.test(attribute) && Date.parse(attribute.slice(8)) < Date.now()) ||
        attributes.some((attribute) => /^max-age=(0|-)/i.test(attribute));
      const key = `${url.host} ${path} ${name}`;
      if (expired || value === '') jar.delete(key);
      else jar.set(key, { value, path, host: url.host });
    }
  }

  function cookieHeader(url: URL): string | undefined {
    const pairs: string[] = [];
    for (const [key, cookie] of jar) {
      if (cookie.host !== url.host) continue;
      if (!(
        url.pathname === cookie.path ||
        url.pathname.startsWith(cookie.path.endsWith('/') ? cookie.path : `${cookie.path}/`)
      ))
        continue;
      pairs.push(`${key.split(' ')[2]}=${cookie.value}`);
    }
    return pairs.length === 0 ? undefined : pairs.join('; ');
  }

  async function go(
    method: 'GET' | 'POST',
    start: string,
    body: string | undefined,
    origin: string | null | undefined,
    stopAt?: (url: URL) => boolean,
  ): Promise<Page> {
    const visited: string[] = [];
    let url = new URL(start);
    let currentMethod = method;
    let currentBody = body;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop += 1) {
      visited.push(url.href);
      if (stopAt?.(url)) return { url: url.href, status: 0, headers: {}, body: '', visited };
      const headers: Record<string, string> = { accept: 'text/html' };
      const cookie = cookieHeader(url);
      if (cookie !== undefined) headers.cookie = cookie;
      if (currentMethod === 'POST') {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        if (origin !== null) headers.origin = origin ?? url.origin;
      }
      const response = await request(url, {
        method: currentMethod,
        headers,
        body: currentBody ?? null,
        dispatcher: agent,
      });
      store(url, response.headers['set-cookie']);
      const location = response.headers.location;
      if (response.statusCode >= 300 && response.statusCode < 400 && typeof location === 'string') {
        await response.body.dump();
        url = new URL(location, url);
        // 303 (and 301/302 after a POST, as browsers do) continue with GET.
        if (response.statusCode !== 307 && response.statusCode !== 308) {
          currentMethod = 'GET';
          currentBody = undefined;
        }
        continue;
      }
      return {
        url: url.href,
        status: response.statusCode,
        headers: response.headers,
        body: await response.body.text(),
        visited,
      };
    }
    throw new Error(`more than ${MAX_REDIRECTS} redirects from ${start}`);
  }

  return {
    open: (url, openOptions) => go('GET', url, undefined, undefined, openOptions?.stopAt),
    async submit(page, fields, submitOptions) {
      const form = /<form\b[^>]*>([\s\S]*?)<\/form>/i.exec(page.body);
      if (form === null) throw new Error(`no form on ${page.url}`);
      const action = /\baction="([^"]*)"/i.exec(form[0])?.[1] ?? page.url;
      const values = new URLSearchParams();
      for (const input of form[1]?.matchAll(/<input\b[^>]*>/gi) ?? []) {
        const name = /\bname="([^"]*)"/i.exec(input[0])?.[1];
        if (name === undefined) continue;
        const value = /\bvalue="([^"]*)"/i.exec(input[0])?.[1] ?? '';
        values.set(name, decodeEntities(value));
      }
      for (const [name, value] of Object.entries(fields)) values.set(name, value);
      return go(
        'POST',
        new URL(decodeEntities(action), page.url).href,
        values.toString(),
        submitOptions?.origin,
        submitOptions?.stopAt,
      );
    },
    async request(url, requestOptions = {}) {
      const target = new URL(url);
      const headers: Record<string, string> = { accept: 'application/json', ...requestOptions.headers };
      const cookie = cookieHeader(target);
      if (cookie !== undefined) headers.cookie = cookie;
      if (requestOptions.json !== undefined) headers['content-type'] = 'application/json';
      const response = await request(target, {
        method: (requestOptions.method ?? 'GET') as 'GET',
        headers,
        body: requestOptions.json === undefined ? null : JSON.stringify(requestOptions.json),
        dispatcher: agent,
      });
      store(target, response.headers['set-cookie']);
      const text = await response.body.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: the text itself
      }
      return { status: response.statusCode, headers: response.headers, body };
    },
    cookies(host) {
      return Object.fromEntries(
        [...jar].filter(([, cookie]) => cookie.host === host).map(([key, cookie]) => [key.split(' ')[2], cookie.value]),
      );
    },
    close: () => agent.close(),
  };
}

function decodeEntities(value: string): string {
  return value
    .replace(/&#(\d+);/g, (_match, code: string) => String.fromCharCode(Number(code)))
    .replace(/&amp;/g, '&')
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');
}
