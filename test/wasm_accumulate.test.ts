/**
 * Micro-batch gradient accumulation (lib/training/accumulate) on the cpu backend: the same update
 * as one full-batch step, and a clear failure when a step cannot fit the memory budget.
 */
import * as tf from "@tensorflow/tfjs";
import { strict as assert } from "assert";
import { MicroBatchTooLargeError, categoricalCrossEntropy, planMicroBatch, trainStepAccumulated } from "../lib/training/accumulate";

function tinyModel(seed: number): tf.LayersModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed + k });
  const m = tf.sequential();
  m.add(tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, strides: 2, padding: "same", activation: "relu", kernelInitializer: init(1) }));
  m.add(tf.layers.conv2d({ filters: 6, kernelSize: 1, activation: "relu", kernelInitializer: init(2) }));
  m.add(tf.layers.globalAveragePooling2d({}));
  m.add(tf.layers.dense({ units: 2, activation: "softmax", kernelInitializer: init(3) }));
  return m;
}

function data(n: number): { x: tf.Tensor4D; y: tf.Tensor2D } {
  const x = tf.tensor4d(Array.from({ length: n * 8 * 8 * 3 }, (_, i) => Math.sin(i * 0.37)), [n, 8, 8, 3]);
  const y = tf.oneHot(tf.tensor1d(Array.from({ length: n }, (_, i) => i % 2), "int32"), 2).toFloat() as tf.Tensor2D;
  return { x, y };
}

async function weightsAfterStep(micro: number, optimizer: () => tf.Optimizer): Promise<Float32Array[]> {
  const model = tinyModel(7);
  const { x, y } = data(10);
  const opt = optimizer();
  const r = trainStepAccumulated(model, opt, x, y, micro);
  assert.equal(r.passes, Math.ceil(10 / micro));
  assert.ok(Number.isFinite(r.loss));
  const w = model.getWeights().map((t) => t.dataSync() as Float32Array);
  tf.dispose([x, y]);
  model.dispose();
  opt.dispose();
  return w;
}

describe("wasm: micro-batch gradient accumulation (cpu backend)", () => {
  before(async () => {
    await tf.setBackend("cpu");
  });

  for (const [name, opt] of [
    ["SGD", () => tf.train.sgd(0.5)],
    ["Adam", () => tf.train.adam(0.01)],
  ] as [string, () => tf.Optimizer][]) {
    it(`micro-batches 1, 3 (uneven), 5 give the full-batch ${name} update`, async () => {
      const full = await weightsAfterStep(10, opt);
      const start = tinyModel(7).getWeights().map((t) => t.dataSync() as Float32Array);
      // The step moved the weights (otherwise the comparison proves nothing).
      assert.ok(full.some((w, i) => w.some((v, j) => Math.abs(v - start[i][j]) > 1e-4)));
      for (const micro of [1, 3, 5]) {
        const got = await weightsAfterStep(micro, opt);
        got.forEach((w, i) =>
          w.forEach((v, j) => assert.ok(Math.abs(v - full[i][j]) <= 1e-5 * Math.max(1, Math.abs(full[i][j])), `micro ${micro}: weight ${i}[${j}] ${v} vs ${full[i][j]}`)),
        );
      }
    });
  }

  it("keeps the tensor count flat", () => {
    const model = tinyModel(1);
    const { x, y } = data(6);
    const opt = tf.train.adam(0.01);
    trainStepAccumulated(model, opt, x, y, 4);
    const before = tf.memory().numTensors;
    trainStepAccumulated(model, opt, x, y, 4);
    assert.equal(tf.memory().numTensors, before);
    tf.dispose([x, y]);
    model.dispose();
  });

  it("retries with half the micro-batch after an out-of-memory error, releasing the failed pass", async () => {
    const { x, y } = data(8);
    const ref = tinyModel(3);
    const refOpt = tf.train.sgd(0.5);
    trainStepAccumulated(ref, refOpt, x, y, 8);
    const want = ref.getWeights().map((t) => t.dataSync() as Float32Array);
    const model = tinyModel(3);
    const opt = tf.train.sgd(0.5);
    const before = tf.memory().numTensors;
    let attempts = 0;
    const lossFn = (xb: tf.Tensor, yb: tf.Tensor): tf.Scalar => {
      attempts++;
      const p = model.apply(xb, { training: true }) as tf.Tensor;
      if (xb.shape[0] > 2) {
        const e = new Error("wasm heap exhausted: simulated");
        e.name = "WasmHeapExhaustedError";
        throw e;
      }
      return categoricalCrossEntropy(yb, p);
    };
    const r = trainStepAccumulated(lossFn, opt, x, y, 8, { vars: model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read()) });
    assert.equal(r.microBatch, 2);
    assert.equal(r.passes, 4);
    assert.ok(attempts > 4);
    assert.equal(tf.memory().numTensors, before, "the failed passes leaked tensors");
    model.getWeights().forEach((w, i) => (w.dataSync() as Float32Array).forEach((v, j) => assert.ok(Math.abs(v - want[i][j]) < 1e-5)));
    assert.throws(
      () => trainStepAccumulated(() => { throw Object.assign(new Error("wasm heap exhausted"), { name: "WasmHeapExhaustedError" }); }, opt, x, y, 4, { vars: model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read()) }),
      (e: unknown) => e instanceof MicroBatchTooLargeError,
    );
    tf.dispose([x, y]);
    model.dispose();
    ref.dispose();
  });

  it("plans the largest micro-batch that fits a budget, and fails clearly when none does", () => {
    const model = tinyModel(2);
    const loose = planMicroBatch(model, [8, 8, 3], [2], 16, { budgetBytes: 1e9 });
    assert.equal(loose.microBatch, 16);
    assert.ok(loose.perExampleBytes > 0);
    const tight = planMicroBatch(model, [8, 8, 3], [2], 16, { budgetBytes: loose.fixedBytes + 4.5 * loose.perExampleBytes });
    assert.equal(tight.microBatch, 4);
    assert.throws(() => planMicroBatch(model, [8, 8, 3], [2], 16, { budgetBytes: 10 }), (e: unknown) => e instanceof MicroBatchTooLargeError && /GiB/.test((e as Error).message));
    model.dispose();
  });
});
