/**
 * The launcher's supervisor on real child processes (tiny Node programs that exit when told), with
 * short delays: a death is said with its cause and log, the restart comes after a delay that doubles
 * with each quick crash, a crash loop is given up loudly (and, for the control plane, the rest is told),
 * a restart that waits for the control plane is retried however long it takes and never given up, and a
 * stop on purpose — also one during a pending restart — is never followed by a restart.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, it } from 'node:test';
import { supervise, WaitingFor, type RestartPolicy } from '../supervise.ts';

const QUICK: RestartPolicy = { firstDelayMs: 200, maxDelayMs: 300, stableMs: 60_000, giveUpAfter: 3 };

/** A process that is ready at once and exits with `code` after `lifeMs` (never, when null). */
function program(code: number, lifeMs: number | null): () => Promise<ChildProcess> {
  return async () => {
    const child = spawn(process.execPath, [
      '-e',
      lifeMs === null ? 'setInterval(() => {}, 1000)' : `setTimeout(() => process.exit(${code}), ${lifeMs})`,
    ]);
    await new Promise((resolve) => child.once('spawn', resolve));
    return child;
  };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > 30_000) assert.fail(`${what}: not within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('supervise', () => {
  it('says what died and how, restarts with a doubling delay, and gives up loudly on a crash loop', async () => {
    const lines: string[] = [];
    const supervised = await supervise({
      name: 'orders',
      logFile: '/var/log/orders.log',
      say: (line) => lines.push(line),
      start: program(3, 100),
      restartPolicy: QUICK,
    });
    try {
      await until(() => lines.some((line) => line.startsWith('GAVE UP')), 'giving up');
      assert.deepEqual(
        lines.map((line) => line.replace(/after [\d.]+ s/, 'after N s')),
        [
          'orders died (exit code 3) after N s; its log: /var/log/orders.log',
          'restarting orders in 0.2 s (restart 1 of at most 2 in a row)',
          'orders restarted: ready again',
          'orders died (exit code 3) after N s; its log: /var/log/orders.log',
          // Doubled, and capped at maxDelayMs.
          'restarting orders in 0.3 s (restart 2 of at most 2 in a row)',
          'orders restarted: ready again',
          'orders died (exit code 3) after N s; its log: /var/log/orders.log',
          'GAVE UP restarting orders: it died 3 times in a row, each within 60 s of starting. Its log says why: /var/log/orders.log. ' +
            'Fix that and run npm start again (the rest of the shop keeps running)',
        ],
      );
      assert.equal(supervised.child, undefined, 'it stays down');
    } finally {
      await supervised.stop();
    }
  });

  it('gives up on a process the rest cannot do without: says so, without "the rest keeps running", and tells the caller once', async () => {
    const lines: string[] = [];
    let gaveUp = 0;
    const supervised = await supervise({
      name: 'the control plane',
      logFile: 'control-plane.log',
      say: (line) => lines.push(line),
      start: program(1, 50),
      restartPolicy: QUICK,
      onGiveUp: () => {
        gaveUp += 1;
      },
    });
    try {
      await until(() => gaveUp > 0, 'giving up');
      assert.equal(
        lines.at(-1),
        'GAVE UP restarting the control plane: it died 3 times in a row, each within 60 s of starting. ' +
          'Its log says why: control-plane.log. Fix that and run npm start again',
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(gaveUp, 1);
    } finally {
      await supervised.stop();
    }
  });

  it('names the signal of a kill, and a restart that fails counts as a crash', async () => {
    const lines: string[] = [];
    let starts = 0;
    const start = async () => {
      starts += 1;
      if (starts === 2) throw new Error('payments exited (exit code 1) while starting: boom');
      return program(0, null)();
    };
    const supervised = await supervise({
      name: 'payments',
      logFile: 'payments.log',
      say: (line) => lines.push(line),
      start,
      restartPolicy: QUICK,
    });
    try {
      supervised.child?.kill('SIGKILL');
      await until(() => lines.includes('payments restarted: ready again'), 'the restart');
      assert.match(lines[0] ?? '', /^payments died \(killed by SIGKILL\) after [\d.]+ s; its log: payments\.log$/);
      assert.equal(lines[2], 'payments could not restart: payments exited (exit code 1) while starting: boom');
      assert.equal(
        lines[3],
        'restarting payments in 0.3 s (restart 2 of at most 2 in a row)',
        'the failed start counted',
      );
      assert.notEqual(supervised.child, undefined);
    } finally {
      await supervised.stop();
    }
  });

  it('retries a restart that waits for the control plane with the capped delay, however often, and never gives up on it', async () => {
    const lines: string[] = [];
    let starts = 0;
    // Twice as many failed restarts as would give up, were they crashes.
    const waiting = 2 * QUICK.giveUpAfter;
    const start = async () => {
      starts += 1;
      if (starts > 1 && starts <= 1 + waiting)
        throw new WaitingFor('no join token: the control plane at https://127.0.0.1:1 does not answer');
      return program(0, null)();
    };
    const restartPolicy = { ...QUICK, firstDelayMs: 100, maxDelayMs: 400 };
    const supervised = await supervise({
      name: 'orders',
      logFile: 'orders.log',
      say: (line) => lines.push(line),
      start,
      restartPolicy,
    });
    try {
      supervised.child?.kill('SIGKILL');
      await until(() => lines.includes('orders restarted: ready again'), 'the restart once the control plane answers');
      assert.equal(lines[1], 'restarting orders in 0.1 s (restart 1 of at most 2 in a row)');
      // Doubling on from the crash's delay, capped at maxDelayMs.
      assert.deepEqual(
        lines.slice(2, -1),
        ['0.2 s', '0.4 s', '0.4 s', '0.4 s', '0.4 s', '0.4 s'].map(
          (delay) =>
            'orders could not restart: no join token: ' +
            `the control plane at https://127.0.0.1:1 does not answer; trying again in ${delay} (not counted as a crash: the cause is not in it)`,
        ),
      );
      assert.equal(lines.length, 2 + waiting + 1);
      assert.notEqual(supervised.child, undefined);

      // A quick crash afterwards counts on from the one before: the waits did not add to the count.
      supervised.child?.kill('SIGKILL');
      await until(
        () => lines.filter((line) => line === 'orders restarted: ready again').length === 2,
        'the next restart',
      );
      assert.ok(lines.includes('restarting orders in 0.2 s (restart 2 of at most 2 in a row)'), lines.join('\n'));
      assert.ok(!lines.some((line) => line.startsWith('GAVE UP')), lines.join('\n'));
    } finally {
      await supervised.stop();
    }
  });

  it('never restarts what was stopped on purpose, also when the stop comes while a restart is due', async () => {
    const lines: string[] = [];
    let starts = 0;
    const supervised = await supervise({
      name: 'inventory',
      logFile: 'inventory.log',
      say: (line) => lines.push(line),
      start: () => {
        starts += 1;
        return program(0, null)();
      },
      restartPolicy: { ...QUICK, firstDelayMs: 500 },
    });
    const first = supervised.child;
    first?.kill('SIGKILL');
    await until(() => lines.some((line) => line.startsWith('restarting inventory')), 'the restart announced');
    await supervised.stop();
    await new Promise((resolve) => setTimeout(resolve, 800));
    assert.equal(starts, 1, 'the due restart did not happen');
    assert.equal(supervised.child, undefined);

    const again = await supervise({
      name: 'gateway',
      logFile: 'gateway.log',
      say: (line) => lines.push(line),
      start: program(0, null),
      restartPolicy: QUICK,
    });
    const child = again.child as ChildProcess;
    await again.stop();
    assert.notEqual(child.signalCode ?? child.exitCode, null, 'the process is gone');
    assert.ok(!lines.some((line) => line.startsWith('gateway')), lines.join('\n'));
  });
});
