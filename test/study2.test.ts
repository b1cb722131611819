import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { initBackend } from "../lib/backend";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveMedsegRoot } from "../lib/config";
import { preprocessCached } from "../lib/data/cache";
import { decodeRaw } from "../lib/data/decode";
import { listCovidSeg, listLuna } from "../lib/data/sources";
import { examplePreprocess, Example } from "../lib/data/examples";
import { alignToExample, lesionMaskFile, lesionMasks, lesionTargetOf } from "../lib/diagnosis/masks";
import { diagnosisData, DiagnosisConfig, evaluateRun, finished, readLesionPredictions, readPredictions, runDiagnosis } from "../lib/diagnosis";
import { lungProbeCells, parseVariant, shortcutCells, table6Cells, TABLE6_ROWS } from "../lib/studies/study2";
import { table5Cells } from "../lib/studies/study1";
import { table7 } from "../lib/reports/cssl";
import { checkDiagnosisConfig, defaultRunDir, runProfile } from "../lib/diagnosis/config";
import { LUNG_PROBE_INPUT_SIZE, lungProbeFilter } from "../lib/diagnosis/lung-probe";
import { augmentBatch, augmentPair } from "../lib/training/augment";
import { getProfile, PAPER_AUGMENT } from "../lib/training/profiles";
import { cleanupTempDirs } from "./data-fixtures";
import { checkRunDirPath } from "../lib/runs/dir";

const haveData = fs.existsSync(resolveCovidSegRoot().dir) && fs.existsSync(resolveMedsegRoot().dir);
const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");

/** Share of pixels where two 0/1 masks agree. */
function agreement(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if ((a[i] >= 0.5) === (b[i] >= 0.5)) same++;
  return same / a.length;
}

describe("Study II: masks on the model's input", function () {
  before(async function () {
    if (!haveData) this.skip();
    await initBackend();
  });

  it("a mask drawn on the file (bright pixels) lands on the same pixels of the turned, cropped, resized image — rotated COVID-Seg and upright LUNA", async () => {
    const seg = listCovidSeg()[100];
    const luna = listLuna()[7];
    for (const s of [seg, luna]) {
      const e: Example = { id: s.id, path: s.path, label: s.cls === "covid" ? 1 : 0, source: s.source };
      const raw = await decodeRaw(e.path, 1);
      // "Bright" = the top 30 % of the slice's grey levels: a mask with a shape, drawn on the file.
      const t = Array.from(raw.data).sort((x, y) => x - y)[Math.floor(0.7 * raw.data.length)];
      const full = { data: Uint8Array.from(raw.data, (v) => (v > t ? 1 : 0)), height: raw.height, width: raw.width };
      const aligned = await alignToExample(e, 64, full);
      const img = await preprocessCached(e.path, examplePreprocess(e, 64));
      const bright = Uint8Array.from(img.data, (v) => (v > t ? 1 : 0));
      assert.ok(bright.reduce((a, b) => a + b, 0) > 50, "the slice has bright pixels to compare");
      assert.ok(agreement(aligned, bright) > 0.93, `${s.source}: aligned mask agrees with the thresholded image on ${agreement(aligned, bright).toFixed(3)} of pixels`);
      // The same mask without the turn would not line up on the rotated source.
      if (s.source === "covid19-ct-seg") {
        const wrong = await alignToExample({ ...e, source: "luna16" }, 64, full).catch(() => null);
        if (wrong) assert.ok(agreement(wrong, bright) < agreement(aligned, bright) - 0.05, "the orientation matters");
      }
    }
  });

  it("lesion masks: COVID-Seg pseudo and MedSeg expert files are found; none for COVID-CT/LUNA; targets mark negatives lesion-free and COVID-CT positives unlabelled", async () => {
    const seg = listCovidSeg()[3];
    assert.match(lesionMaskFile(seg)!, /pseudo-infection/);
    assert.equal(lesionMaskFile(listLuna()[0]), null);
    assert.equal(lesionMaskFile({ path: "/x/CT_COVID/a.png", source: "covid-ct" }), null);
    const [m] = await lesionMasks([{ id: seg.id, path: seg.path, label: 1, source: seg.source }], 32);
    assert.ok(m && m.length === 32 * 32 && m.some((v) => v === 1), "COVID-Seg slices all have some lesion");
    assert.deepEqual(lesionTargetOf({ id: "n", path: "n", label: 0, source: "luna16" }, null, 4), { mask: new Uint8Array(16), hasMask: 1 });
    assert.equal(lesionTargetOf({ id: "p", path: "p", label: 1, source: "covid-ct" }, null, 4).hasMask, 0);
    assert.throws(() => lesionMaskFile({ path: path.join(os.tmpdir(), "images", "nope.jpg"), source: "covid19-ct-seg" }), /Lesion mask .*missing/);
  });

  it("paired augmentation: crop and flip move image and masks together; the image part equals Study I's augmentBatch", () => {
    const n = 3, s = 32;
    // A smooth off-centre blob per image (its mask: blob > 0.6), so that crop and flip show.
    const img = tf.tidy(() => {
      const yy = tf.tile(tf.linspace(0, 1, s).reshape([1, s, 1, 1]), [n, 1, s, 1]);
      const xx = tf.tile(tf.linspace(0, 1, s).reshape([1, 1, s, 1]), [n, s, 1, 1]);
      const cx = tf.tensor4d([0.3, 0.6, 0.4], [n, 1, 1, 1]);
      const d2 = tf.add(tf.square(tf.sub(xx, cx)), tf.square(tf.sub(yy, 0.45)));
      return tf.exp(tf.mul(d2, -12)) as tf.Tensor4D;
    });
    const mask = tf.tidy(() => tf.cast(tf.greaterEqual(img, 0.6), "float32") as tf.Tensor4D);
    const geometric = { ...PAPER_AUGMENT, brightness: 0, contrast: 0 };
    const [gi, gm] = augmentPair(img, mask, geometric, "seed-1");
    const thr = tf.tidy(() => tf.cast(tf.greaterEqual(gi, 0.6), "float32"));
    assert.ok(agreement(thr.dataSync(), gm.dataSync()) > 0.97, "the augmented mask is the augmented image's mask");
    const [ji] = augmentPair(img, mask, PAPER_AUGMENT, "seed-2");
    const ref = augmentBatch(img, PAPER_AUGMENT, "seed-2");
    assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(ji, ref))).dataSync()[0]) < 1e-6, "same draws as augmentBatch");
    assert.ok(gm.dataSync().every((v) => v === 0 || v === 1), "masks stay binary");
    tf.dispose([img, mask, gi, gm, thr, ji, ref]);
  });
});

