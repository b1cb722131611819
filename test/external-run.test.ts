/**
 * The external set in the diagnosis run (issue 18): every run predicts it, never trains,
 * validates, thresholds or pretrains on it; metrics.json's external block is what its rows give;
 * `evaluate --write` keeps it; a run finished before it existed gains it without retraining.
 */
import { strict as assert } from "assert";
import { spawn, spawnSync } from "child_process";
import * as os from "os";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { diagnosisData, DiagnosisMetrics, evaluateRun, finished, metricsFromPredictions, readPredictions, runDiagnosis } from "../lib/diagnosis";
import { chooseThreshold } from "../lib/evaluation";
import { selectProtocol } from "../lib/protocols";
import { getPretrainProfile, pretrainData } from "../lib/ssl/pretrain";
import { cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const externalIds = async () => {
  const p = await selectProtocol({ protocol: "paper" });
  return new Set([...p.external.covid, ...p.external.noncovid].map((m) => m.id));
};
const read = (f: string) => fs.readFileSync(f, "utf8");

after(cleanupTempDirs);

describe("diagnosis run: the external set", function () {
  let tmp: string;
  let fresh: string;
  before(async function () {
    requireRealData(this);
    if ((await externalIds()).size === 0) this.skip();
    tmp = tempDir("external-run");
    fresh = path.join(tmp, "fresh");
    finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: fresh }));
  });

  it("a smoke run under paper predicts every external image once, and its metrics block is what the rows give", async () => {
    const ext = await externalIds();
    const rows = readPredictions(path.join(fresh, "predictions.csv"));
    const extRows = rows.filter((r) => r.set === "external");
    assert.equal(extRows.length, ext.size);
    assert.deepEqual(new Set(extRows.map((r) => r.file)), ext);
    assert.equal(extRows.filter((r) => r.label === 1).length, 157);
    const m = JSON.parse(read(path.join(fresh, "metrics.json"))) as DiagnosisMetrics;
    const again = metricsFromPredictions(rows, m.bestEpoch, 3);
    assert.deepEqual(m.external, again.external);
    assert.equal(m.external!.n, ext.size);
    assert.equal(m.external!.atHalf.threshold, 0.5);
    assert.equal(m.external!.atValThreshold.threshold, m.testAtValThreshold.threshold);
  });

  it("external images reach no training, validation or threshold: manifest, protocol.json and metrics say so", async () => {
    const ext = await externalIds();
    const manifest = JSON.parse(read(path.join(fresh, "manifest.json")));
    assert.equal(manifest.extra.external.n, ext.size);
    assert.equal(manifest.extra.external.source, "sars-cov-2-ct-scan");
    assert.equal(manifest.extra.examples.train + manifest.extra.examples.val + manifest.extra.examples.test, 72, "smoke: 12 per class and split");
    const protocol = JSON.parse(read(path.join(fresh, "protocol.json")));
    const inSplits = ["train", "val", "test"].flatMap((s) => ["covid", "noncovid"].flatMap((c) => protocol.splits[s][c].map((m: { id: string }) => m.id)));
    assert.ok(inSplits.every((id: string) => !ext.has(id)), "no external id in the run's splits");
    const data = await diagnosisData("covid-seg", 3, { protocol: "paper", limitPerClass: 12 });
    for (const set of [data.train, data.val, data.test]) assert.ok(set.every((e) => !ext.has(e.id)));
    // The threshold comes from validation alone, and no non-external metric depends on the external rows.
    const rows = readPredictions(path.join(fresh, "predictions.csv"));
    const val = rows.filter((r) => r.set === "val");
    const m = JSON.parse(read(path.join(fresh, "metrics.json"))) as DiagnosisMetrics;
    assert.equal(m.testAtValThreshold.threshold, chooseThreshold(val.map((r) => r.label), val.map((r) => r.probability), "youden").threshold);
    const { external: _e, ...withExternal } = metricsFromPredictions(rows, m.bestEpoch, 3);
    const withoutExternal = metricsFromPredictions(rows.filter((r) => r.set !== "external"), m.bestEpoch, 3);
    assert.deepEqual(withExternal, withoutExternal);
  });

  it("MoCo pretraining's image list holds no external image", async () => {
    const ext = await externalIds();
    for (const profile of ["smoke", "quick", "paper"] as const) {
      const d = await pretrainData({ method: "moco", model: "densenet169", init: "random", protocol: "paper", profile, seed: 1 }, getPretrainProfile(profile));
      for (const xs of [d.train, d.probeTrain, d.probeVal]) assert.ok(xs.every((e) => !ext.has(e.id) && e.source !== "sars-cov-2-ct-scan"), `${profile}: no external image`);
    }
  });

  it("`evaluate --write` keeps the external block", () => {
    const copy = path.join(tmp, "evaluated");
    fs.cpSync(fresh, copy, { recursive: true });
    const before = JSON.parse(read(path.join(copy, "metrics.json"))) as DiagnosisMetrics;
    const r = spawnSync(process.execPath, [CLI, "evaluate", "--run", copy, "--write", "--json"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const after = JSON.parse(read(path.join(copy, "metrics.json"))) as DiagnosisMetrics;
    assert.deepEqual(after.external, before.external);
    assert.deepEqual(evaluateRun(copy).external, before.external);
  });

  it("a finished run without external predictions gains them from its checkpoint, without retraining", async () => {
    // An "old" run: the same config, trained, then stripped of what the external set added.
    const old = path.join(tmp, "old");
    finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: old }));
    const csv = path.join(old, "predictions.csv");
    const lines = read(csv).split("\n").filter((l) => !l.startsWith("external,"));
    fs.writeFileSync(csv, lines.join("\n"));
    const metrics = JSON.parse(read(path.join(old, "metrics.json")));
    delete metrics.external;
    fs.writeFileSync(path.join(old, "metrics.json"), JSON.stringify(metrics, null, 2));
    const manifest = JSON.parse(read(path.join(old, "manifest.json")));
    delete manifest.extra.external;
    fs.writeFileSync(path.join(old, "manifest.json"), JSON.stringify(manifest, null, 2));
    const ckpt = path.join(old, "checkpoints", "best", "model.bin");
    const ckptBefore = fs.readFileSync(ckpt);
    const history = read(path.join(old, "history.json"));

    const r = finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: old }));
    assert.equal(r.reused, true, "reused, not retrained");
    assert.equal(read(path.join(old, "history.json")), history, "history unchanged: no epoch ran");
    assert.ok(fs.readFileSync(ckpt).equals(ckptBefore), "checkpoint unchanged");
    assert.equal(read(csv), read(path.join(fresh, "predictions.csv")), "the same predictions as a run trained with the external set");
    assert.deepEqual(JSON.parse(read(path.join(old, "metrics.json"))).external, JSON.parse(read(path.join(fresh, "metrics.json"))).external);
    assert.match(JSON.parse(read(path.join(old, "manifest.json"))).extra.external.from, /checkpoints\/best/);
    assert.ok(!fs.existsSync(path.join(old, ".lock")), "lock released");
    // While another live process holds the run, it is refused as before (in use), and nothing is written.
    const stripped = lines.join("\n");
    fs.writeFileSync(csv, stripped);
    const holder = spawn("sleep", ["30"]);
    try {
      fs.writeFileSync(path.join(old, ".lock"), JSON.stringify({ pid: holder.pid, host: os.hostname(), startedAt: new Date().toISOString(), command: "test" }));
      await assert.rejects(runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: old }), /in use by pid/);
      assert.equal(read(csv), stripped, "nothing written while another process holds the run");
    } finally {
      holder.kill();
      fs.rmSync(path.join(old, ".lock"), { force: true });
    }
    finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: old }));
    assert.equal(read(csv), read(path.join(fresh, "predictions.csv")), "added once the run is free");
    // A second reuse adds nothing.
    const stamp = fs.statSync(csv).mtimeMs;
    finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 3, out: old }));
    assert.equal(fs.statSync(csv).mtimeMs, stamp);
  });
});
