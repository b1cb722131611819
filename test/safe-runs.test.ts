/**
 * Safe runs (issue "Safe runs"): every case starts from input that used to destroy files, run
 * twice into one directory, resume the wrong run or train on degenerate data, and checks a
 * non-zero exit, a message naming the file or value and the next step, and every pre-existing
 * file unchanged (tree hashed before and after).
 */
import { strict as assert } from "assert";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { PROJECT_ROOT } from "../lib/config";
import { decodeGray } from "../lib/data/decode";
import { splitListRel } from "../lib/data/dataset";
import { acquireRunLock, checkRunDirPath, configDiff, openRun, RunDirError } from "../lib/runs";
import { makeManifest, writeManifest } from "../lib/manifest";
import { cleanupTempDirs, linkedCopyOfRealData, requireRealData, tempDir } from "./data-fixtures";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], opts: { cwd?: string } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? PROJECT_ROOT, encoding: "utf8", env: { ...process.env, COVIDCT_DEBUG: "" } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliAsync(args: string[]): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: PROJECT_ROOT, env: { ...process.env, COVIDCT_DEBUG: "" } });
  let stdout = "", stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** relative path → sha256 (files), "link:<target>" (symlinks), "dir" (folders). */
function treeHash(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(root, p);
      if (e.isSymbolicLink()) out[rel] = `link:${fs.readlinkSync(p)}`;
      else if (e.isDirectory()) { out[rel] = "dir"; walk(p); }
      else out[rel] = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
    }
  };
  if (fs.existsSync(root)) walk(root);
  return out;
}

function refused(r: CliResult, pattern: RegExp): void {
  assert.notEqual(r.code, 0, `exit code should be non-zero; stdout: ${r.stdout}`);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, `no stack trace:\n${r.stderr}`);
}

async function waitFor(cond: () => boolean, what: string, ms = 120000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function historyLength(dir: string): number {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, "history.json"), "utf8")).length;
  } catch {
    return 0;
  }
}

const SMOKE = ["--model", "densenet169", "--positives", "covid-ct-all", "--profile", "smoke"];

