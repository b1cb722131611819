/**
 * BatchNormalization folded into the convolution before it (lib/models/fold.ts): the folded graph
 * computes what the model computes in inference mode, with fewer layers, and leaves the model alone.
 */
import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend";
import { buildResUNet, foldBatchNorm } from "../lib/models";

describe("foldBatchNorm", () => {
  before(async () => {
    await initBackend();
  });

  it("a residual U-Net with trained-like BN statistics: same outputs to float rounding, two BN layers gone per unit", async () => {
    const model = buildResUNet({ inputSize: 32, width: 4, seed: 3 });
    // Give every BN layer statistics far from the identity (as training would).
    let k = 0;
    for (const l of model.layers) {
      if (l.getClassName() !== "BatchNormalization") continue;
      const n = l.getWeights()[0].shape[0];
      const r = (lo: number, hi: number) => tf.tensor1d(Array.from({ length: n }, (_, i) => lo + ((i * 7 + k * 13) % 11) / 10 * (hi - lo)));
      l.setWeights([r(0.5, 2), r(-0.5, 0.5), r(-1, 1), r(0.2, 3)]);
      k++;
    }
    const bnBefore = model.layers.filter((l) => l.getClassName() === "BatchNormalization").length;
    const weightsBefore = model.getWeights().map((w) => Array.from(w.dataSync()));
    const folded = await foldBatchNorm(model);
    const bnAfter = folded.layers.filter((l) => l.getClassName() === "BatchNormalization").length;
    // 7 units: each has a BN after its first conv and a projection shortcut's BN (both folded); the
    // pre-activation BN after an add or a concat stays (6 of them: the first unit has none).
    assert.equal(bnBefore, 20);
    assert.equal(bnAfter, 6);
    const x = tf.randomUniform([3, 32, 32, 1], 0, 1, "float32", 7);
    const a = (model.predict(x) as tf.Tensor).dataSync(), b = (folded.predict(x) as tf.Tensor).dataSync();
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
    assert.ok(max < 1e-5, `max |Δ| ${max}`);
    assert.ok(a.some((v, i) => v !== a[0] && i > 0), "a non-constant output");
    assert.deepEqual(model.getWeights().map((w) => Array.from(w.dataSync())), weightsBefore, "the model is unchanged");
    folded.dispose();
    model.dispose();
  });

  it("leaves a BN alone when its conv's output is read elsewhere too", async () => {
    const input = tf.input({ shape: [8, 8, 2] });
    const c = tf.layers.conv2d({ filters: 3, kernelSize: 3, padding: "same", name: "c" }).apply(input) as tf.SymbolicTensor;
    const bn = tf.layers.batchNormalization({ name: "bn" }).apply(c) as tf.SymbolicTensor;
    const out = tf.layers.add().apply([bn, c]) as tf.SymbolicTensor;
    const m = tf.model({ inputs: input, outputs: out });
    m.getLayer("bn").setWeights([tf.tensor1d([2, 3, 4]), tf.tensor1d([1, 0, -1]), tf.tensor1d([0.5, 0, 1]), tf.tensor1d([2, 1, 4])]);
    const f = await foldBatchNorm(m);
    assert.equal(f.layers.filter((l) => l.getClassName() === "BatchNormalization").length, 1);
    const x = tf.randomUniform([2, 8, 8, 2], 0, 1, "float32", 1);
    const d = tf.max(tf.abs(tf.sub(m.predict(x) as tf.Tensor, f.predict(x) as tf.Tensor))).dataSync()[0];
    assert.ok(d < 1e-6, String(d));
  });
});
