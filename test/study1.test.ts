import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { initBackend } from "../lib/backend";
import { resolveDataRoot, resolveMedsegRoot } from "../lib/config";
import { auc, binaryMetrics } from "../lib/evaluation";
import { featureNormalisation, FeatureSource, foldNormalisation } from "../lib/diagnosis/inputs";
import { splitListRel } from "../lib/data/dataset";
import { preprocessFor } from "../lib/models/weights";
import { cleanupTempDirs, linkedCopyOfRealData } from "./data-fixtures";
import { SHORTCUT_CUES, shortcutCues } from "../lib/protocols/shortcut";
import { ImageSource } from "../lib/diagnosis/inputs";
import { diagnosisData, evaluateRun, finished, loadRunModel, readPredictions, runDiagnosis } from "../lib/diagnosis";
import { predictProbabilities } from "../lib/training/loop";

const haveData = fs.existsSync(resolveDataRoot().dir) && fs.existsSync(resolveMedsegRoot().dir);

describe("Study I", function () {
  before(async function () {
    if (!haveData) this.skip();
    await initBackend();
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-study1-"));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("builds the three arms with fixed negatives, validation and test", async () => {
    const all = await diagnosisData("covid-ct-all", 1);
    const sub = await diagnosisData("covid-ct-118", 1);
    const orig = await diagnosisData("original-ct", 1);
    const pos = (d: typeof all) => d.train.filter((e) => e.label === 1).length;
    assert.equal(pos(all), 191);
    assert.equal(pos(sub), 118);
    assert.equal(pos(orig), 50);
    for (const d of [all, sub, orig]) {
      assert.equal(d.train.filter((e) => e.label === 0).length, 234);
      assert.equal(d.val.length, 118);
      assert.equal(d.test.length, 203);
      assert.equal(d.medsegTest.length, 48);
    }
    assert.deepEqual((await diagnosisData("covid-ct-118", 1)).train, sub.train, "seeded subset");
    assert.notDeepEqual((await diagnosisData("covid-ct-118", 2)).train, sub.train);
    const subIds = new Set(sub.train.map((e) => e.id));
    assert.ok(all.train.filter((e) => subIds.has(e.id)).length === sub.train.length, "118 is a subset of the 191");
  });

  it("builds the paper protocol's arms from its pools; every set comes from the protocol", async () => {
    const sizes: Record<string, number> = { "covid-seg": 118, "covid-ct-349": 349, "covid-ct-118": 118 };
    let negatives = -1;
    for (const arm of ["covid-seg", "covid-ct-349", "covid-ct-118"] as const) {
      const d = await diagnosisData(arm, 1, { protocol: "paper" });
      const pos = d.train.filter((e) => e.label === 1);
      assert.equal(pos.length, sizes[arm], arm);
      assert.ok(pos.every((e) => (arm === "covid-seg" ? e.source === "covid19-ct-seg" : e.source === "covid-ct")), `${arm} positives from one source`);
      const neg = d.train.filter((e) => e.label === 0).length;
      if (negatives >= 0) assert.equal(neg, negatives, "same negatives for every arm");
      negatives = neg;
      const p = d.protocol;
      assert.equal(neg, p.splits.train.noncovid.length);
      assert.deepEqual(d.test.map((e) => e.id), [...p.splits.test.covid, ...p.splits.test.noncovid].map((m) => m.id));
      assert.deepEqual(new Set(d.val.map((e) => e.source)), new Set(["covid19-ct-seg", "luna16"]));
      assert.ok(d.medsegTest.every((e) => e.source === "medseg"));
    }
    await assert.rejects(diagnosisData("original-ct", 1, { protocol: "paper" }), /does not exist under the paper protocol.*covid-seg/);
  });

  let runDir = "";
  it("a smoke run lowers its loss and writes a complete run directory", async () => {
    runDir = path.join(tmp, "smoke");
    const r = finished(await runDiagnosis({ model: "densenet169", positives: "covid-ct-all", profile: "smoke", seed: 3, epochs: 4, out: runDir }));
    for (const f of ["manifest.json", "history.json", "metrics.json", "predictions.csv", "checkpoints/best/model.json", "checkpoints/last/state.json"]) {
      assert.ok(fs.existsSync(path.join(runDir, f)), `${f} exists`);
    }
    const h = r.history;
    assert.equal(h.length, 4);
    assert.ok(h[h.length - 1].trainLoss < h[0].trainLoss, `train loss ${h.map((e) => e.trainLoss.toFixed(3))}`);
    const counts = h.slice(1).map((e) => e.numTensors);
    assert.ok(counts.every((c) => c === counts[0]), `tensor count flat across epochs: ${h.map((e) => e.numTensors)}`);
    const m = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
    assert.equal(m.seed, 3);
    assert.ok(m.backend?.tfBackend, "backend recorded");
    assert.match(m.checksums["data/covid-ct.sha256"], /^[0-9a-f]{64}$/);
    assert.equal(m.config.profile.name, "smoke");
  });

  it("metrics.json equals metrics recomputed independently from predictions.csv", () => {
    const metrics = JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8"));
    const rows = readPredictions(path.join(runDir, "predictions.csv")).filter((r) => r.set === "test");
    const labels = rows.map((r) => r.label);
    const scores = rows.map((r) => r.probability);
    // Independent recomputation: counting by hand, AUC by pairwise comparison.
    let tp = 0, fp = 0, tn = 0, fn = 0;
    rows.forEach((r) => {
      const pred = r.probability >= 0.5 ? 1 : 0;
      if (pred === 1 && r.label === 1) tp++; else if (pred === 1) fp++; else if (r.label === 0) tn++; else fn++;
    });
    let wins = 0, pairs = 0;
    for (const p of rows.filter((r) => r.label === 1)) for (const n of rows.filter((r) => r.label === 0)) {
      pairs++;
      wins += p.probability > n.probability ? 1 : p.probability === n.probability ? 0.5 : 0;
    }
    const f1 = tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
    assert.ok(Math.abs(metrics.test.accuracy - (tp + tn) / rows.length) < 1e-12);
    assert.ok(Math.abs(metrics.test.f1 - f1) < 1e-12);
    assert.ok(Math.abs(metrics.test.auc - wins / pairs) < 1e-12);
    assert.ok(Math.abs(auc(labels, scores) - wins / pairs) < 1e-12);
    assert.equal(binaryMetrics(labels, scores).tp, tp);
    assert.deepEqual(evaluateRun(runDir).test.auc, metrics.test.auc);
  });

  it("an interrupted then resumed run ends with the same metrics as an uninterrupted one", async () => {
    const a = path.join(tmp, "full");
    const b = path.join(tmp, "resumed");
    const cfg = { model: "resnet50" as const, positives: "original-ct" as const, profile: "smoke" as const, seed: 5, epochs: 4 };
    const full = finished(await runDiagnosis({ ...cfg, out: a }));
    const part = await runDiagnosis({ ...cfg, out: b, stopAfterEpochs: 2 });
    assert.equal(part.interrupted, true);
    assert.ok(!fs.existsSync(path.join(b, "metrics.json")));
    const resumed = finished(await runDiagnosis({ ...cfg, out: b, resume: true }));
    assert.equal(resumed.history.length, 4);
    assert.equal(resumed.metrics.bestEpoch, full.metrics.bestEpoch);
    for (const k of ["accuracy", "f1", "auc"] as const) {
      assert.ok(Math.abs(resumed.metrics.test[k] - full.metrics.test[k]) < 1e-6, `${k}: ${resumed.metrics.test[k]} vs ${full.metrics.test[k]}`);
    }
  });

  it("reuses a finished run with the same config instead of training again", async () => {
    const r = finished(await runDiagnosis({ model: "densenet169", positives: "covid-ct-all", profile: "smoke", seed: 3, epochs: 4, out: runDir }));
    assert.equal(r.reused, true);
  });

  it("frozen features end to end: cached ImageNet features → standardised head → the rebuilt full model predicts the same on raw images", async () => {
    // The `quick` path at a tiny size: DenseNet-169 with its real ImageNet weights at 32².
    const out = path.join(tmp, "frozen");
    const cfg = { model: "densenet169" as const, positives: "covid-ct-all" as const, profile: "quick" as const, seed: 2, out };
    const r = finished(await runDiagnosis({ ...cfg, profileOverrides: { inputSize: 32, epochs: 3, limitPerClass: 6 } }));
    assert.ok(fs.existsSync(path.join(out, "feature-normalisation.json")));
    assert.equal(r.history.length, 3);
    const { built, pre, profile } = await loadRunModel(out);
    assert.equal(profile.inputSize, 32);
    const rows = readPredictions(path.join(out, "predictions.csv")).filter((p) => p.set === "test");
    const data = await diagnosisData("covid-ct-all", 2, { limitPerClass: 6 });
    assert.deepEqual(rows.map((p) => p.file), data.test.map((e) => e.id));
    const src = await ImageSource.create(data.test, 32, preprocessFor("densenet169"), null);
    assert.deepEqual(pre, preprocessFor("densenet169"));
    const probs = await predictProbabilities(built.model, src);
    probs.forEach((p, i) => assert.ok(Math.abs(p - rows[i].probability) < 1e-4, `${rows[i].file}: full model ${p} vs run ${rows[i].probability}`));
    built.model.dispose();
  });

  it("the shortcut baseline trains like the real models on cue vectors, and its cues see framing", async () => {
    const out = path.join(tmp, "shortcut");
    const r = finished(await runDiagnosis({ model: "shortcut", positives: "covid-ct-all", profile: "smoke", seed: 1, out }));
    assert.equal(r.modelBuilt, "shortcut");
    assert.deepEqual(evaluateRun(out).test, r.metrics.test);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8")).config.model, "shortcut");
    // The same slice with wide black margins: the file's dark share and size cues move, nothing else is added.
    const src = (await diagnosisData("covid-ct-all", 1)).test[0];
    const padded = path.join(tmp, "padded.png");
    const sharp = (await import("sharp")).default;
    await sharp(src.path).extend({ top: 100, bottom: 100, left: 100, right: 100, background: "#000000" }).png().toFile(padded);
    const [a, b] = await shortcutCues([src, { ...src, id: "padded", path: padded }], 32);
    assert.equal(a.length, SHORTCUT_CUES.length);
    assert.ok(b[3] > a[3] + 0.1, `file dark share ${a[3]} → ${b[3]}`);
    assert.ok(b[0] > a[0] && b[1] > a[1], "file size grows");
  });

  it("a paper-protocol run predicts on protocol ids and records the protocol; a changed protocol is never reused", async () => {
    const out = path.join(tmp, "paper-smoke");
    const r = finished(await runDiagnosis({ model: "resnet50", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 1, out }));
    const p = (await diagnosisData("covid-seg", 1, { protocol: "paper" })).protocol;
    const ids = new Set(["train", "val", "test"].flatMap((s) => ["covid", "noncovid"].flatMap((c) => p.splits[s as "val"][c as "covid"].map((m) => m.id))));
    const rows = readPredictions(path.join(out, "predictions.csv"));
    assert.ok(rows.filter((x) => x.set === "val" || x.set === "test").every((x) => ids.has(x.file)), "val/test ids are protocol ids");
    const ext = new Set([...p.external.covid, ...p.external.noncovid].map((m) => m.id));
    assert.deepEqual(new Set(rows.filter((x) => x.set === "external").map((x) => x.file)), ext, "one external row per external image");
    assert.ok(rows.some((x) => x.file.startsWith("luna16/")) && rows.some((x) => x.file.startsWith("covid19-ct-seg/")));
    assert.deepEqual(evaluateRun(out).test, r.metrics.test);
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    assert.equal(m.checksums["protocol/paper"], p.hash);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, "protocol.json"), "utf8")).hash, p.hash);
    // Official protocol on a copy of the release: move one test image to validation → new hash → refused.
    const data = linkedCopyOfRealData();
    const cfg = { model: "densenet169" as const, positives: "covid-ct-all" as const, profile: "smoke" as const, seed: 1, out: path.join(tmp, "official-copy"), dataRoot: data };
    finished(await runDiagnosis(cfg));
    assert.equal(finished(await runDiagnosis(cfg)).reused, true);
    const test = path.join(data, splitListRel("noncovid", "test")), val = path.join(data, splitListRel("noncovid", "val"));
    const lines = fs.readFileSync(test, "utf8").split(/\r?\n/).filter(Boolean);
    fs.writeFileSync(test, lines.slice(1).join("\n") + "\n");
    fs.appendFileSync(val, `\n${lines[0]}\n`);
    await assert.rejects(runDiagnosis(cfg), /another configuration[\s\S]*checksums\.protocol\/official/);
    cleanupTempDirs();
  });

  it("folding the feature standardisation into the head gives the same probabilities", () => {
    const feats = Array.from({ length: 6 }, (_, i) => [Float32Array.from({ length: 5 }, (_, k) => Math.sin(i * 3 + k) * (k + 1) + k)]);
    const ex = feats.map((_, i) => ({ id: `x${i}`, path: "", label: (i % 2) as 0 | 1 }));
    const norm = featureNormalisation(feats);
    const head = tf.sequential({ layers: [tf.layers.dense({ inputShape: [5], units: 2, activation: "softmax", kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }), biasInitializer: "ones" })] });
    const idx = ex.map((_, i) => i);
    const pNorm = (head.predict(new FeatureSource(feats, ex, norm).inputs(idx, { train: false, seed: "" })) as tf.Tensor).dataSync();
    const [k, b] = head.getWeights() as [tf.Tensor2D, tf.Tensor1D];
    head.setWeights(foldNormalisation(k, b, norm));
    const pRaw = (head.predict(new FeatureSource(feats, ex).inputs(idx, { train: false, seed: "" })) as tf.Tensor).dataSync();
    pNorm.forEach((v, i) => assert.ok(Math.abs(v - pRaw[i]) < 1e-5, `${v} vs ${pRaw[i]}`));
  });
});
