/**
 * Grids and their backends (issue 11): the grid listed from the study's own cells, the local
 * runner (--run --parallel 2 on the smoke grid, real training), and the Slurm emitter (job-array
 * scripts executed here task by task as Slurm would, a synthetic two-stage grid for the afterok
 * dependency, the paper profile's GPU request). The real one-node Slurm is test/slurm/run.sh.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { dependencyLevels, emitSlurm, GridEntry, listGrid, registerGrid, runDirState, runGridLocal } from "../lib/cluster";
import { table5Cells } from "../lib/studies/study1";
import { evaluateRun, readRunMetrics } from "../lib/diagnosis";
import { cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: PROJECT_ROOT, encoding: "utf8", env: { ...process.env, COVIDCT_DEBUG: "", ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The metrics recomputed from predictions.csv equal metrics.json (the run is internally consistent). */
function assertMetricsMatchPredictions(dir: string): void {
  const stored = readRunMetrics(dir), again = evaluateRun(dir);
  for (const k of ["auc", "accuracy", "f1", "precision", "recall"] as const) assert.ok(Math.abs(stored.test[k] - again.test[k]) < 1e-9, `${dir}: test.${k} ${stored.test[k]} vs ${again.test[k]}`);
  assert.equal(stored.bestEpoch, again.bestEpoch);
}

describe("cluster: grids as data", () => {
  after(cleanupTempDirs);

  it("Study I's grid is table5Cells, at the notebook's run directories, with the CLI arguments of each run", () => {
    const runs = tempDir("grid-runs");
    const g = listGrid("study1", { protocol: "official", profile: "smoke", runsRoot: runs });
    const cells = table5Cells({ profile: "smoke" });
    assert.equal(g.length, cells.length);
    assert.equal(g.length, 9, "3 models (DenseNet-169, ResNet-50, the shortcut baseline) × 3 arms × 1 smoke seed");
    g.forEach((e, i) => {
      assert.equal(e.config.model, cells[i].model);
      assert.equal(e.config.arm, cells[i].positives);
      assert.equal(e.runDir, path.join(runs, "study1", "official", "smoke", `${e.config.modelBuilt}-${e.config.arm}-seed1`));
      assert.deepEqual(e.args, ["--model", cells[i].model, "--positives", cells[i].positives, "--profile", "smoke", "--protocol", "official", "--seed", "1"]);
      assert.equal(e.state, "missing");
    });
    // The default root is the notebook's: defaultRunDir.
    const def = listGrid("study1", { protocol: "paper", profile: "paper" });
    assert.equal(def.length, 27);
    assert.ok(def.every((e) => e.runDir.startsWith(path.join(PROJECT_ROOT, "runs", "study1", "paper", "paper") + path.sep)));
    assert.ok(def.every((e) => e.args.join(" ").includes("--protocol paper")));
  });

  it("bad input names the value and the choices, with a non-zero exit", () => {
    let r = cli(["grid", "--study", "study9", "--profile", "smoke"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--study 'study9' has no grid; use one of: study1/);
    r = cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "nomad", "--out", tempDir("bad")]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--emit 'nomad' is not known: use one of slurm/);
    r = cli(["grid", "--study", "study1", "--profile", "smoke", "--submit"]);
    assert.match(r.stderr, /--submit needs --emit slurm/);
    r = cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "slurm", "--out", tempDir("bad"), "--mem", "lots"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--mem 'lots' is not a Slurm value; use e.g. --mem 16G/);
    r = cli(["grid", "--study", "study1", "--profile", "smoke", "--run", "--parallel", "0"]);
    assert.match(r.stderr, /--parallel must be an integer ≥ 1, got '0'/);
    assert.throws(() => dependencyLevels([{ id: "a", dependsOn: ["b"] }, { id: "b", dependsOn: ["a"] }]), /dependency cycle a → b → a/);
  });
});

