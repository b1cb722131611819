/**
 * The external test set (issue 18): the sars-cov-2-ct-scan source (São Paulo, 157 COVID + 154
 * non-COVID slices, no patient ids) — its reader, ids with spaces and parentheses through
 * predictions.csv and the preprocessing cache, its manifest, its orientation and crop — and the
 * `external` block both protocols carry, which never enters a split and leaves each protocol's
 * hash as it was before the external set existed.
 */
import { strict as assert } from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { resolveCovidSegRoot, resolveLunaRoot, resolveSarsRoot } from "../lib/config";
import { preprocessCached } from "../lib/data/cache";
import { readManifest, verifyData } from "../lib/data/checksums";
import { decodeRaw } from "../lib/data/decode";
import { examplePreprocess } from "../lib/data/examples";
import { chestCropBox, preprocessImage } from "../lib/data/preprocess";
import { orientPixels } from "../lib/data/orientation";
import { uprightMeasure } from "../lib/data/upright";
import { SourceRootError, listSarsCov2, parseSarsName, resolveSourceRoot, sourceManifestFile, sourceOrientation, sourcePreprocessing } from "../lib/data/sources";
import { EXTERNAL_SOURCE, Protocol, buildProtocol, externalHash, protocolExternalExamples, protocolHash, protocolJson, selectProtocol, writeProtocol } from "../lib/protocols";
import { readPredictions, writePredictions } from "../lib/runs/predictions";
import { HAVE_REAL_DATA, cleanupTempDirs, tempDir } from "./data-fixtures";

const SARS_ROOT = resolveSarsRoot().dir;
const HAVE_SARS = fs.existsSync(path.join(SARS_ROOT, "COVID")) && fs.existsSync(path.join(SARS_ROOT, "non-COVID"));
const HAVE_SOURCES = HAVE_REAL_DATA && HAVE_SARS && fs.existsSync(path.join(resolveCovidSegRoot().dir, "images")) && fs.existsSync(resolveLunaRoot().dir);

/**
 * Each protocol's hash at the base commit 96e2ff0, before the external set existed, on the shared
 * data (`npx covid-ct protocol <name> --json`). Finished run directories key reuse on it.
 */
const BASE_HASH = {
  paper: "7ada7328b296681688fb789b6ddd80fe04cb8b412fd6f13e80fb7adfab284c06",
  official: "7ebc0787152c39b3ad3fc1816558c2bf13f639c8188b5248ec91235a6d4d4943",
} as const;

after(cleanupTempDirs);

const splitIds = (p: Protocol) => (["train", "val", "test"] as const).flatMap((s) => (["covid", "noncovid"] as const).flatMap((c) => p.splits[s][c]));

