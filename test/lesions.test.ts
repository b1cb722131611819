import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { PROJECT_ROOT, resolveMedsegRoot, resolveSarsRoot, resolveSegLungsRoot } from "../lib/config";
import { listMedsegSlices, listSegLungs } from "../lib/data/sources";
import { readPredictions } from "../lib/diagnosis/results";
import { chooseThreshold } from "../lib/evaluation";
import { componentSizes, distanceToEdge, featureVector, fitLogistic, lesionStatistics, logisticProbability } from "../lib/lesions/burden";
import { FeatureRow, fitOnTraining, runLesionScores, scorePredictions } from "../lib/lesions/score";
import { hasLesion, LesionRunResult, loadLesionSegmenter, trainLesionSegmenter } from "../lib/lesions/segmenter";
import { blockOf, LUNG_SPLIT, trainLungSegmenter } from "../lib/lungs/segmenter";
import { MODEL_DIR, MODEL_LAST_DIR } from "../lib/segmenter/engine";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { useChosenBackend } from "./support/backend";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const HAVE_MASKS = fs.existsSync(path.join(resolveMedsegRoot().dir, "train", "images")) && fs.existsSync(path.join(resolveSegLungsRoot().dir, "slices.csv"));

/** A w×h image with two rectangular "lungs" and a lesion drawn with known pixel counts. */
function synthetic() {
  const w = 40, h = 20;
  const lung = new Uint8Array(w * h), lesion = new Uint8Array(w * h);
  for (let y = 2; y < 18; y++) for (let x = 0; x < w; x++) {
    if ((x >= 2 && x < 16) || (x >= 24 && x < 38)) lung[y * w + x] = 1; // 2 × 16 × 14 = 448 lung pixels
  }
  // Left lung: a 4×5 block (20 px) at the edge of the lung; right lung: a 3×3 block (9 px) in its middle.
  for (let y = 2; y < 6; y++) for (let x = 2; x < 7; x++) lesion[y * w + x] = 1;
  for (let y = 9; y < 12; y++) for (let x = 30; x < 33; x++) lesion[y * w + x] = 1;
  // Lesion outside the lung (5 px) never counts.
  for (let x = 18; x < 23; x++) lesion[10 * w + x] = 1;
  return { w, h, lung, lesion };
}

describe("lesion statistics: the burden of synthetic masks is exact", () => {
  it("burden = lesion inside the lung / lung; each lung's own share; both lungs; components", () => {
    const { w, h, lung, lesion } = synthetic();
    const s = lesionStatistics(lung, lesion, h, w);
    assert.equal(s.lungShare, 448 / 800);
    assert.equal(s.burden, 29 / 448, "the 5 pixels outside the lung are not lesion burden");
    assert.deepEqual(s.sides, [20 / 224, 9 / 224]);
    assert.equal(s.bilateral, 1, "both lungs hold ≥ 1 % lesion");
    assert.equal(s.components, 2);
    // Outer third: city-block depth ≤ 7/3 in a lung 7 deep at most. The left block sits in the lung's
    // corner: 14 of its 20 pixels lie within depth 2 (its two outer rows or columns), the 3×3 block
    // in the right lung's middle lies at depth 6–7.
    const d = distanceToEdge(lung, h, w);
    assert.equal(Math.max(...d), 7);
    assert.equal(d[2 * w + 2], 1, "a corner pixel is 1 from outside");
    assert.equal(s.peripheral, 14 / 29, `peripheral ${s.peripheral}`);
    // No lesion: zero burden; no lung: nothing at all.
    assert.equal(lesionStatistics(lung, new Uint8Array(w * h), h, w).burden, 0);
    assert.deepEqual(lesionStatistics(new Uint8Array(w * h), lesion, h, w).burden, 0);
    assert.throws(() => lesionStatistics(lung, lesion.subarray(1), h, w), /masks of 800 and 799 pixels/);
  });

  it("components are 8-connected; a slice 'has a lesion' above the minimum share only", () => {
    const m = Uint8Array.from([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1]); // 3×4: a diagonal pair and a pair at the end
    assert.deepEqual(componentSizes(m, 3, 4).sort(), [2, 2]);
    const mask = new Uint8Array(1000);
    mask[0] = 1;
    assert.equal(hasLesion(mask, 0.001), false, "one pixel in 1,000 is a speck");
    mask[1] = 1;
    assert.equal(hasLesion(mask, 0.001), true);
  });

  it("the logistic fit separates separable data and is deterministic", () => {
    const xs = Array.from({ length: 60 }, (_, i) => [i % 2 ? 1 + (i % 7) / 10 : -1 - (i % 5) / 10, (i * 13) % 3]);
    const ys = xs.map((_, i) => i % 2);
    const m = fitLogistic(xs, ys, { l2: 1 });
    assert.deepEqual(fitLogistic(xs, ys, { l2: 1 }), m);
    xs.forEach((x, i) => assert.equal(logisticProbability(m, x) >= 0.5, ys[i] === 1));
    assert.throws(() => fitLogistic(xs, ys.map(() => 1)), /one class only/);
  });
});

