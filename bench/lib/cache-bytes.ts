/**
 * What the guard holds per cached token: `count` fresh tokens through `guard.pipeline.admit` in
 * process (each verified once, decided once, remembered by every cache), the heap used before and
 * after, each after a full garbage collection. Beside it, what the caches charge against their byte
 * budgets for the same entries (`guard.stats()`): the estimate should not be lower than the truth.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { inProcessGuard } from './admit-cost.ts';
import { mintCustomerTokens, type BenchWorld } from './world.ts';

export interface CacheBytesReport {
  readonly tokens: number;
  readonly tokenLength: number;
  /** Heap held per token, all caches together (token, authorization memo, policy engine). */
  readonly measuredBytes: number;
  /** What the token cache and the decision cache charge per entry. */
  readonly chargedTokenBytes: number;
  readonly chargedDecisionBytes: number;
}

/** A full collection (the bench runs without --expose-gc: the flag is set for this call only). */
function collect(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
}

export async function measureCacheBytes(world: BenchWorld, count = 2_000): Promise<CacheBytesReport> {
  const huge = 2 ** 40;
  // Nothing forgotten while measuring.
  const { guard, request, route } = await inProcessGuard(world, {
    cache: { tokens: count * 2, decisions: count * 2, tokenBytes: huge, decisionBytes: huge },
  });
  try {
    const [first, ...tokens] = await mintCustomerTokens(world.minter, count + 1);
    const admit = async (token: string) => {
      const admission = await guard.pipeline.admit(request(token), route);
      if (!admission.allowed) throw new Error(`cache bytes: the guard refused a bench token (${admission.reason})`);
    };
    // The first decision compiles and allocates what every later one shares.
    await admit(first as string);
    collect();
    const before = process.memoryUsage().heapUsed;
    for (const token of tokens) await admit(token);
    collect();
    const after = process.memoryUsage().heapUsed;
    const stats = guard.stats();
    return {
      tokens: count,
      tokenLength: (first as string).length,
      measuredBytes: Math.round((after - before) / count),
      chargedTokenBytes: Math.round(stats.tokens.bytes / stats.tokens.size),
      chargedDecisionBytes: Math.round(stats.decisions.bytes / stats.decisions.size),
    };
  } finally {
    await guard.close();
  }
}
