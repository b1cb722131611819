import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import * as tf from "@tensorflow/tfjs";
import { PROJECT_ROOT, resolveMedsegRoot, resolveSegLungsRoot } from "../lib/config";
import { DiskCache } from "../lib/data/cache";
import { listMedsegSlices, listSegLungs } from "../lib/data/sources";
import { applyLungProbe } from "../lib/diagnosis/lung-probe";
import { blockOf, chestWallCounts, expertSplit, LUNG_SPLIT, loadLayersModel, loadLungPredictor, loadLungSegmenter, MASK_CACHE_NAMESPACE, MODEL_DIR, MODEL_LAST_DIR, modelSha256, segmentationSource, trainLungSegmenter, LungRunResult, withChestCrops } from "../lib/lungs/segmenter";
import { loadModel } from "../lib/training/checkpoint";
import { foldBatchNorm } from "../lib/models/fold";
import { inferenceModels } from "../lib/segmenter/engine";
import { inverseOrientation, LUNG_INPUT_NORMALISATION, segmenterInput, unetMask, uprightSlice } from "../lib/lungs/slices";
import { predictMasks, SegmentationSource } from "../lib/training/segmentation";
import { orientPixels, ORIENTATIONS } from "../lib/data/orientation";
import { augmentBatch, augmentPair } from "../lib/training/augment";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { useChosenBackend } from "./support/backend";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const HAVE_MEDSEG = fs.existsSync(path.join(resolveMedsegRoot().dir, "train", "images")) && fs.existsSync(path.join(resolveSegLungsRoot().dir, "slices.csv"));

/** A smooth random image [n, s, s, 1] (sums of blobs), so thresholding gives shapes, not speckle. */
function blobs(n: number, s: number): tf.Tensor4D {
  return tf.tidy(() => {
    const yx = tf.stack(tf.meshgrid(tf.linspace(0, 1, s), tf.linspace(0, 1, s)), -1); // [s, s, 2]
    const imgs: tf.Tensor[] = [];
    for (let i = 0; i < n; i++) {
      let img = tf.zeros([s, s]);
      for (let b = 0; b < 3; b++) {
        const c = tf.tensor1d([((i * 7 + b * 3) % 10) / 10, ((i * 3 + b * 5) % 10) / 10]);
        img = tf.add(img, tf.exp(tf.neg(tf.div(tf.sum(tf.square(tf.sub(yx, c)), -1), 0.02))));
      }
      imgs.push(tf.clipByValue(img, 0, 1));
    }
    return tf.expandDims(tf.stack(imgs), -1) as tf.Tensor4D;
  });
}

describe("lung segmenter: paired augmentation", () => {
  it("moves image and mask together (a mask equal to the thresholded image stays equal)", async () => {
    const x = blobs(6, 48);
    const m = tf.tidy(() => tf.cast(tf.greaterEqual(x, 0.5), "float32") as tf.Tensor4D);
    const geo = { minScale: 0.5, hflip: true, brightness: 0, contrast: 0 };
    const [xa, ma] = augmentPair(x, m, geo, "seed-1");
    const agree = async (a: tf.Tensor, b: tf.Tensor) => (await tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.greaterEqual(a, 0.5), tf.greaterEqual(b, 0.5)), "float32"))).data())[0];
    const same = await agree(xa, ma);
    // Control: the mask augmented with another seed (another crop and flip) no longer matches.
    const [, other] = augmentPair(x, m, geo, "seed-2");
    const moved = await agree(xa, other);
    assert.ok(same > 0.99, `agreement ${same}`);
    assert.ok(moved < same - 0.05, `control agreement ${moved} vs ${same}`);
    // Masks stay binary; images are exactly augmentBatch's (Study I numbers do not move).
    const vals = new Set(await ma.data());
    assert.ok([...vals].every((v) => v === 0 || v === 1));
    const paper = { minScale: 0.5, hflip: true, brightness: 0.2, contrast: 0.2 };
    const [xp] = augmentPair(x, m, paper, "s");
    const xb = augmentBatch(x, paper, "s");
    assert.deepEqual(Array.from(await xp.data()), Array.from(await xb.data()));
    tf.dispose([x, m, xa, ma, other, xp, xb]);
  });

  it("orientation: every transform is undone by its inverse", () => {
    const px = Uint8Array.from({ length: 6 }, (_, i) => i);
    for (const o of ORIENTATIONS) {
      const t = orientPixels(px, 2, 3, 1, o);
      assert.deepEqual(Array.from(orientPixels(t.data, t.height, t.width, 1, inverseOrientation(o)).data), Array.from(px), o);
    }
  });
});

