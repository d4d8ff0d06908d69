/**
 * docs/benchmarks.md is written by more than one bench: the guard bench writes the page, and every
 * other bench owns one marked section of it that the guard bench carries over unchanged.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const start = (name: string) => `<!-- bench:${name}:start -->`;
const end = (name: string) => `<!-- bench:${name}:end -->`;
const SECTION = /<!-- bench:([a-z-]+):start -->[\s\S]*?<!-- bench:\1:end -->\n?/g;

/** The marked sections of the page as it is now, to append after a rewrite. */
export function keptSections(file: string): string {
  if (!existsSync(file)) return '';
  return (readFileSync(file, 'utf8').match(SECTION) ?? [])
    .map((section) => (section.endsWith('\n') ? section : `${section}\n`))
    .join('\n');
}

/** Replaces (or appends) the section `name` of the page. */
export function writeSection(file: string, name: string, markdown: string): void {
  const block = `${start(name)}\n${markdown.trim()}\n${end(name)}\n`;
  const page = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const pattern = new RegExp(`${start(name)}[\\s\\S]*?${end(name)}\\n?`);
  writeFileSync(file, pattern.test(page) ? page.replace(pattern, block) : `${page.trimEnd()}\n\n${block}`);
}
