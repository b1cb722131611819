/** The source probe (lib/diagnosis/source-probe.ts): folds by patient, a head on frozen features, AUC on held-out patients. */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { initBackend } from "../lib/backend";
import { patientFolds, probeFromFeatures, runSourceProbes } from "../lib/diagnosis/source-probe";
import { pooledHeadModel } from "../lib/models";
import { selectProtocol } from "../lib/protocols";
import { getProfile } from "../lib/training/profiles";
import { cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

after(cleanupTempDirs);

describe("source probe", function () {
  before(async () => { await initBackend(); });

  it("keeps every patient in one fold, is seeded, and spreads patients over the folds", () => {
    const patients = Array.from({ length: 200 }, (_, i) => `p${i % 37}`);
    const a = patientFolds(patients, 5, 1);
    assert.deepEqual(a, patientFolds(patients, 5, 1));
    assert.notDeepEqual(a, patientFolds(patients, 5, 2));
    const foldOf = new Map<string, number>();
    patients.forEach((p, i) => { if (foldOf.has(p)) assert.equal(foldOf.get(p), a[i], `${p} in one fold`); foldOf.set(p, a[i]); });
    const perFold = [0, 1, 2, 3, 4].map((f) => new Set(patients.filter((_, i) => a[i] === f)).size);
    assert.ok(Math.max(...perFold) - Math.min(...perFold) <= 1, `patients per fold ${perFold}`);
  });

  it("finds a source written into the features, and none in noise", async () => {
    const rng = seedrandom("probe-test");
    const n = 120;
    const labels = Array.from({ length: n }, (_, i) => (i % 2) as 0 | 1);
    const patients = labels.map((_, i) => `q${Math.floor(i / 4)}`);
    const visible = labels.map((y) => Float32Array.from({ length: 8 }, (_, k) => (k === 0 ? y * 2 : 0) + rng() - 0.5));
    const noise = labels.map(() => Float32Array.from({ length: 8 }, () => rng() - 0.5));
    const o = { folds: 5, seed: 1, epochs: 60, batchSize: 16, schedule: { lr: 5e-2, periodEpochs: 60 } };
    const head = (s: number) => pooledHeadModel(8, { seed: s });
    const seen = await probeFromFeatures(visible, labels, patients, head, o);
    const blind = await probeFromFeatures(noise, labels, patients, head, o);
    assert.ok(seen.auc > 0.95, `visible source AUC ${seen.auc}`);
    assert.ok(blind.auc > 0.25 && blind.auc < 0.75, `noise AUC ${blind.auc}`);
    assert.ok(seen.ci95[0] <= seen.auc && seen.auc <= seen.ci95[1]);
    assert.ok(seen.probs.every((p) => p >= 0 && p <= 1), "every image predicted once, held out");
  });

  it("runs the three pairs on the paper protocol's training images (smoke), records a manifest and is reused", async function () {
    requireRealData(this);
    const out = path.join(tempDir("source-probe"), "probe");
    const r = await runSourceProbes({ profile: "smoke", out, folds: 3 });
    assert.equal(r.reused, false);
    const p = await selectProtocol({ protocol: "paper" });
    const count = (cls: "covid" | "noncovid", src: string) => p.splits.train[cls].filter((m) => m.source === src).length;
    const byKey = Object.fromEntries(r.results.map((x) => [x.key, x]));
    assert.deepEqual(Object.keys(byKey), ["covid-ct-vs-covid-seg", "covid-ct-vs-luna", "luna-vs-rest"]);
    assert.equal(byKey["covid-ct-vs-covid-seg"].nA, count("covid", "covid-ct"));
    assert.equal(byKey["covid-ct-vs-covid-seg"].nB, count("covid", "covid19-ct-seg"));
    assert.equal(byKey["covid-ct-vs-luna"].nB, count("noncovid", "luna16"));
    assert.equal(byKey["luna-vs-rest"].nA + byKey["luna-vs-rest"].nB, p.splits.train.covid.length + p.splits.train.noncovid.length);
    for (const x of r.results) assert.ok(x.auc >= 0 && x.auc <= 1 && x.ci95[0] <= x.ci95[1], JSON.stringify(x));
    const m = JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"));
    assert.equal(m.kind, "source-probe");
    assert.equal(m.checksums["protocol/paper"], p.hash);
    assert.equal(m.config.epochs, getProfile("smoke").epochs);
    const again = await runSourceProbes({ profile: "smoke", out, folds: 3 });
    assert.equal(again.reused, true);
    assert.deepEqual(again.results, r.results);
  });
});