describe("segmentation: predictMasks", () => {
  useChosenBackend();
  it("averages the models and, with flip, each model's mirrored view mirrored back", async () => {
    const side = 8;
    const conv = (seed: number) => {
      const m = tf.sequential({ layers: [tf.layers.conv2d({ inputShape: [side, side, 1], filters: 1, kernelSize: 3, padding: "same", activation: "sigmoid", kernelInitializer: tf.initializers.randomNormal({ seed }) })] });
      return m;
    };
    const models = [conv(1), conv(2)];
    const imgs = [0, 1].map((k) => Uint8Array.from({ length: side * side }, (_, i) => (i * 37 + k * 91) % 256));
    const src = new SegmentationSource(["a", "b"], imgs, imgs.map(() => new Uint8Array(side * side)), side);
    const got = async (ms: tf.LayersModel[], flip: boolean) => {
      const out: number[][] = [];
      await predictMasks(ms, src, 1, (k, p) => (out[k] = Array.from(p)), { flip });
      return out;
    };
    // The mirror image built in plain JS (column c ↔ side − 1 − c), so the expectation does not share predictMasks' tf.reverse.
    const mirror = (a: ArrayLike<number>) => Array.from({ length: side * side }, (_, i) => a[Math.floor(i / side) * side + (side - 1 - (i % side))]);
    const mirrored = new SegmentationSource(["a", "b"], imgs.map((a) => Uint8Array.from(mirror(a))), imgs.map(() => new Uint8Array(side * side)), side);
    const plainOf = async (m: tf.LayersModel, from: SegmentationSource) => {
      const out: number[][] = [];
      await predictMasks(m, from, 2, (k, p) => (out[k] = Array.from(p)));
      return out;
    };
    // One model, no flip: exactly model.predict.
    const direct = (await (tf.tidy(() => models[0].predict(src.inputs([0, 1])) as tf.Tensor)).data()) as Float32Array;
    const one = await got([models[0]], false);
    for (let k = 0; k < 2; k++) one[k].forEach((v, i) => assert.ok(Math.abs(v - direct[k * side * side + i]) < 1e-6));
    // One model with flip: the mean of the plain view and the mirrored view mirrored back.
    const p0 = await plainOf(models[0], src), q0 = (await plainOf(models[0], mirrored)).map(mirror);
    const oneFlip = await got([models[0]], true);
    for (let k = 0; k < 2; k++) oneFlip[k].forEach((v, i) => assert.ok(Math.abs(v - (p0[k][i] + q0[k][i]) / 2) < 1e-6, `flip, image ${k} pixel ${i}`));
    // The kernel is not mirror-symmetric, so the flip changes the probabilities (the test can fail).
    assert.ok(one[0].some((v, i) => Math.abs(v - oneFlip[0][i]) > 1e-4));
    // Two models with flip: the mean of all four views.
    const p1 = await plainOf(models[1], src), q1 = (await plainOf(models[1], mirrored)).map(mirror);
    const both = await got(models, true);
    for (let k = 0; k < 2; k++) both[k].forEach((v, i) => assert.ok(Math.abs(v - (p0[k][i] + q0[k][i] + p1[k][i] + q1[k][i]) / 4) < 1e-6, `ensemble, image ${k} pixel ${i}`));
    models.forEach((m) => m.dispose());
  });
});

