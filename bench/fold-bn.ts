/**
 * BatchNormalization folded into the conv before it (lib/models/fold.ts), side by side in one
 * process: the quick lung and lesion U-Nets (random weights, BN statistics set away from the
 * identity), unfolded and folded, timed in alternation on the same batches; prints ms per image,
 * the ratio and the largest output difference. REPEATS (default 5), BATCH (default 16).
 *
 *   node dist/bench/fold-bn.js        (npm run bench:fold)
 */
import * as tf from "@tensorflow/tfjs";
import { describeBackend, initBackend } from "../lib/backend";
import { getLesionProfile } from "../lib/lesions/profiles";
import { getLungProfile } from "../lib/lungs/profiles";
import { buildResUNet, foldBatchNorm } from "../lib/models";

const REPEATS = Number(process.env.REPEATS ?? 5);
const BATCH = Number(process.env.BATCH ?? 16);

async function msPerImage(m: tf.LayersModel, x: tf.Tensor): Promise<number> {
  const t = performance.now();
  const y = m.predict(x) as tf.Tensor;
  await y.data();
  y.dispose();
  return (performance.now() - t) / x.shape[0];
}

(async () => {
  const b = await initBackend();
  console.log(`backend: ${describeBackend(b)}; batch ${BATCH}, ${REPEATS} repeats, alternating`);
  for (const [name, p] of [["lungs quick", getLungProfile("quick")], ["lesions quick", getLesionProfile("quick")]] as const) {
    const model = buildResUNet({ inputSize: p.inputSize, width: p.width, seed: 1 });
    let k = 0;
    for (const l of model.layers) {
      if (l.getClassName() !== "BatchNormalization") continue;
      const n = l.getWeights()[0].shape[0];
      const r = (lo: number, hi: number) => tf.tensor1d(Array.from({ length: n }, (_, i) => lo + (((i * 7 + k * 13) % 11) / 10) * (hi - lo)));
      l.setWeights([r(0.5, 2), r(-0.5, 0.5), r(-1, 1), r(0.2, 3)]);
      k++;
    }
    const folded = await foldBatchNorm(model);
    const x = tf.randomUniform([BATCH, p.inputSize, p.inputSize, 1], 0, 1, "float32", 3);
    await msPerImage(model, x);
    await msPerImage(folded, x);
    const a: number[] = [], f: number[] = [];
    for (let r = 0; r < REPEATS; r++) {
      a.push(await msPerImage(model, x));
      f.push(await msPerImage(folded, x));
    }
    const med = (v: number[]) => [...v].sort((s, t) => s - t)[Math.floor(v.length / 2)];
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(model.predict(x) as tf.Tensor, folded.predict(x) as tf.Tensor))).dataSync()[0]);
    console.log(`${name} (${p.inputSize}², width ${p.width}): BN layers ${model.layers.filter((l) => l.getClassName() === "BatchNormalization").length} → ${folded.layers.filter((l) => l.getClassName() === "BatchNormalization").length}; ` +
      `unfolded ${med(a).toFixed(1)} ms/image, folded ${med(f).toFixed(1)} ms/image, ratio ${(med(a) / med(f)).toFixed(2)}×; max |Δ output| ${diff.toExponential(1)}`);
    x.dispose();
    folded.dispose();
    model.dispose();
  }
})();
