import { useChosenBackend } from "./support/backend";
import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import {
  CLASS_OUTPUT,
  LESION_OUTPUT,
  applyPreprocessing,
  AtrousConv2D,
  asppRates,
  buildModel,
  buildMultiTaskModel,
  findWeightsDir,
  loadImagenetWeights,
  multiTaskLoss,
  multiTaskLossFn,
  packMultiTaskTargets,
  TORCH_PREPROCESSING,
  unpackMultiTaskTargets,
} from "../lib/models";
import { trainStepAccumulated } from "../lib/training/accumulate";

function hasDenseNetWeights(): boolean {
  try {
    findWeightsDir("densenet169");
    return true;
  } catch {
    return false;
  }
}

function relDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / tf.max(tf.abs(b)).dataSync()[0]);
}


describe("study2 models: ImageNet weights with a lung-mask channel", () => {
  useChosenBackend();

  it("DenseNet-169 (64², 4 channels): ImageNet filters for RGB, zero filters for the mask → the 3-channel output", async function () {
    if (!hasDenseNetWeights()) this.skip();
    const rgb = buildModel("densenet169", { inputSize: 64, includeHead: false });
    const four = buildModel("densenet169", { inputSize: 64, includeHead: false, channels: 4 });
    await loadImagenetWeights(rgb.model, "densenet169");
    await assert.rejects(loadImagenetWeights(four.model, "densenet169"), /adaptChannels: 'zeros'/);
    const before = tf.memory().numTensors;
    const r = await loadImagenetWeights(four.model, "densenet169", undefined, { adaptChannels: "zeros" });
    assert.equal(tf.memory().numTensors, before, "loading leaks no tensors");
    assert.deepEqual(r.adapted, ["conv1/conv/kernel"]);
    assert.deepEqual(r.notInFile, []);
    const k4 = four.model.getLayer("conv1/conv").getWeights()[0];
    const k3 = rgb.model.getLayer("conv1/conv").getWeights()[0];
    assert.deepEqual(k4.shape, [7, 7, 4, 64]);
    tf.tidy(() => {
      assert.equal(tf.max(tf.abs(tf.slice(k4, [0, 0, 3, 0], [7, 7, 1, 64]))).dataSync()[0], 0);
      assert.equal(tf.max(tf.abs(tf.sub(tf.slice(k4, [0, 0, 0, 0], [7, 7, 3, 64]), k3))).dataSync()[0], 0);
    });
    const img = tf.randomUniform([2, 64, 64, 3], 0, 255, "float32", 7) as tf.Tensor4D;
    const x3 = applyPreprocessing(img, TORCH_PREPROCESSING);
    for (const maskValue of [0, 1]) {
      const mask = tf.fill([2, 64, 64, 1], maskValue);
      const x4 = applyPreprocessing(tf.concat([img, mask], -1) as tf.Tensor4D, TORCH_PREPROCESSING);
      // The mask channel passes preprocessing unchanged.
      assert.equal(tf.max(tf.slice(x4 as tf.Tensor4D, [0, 0, 0, 3], [2, 64, 64, 1])).dataSync()[0], maskValue);
      const y3 = rgb.model.predict(x3) as tf.Tensor;
      const y4 = four.model.predict(x4) as tf.Tensor;
      const d = relDiff(y4, y3);
      assert.ok(d < 1e-5, `mask ${maskValue}: relative difference ${d}`);
      tf.dispose([mask, x4, y3, y4]);
    }
    // Control: a non-zero mask filter changes the output, so the comparison is not vacuous.
    const k = tf.concat([k3, tf.onesLike(tf.slice(k4, [0, 0, 3, 0], [7, 7, 1, 64]))], 2);
    four.model.getLayer("conv1/conv").setWeights([k]);
    const x4 = applyPreprocessing(tf.concat([img, tf.ones([2, 64, 64, 1])], -1) as tf.Tensor4D, TORCH_PREPROCESSING);
    assert.ok(relDiff(four.model.predict(x4) as tf.Tensor, rgb.model.predict(x3) as tf.Tensor) > 1e-2);
    tf.dispose([img, x3, x4, k]); // k3/k4 are the layers' own variables: disposed with the models
    rgb.model.dispose();
    four.model.dispose();
  });

  it("multi-task DenseNet-169: backbone weights load, ASPP/lesion/class layers stay at init and are reported", async function () {
    if (!hasDenseNetWeights()) this.skip();
    const mt = buildMultiTaskModel(buildModel("densenet169", { inputSize: 64, includeHead: false, channels: 4 }), { aspp: { filters: 16 }, seed: 1 });
    await assert.rejects(loadImagenetWeights(mt.model, "densenet169", undefined, { adaptChannels: "zeros" }), /missing in file: aspp_1x1_conv/);
    const r = await loadImagenetWeights(mt.model, "densenet169", undefined, { adaptChannels: "zeros", missing: "keep-init" });
    const prefixes = new Set(r.notInFile.map((n) => n.split("/")[0].replace(/_(conv|bn)$/, "")));
    assert.ok(r.notInFile.length > 0);
    for (const n of r.notInFile) assert.match(n, /^(aspp_|lesion_logits|class)/, n);
    assert.ok(r.notInFile.includes("lesion_logits/kernel") && r.notInFile.includes("class/kernel"));
    console.log(`      left at initialisation: ${[...prefixes].join(", ")} (${r.notInFile.length} weights); loaded ${r.loaded}`);
    mt.model.dispose();
  });
});