describe("lung probes", () => {
  it("'lungs only' and 'lungs removed' are exact complements on a synthetic image", () => {
    const n = 64 * 64;
    const gray = Uint8Array.from({ length: n }, (_, i) => 1 + ((i * 37) % 250)); // never the constant 0
    const mask = Uint8Array.from({ length: n }, (_, i) => (Math.hypot((i % 64) - 20, Math.floor(i / 64) - 32) < 12 || Math.hypot((i % 64) - 44, Math.floor(i / 64) - 32) < 12 ? 1 : 0));
    const only = applyLungProbe(gray, mask, "lungs-only");
    const removed = applyLungProbe(gray, mask, "lungs-removed");
    let inLung = 0;
    for (let i = 0; i < n; i++) {
      // Every pixel keeps its value in exactly one of the two and is blanked (0) in the other.
      assert.equal(only[i] + removed[i], gray[i], `pixel ${i}`);
      assert.ok((only[i] === 0) !== (removed[i] === 0), `pixel ${i} blanked in exactly one`);
      assert.equal(only[i] === gray[i], mask[i] === 1);
      inLung += mask[i];
    }
    assert.ok(inLung > 500 && inLung < n - 500, "the mask covers part of the image");
    assert.throws(() => applyLungProbe(gray, mask.subarray(1), "lungs-only"), /mask of 4095/);
    const whole = applyLungProbe(gray, mask, "whole-image");
    assert.deepEqual(whole, gray, "the reference keeps every pixel");
    assert.notEqual(whole, gray, "as a copy");
  });
});

describe("lung segmenter: synthetic consolidation", () => {
  it("paints only inside the lung mask, brighter than the lung, the same for the same seed", async () => {
    const { synthConsolidation, consolidationRng } = await import("../lib/lungs/consolidation");
    const side = 48, img = new Uint8Array(side * side).fill(200), mask = new Uint8Array(side * side);
    // Two "lungs" with tissue (200) between them: the blobs take that tissue's brightness.
    for (let y = 10; y < 38; y++) for (let x = 8; x < 40; x++) if (x < 20 || x >= 28) { mask[y * side + x] = 1; img[y * side + x] = 30; }
    const a = synthConsolidation(img, mask, side, consolidationRng(1, "s", 1));
    const b = synthConsolidation(img, mask, side, consolidationRng(1, "s", 1));
    assert.deepEqual(a, b);
    let changed = 0;
    for (let i = 0; i < a.length; i++) {
      if (!mask[i]) assert.equal(a[i], img[i], `pixel ${i} outside the lung changed`);
      else if (a[i] !== img[i]) { changed++; assert.ok(a[i] > img[i], "consolidation is brighter than aerated lung"); }
    }
    assert.ok(changed > 5, `${changed} pixels painted`);
    assert.deepEqual(synthConsolidation(img, new Uint8Array(side * side), side, consolidationRng(1, "s", 1)), img, "no lung, no change");
  });

  it("densifies exactly the lesion pixels inside the lung (real lesion shapes), towards tissue brightness", async () => {
    const { densifyLesions, consolidationRng } = await import("../lib/lungs/consolidation");
    const side = 48, img = new Uint8Array(side * side).fill(200), mask = new Uint8Array(side * side), lesion = new Uint8Array(side * side);
    for (let y = 10; y < 38; y++) for (let x = 8; x < 40; x++) if (x < 20 || x >= 28) { mask[y * side + x] = 1; img[y * side + x] = 30; }
    for (let y = 30; y < 40; y++) for (let x = 10; x < 16; x++) lesion[y * side + x] = 1; // partly below the lung
    const a = densifyLesions(img, mask, lesion, side, consolidationRng(1, "s", 1));
    for (let i = 0; i < a.length; i++) {
      if (lesion[i] && mask[i]) assert.ok(a[i] > 30 + 0.6 * (200 - 30) - 10, `lesion pixel ${i}: ${a[i]}`);
      else assert.equal(a[i], img[i], `pixel ${i} outside lesion ∩ lung changed`);
    }
    assert.deepEqual(densifyLesions(img, mask, new Uint8Array(side * side), side, consolidationRng(1, "s", 1)), img, "no lesion, no change");
  });
});

