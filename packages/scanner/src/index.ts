export { scan, SCANNER_VERSION, type ScanOptions } from './scan.ts';
export { catalogue, type Attack } from './catalogue/index.ts';
export { parseManifest, ManifestError, type ScanManifest } from './manifest.ts';
export { ScanSetupError, sendScanReport, type ControlPlaneAccess, type AdminCredentials } from './kit.ts';
export type {
  AttackInfo,
  AttackResult,
  Outcome,
  ScanReport,
  ScanSummary,
  ScannedService,
  Severity,
  AttackCategory,
} from './types.ts';
export {
  renderHtml,
  renderJson,
  renderJunit,
  renderSarif,
  renderTerminal,
  type TerminalOptions,
} from './report/index.ts';
