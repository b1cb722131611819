import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import seedrandom from "seedrandom";
import { ExampleSource, permutation, trainClassifier, TrainOptions } from "../lib/training/loop";
import { cosineLr } from "../lib/training/schedule";

/** Two Gaussian blobs in 8-D: a toy problem a linear head can learn. */
function blobs(n: number, seed: string, separation = 0.6): ExampleSource {
  const rng = seedrandom(seed);
  const x: number[][] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const y = i % 2;
    labels.push(y);
    x.push(Array.from({ length: 8 }, (_, k) => (y ? separation : -separation) * (k < 4 ? 1 : 0) + (rng() - 0.5) * 2));
  }
  return {
    size: n,
    labels,
    ids: labels.map((_, i) => `ex${i}`),
    inputs: (idx) => tf.tensor2d(idx.map((i) => x[i])),
  };
}

function head(seed: number): tf.LayersModel {
  const m = tf.sequential();
  m.add(tf.layers.dense({ inputShape: [8], units: 8, activation: "relu", kernelInitializer: tf.initializers.glorotUniform({ seed }) }));
  m.add(tf.layers.dense({ units: 2, activation: "softmax", kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }));
  return m;
}

describe("training loop", () => {
  // These small dense models run on the cpu backend; the files after this one get theirs back.
  let previous = "";
  before(async () => {
    previous = tf.getBackend();
    await tf.setBackend("cpu");
  });
  after(async () => {
    if (previous) await tf.setBackend(previous);
  });
  const train = blobs(64, "train");
  const val = blobs(32, "val");
  const opts = (runDir?: string): TrainOptions => ({
    epochs: 6,
    batchSize: 16,
    schedule: { lr: 0.01, periodEpochs: 10 },
    seed: 7,
    runDir,
  });

  it("steps the paper's cosine schedule with a period of 10 epochs", () => {
    const s = { lr: 1e-4, periodEpochs: 10 };
    assert.equal(cosineLr(s, 0), 1e-4);
    assert.ok(Math.abs(cosineLr(s, 5) - 5e-5) < 1e-12);
    assert.ok(cosineLr(s, 10) < 1e-12);
    assert.ok(Math.abs(cosineLr(s, 20) - 1e-4) < 1e-12, "rises again after one period, like PyTorch's CosineAnnealingLR");
    assert.ok(cosineLr(s, 0, 5, 10) < cosineLr(s, 0, 4, 10), "stepped within an epoch");
  });

  it("shuffles deterministically per (seed, epoch)", () => {
    assert.deepEqual(permutation(10, 1, 3), permutation(10, 1, 3));
    assert.notDeepEqual(permutation(10, 1, 3), permutation(10, 1, 4));
    assert.deepEqual([...permutation(10, 1, 3)].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("lowers the loss, keeps the tensor count flat, and selects on validation AUC", async () => {
    const model = head(1);
    const r = await trainClassifier(model, tf.train.adam(0.01), train, val, opts());
    const h = r.history;
    assert.equal(h.length, 6);
    assert.ok(h[h.length - 1].trainLoss < h[0].trainLoss * 0.8, `loss ${h[0].trainLoss} → ${h[h.length - 1].trainLoss}`);
    assert.ok(r.bestValue > 0.8, `val AUC ${r.bestValue}`);
    assert.equal(r.bestValue, Math.max(...h.map((e) => e.valAuc)));
    const counts = h.slice(1).map((e) => e.numTensors);
    assert.ok(counts.every((c) => c === counts[0]), `tensor count per epoch: ${h.map((e) => e.numTensors)}`);
    model.dispose();
  });

  it("resumes an interrupted run to the same result as an uninterrupted one", async () => {
    const dirA = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-runA-"));
    const dirB = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-runB-"));
    const a = head(3);
    const full = await trainClassifier(a, tf.train.adam(0.01), train, val, opts(dirA));
    const b1 = head(3);
    const part = await trainClassifier(b1, tf.train.adam(0.01), train, val, { ...opts(dirB), stopAfterEpochs: 2 });
    assert.equal(part.interrupted, true);
    assert.equal(part.history.length, 2);
    b1.dispose();
    // A fresh process would rebuild the model from scratch: do the same.
    const b2 = head(99);
    const resumed = await trainClassifier(b2, tf.train.adam(0.01), train, val, { ...opts(dirB), resume: true });
    assert.equal(resumed.history.length, 6);
    assert.equal(resumed.bestEpoch, full.bestEpoch);
    for (let e = 0; e < 6; e++) {
      assert.ok(Math.abs(resumed.history[e].trainLoss - full.history[e].trainLoss) < 1e-6, `epoch ${e} train loss`);
      assert.ok(Math.abs(resumed.history[e].valAuc - full.history[e].valAuc) < 1e-9, `epoch ${e} val AUC`);
    }
    const wa = a.getWeights().map((w) => w.dataSync());
    const wb = b2.getWeights().map((w) => w.dataSync());
    wa.forEach((w, i) => w.forEach((v, k) => assert.ok(Math.abs(v - wb[i][k]) < 1e-6)));
    assert.ok(fs.existsSync(path.join(dirB, "checkpoints", "best", "model.json")));
    assert.ok(fs.existsSync(path.join(dirB, "history.json")));
    a.dispose();
    b2.dispose();
    fs.rmSync(dirA, { recursive: true });
    fs.rmSync(dirB, { recursive: true });
  });

  it("stops at the selection ceiling (val AUC 1) with the weights and selected epoch of the full run", async () => {
    const easyTrain = blobs(64, "train", 3), easyVal = blobs(32, "val", 3);
    const full = head(5), stopped = head(5);
    const a = await trainClassifier(full, tf.train.adam(0.01), easyTrain, easyVal, opts());
    const b = await trainClassifier(stopped, tf.train.adam(0.01), easyTrain, easyVal, { ...opts(), stopAtCeiling: 1 });
    assert.equal(a.history.length, 6);
    assert.equal(a.bestValue, 1, "the toy problem reaches the ceiling");
    assert.equal(b.bestEpoch, a.bestEpoch);
    assert.equal(b.history.length, a.bestEpoch + 1, "no epoch after the one that reached 1");
    assert.ok(b.history.length < a.history.length);
    b.history.forEach((e, i) => assert.equal(e.valAuc, a.history[i].valAuc, `epoch ${i}`));
    const wa = full.getWeights().map((w) => w.dataSync()), wb = stopped.getWeights().map((w) => w.dataSync());
    wa.forEach((w, i) => assert.deepEqual(Array.from(wb[i]), Array.from(w), `weights ${i}: the selected ones`));
    // Below the ceiling nothing changes: every epoch runs.
    const c = await trainClassifier(head(5), tf.train.adam(0.01), train, val, { ...opts(), stopAtCeiling: 1 });
    assert.ok(c.bestValue < 1 && c.history.length === 6, `val AUC ${c.bestValue}, ${c.history.length} epochs`);
    full.dispose();
    stopped.dispose();
  });

  it("gives the same update with micro-batches as with the full batch (no batch statistics)", async () => {
    const m1 = head(5);
    const m2 = head(5);
    await trainClassifier(m1, tf.train.adam(0.01), train, val, { ...opts(), epochs: 1 });
    await trainClassifier(m2, tf.train.adam(0.01), train, val, { ...opts(), epochs: 1, microBatch: 5 });
    const w1 = m1.getWeights().map((w) => w.dataSync());
    const w2 = m2.getWeights().map((w) => w.dataSync());
    w1.forEach((w, i) => w.forEach((v, k) => assert.ok(Math.abs(v - w2[i][k]) < 1e-5, `weight ${i}[${k}] ${v} vs ${w2[i][k]}`)));
  });
});
