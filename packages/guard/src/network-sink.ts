/**
 * The network sink: ships decision events to the monitor's collector over mTLS, in gzip-compressed
 * batches. It does not listen for decisions itself. It tails a journal file — the guard's audit file
 * (`audit.file`) when there is one, else a journal of its own in `spoolDir` written by the same audit
 * file sink — and that file is the source of truth it resumes from:
 *
 * - complete lines are read by byte offset, numbered 1, 2, 3… within a stream and sent in batches;
 * - after each acknowledged batch, `spoolDir/cursor.json` records the stream, the last acknowledged
 *   position and the byte offset after it. A restart, also after `kill -9`, resumes the same stream
 *   there: what was in the file but not yet acknowledged is sent again under the same positions (the
 *   collector stores a stream's position once and counts the duplicates);
 * - while the collector is away the cursor stays behind: the file is the spool;
 * - a line that does not parse (torn by a crash) is skipped and counted in the stream's `dropped`;
 * - events that never reached the file (a full journal, a failed write) are counted in `dropped`
 *   too, and the count is in the cursor within a round; a batch the collector refuses as invalid is
 *   skipped (logged): its positions never arrive, and the monitor reports them missing;
 * - any other answer of the collector, or none, keeps the events in the file: they are sent again;
 * - a clean `close()` ships everything and ends the stream (`final`); the next start begins a new
 *   stream where this one ended. When nothing was sent for `keepAliveMs`, an empty batch says that
 *   the stream is alive.
 *
 * Bounded disk: the sink's own journal is cut into segments, each deleted once shipped; when the
 * unshipped journal reaches `maxSpoolBytes`, events are dropped before they are journaled — counted,
 * kept in the cursor (also across a restart), and the count travels with every later batch. The
 * guard's audit file is never deleted or truncated; when it was replaced while the guard was down
 * (logrotate), the old stream ends there and a new stream starts at the beginning of the new file.
 *
 * Nothing of this runs on the request path: the journal's writer only queues the event.
 *
 * With several collector URLs (one on each replica of the control plane), a batch that gets no
 * answer, or a 502/503/504, is sent to the next at once (the collector stores a stream's position
 * once, whichever replica took it); the one that answered last is asked first.
 *
 * `spoolDir` holds `lock` (the pid of the one process that ships from it), `cursor.json`, and the
 * sink's own journal `journal-<n>.jsonl`.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  linkSync,
  mkdirSync,
  openSync,
  read,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { controlPlaneEndpoints, isFailover, serverSvidCheck } from '@lockstep/identity';
import { Agent, request } from 'undici';
import { createAuditFileSink, journalSegmentPath, journalSegments, type AuditSink } from './audit-file-sink.ts';
import { GuardConfigError } from './errors.ts';

const compress = promisify(gzip);

export interface NetworkSinkOptions {
  /** The collector, e.g. https://control-plane:8443/v1/audit/events. This or `urls`. */
  readonly url?: string;
  /** The collector on each replica of the control plane, asked in turn. This or `url`. */
  readonly urls?: readonly string[];
  /** The current SVID and trust bundle (read for every new connection: rotations are followed). */
  readonly tls: () => { readonly cert: string; readonly key: string; readonly ca: string };
  /** The collector's SPIFFE ID (its certificate names no host). */
  readonly serverSpiffeId: string;
  /** Ship only this service's events (a process may run more than one guard). */
  readonly service?: string;
  /** The cursor, the lock and the sink's own journal (0700). One live process per directory. */
  readonly spoolDir: string;
  /**
   * The guard's audit file, written by its audit file sink (`flush` writes what that sink holds,
   * `dropped` is its `dropped`: events it could not write, counted in the stream's drops): shipped
   * from there instead of from a journal of the sink's own.
   */
  readonly auditFile?: { readonly path: string; readonly flush: () => Promise<void>; readonly dropped: () => number };
  /** Where its own journal's writer runs (audit-file-sink.ts `thread`); default inline. */
  readonly journalThread?: 'worker' | 'inline';
  /** Default 64 MiB: the most its own journal holds unshipped; beyond it, events are dropped and counted. */
  readonly maxSpoolBytes?: number;
  /** Default 500 events. */
  readonly batchSize?: number;
  /** Default 1 s: how often the journal is read (the longest an event waits before it is sent). */
  readonly flushMs?: number;
  /** Default 2 s: wait before trying an unreachable collector again. */
  readonly retryMs?: number;
  /** Default 30 s: an empty batch when nothing was sent for so long (silence then means a dead stream). */
  readonly keepAliveMs?: number;
  readonly onError?: (error: Error) => void;
  /** Things an operator should know (a replaced audit file, an unreadable cursor). Default: `onError`. */
  readonly onWarning?: (message: string) => void;
}