describe("external source: sars-cov-2-ct-scan reader", function () {
  before(function () {
    if (!HAVE_SARS) this.skip();
  });

  it("lists 311 slices, 157 COVID then 154 non-COVID, with ids that keep the file names (spaces, parentheses)", function () {
    const xs = listSarsCov2();
    assert.equal(xs.length, 311);
    assert.equal(xs.filter((x) => x.cls === "covid").length, 157);
    assert.equal(xs.filter((x) => x.cls === "noncovid").length, 154);
    assert.equal(new Set(xs.map((x) => x.id)).size, 311);
    for (const x of xs) {
      const dir = x.cls === "covid" ? "COVID" : "non-COVID";
      assert.equal(x.id, `sars-cov-2-ct-scan/${dir}/${path.basename(x.path)}`);
      assert.equal(x.source, "sars-cov-2-ct-scan");
      assert.equal(x.patient, x.id, "no patient ids: each slice is its own patient");
      assert.equal(x.slice, null);
      assert.equal(x.officialSplit, null);
      assert.match(path.basename(x.path), x.cls === "covid" ? /^Covid \(\d+\)\.png$/ : /^Non-Covid \(\d+\)\.png$/);
      assert.ok(fs.existsSync(x.path));
    }
    assert.equal(xs[0].id, "sars-cov-2-ct-scan/COVID/Covid (1).png");
    // Sorted by the upstream number, not as strings ("Covid (9)" before "Covid (1001)").
    const nums = xs.filter((x) => x.cls === "covid").map((x) => parseSarsName(path.basename(x.path))!);
    assert.deepEqual(nums, [...nums].sort((a, b) => a - b));
    assert.equal(parseSarsName("Non-Covid (1017).png"), 1017);
    assert.equal(resolveSourceRoot("sars-cov-2-ct-scan").dir, SARS_ROOT);
  });

  it("a missing folder is an error naming COVIDCT_SARS; an empty COVIDCT_SARS is refused", function () {
    const empty = tempDir("nosars");
    assert.throws(() => listSarsCov2(empty), (e: Error) => e instanceof SourceRootError && /COVID does not exist/.test(e.message) && /COVIDCT_SARS/.test(e.message));
    const old = process.env.COVIDCT_SARS;
    process.env.COVIDCT_SARS = " ";
    try {
      assert.throws(() => resolveSarsRoot(), /COVIDCT_SARS is set but empty/);
    } finally {
      if (old === undefined) delete process.env.COVIDCT_SARS;
      else process.env.COVIDCT_SARS = old;
    }
  });

  it("ids with spaces and parentheses round-trip through predictions.csv", function () {
    const xs = listSarsCov2();
    const file = path.join(tempDir("sars-pred"), "predictions.csv");
    const rows = [
      ...xs.map((x, i) => ({ set: "external", file: x.id, label: x.cls === "covid" ? 1 : 0, probability: (i % 100) / 100 })),
      // Harder names than the dataset has: a comma, a quote.
      { set: "external", file: 'sars-cov-2-ct-scan/COVID/Covid (1), "copy".png', label: 1, probability: 0.5 },
    ];
    writePredictions(file, rows);
    const back = readPredictions(file, ["val", "test", "external"]);
    assert.deepEqual(back, rows);
    assert.ok(fs.readFileSync(file, "utf8").includes("\nexternal,sars-cov-2-ct-scan/COVID/Covid (1).png,1,0\n"));
  });

  it("the committed manifest lists every slice and verifies the shared copy", async function () {
    this.timeout(60_000);
    const entries = readManifest(sourceManifestFile("sars-cov-2-ct-scan"));
    assert.deepEqual(entries.map((e) => e.path).sort(), listSarsCov2().map((x) => path.relative(SARS_ROOT, x.path).split(path.sep).join("/")).sort());
    const r = await verifyData(SARS_ROOT, { manifest: sourceManifestFile("sars-cov-2-ct-scan") });
    assert.deepEqual([r.ok, r.checked, r.missing.length, r.mismatched.length, r.extra.length], [true, 311, 0, 0, 0]);
  });

  it("`verify-data --source sars-cov-2-ct-scan` passes; an absent root is listed as absent in the all-sources run", function () {
    this.timeout(120_000);
    const cli = path.join(__dirname, "..", "lib", "cli.js");
    const one = JSON.parse(execFileSync(process.execPath, [cli, "verify-data", "--source", "sars-cov-2-ct-scan", "--json"], { encoding: "utf8" }));
    assert.deepEqual([one.ok, one.checked], [true, 311]);
    const absent = path.join(tempDir("sars-absent"), "none");
    const all = JSON.parse(execFileSync(process.execPath, [cli, "verify-data", "--json"], { encoding: "utf8", env: { ...process.env, COVIDCT_SARS: absent } }));
    assert.ok(!("sars-cov-2-ct-scan" in all));
    assert.ok(all.absent.some((a: string) => a.startsWith(`sars-cov-2-ct-scan: not present at ${absent}`) && a.includes("COVIDCT_SARS")), JSON.stringify(all.absent));
  });

  it("is upright as stored (identity) and framed by the same chest crop as the other sources", async function () {
    this.timeout(120_000);
    const xs = listSarsCov2();
    const sample = xs.filter((_, i) => i % Math.ceil(xs.length / 20) === 0);
    assert.deepEqual(sourcePreprocessing("sars-cov-2-ct-scan", xs[0].path), {});
    let upright = 0, upsideDown = 0;
    for (const x of sample) {
      assert.equal(sourceOrientation(x.source, x.path), "identity");
      const raw = await decodeRaw(x.path, 1);
      const data = new Uint8Array(raw.data);
      if (uprightMeasure(data, raw.height, raw.width).upright) upright++;
      const turned = orientPixels(data, raw.height, raw.width, 1, "rotate180");
      if (uprightMeasure(turned.data, turned.height, turned.width).upright) upsideDown++;
    }
    // The same bar as test/sources.test.ts (measured: 19/20 upright as stored, 0/20 turned by 180°).
    assert.ok(upright / sample.length >= 0.7, `only ${upright}/${sample.length} upright as stored`);
    assert.ok(upsideDown / sample.length <= 0.3, `${upsideDown}/${sample.length} upright upside down`);
    const cover: number[] = [];
    for (const x of sample.slice(0, 10)) {
      const img = await preprocessImage(x.path, { size: 128, channels: 1, ...sourcePreprocessing(x.source, x.path) });
      const b = chestCropBox(img.data, 128, 128).box;
      cover.push((b.width * b.height) / (128 * 128));
    }
    const mean = cover.reduce((a, b) => a + b, 0) / cover.length;
    assert.ok(mean >= 0.95, `the body covers only ${(mean * 100).toFixed(0)} % of the preprocessed frame`);
  });

  it("preprocessing caches a file whose name has spaces and parentheses, and serves it back", async function () {
    this.timeout(60_000);
    const x = listSarsCov2().find((s) => s.cls === "noncovid")!;
    const dir = tempDir("sars-cache");
    const opts = examplePreprocess({ id: x.id, path: x.path, label: 0, source: x.source }, 64);
    const a = await preprocessCached(x.path, opts, { dir });
    const files = (fs.readdirSync(path.join(dir, "preprocessed"), { recursive: true }) as string[]).filter((f) => fs.statSync(path.join(dir, "preprocessed", f)).isFile());
    assert.equal(files.length, 1);
    const b = await preprocessCached(x.path, opts, { dir });
    assert.deepEqual([...b.data], [...a.data]);
    assert.equal(a.data.length, 64 * 64);
  });
});

