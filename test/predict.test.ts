/**
 * `covid-ct predict` (issue 26): one road for pixels (the run's own external files score what its
 * predictions.csv says), DICOM series with their series row and HU window, bad inputs as one-line
 * errors while the rest is scored, and the --out and --run rules.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { PROJECT_ROOT } from "../lib/config";
import { finished, readPredictions, runDiagnosis } from "../lib/diagnosis";
import { predictWithRun, readFinishedRun } from "../lib/diagnosis/predict";
import { LUNG_WINDOW, windowHu } from "../lib/data/dicom";
import { PREDICTIONS_COLUMNS } from "../lib/predict/rows";
import { SERIES_BURDEN_THRESHOLD } from "../lib/lesions/scan";
import { selectProtocol } from "../lib/protocols";
import { cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";
import { phantom, writeDicom } from "./support/dicom";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: PROJECT_ROOT, env: { ...process.env, COVIDCT_DEBUG: "" } });

function parseCsv(text: string): Record<string, string>[] {
  const lines = text.trim().split("\n");
  const split = (l: string) => {
    const out: string[] = [];
    let cur = "", q = false;
    for (let i = 0; i < l.length; i++) {
      const ch = l[i];
      if (q) {
        if (ch === '"' && l[i + 1] === '"') { cur += '"'; i++; } else if (ch === '"') q = false; else cur += ch;
      } else if (ch === '"') q = true;
      else if (ch === ",") { out.push(cur); cur = ""; } else cur += ch;
    }
    out.push(cur);
    return out;
  };
  const head = split(lines[0]);
  return lines.slice(1).map((l) => Object.fromEntries(split(l).map((v, i) => [head[i], v])));
}

after(cleanupTempDirs);

describe("covid-ct predict", function () {
  let runDir: string;
  before(async function () {
    requireRealData(this);
    runDir = path.join(tempDir("predict-run"), "densenet169-covid-seg-seed5");
    finished(await runDiagnosis({ model: "densenet169", positives: "covid-seg", profile: "smoke", protocol: "paper", seed: 5, out: runDir }));
  });

  it("the run's own external files score its set=external probabilities (one road for pixels, to 1e-6)", async () => {
    const p = await selectProtocol({ protocol: "paper" });
    const ext = [...p.external.covid, ...p.external.noncovid];
    const rows = readPredictions(path.join(runDir, "predictions.csv")).filter((r) => r.set === "external");
    assert.equal(rows.length, ext.length);
    const byId = new Map(ext.map((m) => [m.id, m]));
    // Scored as user files: the source is found from the file's data root.
    const { sourceOfFile } = await import("../lib/data/inputs");
    const examples = rows.map((r) => ({ id: r.file, path: byId.get(r.file)!.path, label: 0 as const, source: sourceOfFile(byId.get(r.file)!.path) }));
    assert.ok(examples.every((e) => e.source === "sars-cov-2-ct-scan"));
    const run = readFinishedRun(runDir);
    const before = fs.readdirSync(runDir).sort();
    const probs = await predictWithRun(run, examples);
    rows.forEach((r, i) => assert.ok(Math.abs(probs[i] - r.probability) <= 1e-6, `${r.file}: ${probs[i]} vs ${r.probability}`));
    assert.deepEqual(fs.readdirSync(runDir).sort(), before, "nothing written into the run");
    // The same through the command, on the external set's folder as a user would give it.
    const out = path.join(tempDir("predict-external"), "p");
    const r = cli(["predict", "--run", runDir, path.dirname(path.dirname(ext[0].path)), "--out", out, "--gradcam", "0"]);
    assert.equal(r.status, 0, r.stderr);
    const csv = parseCsv(fs.readFileSync(path.join(out, "predictions.csv"), "utf8"));
    assert.equal(csv.length, rows.length);
    const byPath = new Map(rows.map((x) => [path.resolve(byId.get(x.file)!.path), x.probability]));
    for (const x of csv) {
      assert.equal(x.kind, "slice");
      const want = byPath.get(path.resolve(x.file));
      assert.ok(want !== undefined, x.file);
      assert.ok(Math.abs(Number(x.probability) - want!) <= 1e-6, `${x.file}: ${x.probability} vs ${want}`);
    }
    assert.deepEqual(fs.readdirSync(runDir).sort(), before, "nothing written into the run");
  });

  it("CLI: a DICOM series, images and bad inputs; one line per bad input, exit 1, the rest scored, nothing outside --out", async () => {
    const inDir = tempDir("predict-in");
    // A series of 4 axial slices in shuffled file order; pixel (10, 10) holds a known HU.
    const series = path.join(inDir, "series");
    const zs = [2, 0, 3, 1];
    zs.forEach((z, k) => {
      const stored = phantom(96, 96, -1024, 0.02 * z);
      stored[10 * 96 + 10] = -600 + 1024;
      writeDicom(path.join(series, `img${k}.dcm`), { stored, rows: 96, columns: 96, intercept: -1024, z, instanceNumber: z + 1 });
    });
    const good = path.join(inDir, "slice.png");
    const p = await selectProtocol({ protocol: "paper" });
    fs.copyFileSync(p.external.covid[0].path, good);
    const bad = path.join(inDir, "bad");
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, "notimage.png"), "hello, I am text");
    fs.writeFileSync(path.join(bad, "empty.png"), "");
    const whole = fs.readFileSync(good);
    fs.writeFileSync(path.join(bad, "truncated.png"), whole.subarray(0, Math.floor(whole.length / 2)));
    await sharp({ create: { width: 1, height: 1, channels: 3, background: "#000" } }).png().toFile(path.join(bad, "tiny.png"));
    await sharp({ create: { width: 6000, height: 5000, channels: 3, background: "#000" } }).png().toFile(path.join(bad, "huge.png"));
    const nopix = writeDicom(path.join(inDir, "nopixels.dcm"), { stored: phantom(32, 32, 0), rows: 32, columns: 32, noPixels: true });
    const mr = writeDicom(path.join(inDir, "mr.dcm"), { stored: phantom(32, 32, 0), rows: 32, columns: 32, modality: "MR" });
    const listing = (d: string) => spawnSync("find", [d], { encoding: "utf8" }).stdout.split("\n").sort().join("\n");
    const inBefore = listing(inDir);
    const parent = tempDir("predict-out");
    const out = path.join(parent, "p");
    const r = cli(["predict", "--run", runDir, series, good, path.join(bad, "notimage.png"), path.join(bad, "empty.png"), path.join(bad, "truncated.png"), path.join(bad, "tiny.png"), path.join(bad, "huge.png"), nopix, mr, "--out", out]);
    assert.equal(r.status, 1, r.stderr);
    assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace:\n${r.stderr}`);
    const expected: [string, RegExp][] = [
      ["notimage.png", /not an image/],
      ["empty.png", /empty file/],
      ["truncated.png", /truncated or corrupt/],
      ["tiny.png", /1×1 is too small/],
      ["huge.png", /6000×5000 is over the 25-megapixel limit/],
      ["nopixels.dcm", /has no pixel data/],
      ["mr.dcm", /modality is MR, not CT/],
    ];
    const lines = r.stderr.split("\n");
    for (const [name, why] of expected) {
      const hits = lines.filter((l) => l.includes(name) && why.test(l));
      assert.equal(hits.length, 1, `one line for ${name}:\n${r.stderr}`);
    }
    assert.equal(listing(inDir), inBefore, "inputs untouched");
    assert.deepEqual(fs.readdirSync(parent), ["p"], "nothing beside --out");
    const csv = parseCsv(fs.readFileSync(path.join(out, "predictions.csv"), "utf8"));
    assert.deepEqual(Object.keys(csv[0]), [...PREDICTIONS_COLUMNS]);
    const slices = csv.filter((x) => x.kind === "slice");
    assert.equal(slices.length, 5, "four series slices and one image");
    assert.equal(csv.filter((x) => x.kind === "error").length, expected.length);
    const ser = slices.filter((x) => x.series === "series");
    assert.deepEqual(ser.map((x) => Number(x.index)), [1, 2, 3, 4]);
    assert.deepEqual(ser.map((x) => path.basename(x.file)), ["img1.dcm", "img3.dcm", "img0.dcm", "img2.dcm"], "sorted by position, not file name");
    for (const x of slices) {
      assert.ok(Number(x.probability) >= 0 && Number(x.probability) <= 1);
      assert.equal(x.covid, Number(x.probability) >= Number(x.threshold) ? "1" : "0");
      assert.ok(Number(x.lung_share) >= 0 && Number(x.lung_share) <= 1);
    }
    // The series row: the volumetric burden over the slices' kept lungs (one size: pixel counts ∝ shares), the series threshold, the most lesion.
    const row = csv.find((x) => x.kind === "series")!;
    const lesionShare = ser.map((x) => (x.lesion_burden === "" ? 0 : Number(x.lesion_burden) * Number(x.lung_share)));
    const lungShare = ser.reduce((a, x) => a + Number(x.lung_share), 0);
    assert.ok(Math.abs(Number(row.lesion_burden) - (lungShare ? lesionShare.reduce((a, b) => a + b, 0) / lungShare : 0)) < 1e-6, "volumetric burden");
    assert.equal(Number(row.threshold), SERIES_BURDEN_THRESHOLD);
    assert.equal(row.covid, Number(row.lesion_burden) >= SERIES_BURDEN_THRESHOLD ? "1" : "0");
    assert.equal(row.driven_by.split(":")[0], String(lesionShare.indexOf(Math.max(...lesionShare)) + 1));
    assert.equal(row.zones.split("; ").length, 6, row.zones);
    assert.ok(Number(row.severity) >= 0 && Number(row.severity) <= 30);
    for (const x of ser) if (x.lung_share === "0") assert.equal(x.flag, "no lung (3D)");
    // The HU window on the pixel of known value (−600 HU, the window's level) in the scored PNG.
    const png = await sharp(path.join(out, ser[0].scored_png)).raw().toBuffer({ resolveWithObject: true });
    assert.equal(png.info.width, 96);
    assert.equal(png.data[(10 * 96 + 10) * png.info.channels], windowHu([LUNG_WINDOW.level])[0]);
    assert.equal(windowHu([LUNG_WINDOW.level])[0], 128);
    const html = fs.readFileSync(path.join(out, "gallery.html"), "utf8");
    // Cards: the image alone, and the series' slices that hold lesion (at most 8).
    const drivers = Math.min(8, lesionShare.filter((v) => v > 0).length);
    assert.equal((html.match(/<figure class="card">/g) ?? []).length, 1 + drivers);
    assert.match(html, /class="covidct-plot"/, "the series chart");
    assert.ok(!/src="(?!data:)/.test(html), "every image inline (offline)");
    // Grad-CAM for a Study I image run: one overlay per slice here (5 ≤ the default 24).
    assert.ok(new RegExp(`Grad-CAM \\(warm = where the COVID-19 score(&#39;|')s gradient points\\) on the ${1 + drivers} highest-probability slice\\(s\\)`).test(html), "Grad-CAM note");
    assert.equal((html.match(/src="data:image\/png/g) ?? []).length, 1 + drivers, "a Grad-CAM PNG beside the JPEG thumbnails of every slice shown");
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8")).kind, "predict");
  });

  it("--out and --run rules: non-empty folders, run directories and data roots are refused; --force replaces only a predict output", async () => {
    const img = (await selectProtocol({ protocol: "paper" })).external.noncovid[0].path;
    const mine = tempDir("predict-mine");
    fs.writeFileSync(path.join(mine, "thesis.txt"), "mine");
    const lungRun = tempDir("predict-lungrun");
    fs.writeFileSync(path.join(lungRun, "manifest.json"), JSON.stringify({ kind: "lungs", createdAt: new Date().toISOString(), git: {}, config: {} }));
    const unfinished = tempDir("predict-unfinished");
    fs.copyFileSync(path.join(runDir, "manifest.json"), path.join(unfinished, "manifest.json"));
    for (const [args, why] of [
      [["--run", runDir, img, "--out", mine], /exists and is not empty/],
      [["--run", runDir, img, "--out", mine, "--force"], /did not write/],
      [["--run", runDir, img, "--out", path.join(runDir, "p")], /inside the study1 run directory/],
      [["--run", runDir, img, "--out", path.join(path.dirname(img), "p")], /data root|shared read-only/],
      [["--run", lungRun, img, "--out", path.join(tempDir("predict-x"), "p")], /is a lung segmenter run \(covid-ct lungs\)/],
      [["--run", unfinished, img, "--out", path.join(tempDir("predict-z"), "p")], /is an unfinished study1 run/],
      [["--run", tempDir("predict-empty"), img, "--out", path.join(tempDir("predict-y"), "p")], /not a run directory/],
    ] as [string[], RegExp][]) {
      const r = cli(["predict", ...args]);
      assert.equal(r.status, 1, `${args.join(" ")}\n${r.stderr}`);
      assert.match(r.stderr, why);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    assert.deepEqual(fs.readdirSync(mine), ["thesis.txt"]);
    // A predict output is replaced with --force, and refused without it.
    const out = path.join(tempDir("predict-again"), "p");
    assert.equal(cli(["predict", "--run", runDir, img, "--out", out]).status, 0);
    assert.equal(cli(["predict", "--run", runDir, img, "--out", out]).status, 1);
    const again = cli(["predict", "--run", runDir, img, "--out", out, "--force"]);
    assert.equal(again.status, 0, again.stderr);
  });

  it("--score lesion-burden: the probability is the slice's lesion burden, the threshold the score run's validation one", async () => {
    const p = await selectProtocol({ protocol: "paper" });
    const imgs = [p.external.covid[1].path, p.external.noncovid[1].path];
    const out = path.join(tempDir("predict-score"), "p");
    const r = cli(["predict", "--score", "lesion-burden", "--profile", "smoke", ...imgs, "--out", out]);
    assert.equal(r.status, 0, r.stderr);
    const rows = parseCsv(fs.readFileSync(path.join(out, "predictions.csv"), "utf8"));
    assert.equal(rows.length, 2);
    const m = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "runs", "lesions", "score", "paper", "smoke", "lesion-burden-seed1", "metrics.json"), "utf8"));
    for (const x of rows) {
      assert.notEqual(x.lesion_burden, "", "a lesion model exists with --score");
      assert.ok(Math.abs(Number(x.probability) - Math.min(1, Number(x.lesion_burden))) < 1e-6);
      assert.ok(Math.abs(Number(x.threshold) - m.testAtValThreshold.threshold) < 1e-6);
    }
    assert.match(fs.readFileSync(path.join(out, "gallery.html"), "utf8"), /Grad-CAM: none \(a lesion score has no image classifier/);
  });

  it("writes nothing outside --out (no cache entry of the user's files), refuses a busy --out, and a folder with nothing to score is an error", async () => {
    const p = await selectProtocol({ protocol: "paper" });
    const dir = tempDir("predict-nocache");
    // A slice whose content no cache has seen (one pixel changed).
    const png = await sharp(p.external.covid[2].path).raw().toBuffer({ resolveWithObject: true });
    png.data[0] = (png.data[0] + 1) % 256;
    const mine = path.join(dir, "new.png");
    await sharp(png.data, { raw: { width: png.info.width, height: png.info.height, channels: png.info.channels } }).png().toFile(mine);
    const empty = path.join(dir, "nothing-here");
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, "notes.txt"), "no slices");
    const stamp = path.join(dir, "stamp");
    fs.writeFileSync(stamp, "");
    const past = new Date(Date.now() - 2000);
    fs.utimesSync(stamp, past, past);
    const out = path.join(tempDir("predict-nocache-out"), "p");
    const r = cli(["predict", "--run", runDir, mine, empty, "--out", out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /nothing-here: holds no image or DICOM file to score/);
    const newer = spawnSync("find", [path.join(PROJECT_ROOT, ".cache"), "-type", "f", "-newer", stamp], { encoding: "utf8" }).stdout.trim();
    assert.equal(newer, "", "no new file in the project's cache");
    assert.deepEqual(fs.readdirSync(out).sort(), ["gallery.html", "manifest.json", "predictions.csv"]);
    // A --out another live process holds is refused (its lock), and an input inside --out too.
    fs.rmSync(out, { recursive: true });
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, ".lock"), JSON.stringify({ pid: process.pid, host: (await import("os")).hostname(), startedAt: new Date().toISOString(), command: "test" }));
    const busy = cli(["predict", "--run", runDir, mine, "--out", out]);
    assert.equal(busy.status, 1);
    assert.match(busy.stderr, /in use by pid/);
    fs.rmSync(path.join(out, ".lock"));
    fs.copyFileSync(mine, path.join(out, "inside.png"));
    const inside = cli(["predict", "--run", runDir, path.join(out, "inside.png"), "--out", out, "--force"]);
    assert.equal(inside.status, 1);
    assert.match(inside.stderr, /is inside --out/);
  });

  it("SIGINT leaves --out as it was (a new folder is removed again, no scratch left)", async function () {
    const { spawn } = await import("child_process");
    const p = await selectProtocol({ protocol: "paper" });
    const parent = tempDir("predict-sigint");
    const out = path.join(parent, "a", "b");
    const child = spawn(process.execPath, [CLI, "predict", "--run", runDir, path.dirname(p.external.covid[0].path), "--out", out], { cwd: PROJECT_ROOT });
    let err = "";
    let sent = false;
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
      if (!sent && /lung masks of/.test(err)) { sent = true; child.kill("SIGINT"); }
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    if (code === 0) this.skip(); // finished before the signal arrived
    assert.equal(code, 130, err);
    assert.match(err, /stopped by SIGINT/);
    assert.deepEqual(fs.readdirSync(parent), [], "the folders it created are gone");
  });
});
