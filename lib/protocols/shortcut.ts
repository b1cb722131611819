/**
 * The shortcut baseline: how far can a model get on cues that carry no anatomy?
 *
 * When positives and negatives come from different sources (the paper protocol: COVID-Seg slices
 * prepared by Inf-Net vs LUNA slices), a classifier can separate them by how the files were made —
 * size, framing, black margins, grey-level distribution — instead of by the lungs. A logistic
 * regression on such cues, trained and tested exactly like the real models (same protocol, arm,
 * seeds, head schedule), measures that: its test AUC is printed beside every table of the paper
 * protocol. An AUC near 0.5 means the cues carry no label; near 1 means the protocol can be solved
 * without looking at a lung.
 *
 * Cues (SHORTCUT_CUES, one vector per image, z-scored with training statistics):
 *   from the file as stored:  log width, log height, aspect ratio (w/h), share of near-black
 *                             pixels (≤ 10/255: margins, air), mean and sd of the grey levels;
 *   from the model's input:   share of near-black pixels, mean, sd and a 16-bin grey-level histogram
 *                             of the chest-cropped, oriented, resized image every model sees.
 */
import * as tf from "@tensorflow/tfjs";
import { cacheKey, contentHash, DiskCache, mapLimit, PREPROCESS_VERSION } from "../data/cache";
import { decodeRaw } from "../data/decode";
import { Example, loadGrayImages } from "../data/examples";
import { Harmoniser, harmoniseKey } from "../data/harmonise";

export const SHORTCUT_VERSION = 1;
const BINS = 16;
const DARK = 10;

export const SHORTCUT_CUES: readonly string[] = [
  "file log width", "file log height", "file aspect ratio", "file dark share", "file mean", "file sd",
  "input dark share", "input mean", "input sd",
  ...Array.from({ length: BINS }, (_, i) => `input histogram ${i * (256 / BINS)}–${(i + 1) * (256 / BINS) - 1}`),
];

function greyStats(px: ArrayLike<number>): { dark: number; mean: number; sd: number } {
  let dark = 0, sum = 0, sq = 0;
  for (let i = 0; i < px.length; i++) {
    const v = px[i];
    if (v <= DARK) dark++;
    sum += v;
    sq += v * v;
  }
  const n = Math.max(1, px.length);
  const mean = sum / n;
  return { dark: dark / n, mean: mean / 255, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)) / 255 };
}

/**
 * The cue vector of each example (cached per image content, input size, preprocessing version and,
 * when on, harmonisation). Harmonisation changes the input cues only: the file as stored is what it is.
 */
export async function shortcutCues(examples: readonly Example[], inputSize: number, harmonise: Harmoniser | null = null): Promise<Float32Array[]> {
  const cache = new DiskCache();
  const h = harmoniseKey(harmonise);
  const key = (e: Example) => cacheKey("shortcut-cues", SHORTCUT_VERSION, PREPROCESS_VERSION, contentHash(e.path), inputSize, (e as { source?: string }).source ?? null, ...(harmonise ? [h] : []));
  const out: (Float32Array | null)[] = examples.map((e) => {
    const hit = cache.get("shortcut-cues", key(e));
    return hit ? new Float32Array(hit.buffer.slice(hit.byteOffset, hit.byteOffset + hit.byteLength)) : null;
  });
  const todo = examples.map((e, i) => ({ e, i })).filter((t) => out[t.i] === null);
  const inputs = await loadGrayImages(todo.map((t) => t.e), inputSize, harmonise);
  await mapLimit(todo, 4, async (t, j) => {
    const raw = await decodeRaw(t.e.path, 1);
    const f = greyStats(raw.data);
    const g = greyStats(inputs[j]);
    const hist = new Float32Array(BINS);
    for (const v of inputs[j]) hist[Math.min(BINS - 1, Math.floor(v / (256 / BINS)))]++;
    for (let b = 0; b < BINS; b++) hist[b] /= inputs[j].length;
    const v = Float32Array.from([Math.log(raw.width), Math.log(raw.height), raw.width / raw.height, f.dark, f.mean, f.sd, g.dark, g.mean, g.sd, ...hist]);
    out[t.i] = v;
    cache.put("shortcut-cues", key(t.e), Buffer.from(v.buffer));
  });
  return out as Float32Array[];
}

/** Logistic regression over the cues: one Dense softmax layer named like every model's head. */
export function shortcutModel(seed: number): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [SHORTCUT_CUES.length],
        units: 2,
        activation: "softmax",
        name: "covid_head",
        kernelInitializer: tf.initializers.glorotUniform({ seed }),
        biasInitializer: "zeros",
      }),
    ],
  });
}
