/**
 * The training engine beyond classification: a task with two model outputs (class + mask) trains
 * through the same loop as Study I, selects its checkpoint on the task's metric, and resumes
 * exactly.
 */
import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import seedrandom from "seedrandom";
import { initBackend } from "../lib/backend";
import { categoricalCrossEntropy, Tensors } from "../lib/training/accumulate";
import { ExampleSource, oneHot, trainModel, TrainingTask } from "../lib/training/loop";

const S = 8;

/** Images with a bright square (positives) or none; the mask marks the square. */
class SquareSource implements ExampleSource {
  readonly labels: number[] = [];
  readonly ids: string[] = [];
  readonly images: Float32Array[] = [];
  readonly masks: Float32Array[] = [];
  constructor(readonly size: number, seed: string) {
    const rng = seedrandom(seed);
    for (let i = 0; i < size; i++) {
      const label = i % 2;
      const img = new Float32Array(S * S).map(() => rng() * 0.3);
      const mask = new Float32Array(S * S);
      if (label) {
        const r = Math.floor(rng() * (S - 3)), c = Math.floor(rng() * (S - 3));
        for (let y = r; y < r + 3; y++) for (let x = c; x < c + 3; x++) { img[y * S + x] += 0.7; mask[y * S + x] = 1; }
      }
      this.labels.push(label);
      this.ids.push(`sq${i}`);
      this.images.push(img);
      this.masks.push(mask);
    }
  }
  inputs(idx: readonly number[]): tf.Tensor {
    return tf.tensor4d(concat(idx.map((i) => this.images[i])), [idx.length, S, S, 1]);
  }
}

function concat(xs: Float32Array[]): Float32Array {
  const out = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of xs) { out.set(x, o); o += x.length; }
  return out;
}

function bce(y: tf.Tensor, p: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const q = tf.clipByValue(p, 1e-7, 1 - 1e-7);
    return tf.neg(tf.mean(tf.add(tf.mul(y, tf.log(q)), tf.mul(tf.sub(1, y), tf.log(tf.sub(1, q)))))) as tf.Scalar;
  });
}

const multiTask: TrainingTask<SquareSource> = {
  name: "class+mask",
  batch: (src, idx) => ({
    x: src.inputs(idx),
    y: [oneHot(idx.map((i) => src.labels[i])), tf.tensor4d(concat(idx.map((i) => src.masks[i])), [idx.length, S, S, 1])],
  }),
  loss: (yTrue: Tensors, yPred: Tensors) => {
    const [c, m] = yTrue as tf.Tensor[];
    const [pc, pm] = yPred as tf.Tensor[];
    return tf.add(categoricalCrossEntropy(c, pc), bce(m, pm)) as tf.Scalar;
  },
  async evaluate(model, src) {
    const idx = src.labels.map((_, i) => i);
    return tf.tidy(() => {
      const [pc, pm] = model.predict(src.inputs(idx)) as tf.Tensor[];
      const m = tf.tensor4d(concat(src.masks), [src.size, S, S, 1]);
      const hard = tf.greater(pm, 0.5).toFloat();
      const inter = tf.sum(tf.mul(hard, m)).dataSync()[0];
      const dice = (2 * inter) / (tf.sum(hard).dataSync()[0] + tf.sum(m).dataSync()[0] + 1e-9);
      const acc = tf.mean(tf.equal(tf.argMax(pc, 1), tf.tensor1d(src.labels, "int32")).toFloat()).dataSync()[0];
      return { loss: bce(m, pm).dataSync()[0], dice, accuracy: acc };
    });
  },
  selectOn: "dice",
};

function buildModel(seed: number): tf.LayersModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed * 10 + k });
  const x = tf.input({ shape: [S, S, 1] });
  const f = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: "same", activation: "relu", kernelInitializer: init(1) }).apply(x) as tf.SymbolicTensor;
  const mask = tf.layers.conv2d({ filters: 1, kernelSize: 1, activation: "sigmoid", kernelInitializer: init(2), name: "mask" }).apply(f) as tf.SymbolicTensor;
  const pooled = tf.layers.globalMaxPooling2d({}).apply(f) as tf.SymbolicTensor;
  const cls = tf.layers.dense({ units: 2, activation: "softmax", kernelInitializer: init(3), name: "cls" }).apply(pooled) as tf.SymbolicTensor;
  return tf.model({ inputs: x, outputs: [cls, mask] });
}

describe("training engine: tasks with several outputs", function () {
  before(async () => {
    await initBackend();
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-engine-"));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const train = new SquareSource(32, "train");
  const val = new SquareSource(16, "val");
  const opts = { epochs: 6, batchSize: 8, microBatch: 4, schedule: { lr: 0.02, periodEpochs: 10 }, seed: 3 };

  it("trains a class + mask model in the shared loop: loss falls, the mask's Dice selects the checkpoint", async () => {
    const model = buildModel(1);
    const opt = tf.train.adam(0.02);
    const r = await trainModel(model, opt, multiTask, train, val, { ...opts, runDir: path.join(tmp, "a") });
    const h = r.history;
    assert.ok(h[h.length - 1].trainLoss < h[0].trainLoss, `train loss ${h.map((e) => e.trainLoss.toFixed(3))}`);
    assert.ok(typeof h[0].valDice === "number" && typeof h[0].valAccuracy === "number");
    const best = Math.max(...h.map((e) => e.valDice));
    assert.equal(r.bestValue, best);
    assert.equal(r.bestEpoch, h.findIndex((e) => e.valDice === best));
    // The model holds the selected weights afterwards.
    const again = await multiTask.evaluate(model, val);
    assert.ok(Math.abs(again.dice - best) < 1e-6, `${again.dice} vs ${best}`);
    const counts = h.slice(1).map((e) => e.numTensors);
    assert.ok(counts.every((c) => c === counts[0]), `no tensor leak: ${h.map((e) => e.numTensors)}`);
    model.dispose();
    opt.dispose();
  });

  it("an interrupted then resumed multi-output run equals an uninterrupted one", async () => {
    const full = await trainModel(buildModel(2), tf.train.adam(0.02), multiTask, train, val, { ...opts, runDir: path.join(tmp, "full") });
    const dir = path.join(tmp, "resumed");
    const part = await trainModel(buildModel(2), tf.train.adam(0.02), multiTask, train, val, { ...opts, runDir: dir, stopAfterEpochs: 3 });
    assert.equal(part.interrupted, true);
    const resumed = await trainModel(buildModel(2), tf.train.adam(0.02), multiTask, train, val, { ...opts, runDir: dir, resume: true });
    assert.equal(resumed.history.length, full.history.length);
    resumed.history.forEach((e, i) => {
      assert.ok(Math.abs(e.trainLoss - full.history[i].trainLoss) < 1e-6, `epoch ${i} train loss`);
      assert.ok(Math.abs(e.valDice - full.history[i].valDice) < 1e-9, `epoch ${i} val Dice`);
    });
    assert.equal(resumed.bestEpoch, full.bestEpoch);
  });
});