describe("lesion scores: no external id reaches a fit or a threshold", () => {
  const stats = (b: number) => lesionStatistics(Uint8Array.from({ length: 100 }, () => 1), Uint8Array.from({ length: 100 }, (_, i) => (i < b ? 1 : 0)), 10, 10);
  const rows: FeatureRow[] = [
    ...Array.from({ length: 20 }, (_, i) => ({ set: "train" as const, id: `t${i}`, label: i % 2, stats: stats(i % 2 ? 10 + i : i % 3) })),
    ...Array.from({ length: 10 }, (_, i) => ({ set: "val" as const, id: `v${i}`, label: i % 2, stats: stats(i % 2 ? 8 + i : 1) })),
    ...Array.from({ length: 10 }, (_, i) => ({ set: "external" as const, id: `e${i}`, label: i % 2, stats: stats(i) })),
  ];
  it("the logistic model is fitted on the train rows alone, and predictions.csv never holds them", () => {
    const m = fitOnTraining(rows);
    // Turn every external (and val) row upside down: the model does not move.
    const flipped = rows.map((r) => (r.set === "train" ? r : { ...r, label: 1 - r.label, stats: stats(50) }));
    assert.deepEqual(fitOnTraining(flipped), m);
    assert.deepEqual(fitOnTraining(rows.filter((r) => r.set === "train")), m);
    for (const score of ["lesion-burden", "lesion-logistic"] as const) {
      const preds = scorePredictions(score, rows, m);
      assert.ok(preds.every((p) => p.set !== "train"));
      assert.equal(preds.length, 20);
    }
    // The burden is the probability column of the burden score, unfitted.
    assert.equal(scorePredictions("lesion-burden", rows)[0].probability, rows[20].stats.burden);
    assert.deepEqual(featureVector(rows[0].stats).length, 4);
  });
});

