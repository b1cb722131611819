/** What the segmenter benches (lung-unet.ts, lesion-unet.ts) read from their command line: variants and SEED, refused by name on bad input (exit 2). */

/** The variants (parsed by the bench) and SEED (default 1, an integer ≥ 0); prints the reason and exits 2 on bad input. */
export function benchArgs<V>(parseVariants: () => V[]): { variants: V[]; seed: number } {
  try {
    const variants = parseVariants();
    let seed = 1;
    if (process.env.SEED !== undefined) {
      seed = process.env.SEED.trim() === "" ? NaN : Number(process.env.SEED);
      if (!Number.isInteger(seed) || seed < 0) throw new Error(`SEED=${process.env.SEED}: use an integer ≥ 0`);
    }
    return { variants, seed };
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : e}\n`);
    process.exit(2);
  }
}
