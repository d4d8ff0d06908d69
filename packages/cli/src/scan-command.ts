/**
 * `lockstep scan`: attacks every registered service with the scanner's catalogue, as the local
 * administrator (who obtains the scanner's identity and test tokens from the control plane). Prints
 * the service × attack matrix; writes JSON, SARIF, JUnit and HTML reports on request; sends the run
 * to the monitor's scan page. Exit 0: nothing got through; 1: a weak link; 2: the scan could not run
 * (or could not judge every target).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ManifestError, parseManifest, scan, sendScanReport, ScanSetupError, type ScanReport } from '@lockstep/scanner';
import { renderHtml, renderJson, renderJunit, renderSarif, renderTerminal } from '@lockstep/scanner/report';
import { adminAccess, localState, UsageError } from './state.ts';

type Out = (line: string) => void;

export async function scanCommand(argv: readonly string[], out: Out, err: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      manifest: { type: 'string' },
      name: { type: 'string' },
      only: { type: 'string', multiple: true },
      concurrency: { type: 'string' },
      rate: { type: 'string' },
      json: { type: 'string' },
      sarif: { type: 'string' },
      junit: { type: 'string' },
      html: { type: 'string' },
      'no-monitor': { type: 'boolean' },
      color: { type: 'boolean' },
      'no-color': { type: 'boolean' },
    },
  });
  if (positionals.length > 0)
    throw new UsageError(
      `lockstep scan takes no positional arguments (got ${positionals.join(' ')}); see lockstep help`,
    );
  const number = (value: string | undefined, option: string) => {
    if (value === undefined) return undefined;
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed <= 0)
      throw new UsageError(`--${option} must be a positive number; got ${value}`);
    return parsed;
  };
  let manifest;
  try {
    manifest =
      values.manifest === undefined
        ? undefined
        : parseManifest(parseYaml(readFileSync(values.manifest, 'utf8')), values.manifest);
  } catch (error) {
    if (error instanceof ManifestError || (error as { code?: string }).code === 'ENOENT')
      throw new UsageError((error as Error).message);
    throw new UsageError(`${values.manifest}: not YAML or JSON (${(error as Error).message})`);
  }
  const { urls, ...credentials } = adminAccess(localState());
  // Every replica, asked in turn (the scanner's calls fail over as the admin commands do).
  const access = { ...credentials, url: urls };
  const tty = process.stderr.isTTY === true;
  const progress = tty ? progressBar() : null;
  let report: ScanReport;
  try {
    report = await scan({
      controlPlane: access,
      ...(values.name === undefined ? {} : { name: values.name }),
      ...(manifest === undefined ? {} : { manifest }),
      ...(values.only === undefined ? {} : { only: values.only }),
      ...(number(values.concurrency, 'concurrency') === undefined
        ? {}
        : { concurrency: number(values.concurrency, 'concurrency') as number }),
      ...(number(values.rate, 'rate') === undefined ? {} : { rate: number(values.rate, 'rate') as number }),
      ...(progress === null ? {} : { onProgress: progress }),
      onWarning: (message) => err(`lockstep scan: ${message}`),
    });
  } catch (error) {
    if (error instanceof ScanSetupError || error instanceof TypeError) {
      err(`lockstep scan: the scan could not run: ${error.message}`);
      return 2;
    }
    throw error;
  } finally {
    if (progress !== null) err('');
  }
  const color =
    values.color === true ||
    (values['no-color'] !== true && process.stdout.isTTY === true && process.env.NO_COLOR === undefined);
  out(renderTerminal(report, { color }));
  const files: [string | undefined, (report: ScanReport) => string][] = [
    [values.json, renderJson],
    [values.sarif, renderSarif],
    [values.junit, renderJunit],
    [values.html, renderHtml],
  ];
  for (const [file, render] of files) {
    if (file !== undefined) {
      writeFileSync(file, render(report));
      out(`wrote ${file}`);
    }
  }
  if (values['no-monitor'] !== true) {
    try {
      await sendScanReport(access, report);
      out(`sent to the monitor: the dashboard's Scans page shows run ${report.runId}`);
    } catch (error) {
      err(
        `lockstep scan: could not send the results to the monitor (${(error as Error).message}); the reports above are complete`,
      );
    }
  }
  return report.exitCode;
}

/** One line, rewritten in place on a terminal. */
function progressBar(): (done: number, total: number) => void {
  let last = -1;
  return (done, total) => {
    const percent = Math.floor((done / Math.max(total, 1)) * 100);
    if (percent === last && done !== total) return;
    last = percent;
    const width = 30;
    const filled = Math.round((width * done) / Math.max(total, 1));
    process.stderr.write(`\r  scanning [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`);
  };
}