describe("lesion segmenter: smoke run on the radiologists' masks", function () {
  useChosenBackend();
  let run: LesionRunResult;
  let runDir: string;
  before(async function () {
    if (!HAVE_MASKS) this.skip();
    runDir = path.join(tempDir("lesions"), "resunet-seed1");
    run = await trainLesionSegmenter({ profile: "smoke", out: runDir });
  });
  after(cleanupTempDirs);

  it("no MedSeg test slice and no test-block slice is in training or selection", () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
    assert.equal(manifest.kind, "lesions");
    const sets = manifest.extra.sets as Record<"train" | "val" | "test", string[]>;
    const medsegTest = new Set(listMedsegSlices("test").map((x) => x.id));
    const medsegTrain = new Set(listMedsegSlices("train").map((x) => x.id));
    const block = new Map(listSegLungs().map((x) => [x.id, blockOf(x)]));
    assert.ok(sets.train.some((id) => medsegTrain.has(id)) && sets.train.some((id) => block.has(id)), "both MedSeg train and expert slices train");
    for (const id of [...sets.train, ...sets.val]) {
      assert.ok(!medsegTest.has(id), `${id}: a MedSeg test slice in training or validation`);
      if (block.has(id)) assert.ok(!LUNG_SPLIT.test.includes(block.get(id)!), `${id}: a test-block slice in training or validation`);
    }
    // Validation: blocks 5 and 10, and every fifth MedSeg train slice, which then does not train.
    for (const id of sets.val) assert.ok(block.has(id) ? LUNG_SPLIT.val.includes(block.get(id)!) : medsegTrain.has(id), `${id} in validation`);
    const medVal = sets.val.filter((id) => medsegTrain.has(id));
    assert.ok(medVal.length > 0, "MedSeg train slices validate");
    for (const id of medVal) assert.ok(!sets.train.includes(id), `${id} both trains and validates`);
    for (const id of sets.test) assert.ok(LUNG_SPLIT.test.includes(block.get(id)!), `${id} in test`);
    const m = run.metrics;
    assert.ok(m.thresholds.some((t) => t.threshold === m.threshold), "the threshold is one of the validation grid's");
    assert.equal(m.medsegTest.n, m.counts.medsegTest);
    for (const v of [m.medsegTest.pooled.dice, m.expertTest.pooled.dice, m.medsegTest.detection.sensitivity, m.lesionFree.specificity]) assert.ok(v >= 0 && v <= 1, String(v));
    // Lesion profiles predict with the selected epoch and its mirror image alone (no last-epoch member, chosen on validation).
    assert.deepEqual(m.prediction, { members: [MODEL_DIR], flip: true, lastEpoch: m.epochs - 1 });
    assert.ok(!fs.existsSync(path.join(runDir, MODEL_LAST_DIR)), "no model-last/ when the profile does not average it in");
    for (const f of ["metrics.json", "history.json", ...m.prediction!.members.map((x) => `${x}/model.json`)]) assert.ok(fs.existsSync(path.join(runDir, f)), f);
  });

  it("is reused and refused under the same rules as a lung run", async () => {
    const again = await trainLesionSegmenter({ profile: "smoke", out: runDir });
    assert.equal(again.reused, true);
    // Another configuration: refused with the way out, nothing changed.
    const stale = path.join(tempDir("lesion-stale"), "resunet-seed1");
    fs.cpSync(runDir, stale, { recursive: true });
    const mf = path.join(stale, "manifest.json");
    const m = JSON.parse(fs.readFileSync(mf, "utf8"));
    m.config.profile.width = 99;
    fs.writeFileSync(mf, JSON.stringify(m));
    const before = fs.readFileSync(path.join(stale, "metrics.json"), "utf8");
    await assert.rejects(trainLesionSegmenter({ profile: "smoke", out: stale }), /another configuration[\s\S]*--retrain-segmenter/);
    assert.equal(fs.readFileSync(path.join(stale, "metrics.json"), "utf8"), before);
    // A lung run is not a lesion run: never reused, never replaced, not even with force.
    const lungDir = path.join(tempDir("lesion-vs-lung"), "resunet-seed1");
    await trainLungSegmenter({ profile: "smoke", out: lungDir });
    const lungMetrics = fs.readFileSync(path.join(lungDir, "metrics.json"), "utf8");
    await assert.rejects(trainLesionSegmenter({ profile: "smoke", out: lungDir, force: true }), /lungs/);
    assert.equal(fs.readFileSync(path.join(lungDir, "metrics.json"), "utf8"), lungMetrics);
    await assert.rejects(loadLesionSegmenter(lungDir), /lungs run, not a lesion segmenter run/);
  });

  it("`lesions` CLI writes 0/255 PNGs at each image's size; bad --source is one line and writes nothing", async () => {
    const out = path.join(tempDir("lesion-masks"), "masks");
    const r = spawnSync(process.execPath, [CLI, "lesions", "--source", "sars-cov-2-ct-scan", "--out", out, "--profile", "smoke", "--limit", "2", "--segmenter", runDir, "--json"], { cwd: PROJECT_ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).count, 2);
    const written = (fs.readdirSync(out, { recursive: true }) as string[]).filter((f) => f.endsWith(".png"));
    assert.equal(written.length, 2);
    for (const f of written) {
      const { data, info } = await sharp(path.join(out, f)).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
      const src = await sharp(path.join(resolveSarsRoot().dir, f)).metadata();
      assert.deepEqual([info.width, info.height], [src.width, src.height], f);
      assert.ok(data.every((v) => v === 0 || v === 255));
    }
    const bad = (args: string[], env: Record<string, string> = {}) => {
      const dest = path.join(tempDir("lesion-bad"), "masks");
      const res = spawnSync(process.execPath, [CLI, "lesions", ...args, "--out", dest, "--profile", "smoke", "--segmenter", runDir], { cwd: PROJECT_ROOT, encoding: "utf8", env: { ...process.env, ...env } });
      assert.notEqual(res.status, 0, `${args.join(" ")}: ${res.stdout}`);
      assert.equal(res.stderr.trim().split("\n").length, 1, `one line: ${res.stderr}`);
      assert.doesNotMatch(res.stderr, /\n\s+at /, "no stack trace");
      assert.ok(!fs.existsSync(dest) || fs.readdirSync(dest).length === 0, `${dest} holds what was written`);
      return res.stderr;
    };
    assert.match(bad(["--source", "nope"]), /--source/);
    assert.match(bad(["--source", ""]), /--source/);
    // A source whose root holds no images (here LUNA16 pointed at an empty folder): nothing to mask.
    assert.match(bad(["--source", "luna16"], { COVIDCT_LUNA: tempDir("empty-luna") }), /luna16|LUNA/i);
  });
});

