import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { initBackend } from "../lib/backend";
import { imageDirRel, listImages } from "../lib/data/dataset";
import { imagesToBatch, preprocessImage } from "../lib/data/preprocess";
import { findWeightsDir, readWeights } from "../lib/models/weights";
import { MOCO_V2_AUGMENT, MocoAugmentConfig, applyViews, drawViewParams, gaussianKernel1d, twoViews } from "../lib/ssl/augment";
import {
  MocoConfig,
  MocoState,
  createMoco,
  disposeMoco,
  encodeKeys,
  enqueue,
  keyShufflePermutation,
  infoNce,
  loadLayersModel,
  loadMoco,
  mocoEvaluate,
  mocoStep,
  saveMoco,
} from "../lib/ssl/moco";
import { frozenFeatures, knnProbe } from "../lib/ssl/probe";
import { REAL_ROOT, cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

/** Tiny, fast MoCo settings for tests: views 32², 2 BN groups of 8, short queue. */
const TINY: Partial<MocoConfig> = {
  backbone: "tiny-resnet",
  init: "random",
  inputSize: 32,
  dim: 16,
  queueSize: 32,
  momentum: 0.99,
  lr: 0.1,
  batchSize: 16,
  microBatch: 8,
  seed: 3,
};

/** Seeded smooth random gray images [n, s, s, 1] in [0, 1] (upsampled 6×6 noise). */
function randomImages(n: number, size: number, seed: number): tf.Tensor4D {
  return tf.tidy(() => tf.image.resizeBilinear(tf.randomUniform([n, 6, 6, 1], 0, 1, "float32", seed), [size, size]) as tf.Tensor4D);
}

function weightsOf(model: tf.LayersModel): Float32Array[] {
  return model.getWeights().map((w) => w.dataSync() as Float32Array);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("CSSL: MoCo", function () {
  before(async () => {
    await initBackend();
  });
  after(() => cleanupTempDirs());

  it("InfoNCE equals the hand-computed value, positive at index 0, ties count as hits", () => {
    const T = 0.5;
    const q = tf.tensor2d([[1, 0], [0, 1]]);
    const k = tf.tensor2d([[0.6, 0.8], [0, 1]]);
    const queue = tf.tensor2d([[1, 0], [0, 1], [-1, 0]]);
    const { loss, correct } = infoNce(q, k, queue, T);
    // Query 1: logits [0.6, 1, 0, −1] / 0.5; query 2: [1, 0, 1, 0] / 0.5 (positive tied with a negative).
    const nll = (l: number[]) => -l[0] + Math.log(l.reduce((s, v) => s + Math.exp(v), 0));
    const expected = (nll([1.2, 2, 0, -2]) + nll([2, 0, 2, 0])) / 2;
    assert.ok(Math.abs(loss.dataSync()[0] - expected) < 1e-5, `loss ${loss.dataSync()[0]} vs ${expected}`);
    assert.equal(correct.dataSync()[0], 1, "query 1 misses (a negative scores 2 > 1.2), query 2 hits on the tie");
    tf.dispose([q, k, queue, loss, correct]);
  });

  it("the queue is a FIFO of K L2-normalised keys that wraps around", async () => {
    const st = await createMoco({ ...TINY, queueSize: 5, dim: 3 });
    try {
      assert.deepEqual(st.queue.shape, [5, 3]);
      const norms = tf.tidy(() => tf.norm(st.queue, "euclidean", 1).dataSync());
      norms.forEach((v) => assert.ok(Math.abs(v - 1) < 1e-5, `initial key norm ${v}`));
      const batch = (a: number) => tf.tensor2d([[a, 0, 0], [a + 1, 0, 0]]);
      for (const a of [10, 20, 30]) {
        const b = batch(a);
        enqueue(st, b);
        b.dispose();
      }
      // 6 keys into 5 rows: 10, 11, 20, 21, 30 fill rows 0..4, then 31 overwrites row 0.
      assert.deepEqual(Array.from(tf.tidy(() => st.queue.slice([0, 0], [5, 1]).dataSync())), [31, 11, 20, 21, 30]);
      assert.equal(st.queuePtr, 1);
      const wrong = tf.zeros([2, 4]) as tf.Tensor2D;
      assert.throws(() => enqueue(st, wrong), /width 4.*holds 3/);
      wrong.dispose();
    } finally {
      disposeMoco(st);
    }
  });

  for (const [backbone, firstBn] of [["tiny-resnet", "bn_conv1/moving_mean"], ["tiny-densenet", "conv1/bn/moving_mean"]] as const) {
    it(`${backbone}: the key encoder gets no gradient and follows k = m·k + (1 − m)·q after a step; the query learns`, async () => {
      const st = await createMoco({ ...TINY, backbone, momentum: 0.9 });
      const x = randomImages(16, 40, 1);
      try {
        assert.equal(st.key.trainableWeights.length, 0, "key encoder is not trainable");
        const names = st.query.trainableWeights.map((w) => w.originalName);
        const keyByName = new Map(st.key.weights.map((w) => [w.originalName, w]));
        const q0 = st.query.trainableWeights.map((w) => w.read().clone());
        const keyBnMean0 = keyByName.get(firstBn)!.read().clone();
        const k0 = names.map((n) => keyByName.get(n)!.read().clone());
        const r = mocoStep(st, x, "momentum");
        assert.ok(Number.isFinite(r.loss) && r.accuracy >= 0 && r.accuracy <= 1 && r.step === 1);
        let worst = 0;
        let queryMoved = 0;
        names.forEach((n, i) => {
          const expected = tf.tidy(() => tf.add(tf.mul(k0[i], 0.9), tf.mul(q0[i], 1 - 0.9)).dataSync());
          worst = Math.max(worst, maxAbsDiff(keyByName.get(n)!.read().dataSync(), expected));
          queryMoved = Math.max(queryMoved, maxAbsDiff(st.query.trainableWeights[i].read().dataSync(), q0[i].dataSync()));
        });
        assert.ok(worst <= 1e-7, `key weights deviate from the momentum update by ${worst}`);
        assert.ok(queryMoved > 1e-4, `the query encoder was updated (max change ${queryMoved})`);
        // Like MoCo's key encoder (train mode under no_grad): BN uses batch statistics and keeps its own moving ones.
        assert.ok(maxAbsDiff(keyByName.get(firstBn)!.read().dataSync(), keyBnMean0.dataSync()) > 0, "key BN moving mean updated");
        tf.dispose([...q0, ...k0, keyBnMean0]);
      } finally {
        x.dispose();
        disposeMoco(st);
      }
    });
  }

  it("weight decay joins the gradient as in torch SGD (first step: Δw = −lr·(g + wd·w)); the loss excludes it", async () => {
    const x = randomImages(16, 40, 12);
    const plain = await createMoco({ ...TINY, weightDecay: 0 });
    const decayed = await createMoco({ ...TINY, weightDecay: 0.05 });
    try {
      const w0 = plain.query.trainableWeights.map((w) => w.read().dataSync().slice());
      const a = mocoStep(plain, x, "wd");
      const b = mocoStep(decayed, x, "wd");
      assert.equal(a.loss, b.loss, "the reported loss is InfoNCE alone");
      let worst = 0;
      plain.query.trainableWeights.forEach((w, i) => {
        const pa = w.read().dataSync();
        const pb = decayed.query.trainableWeights[i].read().dataSync();
        for (let j = 0; j < pa.length; j++) worst = Math.max(worst, Math.abs(pb[j] - pa[j] - -0.1 * 0.05 * w0[i][j]));
      });
      assert.ok(worst < 1e-6, `decayed − plain deviates from −lr·wd·w by ${worst}`);
    } finally {
      x.dispose();
      disposeMoco(plain);
      disposeMoco(decayed);
    }
  });

  it("encodes keys in BN groups of a shuffled batch and un-shuffles them back to their images", async () => {
    const st = await createMoco({ ...TINY, microBatch: 4 });
    const x = tf.tidy(() => tf.tile(randomImages(12, 32, 8), [1, 1, 1, 3]) as tf.Tensor4D);
    try {
      const keys = encodeKeys(st, x, "g");
      const perm = keyShufflePermutation(12, "g:shuffle");
      assert.notDeepEqual(perm, Array.from({ length: 12 }, (_, i) => i));
      // Reference: each group of 4 shuffled images through the key encoder (batch statistics of
      // that group), row j of a group is the key of image perm[j].
      const expected = new Array<Float32Array>(12);
      for (let g = 0; g < 12; g += 4) {
        const idx = perm.slice(g, g + 4);
        const out = tf.tidy(() => {
          const k = st.key.apply(tf.gather(x, idx), { training: true }) as tf.Tensor2D;
          return tf.div(k, tf.norm(k, "euclidean", 1, true));
        });
        const d = out.dataSync() as Float32Array;
        idx.forEach((img, j) => (expected[img] = d.slice(j * 16, (j + 1) * 16)));
        out.dispose();
      }
      const got = keys.arraySync();
      for (let i = 0; i < 12; i++) assert.ok(maxAbsDiff(got[i], expected[i]) < 1e-5, `key of image ${i}`);
      const unshuffled = encodeKeys({ ...st, config: { ...st.config, shuffleKeys: false } }, x, "g");
      assert.ok(maxAbsDiff(unshuffled.dataSync(), keys.dataSync()) > 1e-3, "other BN groups, other keys");
      tf.dispose([keys, unshuffled]);
    } finally {
      x.dispose();
      disposeMoco(st);
    }
  });

  it("refuses a batch that gives one BN group (the shuffle would not guard against the leak) and non-gray input", async () => {
    const st = await createMoco({ ...TINY, microBatch: 8 });
    const x = randomImages(8, 40, 2);
    const rgb = tf.zeros([16, 40, 40, 3]) as tf.Tensor4D;
    try {
      assert.throws(() => mocoStep(st, x, 1), /shuffle BN needs at least two micro-batches.*microBatch ≤ 4/);
      assert.throws(() => mocoStep(st, rgb, 1), /gray images \[n, h, w, 1\].*16,40,40,3/);
      assert.equal(st.step, 0);
    } finally {
      tf.dispose([x, rgb]);
      disposeMoco(st);
    }
  });

  it("two views of one image get different augmentations; the same seed gives the same views", () => {
    const x = randomImages(4, 48, 5);
    const [q1, k1] = twoViews(x, MOCO_V2_AUGMENT, 32, "s");
    const [q2, k2] = twoViews(x, MOCO_V2_AUGMENT, 32, "s");
    const [q3] = twoViews(x, MOCO_V2_AUGMENT, 32, "t");
    try {
      assert.deepEqual(q1.shape, [4, 32, 32, 1]);
      assert.equal(maxAbsDiff(q1.dataSync(), q2.dataSync()), 0);
      assert.equal(maxAbsDiff(k1.dataSync(), k2.dataSync()), 0);
      for (let i = 0; i < 4; i++) {
        const d = tf.tidy(() => tf.max(tf.abs(tf.sub(q1.slice(i, 1), k1.slice(i, 1)))).dataSync()[0]);
        assert.ok(d > 0.05, `image ${i}: query and key views differ by only ${d}`);
      }
      assert.ok(maxAbsDiff(q1.dataSync(), q3.dataSync()) > 0.05, "another seed gives other views");
      const all = q1.dataSync();
      assert.ok(all.every((v) => v >= 0 && v <= 1), "views stay in [0, 1]");
    } finally {
      tf.dispose([x, q1, k1, q2, k2, q3]);
    }
  });

  it("augmentation parts: identity when every term is off, blur keeps a constant image, kernel sums to 1", () => {
    const off: MocoAugmentConfig = { ...MOCO_V2_AUGMENT, minScale: 1, hflip: false, jitterProb: 0, blurProb: 0 };
    const x = randomImages(2, 32, 6);
    const rng = seedrandom("p");
    const params = [drawViewParams(rng, off, 32), drawViewParams(rng, off, 32)];
    const y = applyViews(x, params, [32, 32]);
    assert.ok(maxAbsDiff(x.dataSync(), y.dataSync()) < 1e-5, "no augmentation → the input itself");
    const k = gaussianKernel1d(1.5, 100);
    assert.ok(Math.abs(k.reduce((a, b) => a + b, 0) - 1) < 1e-9 && k.length === 11);
    const flat = tf.fill([1, 16, 16, 1], 0.3) as tf.Tensor4D;
    const blurred = applyViews(flat, [{ box: [0, 0, 1, 1], brightness: 1, contrast: 1, gamma: 1, contrastFirst: false, blurSigma: 2 }], [16, 16]);
    assert.ok(maxAbsDiff(blurred.dataSync(), flat.dataSync()) < 1e-6, "blur of a constant image is that image");
    const sharp = tf.tidy(() => tf.pad(tf.ones([1, 2, 2, 1]), [[0, 0], [7, 7], [7, 7], [0, 0]]) as tf.Tensor4D);
    const soft = applyViews(sharp, [{ box: [0, 0, 1, 1], brightness: 1, contrast: 1, gamma: 1, contrastFirst: false, blurSigma: 1 }], [16, 16]);
    assert.ok(soft.max().dataSync()[0] < 0.9 && soft.dataSync()[5 * 16 + 5] > 0, "a blurred square spreads out");
    tf.dispose([x, y, flat, blurred, sharp, soft]);
  });

  it("a smoke pretraining on 64 real CT images lowers its loss and raises positive-key accuracy", async function () {
    requireRealData(this);
    const files = (["covid", "noncovid"] as const).flatMap((c) =>
      listImages(REAL_ROOT, c).slice(0, 32).map((f) => path.join(REAL_ROOT, imageDirRel(c), f)),
    );
    const x = imagesToBatch(await Promise.all(files.map((f) => preprocessImage(f, { size: 40, channels: 1 }))));
    // A mild augmentation: instance discrimination of 64 similar CT slices with the full MoCo v2
    // augmentation needs far more than a few dozen steps of a 79k-parameter network.
    const st = await createMoco({ ...TINY, dim: 32, augment: { ...MOCO_V2_AUGMENT, minScale: 0.7, brightness: 0.1, contrast: 0.1, blurProb: 0 } });
    try {
      const steps: { loss: number; accuracy: number }[] = [];
      let evalEarly = { loss: NaN, accuracy: NaN };
      // 64 images in a fixed cycle of 4 batches; the queue (32 = 2 batches) never holds the
      // current batch's own images, which would be false negatives.
      for (let s = 0; s < 64; s++) {
        const b = tf.tidy(() => tf.gather(x, Array.from({ length: 16 }, (_, i) => (s * 16 + i) % 64)));
        steps.push(mocoStep(st, b, `smoke:${s}`));
        b.dispose();
        if (s === 7) evalEarly = mocoEvaluate(st, x, "eval");
      }
      const evalLate = mocoEvaluate(st, x, "eval");
      const mean = (a: number[]) => a.reduce((p, v) => p + v, 0) / a.length;
      // From step 8 on the queue holds real keys (before, random vectors make the task easy).
      const early = steps.slice(8, 24);
      const late = steps.slice(48);
      const lossEarly = mean(early.map((s) => s.loss));
      const lossLate = mean(late.map((s) => s.loss));
      const accEarly = mean(early.map((s) => s.accuracy));
      const accLate = mean(late.map((s) => s.accuracy));
      assert.ok(lossLate < lossEarly - 0.15, `step loss ${lossEarly.toFixed(3)} → ${lossLate.toFixed(3)}`);
      assert.ok(accLate > accEarly + 0.03, `positive-key accuracy ${accEarly.toFixed(3)} → ${accLate.toFixed(3)}`);
      assert.ok(evalLate.loss < evalEarly.loss - 0.3, `fixed-set InfoNCE ${evalEarly.loss.toFixed(3)} → ${evalLate.loss.toFixed(3)}`);
      assert.ok(evalLate.accuracy > evalEarly.accuracy, `fixed-set top-1 ${evalEarly.accuracy} → ${evalLate.accuracy}`);
    } finally {
      x.dispose();
      disposeMoco(st);
    }
  });

  it("starts from ImageNet weights (the paper's CSSL: ImageNet + MoCo), key = query, head seeded", async function () {
    let dir: string;
    try {
      dir = findWeightsDir("densenet169");
    } catch {
      this.skip();
    }
    const st = await createMoco({ backbone: "densenet169", inputSize: 32, queueSize: 16, dim: 8, seed: 4 });
    const { tensors } = readWeights(dir!, ["fc1000"]);
    try {
      const q = new Map(st.query.weights.map((w) => [w.originalName, w.read()]));
      const k = new Map(st.key.weights.map((w) => [w.originalName, w.read()]));
      for (const name of ["conv1/conv/kernel", "conv5_block32_2_conv/kernel", "bn/moving_variance"]) {
        assert.equal(maxAbsDiff(q.get(name)!.dataSync(), tensors[name].dataSync()), 0, `query ${name} from the file`);
        assert.equal(maxAbsDiff(k.get(name)!.dataSync(), tensors[name].dataSync()), 0, `key ${name} = query`);
      }
      assert.equal(maxAbsDiff(q.get("moco_fc/kernel")!.dataSync(), k.get("moco_fc/kernel")!.dataSync()), 0);
      assert.deepEqual(q.get("moco_fc_hidden/kernel")!.shape, [1664, 1664], "MoCo v2 head: dim_mlp = pooled width");
    } finally {
      tf.dispose(Object.values(tensors));
      disposeMoco(st);
    }
  });

  it("save → load → next step equals the uninterrupted next step; the key encoder is a standard tfjs layers model", async () => {
    const dir = path.join(tempDir("moco"), "ckpt");
    const x = randomImages(16, 40, 7);
    const a = await createMoco({ ...TINY, queueSize: 24 });
    let b: MocoState | undefined;
    try {
      mocoStep(a, x, "s0");
      mocoStep(a, x, "s1");
      await saveMoco(a, dir);
      const ra = mocoStep(a, x, "s2");
      b = await loadMoco(dir);
      assert.equal(b.step, 2);
      assert.equal(b.queuePtr, 32 % 24);
      const rb = mocoStep(b, x, "s2");
      assert.equal(rb.loss, ra.loss);
      assert.equal(rb.accuracy, ra.accuracy);
      assert.equal(b.queuePtr, a.queuePtr);
      const diff = (p: Float32Array[], q: Float32Array[]) => Math.max(...p.map((w, i) => maxAbsDiff(w, q[i])));
      assert.equal(diff(weightsOf(a.query), weightsOf(b.query)), 0, "query weights (BN statistics included)");
      assert.equal(diff(weightsOf(a.key), weightsOf(b.key)), 0, "key weights");
      assert.equal(maxAbsDiff(a.queue.dataSync(), b.queue.dataSync()), 0, "queue");
      // The key encoder folder is the standard layers format: model.json + weightsManifest.
      const json = JSON.parse(fs.readFileSync(path.join(dir, "key", "model.json"), "utf8"));
      assert.equal(json.format, "layers-model");
      assert.deepEqual(json.weightsManifest[0].paths, ["weights.bin"]);
      const key = await loadLayersModel(path.join(dir, "key"));
      const probe = randomImages(2, 32, 9);
      const input = tf.tile(probe, [1, 1, 1, 3]);
      const { tensors } = readWeights(path.join(dir, "key"));
      assert.ok("conv1/kernel" in tensors && "moco_fc/kernel" in tensors, `weights by layer name: ${Object.keys(tensors).slice(0, 4)}`);
      assert.deepEqual((key.predict(input) as tf.Tensor).shape, [2, 16]);
      tf.dispose([probe, input, ...Object.values(tensors)]);
      key.dispose();
      await assert.rejects(loadMoco(path.join(dir, "nope")), /No MoCo checkpoint at .*nope.*saveMoco/);
    } finally {
      x.dispose();
      disposeMoco(a);
      if (b) disposeMoco(b);
    }
  });
});

describe("CSSL: k-NN probe", () => {
  before(async () => {
    await initBackend();
  });

  /** Features around one direction per class (separable), plus noise. */
  function blobs(n: number, seed: string, separable: boolean): { features: number[][]; labels: number[] } {
    const rng = seedrandom(seed);
    const features: number[][] = [];
    const labels: number[] = [];
    for (let i = 0; i < n; i++) {
      const y = i % 2;
      labels.push(y);
      features.push(Array.from({ length: 8 }, (_, d) => (separable ? (d === y ? 3 : 0) : 0) + rng() - 0.5));
    }
    return { features, labels };
  }

  it("gives AUC 1 on separable features and about 0.5 on shuffled labels", () => {
    const r = knnProbe(blobs(40, "tr", true), blobs(30, "va", true), { k: 5 });
    assert.equal(r.auc, 1);
    assert.equal(r.accuracy, 1);
    assert.equal(r.k, 5);
    const rng = seedrandom("shuffle");
    const train = blobs(200, "tr2", false);
    const val = blobs(200, "va2", false);
    train.labels = train.labels.map(() => (rng() < 0.5 ? 1 : 0));
    const s = knnProbe(train, val, { k: 15 });
    assert.ok(Math.abs(s.auc - 0.5) < 0.1, `AUC on noise ${s.auc}`);
    assert.throws(() => knnProbe(train, { features: val.features, labels: [1] }), /200 validation features but 1 labels/);
    assert.throws(() => knnProbe(train, val, { k: 0 }), /k must be a positive integer/);
  });

  it("reads frozen pooled features from a MoCo encoder", async () => {
    const st = await createMoco({ ...TINY });
    const x = randomImages(6, 32, 11);
    try {
      const f = frozenFeatures(st.key, x, st.preprocessing, 4);
      assert.equal(f.length, 6);
      assert.equal(f[0].length, 64, "tiny-resnet pooled width");
      assert.ok(f.every((v) => v.every(Number.isFinite)));
      assert.ok(maxAbsDiff(f[0], f[1]) > 0, "different images, different features");
    } finally {
      x.dispose();
      disposeMoco(st);
    }
  });
});
