/**
 * Harmonisation (lib/data/harmonise.ts): body-histogram matching maps an image's body onto the
 * reference, is deterministic, "none" changes no pixel, key, config or directory, and the
 * protocol's reference is fitted on training images only.
 */
import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { initBackend } from "../lib/backend";
import { loadGrayImages, loadPreprocessed, Example } from "../lib/data/examples";
import { bodyMask, fitHarmoniser, harmoniseImage, harmoniseKey, maskedHistogram, matchingLut } from "../lib/data/harmonise";
import { PreprocessedImage } from "../lib/data/preprocess";
import { defaultRunDir, recordedConfig, checkDiagnosisConfig, DiagnosisConfig } from "../lib/diagnosis/config";
import { computeFeatures } from "../lib/diagnosis/inputs";
import { trainEntry } from "../lib/cluster/studies";
import { preprocessFor } from "../lib/models/weights";
import { Protocol, protocolHarmoniser } from "../lib/protocols";
import { getProfile } from "../lib/training/profiles";
import { table5Cells } from "../lib/studies/study1";
import { cleanupTempDirs, tempDir } from "./data-fixtures";

/** A size² gray image whose body is a square [lo, hi) in both axes, with its crop's hull. */
function synthetic(size: number, body: (i: number) => number, lo = 8, hi = 24): PreprocessedImage {
  const data = new Uint8Array(size * size);
  let k = 0;
  for (let y = lo; y < hi; y++) for (let x = lo; x < hi; x++) data[y * size + x] = body(k++);
  const hull: [number, number][] = [[lo, lo], [hi, lo], [hi, hi], [lo, hi]];
  return { data, size, channels: 1, crop: { box: { top: 0, left: 0, height: size, width: size }, hull, threshold: 0.1, fallback: null }, source: { height: size, width: size }, file: "<synthetic>" };
}

const cdf = (h: Float64Array) => { let a = 0; return Array.from(h, (v) => (a += v)); };

/** Write a gray PNG: a bright disk (the "body", its grey levels from `level`) on black. */
async function diskPng(file: string, side: number, level: (x: number, y: number) => number): Promise<void> {
  const px = Buffer.alloc(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
    const r = Math.hypot(x - side / 2, y - side / 2);
    px[y * side + x] = r < side * 0.4 ? Math.max(20, Math.min(255, Math.round(level(x, y)))) : 0;
  }
  await sharp(px, { raw: { width: side, height: side, channels: 1 } }).png().toFile(file);
}

