/** Seeded sampling shared by every module (rng: a seedrandom generator, so results are reproducible). */
import seedrandom from "seedrandom";

export type Rng = () => number;

export function rngFor(...parts: (string | number)[]): Rng {
  return seedrandom(parts.join(":"));
}

/** n distinct elements of xs in draw order (all of them, in order, when n is undefined or ≥ length). */
export function sampleWithoutReplacement<T>(xs: readonly T[], n: number | undefined, rng: Rng): T[] {
  if (n === undefined || n >= xs.length) return [...xs];
  const pool = [...xs];
  const out: T[] = [];
  while (out.length < n && pool.length) out.push(pool.splice(Math.floor(rng() * pool.length), 1)[0]);
  return out;
}

/** Fisher–Yates permutation of 0..n-1. */
export function permutationOf(n: number, rng: Rng): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}