describe("lung segmenter: the radiologists' block split", function () {
  before(function () {
    if (!HAVE_MEDSEG) this.skip();
  });

  it("keeps test blocks 3, 7, 12 and validation blocks 5, 10 out of training; every slice in one set", () => {
    const all = listSegLungs();
    assert.equal(all.length, 162);
    const s = expertSplit(all);
    const blocks = (xs: typeof all) => new Set(xs.map(blockOf));
    assert.deepEqual([...blocks(s.test)].sort((a, b) => a - b), [3, 7, 12]);
    assert.deepEqual([...blocks(s.val)].sort((a, b) => a - b), [5, 10]);
    for (const b of blocks(s.train)) assert.ok(![...LUNG_SPLIT.test, ...LUNG_SPLIT.val].includes(b), `block ${b} in training`);
    assert.equal(s.train.length + s.val.length + s.test.length, all.length);
    assert.equal(new Set([...s.train, ...s.val, ...s.test].map((x) => x.id)).size, all.length);
    assert.throws(() => expertSplit(all, { test: [3, 5], val: [5] }), /both test and validation/);
  });

  it("turns the upside-down Radiopaedia blocks upright (bone centroid in the lower half on most slices of every block)", async () => {
    const { uprightMeasure } = await import("../lib/data/upright");
    const byBlock = new Map<number, number[]>();
    for (const img of listSegLungs()) {
      const u = await uprightSlice(img.path, img.source);
      const m = uprightMeasure(u.gray, u.height, u.width);
      const b = blockOf(img);
      byBlock.set(b, [...(byBlock.get(b) ?? []), m.boneCentroidY > 0.5 ? 1 : 0]);
    }
    for (const [b, ups] of byBlock) assert.ok(ups.reduce((a, x) => a + x, 0) / ups.length >= 0.6, `block ${b}: ${ups.join("")}`);
  });

  it("chest crops: the whole lung in a tighter frame, seeded, the body's box at slack 1", async () => {
    const items = expertSplit(listSegLungs()).train.filter((_, i) => i % 20 === 5).slice(0, 3).map((m) => ({ id: m.id, path: m.path, source: m.source }));
    const cache = new DiskCache(tempDir("chest-crop-cache"));
    const side = 64;
    const base = await segmentationSource(items, side, cache);
    const crops = await withChestCrops(base, items, items.length, 1, 0.25, 1, cache);
    assert.equal(crops.size, 2 * items.length);
    const lungShare = (m: Uint8Array) => m.reduce((a, v) => a + v, 0) / m.length;
    for (let i = 0; i < items.length; i++) {
      const k = items.length + i;
      assert.equal(crops.ids[k], `${items[i].id}#chest-crop1`);
      assert.deepEqual(crops.images[i], base.images[i], "the originals stay as they were");
      // The crop holds the lungs' whole box and lies inside the body: the lungs fill more of it.
      assert.ok(lungShare(crops.masks[k]) > lungShare(base.masks[i]) + 0.02, `${items[i].id}: ${lungShare(crops.masks[k]).toFixed(3)} vs ${lungShare(base.masks[i]).toFixed(3)}`);
      assert.ok(crops.images[k].some((v, j) => v !== crops.images[i][j]), "a crop is not the original slice");
    }
    const again = await withChestCrops(base, items, items.length, 1, 0.25, 1, cache);
    assert.deepEqual(again.images, crops.images, "same seed, same crops");
    const other = await withChestCrops(base, items, items.length, 1, 0.25, 2, cache);
    assert.ok(other.images.slice(items.length).some((img, i) => img.some((v, j) => v !== crops.images[items.length + i][j])), "another seed, other crops");
    const body = await withChestCrops(base, items, items.length, 1, 1, 1, cache);
    const bodyAgain = await withChestCrops(base, items, items.length, 1, 1, 7, cache);
    assert.deepEqual(body.images, bodyAgain.images, "slack 1: every crop is the body's box, whatever the seed");
    assert.equal(await withChestCrops(base, items, items.length, 0, 0.25, 1, cache), base, "no copies: the source itself");
  });

  it("the chest-wall count: dense non-lesion mask pixels, against Otsu of the body", () => {
    // Left half dark (lung, 20), right half bright (wall, 200); a mask over the middle columns.
    const w = 10, h = 4, gray = new Uint8Array(w * h), mask = new Uint8Array(w * h), lesion = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      gray[y * w + x] = x < 5 ? 20 : 200;
      mask[y * w + x] = x >= 3 && x < 7 ? 1 : 0;
      lesion[y * w + x] = x === 6 ? 1 : 0;
    }
    assert.deepEqual(chestWallCounts(gray, mask, null, null), { dense: 8, mask: 16 });
    assert.deepEqual(chestWallCounts(gray, mask, null, lesion), { dense: 4, mask: 16 }, "lesion pixels are not chest wall");
  });
});