export interface NetworkSinkStats {
  /** Events the collector acknowledged. */
  sent: number;
  /** Events that waited in the journal for the collector (a send failed, or they were sent after a restart). */
  spooled: number;
  /**
   * The current stream's dropped events: unparsable lines, and events that never reached the journal
   * (it was full, or a write failed).
   */
  dropped: number;
  /** Events the collector refused as invalid (never expected; logged; the monitor sees their positions missing). */
  refused: number;
}

export interface NetworkSink {
  /** The current stream's id (it survives a restart until a clean close). */
  readonly stream: string;
  readonly stats: NetworkSinkStats;
  /** Writes what the journal's writer holds, then sends everything; resolves when done or the collector fails. */
  flush(): Promise<void>;
  /** Ships what is left (briefly) and ends the stream; what the collector did not take goes with the next start. */
  close(): Promise<void>;
}

/** The journal file being read: the guard's audit file, or one segment of the sink's own journal. */
interface JournalFile {
  readonly path: string;
  /** The segment number in the sink's own journal; null for the guard's audit file. */
  readonly segment: number | null;
  readonly dev: string;
  readonly ino: string;
  readonly fd: number;
}

/** `spoolDir/cursor.json`: where shipping resumes after a restart. */
interface Cursor {
  readonly version: 1;
  readonly stream: string;
  /** The last position the collector acknowledged. */
  readonly seq: number;
  /** `written` of the last acknowledged batch (what the collector was told; never goes back). */
  readonly written: number;
  /** The journal file, and the byte offset after the line of `seq` (and after lines skipped behind it). */
  readonly file: Omit<JournalFile, 'fd'>;
  readonly offset: number;
  /**
   * The stream's dropped events: `skipped` unparsable lines up to `offset`, and the events lost
   * elsewhere so far (never written to the journal: it was full, or a write failed).
   */
  readonly dropped: number;
  readonly skipped: number;
  /** The stream ended with an acknowledged final batch: the next start begins a new stream at `offset`. */
  readonly closed: boolean;
}

/** A line read and numbered, waiting for its acknowledgement. */
interface Entry {
  readonly seq: number;
  /** The event's JSON text, exactly as in the journal. */
  readonly line: string;
  readonly file: JournalFile;
  /** The byte offset after its line. */
  readonly end: number;
  /** The stream's skipped lines up to `end`. */
  readonly skipped: number;
}

const CURSOR_FILE = 'cursor.json';
const LOCK_FILE = 'lock';
/** A spool of batches from versions that kept events in memory: replayed once, then deleted. */
const LEGACY_SPOOL_FILE = 'spool.jsonl';
/** The most read from the journal in one go. */
const READ_BYTES = 1024 * 1024;
/** A longer line cannot be shipped (the collector takes 8 MiB inflated per batch): skipped and counted. */
const MAX_LINE_BYTES = 4 * 1024 * 1024;
/** The most event text in one batch. */
const BATCH_TEXT = 4 * 1024 * 1024;
const JOURNAL_SEGMENTS = 8;
/** How long `close()` goes on shipping a backlog before it leaves the rest to the next start. */
const CLOSE_BUDGET_MS = 5_000;
const STREAM_ID = /^[\w-]{1,64}$/;
/** The collector's path on the control plane (the monitor's `COLLECTOR_PATH`). */
const COLLECTOR_PATH = '/v1/audit/events';