describe("protocols: the external set", function () {
  this.timeout(300_000);
  let paper: Protocol;
  let official: Protocol;
  before(async function () {
    if (!HAVE_SOURCES) this.skip();
    official = await buildProtocol("official");
    paper = await buildProtocol("paper");
  });

  it("both protocols carry all 311 external images, none of them in a split", function () {
    for (const p of [official, paper]) {
      assert.equal(p.external.source, EXTERNAL_SOURCE);
      assert.equal(p.external.covid.length, 157);
      assert.equal(p.external.noncovid.length, 154);
      const ext = [...p.external.covid, ...p.external.noncovid];
      assert.ok(ext.every((m) => m.source === "sars-cov-2-ct-scan" && m.patient === m.id && m.id.startsWith("sars-cov-2-ct-scan/")));
      assert.ok(p.external.covid.every((m) => m.id.startsWith("sars-cov-2-ct-scan/COVID/")));
      assert.ok(p.external.noncovid.every((m) => m.id.startsWith("sars-cov-2-ct-scan/non-COVID/")));
      const inSplits = new Set(splitIds(p).flatMap((m) => [m.id, path.resolve(m.path)]));
      assert.ok(ext.every((m) => !inSplits.has(m.id) && !inSplits.has(path.resolve(m.path))), `${p.name}: an external image is in a split`);
      assert.ok(!splitIds(p).some((m) => m.source === "sars-cov-2-ct-scan"));
      assert.ok(!Object.values(p.pools).flat().some((id) => id.startsWith("sars-cov-2-ct-scan/")));
      assert.ok(!p.removed.some((r) => r.id.startsWith("sars-cov-2-ct-scan/")));
      assert.equal(p.external.hash, externalHash(p.external));
      assert.ok(p.notes.some((n) => /External set \(sars-cov-2-ct-scan.*157 COVID \+ 154 non-COVID/.test(n)));
    }
    assert.equal(official.external.hash, paper.external.hash);
  });

  it("each protocol's hash is the one it had before the external set existed", function () {
    assert.equal(official.hash, BASE_HASH.official);
    assert.equal(paper.hash, BASE_HASH.paper);
    // And it does not depend on the external set at all.
    assert.equal(protocolHash({ ...paper, external: undefined } as never), paper.hash);
  });

  it("protocolExternalExamples: label 1 = COVID, the source set, files that exist", function () {
    const ex = protocolExternalExamples(paper);
    assert.equal(ex.length, 311);
    assert.equal(ex.filter((e) => e.label === 1).length, 157);
    assert.ok(ex.every((e) => e.source === "sars-cov-2-ct-scan" && fs.existsSync(e.path) && (e.label === 1) === e.id.includes("/COVID/")));
    assert.equal(protocolExternalExamples(paper, "noncovid").length, 154);
  });

  it("protocol.json and `covid-ct protocol <name> --json` hold the external block", function () {
    const file = path.join(tempDir("ext-proto"), "protocol.json");
    writeProtocol(paper, file);
    const back = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(back.hash, BASE_HASH.paper);
    assert.deepEqual([back.external.source, back.external.covid.length, back.external.noncovid.length, back.external.hash], ["sars-cov-2-ct-scan", 157, 154, paper.external.hash]);
    assert.deepEqual(Object.keys(back.external.covid[0]).sort(), ["id", "path", "patient", "source"]);
    assert.deepEqual(protocolJson(paper).external, back.external);
    const cli = path.join(__dirname, "..", "lib", "cli.js");
    for (const name of ["official", "paper"] as const) {
      const out = JSON.parse(execFileSync(process.execPath, [cli, "protocol", name, "--json"], { encoding: "utf8", maxBuffer: 64 << 20 }));
      assert.equal(out.hash, BASE_HASH[name]);
      assert.equal(out.external.source, "sars-cov-2-ct-scan");
      assert.equal(out.external.covid.length + out.external.noncovid.length, 311);
      assert.ok(out.external.covid.some((m: { id: string }) => m.id === "sars-cov-2-ct-scan/COVID/Covid (1).png"));
      const split = new Set<string>();
      for (const s of Object.values(out.splits) as Record<string, { id: string; path: string }[]>[]) for (const ms of Object.values(s)) for (const m of ms) split.add(m.id).add(m.path);
      assert.ok([...out.external.covid, ...out.external.noncovid].every((m: { id: string; path: string }) => !split.has(m.id) && !split.has(m.path)));
    }
    const text = execFileSync(process.execPath, [cli, "protocol", "official"], { encoding: "utf8" });
    assert.match(text, /^external \(sars-cov-2-ct-scan, evaluation only\): covid 157, noncovid 154 {2}hash [0-9a-f]{64}$/m);
  });

  it("`audit --protocol paper` compares the external set with every source and names pairs with training images", function () {
    const cli = path.join(__dirname, "..", "lib", "cli.js");
    const out = JSON.parse(execFileSync(process.execPath, [cli, "audit", "--protocol", "paper", "--json"], { encoding: "utf8", maxBuffer: 64 << 20 })).protocol;
    const e = out.external;
    assert.deepEqual([e.source, e.images, e.hashed], ["sars-cov-2-ct-scan", 311, 311]);
    const ext = out.crossSourceDuplicates.pairs.filter((x: { aSource: string; bSource: string }) => x.aSource === "sars-cov-2-ct-scan" || x.bSource === "sars-cov-2-ct-scan");
    assert.equal(e.pairs, ext.length);
    assert.equal(e.list.length, e.pairs);
    const trainIds = new Set([...paper.splits.train.covid, ...paper.splits.train.noncovid].map((m) => m.id));
    assert.equal(e.withTraining, e.list.filter((x: { other: string }) => trainIds.has(x.other)).length);
    // Measured at threshold 5: 23 pairs (COVID-Seg 20, COVID-CT 3), 3 with training images; by eye none is the same patient.
    assert.ok(e.list.every((x: { external: string }) => x.external.startsWith("sars-cov-2-ct-scan/")));
  });

  it("an absent root gives an empty external set and a note; the protocol builds with the same hash", async function () {
    const absent = path.join(tempDir("ext-absent"), "none");
    for (const name of ["official", "paper"] as const) {
      const p = await buildProtocol(name, { sarsRoot: absent });
      assert.deepEqual([p.external.covid, p.external.noncovid, p.external.source], [[], [], "sars-cov-2-ct-scan"]);
      assert.equal(p.hash, BASE_HASH[name]);
      assert.ok(p.notes.some((n) => n.includes("absent") && n.includes(absent) && n.includes("COVIDCT_SARS")), JSON.stringify(p.notes));
      assert.deepEqual(protocolExternalExamples(p), []);
    }
    // The memoised paper protocol follows the external root too.
    const old = process.env.COVIDCT_SARS;
    process.env.COVIDCT_SARS = absent;
    try {
      assert.equal((await selectProtocol({ protocol: "paper" })).external.covid.length, 0);
    } finally {
      if (old === undefined) delete process.env.COVIDCT_SARS;
      else process.env.COVIDCT_SARS = old;
    }
    assert.equal((await selectProtocol({ protocol: "paper" })).external.covid.length, 157);
  });
});