describe("safe runs", function () {
  // A finished run that later cases aim their typos at.
  let finishedRun = "";
  before(function () {
    requireRealData(this);
    finishedRun = path.join(tempDir("finished"), "run");
    const r = cli(["train", ...SMOKE, "--seed", "1", "--out", finishedRun]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(cleanupTempDirs);

  describe("1. never destroys what is not ours", () => {
    it("--out '' is refused and the working directory keeps every file", () => {
      const cwd = tempDir("cwd");
      fs.writeFileSync(path.join(cwd, "notes.txt"), "mine");
      fs.mkdirSync(path.join(cwd, "sub"));
      const before = treeHash(cwd);
      refused(cli(["train", ...SMOKE, "--out", ""], { cwd }), /--out is empty/);
      assert.deepEqual(treeHash(cwd), before);
    });

    it("--out naming the project root, /, a file or a parent of the data root is refused", () => {
      refused(cli(["train", ...SMOKE, "--out", PROJECT_ROOT]), /is the project root/);
      refused(cli(["train", ...SMOKE, "--out", "/"]), /filesystem root/);
      const f = path.join(tempDir("file"), "results.csv");
      fs.writeFileSync(f, "a,b\n");
      refused(cli(["train", ...SMOKE, "--out", f]), /is a file/);
      assert.equal(fs.readFileSync(f, "utf8"), "a,b\n");
      const data = linkedCopyOfRealData();
      refused(cli(["train", ...SMOKE, "--data", data, "--out", path.dirname(data)]), /contains the data root/);
      refused(cli(["train", ...SMOKE, "--data", data, "--out", path.join(data, "runs")]), /inside the data root/);
    });

    it("a user's folder is never used or removed, even when --data is wrong too", () => {
      const user = tempDir("user");
      fs.writeFileSync(path.join(user, "thesis.tex"), "\\documentclass{article}");
      const before = treeHash(user);
      const r = cli(["train", ...SMOKE, "--out", user, "--data", "/nonexistent/covid-ct"]);
      assert.notEqual(r.code, 0);
      assert.deepEqual(treeHash(user), before);
      refused(cli(["train", ...SMOKE, "--out", user]), /not a run directory of covid-ct.*thesis\.tex/s);
      refused(cli(["train", ...SMOKE, "--out", user, "--force"]), /not a run directory of covid-ct/);
      assert.deepEqual(treeHash(user), before);
    });

    it("a finished run survives a typo in another flag, and is reused with the same flags", () => {
      const before = treeHash(finishedRun);
      const r = cli(["train", ...SMOKE, "--seed", "2", "--out", finishedRun]);
      refused(r, /finished run with another configuration[\s\S]*seed: 1 → 2[\s\S]*--force/);
      assert.deepEqual(treeHash(finishedRun), before);
      const again = cli(["train", ...SMOKE, "--seed", "1", "--out", finishedRun]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /^reused /);
      assert.deepEqual(treeHash(finishedRun), before);
    });

    it("--force replaces our run only when the new one finishes; Ctrl-C keeps the old one", async () => {
      const dir = path.join(tempDir("force"), "run");
      assert.equal(cli(["train", ...SMOKE, "--seed", "1", "--epochs", "2", "--out", dir]).code, 0);
      const before = treeHash(dir);
      const { child, done } = cliAsync(["train", ...SMOKE, "--seed", "1", "--epochs", "60", "--out", dir, "--force"]);
      const work = path.join(path.dirname(dir), `.run.new-${child.pid}`);
      await waitFor(() => historyLength(work) >= 1, "the replacement's first epoch");
      child.kill("SIGINT");
      const r = await done;
      assert.equal(r.code, 130, r.stderr);
      assert.deepEqual(treeHash(dir), before, "old run unchanged");
      assert.deepEqual(fs.readdirSync(path.dirname(dir)), ["run"], "no half-written replacement left");
      // Uninterrupted, --force swaps the new run in.
      const ok = cli(["train", ...SMOKE, "--seed", "1", "--epochs", "3", "--out", dir, "--force"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "history.json"), "utf8")).length, 3);
      assert.deepEqual(fs.readdirSync(path.dirname(dir)), ["run"]);
      assert.ok(!fs.existsSync(path.join(dir, ".lock")), "lock released");
    });

    it("a run that fails before its first checkpoint leaves no directory; Ctrl-C after one says how to resume", async () => {
      const data = linkedCopyOfRealData();
      const dir = path.join(data, "Images-processed", "CT_COVID");
      for (const f of fs.readdirSync(dir)) { fs.rmSync(path.join(dir, f)); fs.writeFileSync(path.join(dir, f), ""); }
      const out = path.join(tempDir("fails"), "run");
      const r = cli(["train", ...SMOKE, "--data", data, "--out", out]);
      refused(r, /Cannot decode image .*CT_COVID/);
      assert.ok(!fs.existsSync(out), "no half-written run directory");
      const kept = path.join(tempDir("sigint"), "run");
      const { child, done } = cliAsync(["train", ...SMOKE, "--seed", "8", "--epochs", "60", "--out", kept]);
      await waitFor(() => historyLength(kept) >= 1, "one epoch");
      child.kill("SIGINT");
      const c = await done;
      assert.equal(c.code, 130);
      assert.match(c.stderr, new RegExp(`keeps its last checkpoint. Continue with:\\n\\s+npx covid-ct train .*--out ${kept.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.* --resume`));
      assert.ok(fs.existsSync(path.join(kept, "checkpoints", "last", "state.json")));
      assert.ok(!fs.existsSync(path.join(kept, ".lock")), "lock released");
    });

    it("protocol --out and grid --emit --out never overwrite a user's file or folder", () => {
      const dir = tempDir("outputs");
      fs.writeFileSync(path.join(dir, "notes.txt"), "mine");
      fs.mkdirSync(path.join(dir, "scripts"));
      fs.writeFileSync(path.join(dir, "scripts", "job.sh"), "#!/bin/sh\n");
      const before = treeHash(dir);
      refused(cli(["protocol", "official", "--out", path.join(dir, "notes.txt")]), /exists and was not written by this command/);
      refused(cli(["protocol", "official", "--out", ""]), /--out is empty/);
      refused(cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "slurm", "--out", path.join(dir, "scripts")]), /holds files this command did not write \(job\.sh\)/);
      assert.deepEqual(treeHash(dir), before);
      // Its own earlier output is replaced.
      const pj = path.join(dir, "p.json");
      assert.equal(cli(["protocol", "official", "--out", pj]).code, 0);
      assert.equal(cli(["protocol", "official", "--out", pj]).code, 0);
      const emit = path.join(dir, "emit");
      assert.equal(cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "slurm", "--out", emit]).code, 0);
      assert.equal(cli(["grid", "--study", "study1", "--profile", "smoke", "--emit", "slurm", "--out", emit]).code, 0);
    });

    it("the run layer refuses the same paths in-process", () => {
      assert.throws(() => checkRunDirPath(""), RunDirError);
      assert.throws(() => checkRunDirPath(path.dirname(PROJECT_ROOT)), /contains the project/);
      assert.deepEqual(configDiff({ a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [1, 3] }, d: "x" }), ["b.c: [1,2] → [1,3]", 'd: absent → "x"']);
    });
  });

  describe("1b. --force replaces a run of its own kind only", () => {
    it("a finished run of another kind (a diagnosis run named as a lung segmenter's directory) is refused, byte for byte kept", () => {
      const dir = path.join(tempDir("force-kind"), "run");
      const run = openRun({ out: dir, defaultDir: dir, kind: "study1", config: { a: 1 }, checksums: {} });
      if (run.state === "reused") throw new Error("a new directory cannot be reused");
      writeManifest(run.workDir, makeManifest("study1", { a: 1 }, {}, 1));
      fs.writeFileSync(path.join(run.workDir, "metrics.json"), "{}");
      run.finish();
      const before = fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f), "utf8")]);
      assert.throws(() => openRun({ out: dir, defaultDir: dir, kind: "lungs", config: { a: 1 }, checksums: {}, force: true }), /holds a 'study1' run, not a 'lungs' run: not this command's[\s\S]*Nothing was changed/);
      assert.deepEqual(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(path.join(dir, f), "utf8")]), before);
      // The same kind is still replaced on --force.
      const again = openRun({ out: dir, defaultDir: dir, kind: "study1", config: { a: 2 }, checksums: {}, force: true });
      assert.equal(again.state, "replacing");
      if (again.state === "replacing") again.abandon();
    });
  });

  describe("2. one process per run directory", () => {
    it("a second train on the same --out stops at once; the first ends with the metrics it has alone", async () => {
      const base = tempDir("concurrent");
      const alone = path.join(base, "alone");
      const shared = path.join(base, "shared");
      // Long enough that the first is still training when the second starts (it would reuse a finished run).
      const args = [...SMOKE, "--seed", "4", "--epochs", "40", "--json"];
      const a = cliAsync(["train", ...args, "--out", shared]);
      await waitFor(() => historyLength(shared) >= 1, "the first run's first epoch");
      const t0 = Date.now();
      const second = cli(["train", ...args, "--out", shared]);
      refused(second, /in use by pid \d+/);
      assert.ok(Date.now() - t0 < 20000, "the second process stops at once");
      const first = await a.done;
      assert.equal(first.code, 0, first.stderr);
      const ref = cli(["train", ...args, "--out", alone]);
      assert.equal(ref.code, 0, ref.stderr);
      const m1 = JSON.parse(first.stdout), m2 = JSON.parse(ref.stdout);
      assert.deepEqual(m1.test, m2.test);
      assert.deepEqual(fs.readFileSync(path.join(shared, "predictions.csv"), "utf8"), fs.readFileSync(path.join(alone, "predictions.csv"), "utf8"));
    });

    it("a stale lock (its process is gone) is taken over; a live one is refused", () => {
      const dir = tempDir("lock");
      fs.writeFileSync(path.join(dir, ".lock"), JSON.stringify({ pid: 2 ** 22 + 12345, host: require("os").hostname(), startedAt: "", command: "" }));
      const lock = acquireRunLock(dir);
      assert.equal(JSON.parse(fs.readFileSync(path.join(dir, ".lock"), "utf8")).pid, process.pid);
      lock.release();
      assert.ok(!fs.existsSync(path.join(dir, ".lock")));
      const live = spawn("sleep", ["30"]);
      try {
        fs.writeFileSync(path.join(dir, ".lock"), JSON.stringify({ pid: live.pid, host: require("os").hostname(), startedAt: "now", command: "sleep" }));
        assert.throws(() => acquireRunLock(dir), /in use by pid/);
        assert.throws(() => openRun({ out: dir, defaultDir: dir, kind: "study1", config: {}, checksums: {} }), /in use by pid/);
      } finally {
        live.kill();
      }
    });
  });

  describe("3. --resume checks the stored configuration", () => {
    it("SIGKILL, then --resume with other flags is refused listing the differences; the same flags finish with the uninterrupted metrics", async () => {
      const base = tempDir("resume");
      const dir = path.join(base, "run");
      const args = [...SMOKE, "--seed", "5", "--epochs", "5", "--json"];
      const { child, done } = cliAsync(["train", ...args, "--out", dir]);
      await waitFor(() => historyLength(dir) >= 2, "two epochs");
      child.kill("SIGKILL");
      await done;
      assert.ok(!fs.existsSync(path.join(dir, "metrics.json")), "killed before the end");
      const before = treeHash(dir);
      const wrong = cli(["train", "--model", "densenet169", "--positives", "covid-ct-118", "--profile", "smoke", "--seed", "2", "--epochs", "5", "--out", dir, "--resume"]);
      refused(wrong, /Cannot resume[\s\S]*positives: "covid-ct-all" → "covid-ct-118"[\s\S]*seed: 5 → 2/);
      assert.deepEqual(treeHash(dir), before);
      const plain = cli(["train", ...args, "--out", dir]);
      refused(plain, /interrupted run of this configuration.*--resume/);
      assert.deepEqual(treeHash(dir), before);
      const resumed = cli(["train", ...args, "--out", dir, "--resume"]);
      assert.equal(resumed.code, 0, resumed.stderr);
      const full = cli(["train", ...args, "--out", path.join(base, "full")]);
      assert.equal(full.code, 0, full.stderr);
      const a = JSON.parse(resumed.stdout).test, b = JSON.parse(full.stdout).test;
      for (const k of ["auc", "accuracy", "f1"]) assert.ok(Math.abs(a[k] - b[k]) < 1e-6, `${k}: ${a[k]} vs ${b[k]}`);
    });

    it("a truncated checkpoint on --resume names the file and says --force", async () => {
      const dir = path.join(tempDir("trunc-ckpt"), "run");
      const { child, done } = cliAsync(["train", ...SMOKE, "--seed", "6", "--epochs", "40", "--out", dir]);
      await waitFor(() => historyLength(dir) >= 1, "one epoch");
      child.kill("SIGKILL");
      await done;
      const bin = path.join(dir, "checkpoints", "last", "model.bin");
      fs.truncateSync(bin, Math.floor(fs.statSync(bin).size / 3));
      refused(cli(["train", ...SMOKE, "--seed", "6", "--epochs", "40", "--out", dir, "--resume"]), /checkpoints[/\\]last[\s\S]*--force/);
      refused(cli(["train", ...SMOKE, "--out", path.join(tempDir("x"), "r"), "--resume"]), /Nothing to resume/);
    });
  });

  describe("4. degenerate input never trains", () => {
    it("an empty split list, or a test/validation set with one class, is refused naming the list; no run directory is made", () => {
      for (const [cls, split] of [["covid", "train"], ["noncovid", "test"], ["covid", "val"]] as const) {
        const data = linkedCopyOfRealData();
        fs.writeFileSync(path.join(data, splitListRel(cls, split)), "");
        const out = path.join(tempDir("degenerate"), "run");
        const r = cli(["train", ...SMOKE, "--data", data, "--out", out]);
        refused(r, new RegExp(`${path.basename(splitListRel(cls, split)).replace(".", "\\.")} lists no image`));
        assert.ok(!fs.existsSync(out), "no run directory");
      }
    });

    it("a file listed twice, or in two splits, is refused", () => {
      const data = linkedCopyOfRealData();
      const list = path.join(data, splitListRel("covid", "train"));
      const first = fs.readFileSync(list, "utf8").split(/\r?\n/)[0];
      fs.appendFileSync(path.join(data, splitListRel("covid", "test")), `${first}\n`);
      const r = cli(["train", ...SMOKE, "--data", data, "--out", path.join(tempDir("twice"), "run")]);
      refused(r, new RegExp(`${first.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: listed in train and test`));
    });

    it("bad numbers and names are refused with the flag and the value", () => {
      const out = path.join(tempDir("flags"), "run");
      for (const [flag, v] of [["--epochs", "0"], ["--epochs", "-1"], ["--epochs", "abc"], ["--seed", "abc"], ["--seed", "1.5"], ["--seed", ""]]) {
        refused(cli(["train", ...SMOKE, "--out", out, flag, v]), new RegExp(`${flag} must be an integer.*'${v}'`));
      }
      refused(cli(["train", "--model", "densenet169", "--positives", "covid-ct-all", "--profile", "turbo", "--out", out]), /--profile 'turbo' is not known/);
      refused(cli(["reproduce", "01", "--profile", "turbo"]), /--profile 'turbo' is not known: use one of paper, quick, smoke/);
      assert.ok(!fs.existsSync(out));
    });
  });

  describe("5. errors name the file and the next step", () => {
    it("a truncated metadata sheet", () => {
      const data = linkedCopyOfRealData();
      const x = path.join(data, "COVID-CT-MetaInfo.xlsx");
      fs.truncateSync(x, Math.floor(fs.statSync(x).size / 2));
      refused(cli(["stats", "--data", data]), /COVID-CT-MetaInfo\.xlsx cannot be read as a spreadsheet.*verify-data/);
    });

    it("a NaN or out-of-range probability, or an unknown set, in predictions.csv names the line", () => {
      for (const [bad, why] of [["NaN", /probability 'NaN'/], ["1.5", /probability '1.5'/], ["", /probability ''/]] as const) {
        const dir = path.join(tempDir("preds"), "run");
        fs.cpSync(finishedRun, dir, { recursive: true });
        const f = path.join(dir, "predictions.csv");
        const lines = fs.readFileSync(f, "utf8").split("\n");
        lines[3] = lines[3].replace(/,[^,]*$/, `,${bad}`);
        fs.writeFileSync(f, lines.join("\n"));
        const before = treeHash(dir);
        refused(cli(["evaluate", "--run", dir, "--write"]), new RegExp(`predictions\\.csv:4: ${why.source}`));
        assert.deepEqual(treeHash(dir), before);
      }
      const dir = path.join(tempDir("preds"), "run");
      fs.cpSync(finishedRun, dir, { recursive: true });
      const f = path.join(dir, "predictions.csv");
      fs.writeFileSync(f, fs.readFileSync(f, "utf8").replace(/\ntest,/, "\ntset,"));
      refused(cli(["evaluate", "--run", dir]), /unknown set 'tset'/);
    });

    it("an image over the decoder's pixel limit is called that, not corrupt", async function () {
      const f = path.join(tempDir("big"), "huge.png");
      await sharp({ create: { width: 20000, height: 20000, channels: 3, background: "#000" }, limitInputPixels: false }).png({ compressionLevel: 9 }).toFile(f);
      await assert.rejects(decodeGray(f), (e: Error) => /more pixels than the decoder accepts/.test(e.message) && e.message.includes(f) && !/corrupt/.test(e.message));
    });
  });

  describe("6. audit and stats see every problem", () => {
    it("lists a file listed twice, a zero-byte and a truncated image in the text output; stats refuses the truncated PNG", () => {
      const data = linkedCopyOfRealData();
      const list = path.join(data, splitListRel("covid", "train"));
      const [a, b] = fs.readFileSync(list, "utf8").split(/\r?\n/);
      fs.appendFileSync(list, `${a}\n`);
      fs.appendFileSync(path.join(data, splitListRel("covid", "test")), `${b}\n`);
      const dir = path.join(data, "Images-processed", "CT_COVID");
      const png = fs.readdirSync(dir).find((n) => n.endsWith(".png"))!;
      const real = fs.readlinkSync(path.join(dir, png));
      fs.rmSync(path.join(dir, png));
      const bytes = fs.readFileSync(real);
      fs.writeFileSync(path.join(dir, png), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      fs.writeFileSync(path.join(dir, "empty.png"), "");
      const r = cli(["audit", "--data", data]);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout, new RegExp(`listed in more than one split \\(or twice\\): 2[\\s\\S]*covid/${a.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: train, train`));
      assert.match(r.stdout, new RegExp(`unreadable images[^\\n]*: 2[\\s\\S]*covid/empty\\.png[\\s\\S]*covid/${png.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}|unreadable images[^\\n]*: 2[\\s\\S]*covid/${png.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}[\\s\\S]*covid/empty\\.png`));
      const s = cli(["stats", "--data", data]);
      assert.notEqual(s.code, 0);
      assert.match(s.stdout, new RegExp(`unreadable images: 2[\\s\\S]*${png.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
      assert.match(s.stderr, /verify-data/);
    });
  });

  describe("7. evaluate refuses what it cannot score", () => {
    it("--write with no test rows leaves metrics.json as it was", () => {
      const dir = path.join(tempDir("eval"), "run");
      fs.cpSync(finishedRun, dir, { recursive: true });
      const f = path.join(dir, "predictions.csv");
      fs.writeFileSync(f, fs.readFileSync(f, "utf8").split("\n").filter((l) => !l.startsWith("test,")).join("\n"));
      const before = treeHash(dir);
      refused(cli(["evaluate", "--run", dir, "--write"]), /test set has no rows.*Nothing was written/);
      assert.deepEqual(treeHash(dir), before);
      refused(cli(["evaluate", "--run", tempDir("notarun")]), /not a run directory of covid-ct/);
    });
  });
});