export function createNetworkSink(options: NetworkSinkOptions): NetworkSink {
  if ((options.url === undefined) === (options.urls === undefined))
    throw new TypeError('createNetworkSink takes either url: "https://…/v1/audit/events" or urls: [...], not both');
  const collectors = controlPlaneEndpoints(options.urls ?? [options.url as string]);
  const dir = resolve(options.spoolDir);
  const batchSize = options.batchSize ?? 500;
  const retryMs = options.retryMs ?? 2_000;
  const keepAliveMs = options.keepAliveMs ?? 30_000;
  const { service } = options;
  const cursorPath = join(dir, CURSOR_FILE);
  const legacySpoolPath = join(dir, LEGACY_SPOOL_FILE);
  const report = (error: Error): void => options.onError?.(error);
  const warn = (message: string): void => {
    if (options.onWarning === undefined) report(new Error(message));
    else options.onWarning(message);
  };
  const stats = {
    sent: 0,
    spooled: 0,
    refused: 0,
    get dropped() {
      return skipped + lost;
    },
  };

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const unlock = lockSpoolDir(dir);

  // The stream: its id, the last acknowledged and the last assigned position, what it dropped.
  let stream = '';
  let acknowledged = 0;
  let assigned = 0;
  let writtenFloor = 0;
  let skipped = 0;
  // Events dropped without a line to skip: never written to the journal (it was full, or a write failed).
  let lost = 0;
  // What the cursor on disk says of `lost`.
  let lostOnDisk = 0;
  // The drop count the collector last acknowledged (-1: not known, after a restart).
  let droppedSent = 0;
  // Reading: the file, the offset after the last complete line taken, the lines not yet acknowledged.
  let file: JournalFile;
  let offset = 0;
  let pending: Entry[] = [];
  let pendingText = 0;
  // Where the cursor on disk points.
  let cursorAt: { file: JournalFile; offset: number; skipped: number };
  let buffer = Buffer.allocUnsafe(READ_BYTES);
  let inLongLine = false;
  // Shipping.
  let agent: { cert: string; dispatcher: Agent } | null = null;
  let backoffUntil = 0;
  let lastSentAt = Date.now();
  let working: Promise<unknown> | null = null;
  let closing: Promise<void> | null = null;
  let legacySpool = existsSync(legacySpoolPath);
  // `spooled`: positions up to `spooledMark` are counted; while `behind`, acknowledged ones count too.
  let spooledMark = 0;
  let behind = false;

  let journal: AuditSink | null = null;
  // The journal writer's `dropped` already counted in `lost` (it starts at 0 in every process).
  let writerDropsSeen = 0;
  let oldestSegment = 0;
  try {
    if (options.auditFile === undefined) {
      const maxBytes = options.maxSpoolBytes ?? 64 * 1024 * 1024;
      journal = createAuditFileSink(dir, {
        segments: { bytes: Math.ceil(maxBytes / JOURNAL_SEGMENTS), count: JOURNAL_SEGMENTS },
        ...(options.journalThread === undefined ? {} : { thread: options.journalThread }),
        ...(service === undefined ? {} : { service }),
        onError: (error) => report(new Error(`the audit journal cannot be written: ${error.message}`)),
      });
      oldestSegment = journalSegments(dir)[0] ?? 1;
    }
    file = resume();
  } catch (error) {
    void journal?.close();
    unlock();
    throw error;
  }
  const timer = setInterval(() => void kick(), options.flushMs ?? 1_000);
  timer.unref();

  /** Opens the journal where the cursor says, or starts a new stream; returns the file to read. */
  function resume(): JournalFile {
    const saved = readCursor();
    const own = options.auditFile === undefined;
    const auditPath = options.auditFile === undefined ? null : resolve(options.auditFile.path);
    // The cursor names this journal (its own, or this audit file path), and the file is still the same.
    const savedPath =
      saved?.file.segment === null
        ? saved.file.path
        : saved?.file.segment === undefined
          ? null
          : journalSegmentPath(dir, saved.file.segment);
    const sameJournal = saved !== null && (own ? saved.file.segment !== null : saved.file.path === auditPath);
    if (saved !== null && sameJournal && savedPath !== null && existsSync(savedPath)) {
      const opened = openJournalFile(savedPath, saved.file.segment);
      if (opened.dev === saved.file.dev && opened.ino === saved.file.ino && fstatSync(opened.fd).size >= saved.offset) {
        return saved.closed ? startStream(opened, saved.offset) : continueStream(saved, opened);
      }
      closeSync(opened.fd);
    }
    const unfinished =
      saved === null || saved.closed
        ? ''
        : `stream ${saved.stream} ends at position ${saved.seq} (the monitor reports it as ended uncleanly)`;
    if (auditPath === null) {
      if (unfinished !== '') {
        warn(
          `audit shipping: the journal in ${dir} is not the one the cursor names (${savedPath ?? '?'}); ` +
            `${unfinished}; shipping its oldest segment in a new stream`,
        );
      }
      const first = journalSegments(dir)[0] ?? 1;
      return startStream(openJournalFile(journalSegmentPath(dir, first), first), 0);
    }
    const opened = openJournalFile(auditPath, null);
    if (sameJournal) {
      if (unfinished !== '') {
        warn(
          `audit shipping: ${auditPath} is not the file shipped until now (another file, or shorter than the ` +
            `${saved.offset} bytes shipped: rotated or truncated while the guard was down); what it held after that ` +
            `point cannot be found; ${unfinished}; a new stream starts at the beginning of the new file`,
        );
      }
      return startStream(opened, 0);
    }
    // First start, or shipped from the sink's own journal until now: the file's lines so far were
    // written before it was this sink's journal.
    if (unfinished !== '') {
      warn(`audit shipping: ${auditPath} is shipped from now on, not the journal in ${dir}; ${unfinished}`);
    }
    return startStream(opened, fstatSync(opened.fd).size);
  }

  /** Resumes the stream of the cursor: what follows its offset is sent (again) under the positions after its `seq`. */
  function continueStream(saved: Cursor, opened: JournalFile): JournalFile {
    stream = saved.stream;
    acknowledged = saved.seq;
    assigned = saved.seq;
    spooledMark = saved.seq;
    writtenFloor = saved.written;
    skipped = saved.skipped;
    lost = saved.dropped - saved.skipped;
    lostOnDisk = lost;
    // The cursor may hold drops the collector was never told of: the next batch says them.
    droppedSent = -1;
    offset = saved.offset;
    cursorAt = { file: opened, offset, skipped };
    // What follows the cursor waited for this start.
    behind = fstatSync(opened.fd).size > offset;
    if (opened.segment !== null) deleteShippedSegments(opened.segment).catch(report);
    return opened;
  }

  /** A new stream from `at` in `opened`; its id is on disk before anything is sent under it. */
  function startStream(opened: JournalFile, at: number): JournalFile {
    stream = randomBytes(9).toString('base64url');
    acknowledged = 0;
    assigned = 0;
    spooledMark = 0;
    writtenFloor = 0;
    skipped = 0;
    lost = 0;
    lostOnDisk = 0;
    droppedSent = 0;
    offset = at;
    pending = [];
    pendingText = 0;
    inLongLine = false;
    behind = false;
    cursorAt = { file: opened, offset: at, skipped: 0 };
    writeFileAtomically(cursorPath, cursorText(cursorAt, false));
    return opened;
  }

  function readCursor(): Cursor | null {
    try {
      return readCursorFile(cursorPath);
    } catch (error) {
      warn(`audit shipping: the cursor ${cursorPath} is unreadable (${(error as Error).message}); a new stream starts`);
      return null;
    }
  }

  function cursorText(at: { file: JournalFile; offset: number; skipped: number }, closed: boolean): string {
    const cursor: Cursor = {
      version: 1,
      stream,
      seq: acknowledged,
      written: writtenFloor,
      file: { path: at.file.path, segment: at.file.segment, dev: at.file.dev, ino: at.file.ino },
      offset: at.offset,
      dropped: at.skipped + lost,
      skipped: at.skipped,
      closed,
    };
    return `${JSON.stringify(cursor)}\n`;
  }

  // Reading the journal.

  /** Reads the next complete lines into `pending`; false when there is nothing more to read now. */
  async function readChunk(): Promise<boolean> {
    const count = await readAt(file.fd, buffer, offset);
    if (count === 0) return atEnd();
    const last = buffer.lastIndexOf(0x0a, count - 1);
    if (last < 0) {
      if (count < buffer.length) {
        // A line still being written waits for its newline — unless nothing will ever follow it
        // (the rest of a complete segment, torn by a crash).
        if (!segmentComplete()) return false;
        inLongLine = false;
        skipped += 1;
        offset += count;
        return true;
      }
      if (buffer.length < MAX_LINE_BYTES) {
        buffer = Buffer.allocUnsafe(buffer.length * 2);
        return true;
      }
      inLongLine = true;
      offset += count;
      return true;
    }
    for (let start = 0; start <= last;) {
      const end = buffer.indexOf(0x0a, start);
      take(start, end, offset + end + 1);
      start = end + 1;
    }
    offset += last + 1;
    if (buffer.length > READ_BYTES) buffer = Buffer.allocUnsafe(READ_BYTES);
    return true;
  }

  function take(start: number, end: number, after: number): void {
    if (inLongLine) {
      inLongLine = false;
      skipped += 1;
      return;
    }
    if (end === start) return;
    const line = buffer.toString('utf8', start, end);
    let event: unknown;
    try {
      event = JSON.parse(line);
    } catch {
      skipped += 1;
      return;
    }
    if (typeof event !== 'object' || event === null || Array.isArray(event)) {
      skipped += 1;
      return;
    }
    // Another guard's decision in a shared audit file: not this stream's to number.
    if (service !== undefined && (event as { service?: unknown }).service !== service) return;
    assigned += 1;
    pending.push({ seq: assigned, line, file, end: after, skipped });
    pendingText += line.length;
  }

  /** At the end of what is written: moves on to the next segment, or notices a truncated audit file. */
  async function atEnd(): Promise<boolean> {
    if (file.segment !== null) {
      if (!segmentComplete()) return false;
      // The last lines of this segment may have landed since the read.
      if (fstatSync(file.fd).size > offset) return true;
      closeSync(file.fd);
      file = openJournalFile(journalSegmentPath(dir, file.segment + 1), file.segment + 1);
      offset = 0;
      return true;
    }
    if (pending.length === 0 && fstatSync(file.fd).size < offset) {
      warn(
        `audit shipping: ${file.path} was truncated while the guard was running (copytruncate?); stream ${stream} ` +
          `ends at position ${assigned}; a new stream starts at the beginning of the file. Rotate by renaming it.`,
      );
      startStream(file, 0);
      return true;
    }
    return false;
  }

  /** The writer starts segment n+1 only after its last write to n: once n+1 exists, n is complete. */
  function segmentComplete(): boolean {
    return file.segment !== null && existsSync(journalSegmentPath(dir, file.segment + 1));
  }

  async function deleteShippedSegments(below: number): Promise<void> {
    for (; oldestSegment < below; oldestSegment += 1) {
      await rm(journalSegmentPath(dir, oldestSegment), { force: true });
    }
  }

  // Shipping.

  // The collector is known by its SPIFFE ID, read from its certificate's DER like every identity.
  const collectorIdentity = serverSvidCheck(options.serverSpiffeId, { hint: 'it is not the audit collector' });

  // With another collector to go to, one that does not connect within 2 s is left for it.
  const connectTimeout = collectors.urls.length > 1 ? { timeout: 2_000 } : {};

  function dispatcher(): Agent {
    const material = options.tls();
    if (agent?.cert !== material.cert) {
      void agent?.dispatcher.close();
      agent = {
        cert: material.cert,
        dispatcher: new Agent({ connect: { ...material, checkServerIdentity: collectorIdentity, ...connectTimeout } }),
      };
    }
    return agent.dispatcher;
  }

  /**
   * `refused` (with the collector's answer): the collector itself refused this batch as invalid (or too
   * large), and will refuse it again: keeping it would block everything behind it. Any other answer may
   * come from something else (a proxy, a wrong URL, a collector starting up): 'failed', and the journal
   * keeps the events.
   */
  async function post(text: string, events: number): Promise<'acknowledged' | 'failed' | { refused: string }> {
    const body = await compress(Buffer.from(text));
    // Each collector in turn while the failure is an outage: the collector stores a position once.
    const failures: string[] = [];
    for (const url of collectors.order()) {
      const sent = await postTo(url, body, events);
      if (sent.outcome !== 'failed') return sent.outcome;
      failures.push(sent.failure);
      if (!sent.askNext) break;
    }
    report(new Error(failures.join('; then ')));
    return 'failed';
  }

  /** One collector's answer: acknowledged, refused, or failed — and then whether to ask the next one. */
  async function postTo(
    url: string,
    body: Buffer,
    events: number,
  ): Promise<
    { outcome: 'acknowledged' | { refused: string } } | { outcome: 'failed'; failure: string; askNext: boolean }
  > {
    let status: number;
    let answer: string;
    try {
      const response = await request(url, {
        method: 'POST',
        dispatcher: dispatcher(),
        body,
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      status = response.statusCode;
      answer = await response.body.text();
    } catch (error) {
      const askNext = isFailover(error);
      if (askNext) collectors.failed(url);
      const at = collectors.urls.length > 1 ? ` at ${url}` : '';
      const failure = `the collector is unreachable${at} (${(error as Error).message}); the journal keeps the events`;
      return { outcome: 'failed', failure, askNext };
    }
    if (status === 200) {
      collectors.ok(url);
      stats.sent += events;
      return { outcome: 'acknowledged' };
    }
    if (collectorRefused(status, answer)) {
      collectors.ok(url);
      stats.refused += events;
      return { outcome: { refused: `${status} ${answer.slice(0, 300)}` } };
    }
    const askNext = isFailover(status);
    if (askNext) collectors.failed(url);
    return { outcome: 'failed', failure: unexpectedAnswer(url, status, answer), askNext };
  }

  /** Sends `entries` (possibly none) as the next batch; once it is acknowledged, the cursor moves past them. */
  async function ship(entries: readonly Entry[], final: boolean): Promise<boolean> {
    const dropped = stats.dropped;
    const written = Math.max(writtenFloor, assigned);
    // The events go as the journal has them (each line was parsed once: it is JSON).
    const head = `{"stream":"${stream}","dropped":${dropped},"written":${written}${final ? ',"final":true' : ''}`;
    let text = `${head},"events":[`;
    for (let index = 0; index < entries.length; index += 1) {
      const entry = entries[index] as Entry;
      text += `${index === 0 ? '' : ','}{"seq":${entry.seq},"event":${entry.line}}`;
    }
    text += ']}';
    const outcome = await post(text, entries.length);
    if (outcome === 'failed') return false;
    const last = entries.at(-1);
    if (typeof outcome === 'object') {
      // Skipped for good. Their positions were numbered and never arrive: the monitor reports them as
      // missing from the stream (not also as dropped, which would count them twice).
      const positions = `${entries[0]?.seq ?? 0}–${last?.seq ?? 0}`;
      report(
        new Error(
          `AUDIT EVENTS DROPPED: the collector refused positions ${positions} of stream ${stream} ` +
            `(${entries.length} events) as invalid (${outcome.refused}); they are skipped, and the monitor reports ` +
            'them as missing from the stream',
        ),
      );
    }
    lastSentAt = Date.now();
    writtenFloor = written;
    droppedSent = dropped;
    if (last !== undefined) {
      pending = pending.slice(entries.length);
      for (const entry of entries) pendingText -= entry.line.length;
      acknowledged = last.seq;
      if (behind) countSpooled(last.seq);
      else spooledMark = Math.max(spooledMark, last.seq);
    }
    // Up to the read offset when nothing read is left unacknowledged: skipped lines and a finished
    // segment are behind the cursor too.
    const at =
      pending.length === 0
        ? { file, offset, skipped }
        : last === undefined
          ? cursorAt
          : { file: last.file, offset: last.end, skipped: last.skipped };
    cursorAt = at;
    await writeFileAtomicallyAsync(cursorPath, cursorText(at, final));
    lostOnDisk = lost;
    if (at.file.segment !== null) await deleteShippedSegments(at.file.segment);
    return true;
  }

  function countSpooled(upTo: number): void {
    if (upTo > spooledMark) {
      stats.spooled += upTo - spooledMark;
      spooledMark = upTo;
    }
  }

  function nextBatch(): Entry[] {
    let count = 0;
    let size = 0;
    for (const entry of pending) {
      if (count === batchSize || (count > 0 && size + entry.line.length > BATCH_TEXT)) break;
      count += 1;
      size += entry.line.length;
    }
    return pending.slice(0, count);
  }

  /** Replays the spool of an earlier version under its own streams; true when it is gone. */
  async function replayLegacySpool(): Promise<boolean> {
    if (!legacySpool) return true;
    const lines = (await readFile(legacySpoolPath, 'utf8')).split('\n').filter(Boolean);
    let done = 0;
    for (const line of lines) {
      let batch: { stream?: unknown; events?: { seq?: unknown }[] };
      try {
        batch = JSON.parse(line) as typeof batch;
      } catch {
        done += 1; // a torn last line from a crash: nothing to send
        continue;
      }
      const seqs = Array.isArray(batch.events) ? batch.events.map((event) => Number(event?.seq)) : [];
      const valid = typeof batch.stream === 'string' && STREAM_ID.test(batch.stream);
      if (valid && seqs.length > 0 && seqs.every(Number.isSafeInteger)) {
        // Its own stream, and no drop count: the one it had then is not known (the collector keeps the highest).
        const written = Math.max(...seqs);
        const text = JSON.stringify({ stream: batch.stream, dropped: 0, written, events: batch.events });
        const outcome = await post(text, seqs.length);
        if (outcome === 'failed') break;
        if (typeof outcome === 'object') {
          report(
            new Error(
              `AUDIT EVENTS DROPPED: the collector refused ${seqs.length} events of stream ` +
                `${batch.stream} from the spool of an earlier version as invalid (${outcome.refused}); skipped`,
            ),
          );
        }
      }
      done += 1;
    }
    if (done < lines.length) {
      await writeFileAtomicallyAsync(legacySpoolPath, `${lines.slice(done).join('\n')}\n`);
      return false;
    }
    await rm(legacySpoolPath, { force: true });
    legacySpool = false;
    return true;
  }

  /** Ships what the journal holds until all is acknowledged (true), the collector fails, or `deadline` passes. */
  async function drain(deadline: number): Promise<boolean> {
    if (!(await replayLegacySpool())) return false;
    for (;;) {
      await keepDrops();
      while (pending.length < batchSize && pendingText < BATCH_TEXT && (await readChunk()));
      const entries = nextBatch();
      if (entries.length === 0) break;
      if (Date.now() > deadline || !(await ship(entries, false))) return false;
    }
    behind = false;
    // A drop the collector has not heard of, or a silent stream: an empty batch says so.
    if (stats.dropped !== droppedSent || Date.now() - lastSentAt >= keepAliveMs) return ship([], false);
    return true;
  }

  /**
   * Counts what the journal's writer dropped, and puts a new count in the cursor at once (at the
   * position acknowledged last), before any batch is acknowledged: a drop must survive a restart also
   * while the collector is away.
   */
  async function keepDrops(): Promise<void> {
    const writerDrops = journal?.dropped ?? options.auditFile?.dropped() ?? 0;
    lost += writerDrops - writerDropsSeen;
    writerDropsSeen = writerDrops;
    if (lost === lostOnDisk) return;
    await writeFileAtomicallyAsync(cursorPath, cursorText(cursorAt, false));
    lostOnDisk = lost;
  }

  async function work(): Promise<void> {
    // Every round, also while the collector is away.
    await keepDrops();
    if (Date.now() < backoffUntil) return;
    if (await drain(Infinity)) return;
    // The collector is away: everything read so far waits in the journal.
    behind = true;
    countSpooled(assigned);
    backoffUntil = Date.now() + retryMs;
  }

  // One round at a time.
  function kick(): Promise<unknown> {
    if (working !== null || closing !== null) return working ?? Promise.resolve();
    working = work()
      .catch(report)
      .finally(() => {
        working = null;
      });
    return working;
  }

  async function shutDown(): Promise<void> {
    clearInterval(timer);
    await working;
    try {
      // Whatever the writer holds goes to the file first: the last lines are read from there.
      await (journal === null ? options.auditFile?.flush() : journal.close());
      await keepDrops();
      // Unless the collector is known to be away, ship the rest and end the stream; what cannot be
      // sent now is sent by the next start, in the same stream.
      if (Date.now() >= backoffUntil && (await drain(Date.now() + CLOSE_BUDGET_MS))) await ship([], true);
    } catch (error) {
      report(error as Error);
    } finally {
      closeSync(file.fd);
      await agent?.dispatcher.close();
      unlock();
    }
  }

  return {
    get stream() {
      return stream;
    },
    stats,
    async flush() {
      if (closing !== null) return closing;
      await (journal === null ? options.auditFile?.flush() : journal.flush());
      backoffUntil = 0;
      await working;
      await kick();
    },
    close() {
      closing ??= shutDown();
      return closing;
    },
  };
}

/**
 * The collector refused the batch itself, for good: its refusal of an invalid batch (HTTP 400 with the
 * control plane's error body, `{ "error": "LOCKSTEP_CP_REQUEST_INVALID", "message": … }`), or 413.
 */
function collectorRefused(status: number, answer: string): boolean {
  if (status === 413) return true;
  if (status !== 400) return false;
  try {
    return (JSON.parse(answer) as { error?: unknown } | null)?.error === 'LOCKSTEP_CP_REQUEST_INVALID';
  } catch {
    return false;
  }
}

/** An answer that is neither an acknowledgement nor the collector's refusal, and what to check. */
function unexpectedAnswer(url: string, status: number, answer: string): string {
  const said = answer === '' ? '' : ` ${JSON.stringify(answer.slice(0, 200))}`;
  const check =
    status === 404 || status === 405
      ? `Is audit.collector.url the collector's ${COLLECTOR_PATH} on the control plane?`
      : status === 401 || status === 403
        ? "Is the guard's SVID valid and not revoked, and is nothing (a proxy) between the guard and the collector?"
        : status === 400
          ? "This is not the collector's refusal: is something (a proxy) between the guard and the collector?"
          : status >= 500 || status === 408 || status === 429
            ? 'The collector is busy or unavailable.'
            : `Is audit.collector.url the collector's ${COLLECTOR_PATH} on the control plane?`;
  return `the URL ${url} answered ${status}${said}; the journal keeps the events and they are sent again. ${check}`;
}

function openJournalFile(path: string, segment: number | null): JournalFile {
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
  const fd = openSync(path, 'r');
  const info = fstatSync(fd, { bigint: true });
  return { path, segment, dev: String(info.dev), ino: String(info.ino), fd };
}

/** The cursor in `path`, or null when there is none; throws when it is not a cursor. */
function readCursorFile(path: string): Cursor | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const cursor = JSON.parse(text) as Cursor;
  const count = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;
  const file = cursor.file as Partial<Cursor['file']> | undefined;
  const valid =
    cursor.version === 1 &&
    STREAM_ID.test(cursor.stream) &&
    typeof cursor.closed === 'boolean' &&
    [cursor.seq, cursor.written, cursor.offset, cursor.dropped, cursor.skipped].every(count) &&
    cursor.skipped <= cursor.dropped &&
    typeof file?.path === 'string' &&
    (file.segment === null || count(file.segment)) &&
    typeof file.dev === 'string' &&
    typeof file.ino === 'string';
  if (!valid) throw new Error('not a cursor of this version');
  return cursor;
}

function readAt(fd: number, buffer: Buffer, position: number): Promise<number> {
  return new Promise((resolve_, reject) => {
    read(fd, buffer, 0, buffer.length, position, (error, count) => (error === null ? resolve_(count) : reject(error)));
  });
}

function writeFileAtomically(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, text, { mode: 0o600, flush: true });
  renameSync(temporary, path);
}