describe("lesion scores: smoke run end to end", function () {
  useChosenBackend();
  before(function () {
    if (!HAVE_MASKS) this.skip();
  });
  after(cleanupTempDirs);

  it("writes both score runs laid out as diagnosis runs; thresholds from validation, the model from training", async () => {
    const root = tempDir("lesion-scores");
    const res = await runLesionScores({ profile: "smoke", out: path.join(root, "scores"), lesionRun: path.join(root, "lesion-run"), lungRun: path.join(root, "lung-run") });
    for (const score of ["lesion-burden", "lesion-logistic"] as const) {
      const r = res[score];
      const preds = readPredictions(path.join(r.runDir, "predictions.csv"));
      assert.ok(preds.some((p) => p.set === "external") && preds.some((p) => p.set === "val") && preds.some((p) => p.set === "test"));
      const val = preds.filter((p) => p.set === "val");
      assert.equal(r.metrics.testAtValThreshold.threshold, chooseThreshold(val.map((p) => p.label), val.map((p) => p.probability), "youden").threshold, "threshold chosen on validation rows");
      assert.ok(r.metrics.external && r.metrics.external.n === preds.filter((p) => p.set === "external").length);
    }
    // The logistic model is the fit of features.csv's train rows alone.
    const lines = fs.readFileSync(path.join(res["lesion-logistic"].runDir, "features.csv"), "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
    const train = lines.filter((c) => c[0] === "train");
    assert.ok(train.length > 0 && lines.some((c) => c[0] === "external"));
    const model = JSON.parse(fs.readFileSync(path.join(res["lesion-logistic"].runDir, "model.json"), "utf8"));
    assert.deepEqual(model.features.length, 4);
    const again = await runLesionScores({ profile: "smoke", out: path.join(root, "scores"), lesionRun: path.join(root, "lesion-run"), lungRun: path.join(root, "lung-run") });
    assert.ok(again["lesion-burden"].reused && again["lesion-logistic"].reused);
  });
});