describe("Study II: runs", function () {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-study2-"));
  before(async function () {
    if (!haveData) this.skip();
    await initBackend();
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
    cleanupTempDirs();
  });
  const base = (over: Partial<DiagnosisConfig>): DiagnosisConfig => ({ study: "study2", model: "densenet169", positives: "combination", profile: "smoke", protocol: "paper", seed: 3, ...over });

  it("Table 6 has the paper's 11 rows; Combination = COVID-CT-349 + the 118 COVID-Seg slices; image-only rows of Study I's arms are Study I's runs", async () => {
    assert.equal(TABLE6_ROWS.length, 11);
    const comb = await diagnosisData("combination", 1, { protocol: "paper" });
    const s349 = await diagnosisData("covid-ct-349", 1, { protocol: "paper" });
    const seg = await diagnosisData("covid-seg", 1, { protocol: "paper" });
    const pos = (d: typeof comb) => d.train.filter((e) => e.label === 1).map((e) => e.id).sort();
    assert.equal(pos(comb).length, 467);
    assert.deepEqual(pos(comb), [...pos(s349), ...pos(seg)].sort());
    const cells = table6Cells({ profile: "smoke" });
    assert.equal(cells.length, 11);
    assert.deepEqual(cells.filter((c) => c.study === "study1").map((c) => c.positives), ["covid-ct-349", "covid-seg", "covid-ct-118"]);
    assert.equal(table6Cells({ profile: "smoke", includeStudyOne: false }).length, 8);
    assert.deepEqual(parseVariant("lung+lesion"), { lungMask: true, lesionMask: true });
    assert.throws(() => parseVariant("lungs"), /Unknown variant 'lungs'.*none, lung, lesion, lung\+lesion/);
  });

  it("refuses variants that cannot be honest: lesion branch without lesion masks, masks in study1, the official protocol", async () => {
    await assert.rejects(runDiagnosis(base({ positives: "covid-ct-349", lesionMask: true, out: path.join(tmp, "x") })), /only covid-seg and combination have them/);
    await assert.rejects(runDiagnosis(base({ study: "study1", positives: "covid-seg", lungMask: true, out: path.join(tmp, "y") })), /Study II variants/);
    await assert.rejects(runDiagnosis(base({ protocol: "official", out: path.join(tmp, "z") })), /paper protocol/);
    assert.ok(!fs.existsSync(path.join(tmp, "x")) && !fs.existsSync(path.join(tmp, "y")) && !fs.existsSync(path.join(tmp, "z")), "nothing written");
  });

  it("lung + lesion (Fig. 4C, tiny DenseNet): interrupted + resumed equals uninterrupted; metrics.json agrees with predictions.csv; lesion Dice on MedSeg recorded", async function () {
    const whole = path.join(tmp, "whole");
    const split = path.join(tmp, "split");
    const c = base({ lungMask: true, lesionMask: true, epochs: 3 });
    const a = finished(await runDiagnosis({ ...c, out: whole }));
    const first = await runDiagnosis({ ...c, out: split, stopAfterEpochs: 1 });
    assert.equal(first.interrupted, true);
    const b = finished(await runDiagnosis({ ...c, out: split, resume: true }));
    const pa = readPredictions(path.join(whole, "predictions.csv"));
    const pb = readPredictions(path.join(split, "predictions.csv"));
    assert.equal(pa.length, pb.length);
    pa.forEach((r, i) => assert.ok(Math.abs(r.probability - pb[i].probability) < 1e-5, `${r.file}: ${r.probability} vs ${pb[i].probability}`));
    assert.deepEqual(a.history.map((h) => h.trainLoss.toFixed(5)), b.history.map((h) => h.trainLoss.toFixed(5)));
    // metrics.json = metrics recomputed from predictions.csv (and the lesion block is kept).
    const stored = JSON.parse(fs.readFileSync(path.join(whole, "metrics.json"), "utf8"));
    assert.deepEqual(JSON.parse(JSON.stringify(evaluateRun(whole))), stored);
    assert.ok(stored.lesion.medsegTest.n === 12 && Number.isFinite(stored.lesion.medsegTest.pooled.dice), "lesion Dice on the (smoke-capped) MedSeg test slices");
    assert.ok(stored.lesion.val.n > 0, "validation Dice on COVID-Seg pseudo labels");
    const lp = readLesionPredictions(whole)!;
    assert.equal(lp.masks.size, 12);
    assert.ok([...lp.masks.values()].every((m) => m.length === lp.size * lp.size));
    const m = JSON.parse(fs.readFileSync(path.join(whole, "manifest.json"), "utf8"));
    assert.equal(m.config.study, "study2");
    assert.equal(m.config.lungMask, true);
    assert.ok(Object.keys(m.checksums).some((k) => k.startsWith("lungs/")), "the lung masks' identity is a checksum of the run");
    assert.ok(a.history.every((h) => h.numTensors === a.history[0].numTensors), "no tensor leak across epochs");
  });

  it("lung probes: whole image, lungs only and lungs removed share the probes' input size; only the blanking probes read lung masks", async function () {
    const quick = lungProbeCells({ profile: "quick", seeds: [1] });
    assert.deepEqual(quick.map((c) => c.lungProbe), ["whole-image", "lungs-only", "lungs-removed"]);
    assert.deepEqual(quick.map((c) => runProfile(c).inputSize), quick.map(() => LUNG_PROBE_INPUT_SIZE.quick));
    assert.notEqual(LUNG_PROBE_INPUT_SIZE.quick, getProfile("quick").inputSize, "quick probes run at their own size");
    assert.equal(runProfile(table6Cells({ profile: "quick", seeds: [1] })[0]).inputSize, getProfile("quick").inputSize, "Table 6 keeps the profile's size");
    assert.equal(lungProbeFilter("whole-image", null, 32), undefined, "the reference is the unfiltered image");
    assert.throws(() => lungProbeFilter("lungs-only", null, 32), /needs lung masks/);
    const runs: Record<string, { checksums: Record<string, string>; config: { lungProbe: string; profile: { inputSize: number } } }> = {};
    for (const lungProbe of ["whole-image", "lungs-removed"] as const) {
      const out = path.join(tmp, `probe-${lungProbe}`);
      finished(await runDiagnosis(base({ lungProbe, epochs: 1, out })));
      runs[lungProbe] = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    }
    assert.equal(runs["whole-image"].config.lungProbe, "whole-image");
    assert.equal(runs["lungs-removed"].config.profile.inputSize, runs["whole-image"].config.profile.inputSize);
    assert.ok(!Object.keys(runs["whole-image"].checksums).some((k) => k.startsWith("lungs/")), "the whole-image reference does not depend on the lung U-Net");
    assert.ok(Object.keys(runs["lungs-removed"].checksums).some((k) => k.startsWith("lungs/")), "a blanking probe records the lung masks it used");
  });

  it("shortcut baselines: Study I's arms are Study I's cue runs (notebook 02's directories), Combination a Study II cell; Table 7 shows it as its last row", async function () {
    const cells = shortcutCells({ profile: "quick", seeds: [1] });
    assert.deepEqual(cells.map((c) => c.positives), [...new Set(TABLE6_ROWS.map((r) => r.arm))]);
    const studyOne = table5Cells({ profile: "quick", protocol: "paper", models: ["shortcut"], seeds: [1] });
    for (const c of cells) {
      assert.equal(c.model, "shortcut");
      checkDiagnosisConfig(c);
      const s1 = studyOne.find((x) => x.positives === c.positives);
      if (s1) assert.equal(defaultRunDir(c), defaultRunDir(s1), `${c.positives}: notebook 02's run is reused`);
      else assert.equal(c.study, "study2", `${c.positives} is not a Study I arm`);
    }
    const cell = shortcutCells({ profile: "smoke", seeds: [3], arms: ["combination"] })[0];
    const r = finished(await runDiagnosis({ ...cell, out: path.join(tmp, "shortcut-combination") }));
    const t = table7({ pretraining: {}, runs: [] }, { shortcut: [r] })["text/plain"];
    const row = t.split("\n").find((l) => l.includes("Shortcut baseline"));
    assert.ok(row, t);
    assert.ok(row!.includes((100 * r.metrics.test.auc).toFixed(1)), `the row shows the run's test AUC ${r.metrics.test.auc}: ${row}`);
    assert.ok(!table7({ pretraining: {}, runs: [] })["text/plain"].includes("Shortcut baseline (file cues"), "no row without runs");
  });

  it("CLI: train --variant lung writes runs/study2/…; a bad variant or a contradictory flag pair is refused with a clear message", function () {
    const out = path.join(tmp, "cli-lung");
    execFileSync("node", [CLI, "train", "--model", "densenet169", "--positives", "covid-ct-118", "--variant", "lung", "--profile", "smoke", "--epochs", "1", "--out", out], { stdio: "pipe" });
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    assert.equal(m.config.study, "study2");
    assert.equal(m.config.protocol, "paper", "Study II defaults to the paper protocol");
    const fail = (args: string[]) => {
      try {
        execFileSync("node", [CLI, "train", "--model", "densenet169", "--profile", "smoke", "--out", path.join(tmp, "never"), ...args], { stdio: "pipe" });
        return "";
      } catch (e) {
        return String((e as { stderr: Buffer }).stderr);
      }
    };
    assert.match(fail(["--positives", "combination", "--variant", "lungs"]), /Unknown variant 'lungs'/);
    assert.match(fail(["--positives", "combination", "--variant", "lung", "--lesion-mask"]), /say the same thing/);
    assert.match(fail(["--positives", "covid-ct-118", "--variant", "lesion"]), /only covid-seg and combination/);
    assert.match(fail(["--positives", "combination", "--variant", ""]), /--variant is empty/);
    assert.match(fail(["--positives", "combination", "--variant", "lung+lesion", "--init", "checkpoint:"]), /names no directory/);
    // Nothing is ever written into ../shared (the read-only data), not even beside a data root.
    const shared = path.resolve(PROJECT_ROOT, "..", "shared", "datasets", "written-by-a-test");
    assert.throws(() => checkRunDirPath(shared), /shared read-only data/);
    assert.ok(!fs.existsSync(shared));
    assert.ok(!fs.existsSync(path.join(tmp, "never")));
  });
});