async function writeFileAtomicallyAsync(path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, text, { mode: 0o600, flush: true });
  await rename(temporary, path);
}

// The spool directories this process holds: a lock file naming this process's pid is ours only if it
// is listed here (a container restarts its process under the same pid).
const held = new Set<string>();

/** Takes `dir/lock` for this process, or refuses while another live process holds it; returns the release. */
function lockSpoolDir(dir: string): () => void {
  const path = join(dir, LOCK_FILE);
  // The lock appears with its content (a hard link to a file written before): never empty.
  const mine = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(mine, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        linkSync(mine, path);
        held.add(path);
        return () => {
          if (!held.delete(path)) return;
          try {
            if (Number.parseInt(readFileSync(path, 'utf8'), 10) === process.pid) unlinkSync(path);
          } catch {
            // gone already
          }
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      let holder: number;
      try {
        holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
      } catch {
        continue; // released meanwhile
      }
      if (isAlive(holder, path)) {
        throw new GuardConfigError(
          `Lockstep guard: audit.collector.spoolDir ${dir} is in use by process ${holder} ` +
            `(${path}). Each guard needs a spool directory of its own: give this one another spoolDir, e.g. one per ` +
            'service and instance.',
        );
      }
      // The holder is gone (killed, or the machine restarted): its lock is stale.
      try {
        unlinkSync(path);
      } catch {
        // taken over by someone else meanwhile: try again
      }
    }
    throw new GuardConfigError(`Lockstep guard: could not take the lock ${path}; another process keeps taking it`);
  } finally {
    rmSync(mine, { force: true });
  }
}

function isAlive(pid: number, path: string): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return held.has(path);
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