describe("cluster: local backend", function () {
  let runs = "", logs = "", base: string[] = [];
  before(function () {
    requireRealData(this);
    runs = tempDir("local-runs");
    logs = tempDir("local-logs");
    base = ["grid", "--study", "study1", "--profile", "smoke", "--runs", runs];
  });
  after(cleanupTempDirs);

  it("--run --parallel 2 trains every run of the smoke grid, 2 at a time with the cores divided; grid --json then reports all finished", () => {
    const t0 = Date.now();
    const r = cli([...base, "--run", "--parallel", "2", "--logs", logs], { COVIDCT_WASM_THREADS: "" });
    assert.equal(r.code, 0, r.stderr);
    console.log(`      smoke grid, --parallel 2: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.match(r.stderr, /9 of 9 runs to do, 2 at a time, \d+ thread\(s\) each/);
    const logFiles = fs.readdirSync(logs);
    assert.equal(logFiles.length, 9);
    const threads = Math.max(1, Math.floor(require("os").cpus().length / 2));
    for (const f of logFiles) assert.match(fs.readFileSync(path.join(logs, f), "utf8"), new RegExp(`COVIDCT_WASM_THREADS=${threads}\\)`));
    const list = JSON.parse(cli([...base, "--json"]).stdout) as { runDir: string; state: string; model: string; arm: string; seed: number }[];
    assert.equal(list.length, 9);
    for (const e of list) {
      assert.equal(e.state, "finished", e.runDir);
      assertMetricsMatchPredictions(e.runDir);
    }
    // Finished runs are not trained again.
    const again = cli([...base, "--run", "--parallel", "2", "--logs", logs]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.trim().split("\n").filter((l) => l.startsWith("already-finished")).length, 9);
  });

  it("a partial run is listed as partial and continued with --resume to the same predictions", () => {
    const dir = listGrid("study1", { protocol: "official", profile: "smoke", runsRoot: runs })[0].runDir;
    const before = fs.readFileSync(path.join(dir, "predictions.csv"), "utf8");
    // As if the task died after its last checkpoint, before writing predictions and metrics.
    fs.rmSync(path.join(dir, "metrics.json"));
    fs.rmSync(path.join(dir, "predictions.csv"));
    assert.equal(runDirState(dir), "partial");
    assert.match(cli(base).stdout, /^9 runs: 8 finished, 1 partial, 0 missing$/m);
    const r = cli([...base, "--run", "--logs", logs]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--resume/);
    assert.equal(fs.readFileSync(path.join(dir, "predictions.csv"), "utf8"), before);
    assert.equal(runDirState(dir), "finished");
  });

  it("an entry whose dependency failed is not started; the failure names the log and exits non-zero", async () => {
    const root = tempDir("dep-runs");
    const entries: GridEntry[] = [
      { study: "t", id: "pre", command: "train", args: ["--model", "no-such-model", "--positives", "covid-ct-all", "--profile", "smoke"], runDir: path.join(root, "pre"), dependsOn: [], config: {} },
      { study: "t", id: "fine", command: "train", args: ["--model", "densenet169", "--positives", "covid-ct-all", "--profile", "smoke"], runDir: path.join(root, "fine"), dependsOn: ["pre"], config: {} },
    ];
    const res = await runGridLocal(entries, { parallel: 2, logsDir: path.join(root, "logs") });
    assert.equal(res[0].outcome, "failed");
    assert.notEqual(res[0].exitCode, 0);
    assert.match(fs.readFileSync(res[0].log!, "utf8"), /--model 'no-such-model' is not a model/);
    assert.equal(res[1].outcome, "skipped");
    assert.ok(!fs.existsSync(path.join(root, "fine")), "the dependent run was never started");
  });
});

describe("cluster: Slurm scripts", function () {
  after(cleanupTempDirs);

  it("the paper profile asks for a GPU per task; flags override the profile's resources", () => {
    const out = tempDir("emit-paper");
    const r = cli(["grid", "--study", "study1", "--protocol", "paper", "--profile", "paper", "--emit", "slurm", "--out", out, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const s = fs.readFileSync(path.join(out, "study1.sbatch"), "utf8");
    assert.match(s, /^#SBATCH --gres=gpu:1$/m);
    assert.match(s, /^#SBATCH --array=0-26$/m);
    assert.match(s, /^#SBATCH --requeue$/m);
    assert.match(s, /^#SBATCH --cpus-per-task=8$/m);
    assert.match(s, new RegExp(`^#SBATCH --output=${out}/logs/study1-%A_%a\\.out$`, "m"));
    assert.match(s, /^  0\) run \S+\/runs\/study1\/paper\/paper\/densenet169-covid-seg-seed1 train --model densenet169 --positives covid-seg --profile paper --protocol paper --seed 1 ;;/m);
    const render = fs.readFileSync(path.join(out, "study1-render.sbatch"), "utf8");
    assert.match(render, /reproduce 02 --profile paper/);
    assert.doesNotMatch(render, /--gres/, "rendering trains nothing: no GPU");
    assert.match(fs.readFileSync(path.join(out, "study1-submit.sh"), "utf8"), /sbatch --parsable --dependency=afterok:\$\{j0\} study1-render\.sbatch/);
    const over = tempDir("emit-over");
    assert.equal(cli(["grid", "--study", "study1", "--profile", "paper", "--emit", "slurm", "--out", over, "--gpus", "2", "--time", "1-00:00:00", "--partition", "a100", "--sbatch", "--account=lab"]).code, 0);
    const o = fs.readFileSync(path.join(over, "study1.sbatch"), "utf8");
    for (const l of ["--gres=gpu:2", "--time=1-00:00:00", "--partition=a100", "--account=lab"]) assert.match(o, new RegExp(`^#SBATCH ${l}$`, "m"));
    const smoke = tempDir("emit-smoke");
    assert.equal(cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "slurm", "--out", smoke]).code, 0);
    assert.doesNotMatch(fs.readFileSync(path.join(smoke, "study1.sbatch"), "utf8"), /--gres/);
  });

  it("a two-stage grid (pretraining → fine-tuning) becomes two arrays, the second afterok on the first", () => {
    const root = tempDir("two-stage-runs");
    registerGrid({
      study: "two-stage-test",
      description: "synthetic MoCo-like grid",
      entries: (req) => [
        { study: "two-stage-test", id: "moco-seed1", command: "pretrain", args: ["--profile", req.profile, "--seed", "1"], runDir: path.join(root, "moco-seed1"), dependsOn: [], config: { stage: "pretrain" } },
        { study: "two-stage-test", id: "finetune-seed1", command: "train", args: ["--init", "moco", "--from", path.join(root, "moco-seed1"), "--profile", req.profile], runDir: path.join(root, "finetune-seed1"), dependsOn: ["moco-seed1"], config: { stage: "finetune" } },
      ],
    });
    const req = { protocol: "official", profile: "paper" as const, runsRoot: root };
    const entries = listGrid("two-stage-test", req);
    const out = tempDir("emit-two");
    const r = emitSlurm("two-stage-test", req, entries, undefined, { outDir: out });
    assert.equal(r.scripts.length, 2);
    assert.deepEqual(r.scripts.map((s) => s.entries.map((e) => e.id)), [["moco-seed1"], ["finetune-seed1"]]);
    assert.deepEqual(r.scripts[1].after, [0]);
    assert.equal(r.renderSkipped, "study two-stage-test has no notebook");
    const l0 = fs.readFileSync(r.scripts[0].file, "utf8"), l1 = fs.readFileSync(r.scripts[1].file, "utf8");
    assert.match(l0, /^  0\) run \S+moco-seed1 pretrain --profile paper --seed 1 ;;/m);
    assert.match(l1, /^  0\) run \S+finetune-seed1 train --init moco --from \S+moco-seed1 --profile paper ;;/m);
    for (const s of [l0, l1]) assert.match(s, /^#SBATCH --gres=gpu:1$/m);
    const sub = fs.readFileSync(r.submitScript, "utf8");
    assert.match(sub, /^j0=\$\(sbatch --parsable two-stage-test-level0\.sbatch/m);
    assert.match(sub, /^j1=\$\(sbatch --parsable --dependency=afterok:\$\{j0\} two-stage-test-level1\.sbatch/m);
    for (const f of [r.submitScript, ...r.scripts.map((s) => s.file)]) assert.equal(spawnSync("bash", ["-n", f]).status, 0, `${f} is valid bash`);
  });

  it("the real CSSL grid (paper profile): MoCo pretraining, then fine-tuning from its encoder, afterok, a GPU per task; Study II's grid lists its 8 own rows per seed", () => {
    const out = tempDir("emit-cssl");
    const r = cli(["grid", "--study", "cssl", "--protocol", "paper", "--profile", "paper", "--emit", "slurm", "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const l0 = fs.readFileSync(path.join(out, "cssl-level0.sbatch"), "utf8"), l1 = fs.readFileSync(path.join(out, "cssl-level1.sbatch"), "utf8");
    assert.match(l0, /run \S+\/runs\/cssl\/paper\/paper\/moco-densenet169-imagenet-seed1 pretrain --method moco --model densenet169 --init imagenet --protocol paper --profile paper --seed 1 ;;/);
    assert.match(l0, /--init random --protocol paper --profile paper --seed 1 ;;/, "CSSL without TL");
    assert.match(l1, /train --model densenet169 --positives combination .*--study cssl --variant lung\+lesion --init checkpoint:\S+\/runs\/cssl\/paper\/paper\/moco-densenet169-imagenet-seed1/);
    assert.doesNotMatch(l1, /--init (random|imagenet) /, "plain inits need no pretraining: they run in the first array");
    for (const s of [l0, l1]) assert.match(s, /^#SBATCH --gres=gpu:1$/m);
    assert.match(fs.readFileSync(path.join(out, "cssl-submit.sh"), "utf8"), /^j1=\$\(sbatch --parsable --dependency=afterok:\$\{j0\} cssl-level1\.sbatch/m);
    const j = JSON.parse(cli(["grid", "--study", "study2", "--protocol", "paper", "--profile", "paper", "--json"]).stdout) as { config: { variant?: string } }[];
    assert.equal(j.length, 8 * 3);
    assert.match(cli(["grid", "--study", "study2", "--protocol", "official", "--profile", "paper"]).stderr, /paper protocol/);
  });

  it("an emitted array task, executed as Slurm would, trains its run; run again it resumes/reuses; an unknown index fails", function () {
    requireRealData(this);
    const out = tempDir("emit-exec");
    const runs = tempDir("emit-exec-runs");
    assert.equal(cli(["grid", "--study", "study1", "--profile", "smoke", "--runs", runs, "--emit", "slurm", "--out", out]).code, 0);
    const script = path.join(out, "study1.sbatch");
    assert.ok(!fs.existsSync(path.join(out, "study1-render.sbatch")), "no render job when the runs are not where the notebook looks");
    const task = (i: number) => spawnSync("bash", [script], { encoding: "utf8", env: { ...process.env, SLURM_ARRAY_TASK_ID: String(i), SLURM_ARRAY_JOB_ID: "42", SLURM_CPUS_PER_TASK: "1" } });
    const t = task(5);
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /task 42_5 .*covid-ct train --model resnet50 --positives original-ct --profile smoke --protocol official --seed 1 --out \S+tiny-resnet-original-ct-seed1 $/m);
    const dir = path.join(runs, "study1", "official", "smoke", "tiny-resnet-original-ct-seed1");
    assert.equal(runDirState(dir), "finished");
    assertMetricsMatchPredictions(dir);
    const again = task(5);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /--out \S+ --resume$/m);
    assert.match(again.stdout, /^reused /m);
    const bad = task(9);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /task 9 is not in this array \(0-8\)/);
  });
});