describe("study2 models: ASPP multi-task model", () => {
  useChosenBackend();

  it("has two named outputs of the right shapes (tiny DenseNet, 64², RGB + lung mask)", () => {
    const mt = buildMultiTaskModel(buildModel("tiny-densenet", { inputSize: 64, includeHead: false, channels: 4, seed: 3 }), { aspp: { filters: 8, outputStride: 8 }, seed: 3 });
    assert.deepEqual(mt.model.outputNames, [LESION_OUTPUT, CLASS_OUTPUT]);
    const x = tf.randomNormal([2, 64, 64, 4], 0, 1, "float32", 1);
    const [lesion, cls] = mt.model.predict(x) as tf.Tensor[];
    assert.deepEqual(lesion.shape, [2, 64, 64, 1]);
    assert.deepEqual(cls.shape, [2, 2]);
    const l = lesion.dataSync();
    assert.ok(l.every((v) => v > 0 && v < 1));
    const c = cls.arraySync() as number[][];
    for (const row of c) assert.ok(Math.abs(row[0] + row[1] - 1) < 1e-5);
    tf.dispose([x, lesion, cls]);
    mt.model.dispose();
  });

  it("saves and loads (checkpoints): the custom layers serialise and the outputs are identical", async () => {
    const mt = buildMultiTaskModel(buildModel("tiny-densenet", { inputSize: 32, includeHead: false, channels: 4, seed: 2 }), { aspp: { filters: 4, outputStride: 8 }, seed: 2 });
    let saved: tf.io.ModelArtifacts | undefined;
    await mt.model.save(tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }));
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
    const x = tf.randomNormal([2, 32, 32, 4], 0, 1, "float32", 4);
    const a = mt.model.predict(x) as tf.Tensor[];
    const b = loaded.predict(x) as tf.Tensor[];
    assert.deepEqual(loaded.outputNames, [LESION_OUTPUT, CLASS_OUTPUT]);
    assert.equal((loaded.getLayer("aspp_atrous3_conv").getConfig().dilationRate as number[])[0], 36); // 18 · 16 / 8
    for (let i = 0; i < 2; i++) assert.ok(relDiff(b[i], a[i]) < 1e-6);
    tf.dispose([x, ...a, ...b]);
    mt.model.dispose();
    loaded.dispose();
  });

  it("scales DeepLabv3's rates (6,12,18 at stride 16) to the output stride, in the layers", () => {
    assert.deepEqual(asppRates([6, 12, 18], 16), [6, 12, 18]);
    assert.deepEqual(asppRates([6, 12, 18], 8), [12, 24, 36]);
    assert.deepEqual(asppRates([6, 12, 18], 32), [3, 6, 9]);
    for (const [stride, want] of [[32, [3, 6, 9]], [16, [6, 12, 18]]] as const) {
      const mt = buildMultiTaskModel(buildModel("tiny-densenet", { inputSize: 32, includeHead: false }), { aspp: { filters: 4, outputStride: stride } });
      assert.deepEqual(mt.rates, want);
      const got = [1, 2, 3].map((i) => (mt.model.getLayer(`aspp_atrous${i}_conv`).getConfig().dilationRate as number[])[0]);
      assert.deepEqual(got, want);
      assert.equal((mt.model.getLayer("aspp_1x1_conv").getConfig().kernelSize as number[])[0], 1);
      assert.ok(mt.model.getLayer("aspp_pool_gap") && mt.model.getLayer("aspp_project_conv"));
      mt.model.dispose();
    }
  });

  it("atrous convolution by space-to-batch equals tfjs's dilated conv2d, and has gradients", () => {
    for (const [size, rate] of [[7, 3], [8, 6], [5, 9], [9, 2]] as const) {
      const layer = new AtrousConv2D({ name: `atrous_test_${size}_${rate}`, filters: 5, dilationRate: rate, kernelInitializer: tf.initializers.randomNormal({ seed: rate }) });
      const x = tf.randomNormal([2, size, size, 3], 0, 1, "float32", size);
      const y = layer.apply(x) as tf.Tensor;
      const ref = tf.conv2d(x as tf.Tensor4D, layer.getWeights()[0] as tf.Tensor4D, 1, "same", "NHWC", rate);
      assert.deepEqual(y.shape, [2, size, size, 5]);
      assert.ok(relDiff(y, ref) < 1e-5, `size ${size} rate ${rate}: ${relDiff(y, ref)}`);
      const g = tf.grad((v: tf.Tensor) => tf.sum(layer.apply(v) as tf.Tensor))(x);
      assert.ok(tf.max(tf.abs(g)).dataSync()[0] > 0);
      tf.dispose([x, y, ref, g]);
      layer.dispose();
    }
  });

  it("loss = 1·CE + 1·(Dice + BCE) over images with a mask; images without one are masked out", () => {
    // Two 2×2 images: image 0 has a mask, image 1 (a COVID-CT positive) has none.
    const predLesion = tf.tensor4d([0.9, 0.2, 0.6, 0.1, 0.5, 0.5, 0.5, 0.5], [2, 2, 2, 1]);
    const predClass = tf.tensor2d([[0.3, 0.7], [0.6, 0.4]]);
    const target = {
      label: tf.tensor2d([[0, 1], [0, 1]]),
      lesion: tf.tensor4d([1, 0, 1, 0, 1, 1, 1, 1], [2, 2, 2, 1]),
      hasMask: tf.tensor1d([1, 0]),
    };
    const parts = multiTaskLoss({ lesion: predLesion, class: predClass }, target);
    const ce = -(Math.log(0.7) + Math.log(0.4)) / 2;
    const p = [0.9, 0.2, 0.6, 0.1], g = [1, 0, 1, 0];
    const bce = -p.reduce((s, q, i) => s + (g[i] ? Math.log(q) : Math.log(1 - q)), 0) / 4;
    const inter = p.reduce((s, q, i) => s + q * g[i], 0);
    const dice = 1 - (2 * inter + 1) / (p.reduce((a, b) => a + b, 0) + 2 + 1);
    const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-5, `${a} vs ${b}`);
    close(parts.classification.dataSync()[0], ce);
    close(parts.lesion.dataSync()[0], bce + dice);
    close(parts.total.dataSync()[0], ce + bce + dice);
    // Weights are applied as named; no mask in the batch → lesion loss 0.
    const w = multiTaskLoss({ lesion: predLesion, class: predClass }, target, { classWeight: 2, lesionWeight: 0.5 });
    close(w.total.dataSync()[0], 2 * ce + 0.5 * (bce + dice));
    const none = multiTaskLoss({ lesion: predLesion, class: predClass }, { ...target, hasMask: tf.tensor1d([0, 0]) });
    assert.equal(none.lesion.dataSync()[0], 0);
    // A negative's all-zero mask is a true label: predicting nothing there costs ~0 Dice.
    const neg = multiTaskLoss(
      { lesion: tf.fill([1, 2, 2, 1], 1e-4), class: tf.tensor2d([[0.9, 0.1]]) },
      { label: tf.tensor2d([[1, 0]]), lesion: tf.zeros([1, 2, 2, 1]), hasMask: tf.tensor1d([1]) },
      { lesionLoss: "dice" },
    );
    assert.ok(neg.lesion.dataSync()[0] < 1e-3);
    assert.throws(() => multiTaskLoss({ lesion: tf.zeros([2, 4, 4, 1]), class: predClass }, target), /resize the masks/);
  });

  it("packs targets for micro-batching, and a few multi-task steps lower the loss (tiny DenseNet, 32²)", () => {
    const mt = buildMultiTaskModel(buildModel("tiny-densenet", { inputSize: 32, includeHead: false, channels: 4, seed: 5 }), { aspp: { filters: 8, outputStride: 8 }, seed: 5 });
    const n = 8;
    // Toy task: COVID images carry a bright square that is also their lesion.
    const xs: number[] = [], labels: number[][] = [], masks: number[] = [];
    for (let i = 0; i < n; i++) {
      const covid = i % 2;
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) {
        const les = covid && x >= 8 && x < 20 && y >= 10 && y < 22 ? 1 : 0;
        xs.push(les ? 1.5 : 0, les ? 1.5 : 0, les ? 1.5 : 0, 1);
        masks.push(les);
      }
      labels.push(covid ? [0, 1] : [1, 0]);
    }
    const x = tf.tensor4d(xs, [n, 32, 32, 4]);
    const t = { label: tf.tensor2d(labels), lesion: tf.tensor4d(masks, [n, 32, 32, 1]), hasMask: tf.tensor1d([1, 1, 1, 0, 1, 1, 1, 1]) };
    const ys = packMultiTaskTargets(t);
    const back = unpackMultiTaskTargets(ys, [32, 32]);
    assert.equal(tf.max(tf.abs(tf.sub(back.lesion, t.lesion))).dataSync()[0], 0);
    assert.deepEqual(Array.from(back.hasMask.dataSync()), [1, 1, 1, 0, 1, 1, 1, 1]);
    const opt = tf.train.adam(1e-2);
    const lossFn = multiTaskLossFn(mt);
    const losses: number[] = [];
    for (let s = 0; s < 12; s++) losses.push(trainStepAccumulated(lossFn, opt, x, ys, 4, { vars: mt.model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read()) }).loss);
    console.log(`      multi-task loss ${losses[0].toFixed(3)} → ${losses[losses.length - 1].toFixed(3)}`);
    assert.ok(losses[losses.length - 1] < 0.8 * losses[0], JSON.stringify(losses));
    tf.dispose([x, ys, t.label, t.lesion, t.hasMask, back.label, back.lesion, back.hasMask]);
    opt.dispose();
    mt.model.dispose();
  });
});
