/** The reporters: each renders a `ScanReport` and nothing else. */
export { renderHtml } from './html.ts';
export { renderJson } from './json.ts';
export { renderJunit } from './junit.ts';
export { renderSarif } from './sarif.ts';
export { renderTerminal, type TerminalOptions } from './terminal.ts';
