import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import * as tf from "@tensorflow/tfjs";
import { PROJECT_ROOT, resolveMedsegRoot } from "../lib/config";
import { listMedsegSlices } from "../lib/data/sources";
import { loadLungSegmenter, MASK_CACHE_NAMESPACE, trainLungSegmenter, LungRunResult } from "../lib/lungs/segmenter";
import { inverseOrientation } from "../lib/lungs/slices";
import { orientPixels, ORIENTATIONS } from "../lib/data/orientation";
import { augmentBatch, augmentPair } from "../lib/training/augment";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { useChosenBackend } from "./support/backend";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const HAVE_MEDSEG = fs.existsSync(path.join(resolveMedsegRoot().dir, "train", "images"));

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

  it("trains on pseudo masks and lowers its loss; writes the run directory and metrics", () => {
    const history = JSON.parse(fs.readFileSync(path.join(runDir, "history.json"), "utf8"));
    assert.equal(history.length, 2);
    assert.ok(history[1].trainLoss < history[0].trainLoss, `train loss ${history[0].trainLoss} → ${history[1].trainLoss}`);
    for (const f of ["manifest.json", "metrics.json", "model/model.json", "model/weights.bin", "checkpoints/best/model.json"]) assert.ok(fs.existsSync(path.join(runDir, f)), f);
    const m = run.metrics;
    assert.equal(m.counts.medseg, 12);
    for (const v of [m.heldOut.pooled.dice, m.medsegCoverage.classical.pooled.coverage, m.medsegCoverage.unet.pooled.coverage, m.lungShare.medseg.unet]) assert.ok(v >= 0 && v <= 1, String(v));
  });

  it("a second call reuses the finished run", async () => {
    const again = await trainLungSegmenter({ profile: "smoke", out: runDir });
    assert.equal(again.reused, true);
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
    ).then(() => {
      // A folder holding someone else's files is refused, nothing written.
      const foreign = tempDir("lung-foreign");
      fs.writeFileSync(path.join(foreign, "notes.txt"), "mine");
      const bad = spawnSync(process.execPath, [CLI, "lungs", "--source", "medseg", "--out", foreign, "--profile", "smoke", "--limit", "1", "--segmenter", runDir], { cwd: PROJECT_ROOT, encoding: "utf8" });
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /did not write/);
    });
  });
});