describe("lung segmenter: smoke run on real slices", function () {
  useChosenBackend();
  let run: LungRunResult;
  let runDir: string;
  before(async function () {
    if (!HAVE_MEDSEG) this.skip();
    runDir = path.join(tempDir("lungs"), "resunet-seed1");
    run = await trainLungSegmenter({ profile: "smoke", out: runDir });
  });
  after(cleanupTempDirs);

  it("trains on the radiologists' masks and lowers its loss; writes the run directory and metrics", () => {
    const history = JSON.parse(fs.readFileSync(path.join(runDir, "history.json"), "utf8"));
    assert.equal(history.length, 2);
    assert.ok(history[1].trainLoss < history[0].trainLoss, `train loss ${history[0].trainLoss} → ${history[1].trainLoss}`);
    for (const f of ["manifest.json", "metrics.json", "model/model.json", "model/weights.bin", "model-last/model.json", "checkpoints/best/model.json"]) assert.ok(fs.existsSync(path.join(runDir, f)), f);
    const m = run.metrics;
    assert.equal(m.counts.medseg, 12);
    for (const v of [m.expertTest.unet.pooled.dice, m.expertTest.classical.pooled.dice, m.chestWall.medseg.unet.share, m.medsegCoverage.classical.pooled.coverage, m.medsegCoverage.unet.pooled.coverage, m.lungShare.medseg.unet]) assert.ok(v >= 0 && v <= 1, String(v));
  });

  it("trains and selects on the expert blocks only: the manifest's sets never hold a test block, validation only blocks 5 and 10", () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
    const sets = manifest.extra.sets as Record<"train" | "val" | "test", string[]>;
    const block = new Map(listSegLungs().map((x) => [x.id, blockOf(x)]));
    assert.ok(sets.train.length > 0 && sets.val.length > 0 && sets.test.length > 0);
    for (const id of sets.train) assert.ok(!LUNG_SPLIT.test.includes(block.get(id)!) && !LUNG_SPLIT.val.includes(block.get(id)!), `${id} (block ${block.get(id)}) in training`);
    for (const id of sets.val) assert.ok(LUNG_SPLIT.val.includes(block.get(id)!), `${id} in validation`);
    for (const id of sets.test) assert.ok(LUNG_SPLIT.test.includes(block.get(id)!), `${id} in test`);
    assert.deepEqual(manifest.config.input, LUNG_INPUT_NORMALISATION);
    assert.ok(run.metrics.thresholds.some((t) => t.threshold === run.metrics.threshold), "the threshold is one of the validation grid's");
  });

  it("normalises inputs identically in training and inference: a served mask is the model's mask of the training input", async () => {
    const side = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8")).config.profile.inputSize as number;
    const items = [listSegLungs()[0], listMedsegSlices("test")[0]].map((x) => ({ id: x.id, path: x.path, source: x.source }));
    // The training road (segmentationSource) and the plain normalised input give the same bytes…
    const train = await segmentationSource(items, side, new DiskCache(tempDir("lung-norm-cache")));
    for (let i = 0; i < items.length; i++) {
      const direct = await segmenterInput(await uprightSlice(items[i].path, items[i].source), side);
      assert.deepEqual(Array.from(train.images[i]), Array.from(direct), items[i].id);
      const plain = await segmenterInput(await uprightSlice(items[i].path, items[i].source), side, { kind: "none" });
      assert.notDeepEqual(Array.from(direct), Array.from(plain), "the normalisation changes the input");
    }
    // …and the served mask is the run's prediction (both members, flipped too) on exactly that input.
    // The graphs masks are served from: each member with BN folded (lib/models/fold.ts).
    const models = await inferenceModels([await loadLayersModel(path.join(runDir, MODEL_DIR)), await loadLayersModel(path.join(runDir, MODEL_LAST_DIR))]);
    const seg = await loadLungSegmenter(runDir, { cacheDir: tempDir("lung-norm-serve") });
    try {
      const probs: Float32Array[] = [];
      await predictMasks(models, train, 8, (k, p) => (probs[k] = p.slice()), { flip: true });
      for (let i = 0; i < items.length; i++) {
        const s = await uprightSlice(items[i].path, items[i].source);
        const expected = await unetMask(probs[i], side, s, true, run.metrics.threshold);
        const served = await seg.maskFor(items[i].path, items[i].source);
        const { orientPixels } = await import("../lib/data/orientation");
        assert.deepEqual(Array.from(orientPixels(served.data, served.height, served.width, 1, s.orientation).data), Array.from(expected), items[i].id);
      }
    } finally {
      seg.dispose();
      models.forEach((m) => m.dispose());
    }
  });

  it("predicts with the selected and the last epoch (model/, model-last/ = the engine's best and last checkpoints), each also mirrored", async () => {
    assert.deepEqual(run.metrics.prediction, { members: [MODEL_DIR, MODEL_LAST_DIR], flip: true, lastEpoch: 1 });
    const p = await loadLungPredictor(runDir);
    try {
      assert.deepEqual(p.members, [MODEL_DIR, MODEL_LAST_DIR]);
      assert.equal(p.flip, true);
      assert.notEqual(p.sha256, modelSha256(path.join(runDir, MODEL_DIR)), "the masks' identity covers every member and the flip");
      // Each member is that checkpoint, with BN folded into the conv before it (the serving graph).
      for (const [k, ckpt] of [[0, "best"], [1, "last"]] as const) {
        const ref = await loadModel(path.join(runDir, "checkpoints", ckpt));
        const folded = await foldBatchNorm(ref);
        const a = p.models[k].getWeights(), b = folded.getWeights();
        assert.equal(a.length, b.length);
        assert.ok(a.length < ref.getWeights().length, "BN layers folded away");
        for (let i = 0; i < a.length; i++) assert.deepEqual(Array.from(await a[i].data()), Array.from(await b[i].data()), `${p.members[k]} weight ${i} vs checkpoints/${ckpt}`);
        folded.dispose();
        ref.dispose();
      }
    } finally {
      p.dispose();
    }
  });

  it("a run made before the knobs (no prediction in metrics.json) predicts with model/ alone, unflipped, under its old identity", async () => {
    const old = path.join(tempDir("lung-old-run"), "resunet-seed1");
    fs.cpSync(runDir, old, { recursive: true });
    fs.rmSync(path.join(old, MODEL_LAST_DIR), { recursive: true, force: true });
    const m = JSON.parse(fs.readFileSync(path.join(old, "metrics.json"), "utf8"));
    delete m.prediction;
    fs.writeFileSync(path.join(old, "metrics.json"), JSON.stringify(m));
    const p = await loadLungPredictor(old);
    try {
      assert.deepEqual(p.members, [MODEL_DIR]);
      assert.equal(p.flip, false);
      assert.equal(p.models.length, 1);
      assert.equal(p.sha256, modelSha256(path.join(old, MODEL_DIR)), "old runs keep their mask cache keys and Study II checksums");
    } finally {
      p.dispose();
    }
  });

  it("a second call reuses the finished run", async () => {
    const again = await trainLungSegmenter({ profile: "smoke", out: runDir });
    assert.equal(again.reused, true);
  });

  it("a finished run of an older profile is refused with the way out (--retrain-segmenter), and nothing in it changes", async () => {
    const stale = path.join(tempDir("lung-stale-run"), "resunet-seed1");
    fs.cpSync(runDir, stale, { recursive: true });
    const mf = path.join(stale, "manifest.json");
    const m = JSON.parse(fs.readFileSync(mf, "utf8"));
    delete m.config.profile.testTimeFlip; // as recorded before the knob
    fs.writeFileSync(mf, JSON.stringify(m));
    const before = fs.readFileSync(path.join(stale, "metrics.json"), "utf8");
    await assert.rejects(trainLungSegmenter({ profile: "smoke", out: stale }), /another configuration[\s\S]*--retrain-segmenter/);
    assert.equal(fs.readFileSync(path.join(stale, "metrics.json"), "utf8"), before);
  });

  it("mask cache: a hit returns the same mask, at the image's size", async () => {
    const cacheRoot = tempDir("lung-cache");
    const seg = await loadLungSegmenter(runDir, { cacheDir: cacheRoot });
    try {
      const img = listMedsegSlices("test")[0];
      const a = await seg.maskFor(img.path, "medseg");
      const meta = await sharp(img.path).metadata();
      assert.equal(a.height, meta.height);
      assert.equal(a.width, meta.width);
      const ns = path.join(cacheRoot, MASK_CACHE_NAMESPACE);
      const entries = () => (fs.readdirSync(ns, { recursive: true }) as string[]).filter((n) => !fs.statSync(path.join(ns, n)).isDirectory());
      assert.equal(entries().length, 1);
      const b = await seg.maskFor(img.path, "medseg");
      assert.equal(entries().length, 1, "the second call is a hit");
      assert.deepEqual(b, a);
      assert.ok(a.data.every((v) => v === 0 || v === 1));
    } finally {
      seg.dispose();
    }
  });

  it("`lungs` CLI writes 0/255 PNGs of each image's size at its relative path", function () {
    const out = path.join(tempDir("lung-masks"), "masks");
    const r = spawnSync(process.execPath, [CLI, "lungs", "--source", "medseg", "--out", out, "--profile", "smoke", "--limit", "3", "--segmenter", runDir, "--json"], { cwd: PROJECT_ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.count, 3);
    const imgs = listMedsegSlices("train").slice(0, 3);
    return Promise.all(
      imgs.map(async (img) => {
        const f = path.join(out, "train", "images", path.basename(img.path).replace(/\.jpg$/, ".png"));
        assert.ok(fs.existsSync(f), f);
        const src = await sharp(img.path).metadata();
        assert.equal((await sharp(f).metadata()).channels, 1, "a gray PNG");
        const { data, info } = await sharp(f).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
        assert.deepEqual([info.width, info.height], [src.width, src.height]);
        assert.ok(data.every((v) => v === 0 || v === 255));
      }),
    ).then(async () => {
      // The radiologists' source: DIR/images/NNNN.png, 0/255, 256 × 256 like its slices.
      const segOut = path.join(tempDir("lung-masks-seg"), "masks");
      const r2 = spawnSync(process.execPath, [CLI, "lungs", "--source", "covid19-ct-seg-lungs", "--out", segOut, "--profile", "smoke", "--limit", "2", "--segmenter", runDir, "--json"], { cwd: PROJECT_ROOT, encoding: "utf8" });
      assert.equal(r2.status, 0, r2.stderr);
      for (const img of listSegLungs().slice(0, 2)) {
        const f = path.join(segOut, "images", path.basename(img.path));
        const { data, info } = await sharp(f).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
        assert.deepEqual([info.width, info.height, info.channels], [256, 256, 1], f);
        assert.ok(data.every((v) => v === 0 || v === 255));
      }
      // A folder holding someone else's files is refused, nothing written.
      const foreign = tempDir("lung-foreign");
      fs.writeFileSync(path.join(foreign, "notes.txt"), "mine");
      const bad = spawnSync(process.execPath, [CLI, "lungs", "--source", "medseg", "--out", foreign, "--profile", "smoke", "--limit", "1", "--segmenter", runDir], { cwd: PROJECT_ROOT, encoding: "utf8" });
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /did not write/);
    });
  });
});