describe("harmonisation (body-histogram)", function () {
  const savedCache = process.env.COVIDCT_CACHE;
  before(() => { process.env.COVIDCT_CACHE = tempDir("harmonise-cache"); });
  after(() => { if (savedCache === undefined) delete process.env.COVIDCT_CACHE; else process.env.COVIDCT_CACHE = savedCache; cleanupTempDirs(); });

  it("finds the body from the crop's hull, carried into the resized crop", () => {
    const img = synthetic(32, () => 100);
    const m = bodyMask(img);
    assert.equal(m.reduce((a, v) => a + v, 0), 16 * 16);
    assert.equal(m[8 * 32 + 8], 1);
    assert.equal(m[7 * 32 + 8], 0);
    // The same hull, cropped to its box and resized to 32²: the whole square is body.
    const cropped = { ...img, crop: { ...img.crop!, box: { top: 8, left: 8, height: 16, width: 16 } } };
    assert.equal(bodyMask(cropped).reduce((a, v) => a + v, 0), 32 * 32);
    assert.equal(bodyMask({ ...img, crop: null }).reduce((a, v) => a + v, 0), 32 * 32, "no crop: the whole image");
  });

  it("maps an image's body histogram onto the reference", () => {
    // Body: dark, narrow (0–63); reference: bright and wide (100–227).
    const img = synthetic(32, (k) => k % 64);
    const reference = new Float64Array(256);
    for (let v = 100; v < 228; v++) reference[v] = 1 / 128;
    const h = { name: "body-histogram" as const, size: 32, reference, n: 1, key: "test" };
    const out = harmoniseImage(img, h);
    const after = maskedHistogram(out, bodyMask(img));
    const [a, r] = [cdf(after), cdf(reference)];
    const gap = Math.max(...a.map((v, i) => Math.abs(v - r[i])));
    assert.ok(gap < 0.02, `body CDF differs from the reference's by ${gap}`);
    assert.equal(out[0], 100, "outside the body: the same monotone curve (0 → the reference's darkest level)");
    // Identity when the image already has the reference's histogram; monotone always.
    const same = maskedHistogram(img.data, bodyMask(img));
    const id = matchingLut(same, same);
    for (let v = 0; v < 64; v++) assert.equal(id[v], v);
    const lut = matchingLut(same, reference);
    for (let v = 1; v < 256; v++) assert.ok(lut[v] >= lut[v - 1]);
  });

  it("is deterministic: the same reference and key from the same images in any order", () => {
    const imgs = [synthetic(32, (k) => k % 64), synthetic(32, (k) => 128 + (k % 32)), synthetic(32, (k) => (k * 7) % 256)];
    const a = fitHarmoniser("body-histogram", imgs)!;
    const b = fitHarmoniser("body-histogram", [...imgs].reverse())!;
    assert.equal(a.key, b.key);
    assert.deepEqual(Array.from(harmoniseImage(imgs[0], a)), Array.from(harmoniseImage(imgs[0], b)));
    assert.notEqual(fitHarmoniser("body-histogram", imgs.slice(1))!.key, a.key, "other images, other key");
    assert.equal(fitHarmoniser("none", imgs), null);
    assert.throws(() => fitHarmoniser("zscore" as never, imgs), /Unknown harmonisation/);
  });

  it("none leaves pixels, feature cache keys, recorded config and run directory unchanged", async () => {
    await initBackend();
    const dir = tempDir("harmonise-img");
    const examples: Example[] = [];
    for (let i = 0; i < 3; i++) {
      const file = path.join(dir, `img ${i}.png`);
      await diskPng(file, 64, (x, y) => 40 + ((x * (i + 1) + y) % 60));
      examples.push({ id: `covid-ct/covid/img ${i}.png`, path: file, label: 1, source: "covid-ct" });
    }
    const plain = await loadGrayImages(examples, 16);
    assert.deepEqual(await loadGrayImages(examples, 16, null), plain);
    const pre = await loadPreprocessed(examples, 16);
    assert.equal(harmoniseImage(pre[0], null), pre[0].data);
    assert.deepEqual(harmoniseKey(null), {});

    // Feature cache: "none" hits the entries written without the option; a harmoniser writes its own.
    const featDir = path.join(process.env.COVIDCT_CACHE!, "features");
    const count = () => (fs.existsSync(featDir) ? fs.readdirSync(featDir).reduce((n, d) => n + fs.readdirSync(path.join(featDir, d)).length, 0) : 0);
    const extractor = tf.sequential({ layers: [tf.layers.globalAveragePooling2d({ inputShape: [16, 16, 3] })] });
    const key = { model: "test-pool", weightsSha256: "none", size: 16 };
    const f0 = await computeFeatures(extractor, examples, key, preprocessFor("densenet169"));
    const n0 = count();
    assert.equal(n0, 3);
    const f1 = await computeFeatures(extractor, examples, key, preprocessFor("densenet169"), { harmonise: null });
    assert.equal(count(), n0, "none: same keys, no new entries");
    assert.deepEqual(f1, f0);
    const h = fitHarmoniser("body-histogram", [pre[0], pre[1]])!;
    const f2 = await computeFeatures(extractor, examples, key, preprocessFor("densenet169"), { harmonise: h });
    assert.equal(count(), n0 + 3, "harmonised features are cached under their own keys");
    assert.notDeepEqual(f2[2], f0[2]);
    extractor.dispose();

    // Config, run directory and grid command: unchanged by none, distinct when on.
    const c: DiagnosisConfig = { model: "densenet169", positives: "covid-seg", profile: "quick", protocol: "paper", seed: 1 };
    const p = getProfile("quick");
    assert.deepEqual(recordedConfig({ ...c, harmonise: "none" }, p), recordedConfig(c, p));
    assert.equal(defaultRunDir({ ...c, harmonise: "none" }), defaultRunDir(c));
    assert.equal(path.basename(defaultRunDir({ ...c, harmonise: "body-histogram" })), "densenet169-covid-seg-harmonise-body-histogram-seed1");
    assert.equal((recordedConfig({ ...c, harmonise: "body-histogram" }, p) as { harmonise?: string }).harmonise, "body-histogram");
    const cells = table5Cells({ profile: "quick", protocol: "paper", harmonise: "body-histogram" });
    assert.ok(cells.every((x) => x.harmonise === "body-histogram"));
    assert.ok(table5Cells({ profile: "quick", protocol: "paper", harmonise: "none" }).every((x) => !("harmonise" in x)));
    const req = { protocol: "paper", profile: "quick" as const };
    assert.deepEqual(trainEntry(cells[0], req).args.slice(-2), ["--harmonise", "body-histogram"]);
    assert.ok(!trainEntry(table5Cells({ profile: "quick", protocol: "paper" })[0], req).args.includes("--harmonise"));
    assert.throws(() => checkDiagnosisConfig({ ...c, study: "study2", positives: "combination", lungMask: true, harmonise: "body-histogram" }), /measured for Study I/);
  });

  it("fits the protocol's reference on training images only (never val, test or external)", async () => {
    const dir = tempDir("harmonise-protocol");
    const member = async (name: string, level: number) => {
      const file = path.join(dir, `${name}.png`);
      await diskPng(file, 64, (x, y) => level + ((x + y) % 8));
      return { id: `covid-ct/covid/${name}.png`, source: "covid-ct" as const, patient: name, path: file };
    };
    // Training bodies are dark (60–67); every evaluation image is bright (200–207).
    const splits = {
      train: { covid: [await member("t1", 60)], noncovid: [await member("t2", 60)] },
      val: { covid: [await member("v1", 200)], noncovid: [await member("v2", 200)] },
      test: { covid: [await member("s1", 200)], noncovid: [await member("s2", 200)] },
    };
    const external = { covid: [await member("e1", 200)], noncovid: [await member("e2", 200)], hash: "x", source: "sars-cov-2-ct-scan" as const };
    const p = { hash: "fake-protocol", splits, external } as unknown as Protocol;
    const h = (await protocolHarmoniser(p, "body-histogram", 16))!;
    const trainOnly = fitHarmoniser("body-histogram", await loadPreprocessed(splits.train.covid.concat(splits.train.noncovid).map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: m.source })), 16))!;
    assert.equal(h.key, trainOnly.key);
    assert.equal(h.n, 2);
    const bright = h.reference.slice(150).reduce((a, v) => a + v, 0);
    assert.ok(bright < 0.05, `reference mass from evaluation images' grey levels: ${bright}`);
    assert.equal(await protocolHarmoniser(p, "none", 16), null);
  });
});
