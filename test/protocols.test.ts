/**
 * Protocols: the paper protocol's membership matches Tables 2–4 (as rebuilt), is disjoint by
 * patient/volume/series, and is reproducible from its seed; official matches the release's split;
 * the cross-source audit catches planted duplicates (after orientation) and removes them from
 * evaluation.
 */
import { strict as assert } from "assert";
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { hammingHex, imagePhash } from "../lib/audit";
import { resolveCovidSegRoot, resolveLunaRoot } from "../lib/config";
import { imageDirRel } from "../lib/data/dataset";
import { listCovidSeg, listLuna, parseCovidSegName } from "../lib/data/sources";
import {
  PAPER_TARGETS, Protocol, allocateSlices, buildProtocol, covidSegUnit, crossSourcePairs, hashImages, protocolCounts, protocolHash,
  protocolExamples, protocolLeaksOf, spreadIndices, writeProtocol,
} from "../lib/protocols";
import { diagnosisData } from "../lib/diagnosis";
import * as datasetReport from "../lib/reports/dataset";
import { HAVE_REAL_DATA, REAL_ROOT, cleanupTempDirs, linkedCopyOfRealData, tempDir } from "./data-fixtures";

const HAVE_SOURCES = HAVE_REAL_DATA && fs.existsSync(path.join(resolveCovidSegRoot().dir, "images")) && fs.existsSync(resolveLunaRoot().dir);

after(cleanupTempDirs);

const ids = (p: Protocol) => (["train", "val", "test"] as const).flatMap((s) => (["covid", "noncovid"] as const).flatMap((c) => p.splits[s][c].map((m) => `${s}/${c}/${m.id}`)));

describe("protocols: drawing helpers", function () {
  it("allocateSlices shares a total by size, at most half of each volume", function () {
    const a = allocateSlices([100, 40, 20, 13], 80);
    assert.equal(a.reduce((x, y) => x + y, 0), 80);
    a.forEach((n, i) => assert.ok(n <= Math.floor([100, 40, 20, 13][i] / 2)));
    assert.ok(a[0] > a[1] && a[1] > a[3]);
    assert.throws(() => allocateSlices([10, 10], 11), /cannot give 11 non-adjacent/);
  });

  it("spreadIndices are evenly spaced and never adjacent when count ≤ n/2", function () {
    for (const [n, c] of [[13, 6], [207, 60], [19, 9], [40, 20]]) {
      const ix = spreadIndices(n, c);
      assert.equal(ix.length, c);
      for (let i = 1; i < ix.length; i++) assert.ok(ix[i] - ix[i - 1] >= 2, `n=${n} c=${c}: ${ix}`);
      assert.ok(ix[0] >= 0 && ix[ix.length - 1] < n);
    }
  });

  it("Radiopaedia cases stored as two series are one unit", function () {
    assert.equal(covidSegUnit("radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm"), covidSegUnit("radiopaedia_org_covid-19-pneumonia-10_85902_3-dcm"));
    assert.notEqual(covidSegUnit("coronacases_org_001"), covidSegUnit("coronacases_org_002"));
  });
});

describe("protocols: paper (draw only, no audit)", function () {
  this.timeout(60_000);
  let p: Protocol;
  before(async function () {
    if (!HAVE_SOURCES) this.skip();
    p = await buildProtocol("paper", { dedupe: false });
  });

  it("matches the rebuilt Tables 2–4 counts", function () {
    const c = protocolCounts(p);
    const T = PAPER_TARGETS;
    assert.deepEqual(c.train.covid.bySource, { "covid-ct": { images: 349, patients: c.train.covid.bySource["covid-ct"]!.patients }, "covid19-ct-seg": { images: 118, patients: 12 } });
    assert.equal(c.train.covid.images, 467); // the paper's 349 + 118 positives
    assert.equal(c.train.noncovid.bySource["covid-ct"]!.images, 397);
    assert.deepEqual(c.train.noncovid.bySource.luna16, { images: 36, patients: T.trainLunaSeries });
    assert.deepEqual(c.val.covid.bySource, { "covid19-ct-seg": { images: 88, patients: 4 } });
    assert.deepEqual(c.val.noncovid.bySource, { luna16: { images: 48, patients: 24 } });
    assert.deepEqual(c.test.covid.bySource, { "covid19-ct-seg": { images: 173, patients: 4 } });
    assert.deepEqual(c.test.noncovid.bySource, { luna16: { images: 164, patients: 82 } });
    assert.equal(p.pools["covid-ct-349"].length, 349);
    assert.equal(p.pools["covid-seg-118"].length, 118);
    assert.equal(p.pools["covid-ct-118"].length, 118);
    assert.ok(p.pools["covid-ct-118"].every((id) => p.pools["covid-ct-349"].includes(id)));
    assert.deepEqual(p.removed, []);
  });

  it("no volume, Radiopaedia case or LUNA series is in two splits; no image twice", function () {
    assert.deepEqual(protocolLeaksOf(p), []);
    const unitSplit = new Map<string, string>();
    for (const s of ["train", "val", "test"] as const) {
      for (const m of p.splits[s].covid.filter((x) => x.source === "covid19-ct-seg")) {
        const u = covidSegUnit(m.patient);
        assert.ok(!unitSplit.has(u) || unitSplit.get(u) === s, `${u} in ${unitSplit.get(u)} and ${s}`);
        unitSplit.set(u, s);
      }
    }
    const all = ids(p).map((x) => x.split("/").slice(2).join("/"));
    assert.equal(new Set(all).size, all.length);
  });

  it("COVID-Seg slices are spread along each volume, never adjacent", function () {
    for (const s of ["train", "val", "test"] as const) {
      const byVol = new Map<string, number[]>();
      for (const m of p.splits[s].covid.filter((x) => x.source === "covid19-ct-seg")) byVol.set(m.patient, [...(byVol.get(m.patient) ?? []), parseCovidSegName(path.basename(m.path))!.slice]);
      for (const [v, ks] of byVol) {
        ks.sort((a, b) => a - b);
        for (let i = 1; i < ks.length; i++) assert.ok(ks[i] - ks[i - 1] >= 2, `${s} ${v}: slices ${ks[i - 1]} and ${ks[i]} adjacent`);
      }
    }
  });

  it("the same seed gives the same membership and hash; another seed another", async function () {
    const again = await buildProtocol("paper", { dedupe: false });
    assert.equal(again.hash, p.hash);
    assert.deepEqual(ids(again), ids(p));
    const other = await buildProtocol("paper", { dedupe: false, seed: 2 });
    assert.notEqual(other.hash, p.hash);
    assert.notDeepEqual(ids(other).filter((x) => x.startsWith("test/")), ids(p).filter((x) => x.startsWith("test/")));
  });

  it("notebook 01's Tables 2–4 put the paper's counts beside ours", function () {
    const t = datasetReport.protocolTables(p)["text/plain"];
    const row = (label: string) => t.split("\n").find((l) => l.startsWith(label))!.split(/\s{2,}/);
    assert.deepEqual(row("Table 3 (test)   COVID     covid19-ct-seg").slice(3, 7), ["173", "4", "173", "4"]);
    assert.deepEqual(row("Table 4 (val)    NonCOVID  luna16").slice(3, 7), ["48", "38", "48", "24"]);
    assert.match(row("Table 3 (test)   NonCOVID  radiopaedia")[5], /absent here/);
  });

  it("protocol.json is written atomically and its hash follows the membership", function () {
    const file = path.join(tempDir("proto"), "runs", "protocol.json");
    writeProtocol(p, file);
    const back = JSON.parse(fs.readFileSync(file, "utf8"));
    assert.equal(back.hash, p.hash);
    assert.equal(back.splits.test.noncovid.length, 164);
    assert.deepEqual(Object.keys(back.splits.val.covid[0]).sort(), ["id", "path", "patient", "source"]);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ["protocol.json"]); // no temp file left
    const changed = { ...p, splits: { ...p.splits, test: { ...p.splits.test, covid: p.splits.test.covid.slice(1) } } };
    assert.notEqual(protocolHash(changed), p.hash);
  });
});

describe("protocols: official", function () {
  this.timeout(60_000);
  before(function () {
    if (!HAVE_REAL_DATA) this.skip();
  });
  let p: Protocol;
  it("is the release's split with Study I's ids", async function () {
    p = await buildProtocol("official");
    const c = protocolCounts(p);
    assert.deepEqual([c.train.covid.images, c.val.covid.images, c.test.covid.images], [191, 60, 98]);
    assert.deepEqual([c.train.noncovid.images, c.val.noncovid.images, c.test.noncovid.images], [234, 58, 105]);
    const s1 = await diagnosisData("covid-ct-all", 1);
    assert.deepEqual(new Set(p.splits.test.covid.map((m) => m.id).concat(p.splits.test.noncovid.map((m) => m.id))), new Set(s1.test.map((e) => e.id)));
    await assert.rejects(buildProtocol("nope" as never), /Unknown protocol "nope": use one of official, paper/);
    const ex = protocolExamples(p, "val");
    assert.equal(ex.length, 118);
    assert.deepEqual(new Set(ex.map((e) => e.label)), new Set([0, 1]));
    assert.ok(ex.every((e) => e.source === "covid-ct" && fs.existsSync(e.path)));
  });

  it("`covid-ct protocol official --json` prints the membership; an unknown name fails naming the choices", function () {
    const cli = path.join(__dirname, "..", "lib", "cli.js");
    const out = JSON.parse(execFileSync(process.execPath, [cli, "protocol", "official", "--json"], { encoding: "utf8" }));
    assert.equal(out.name, "official");
    assert.match(out.hash, /^[0-9a-f]{64}$/);
    assert.equal(out.splits.test.covid.length, 98);
    assert.deepEqual(Object.keys(out.splits.train.noncovid[0]).sort(), ["id", "path", "patient", "source"]);
    assert.deepEqual(out.removed, []);
    const bad = spawnSync(process.execPath, [cli, "protocol", "nope"], { encoding: "utf8" });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /protocol 'nope' is unknown; use one of official, paper/);
  });
});

describe("protocols: cross-source audit", function () {
  this.timeout(110_000);
  before(function () {
    if (!HAVE_SOURCES) this.skip();
  });

  it("catches a LUNA slice re-encoded into a paper figure and a COVID-Seg slice turned upright", async function () {
    const dir = tempDir("xsrc");
    const luna = listLuna()[10];
    const seg = listCovidSeg().find((s) => s.patient === "coronacases_org_002" && s.slice === 40)!;
    const other = listCovidSeg().find((s) => s.patient === "coronacases_org_009" && s.slice === 60)!;
    // A figure of the LUNA slice: shrunk, JPEG, with a white caption band below.
    const fig = path.join(dir, "figure-of-luna.jpg");
    const small = await sharp(luna.path).resize(300).toBuffer();
    await sharp(small).extend({ bottom: 20, background: "#000" }).jpeg({ quality: 85 }).toFile(fig);
    // The COVID-Seg slice as a journal would print it: upright (Inf-Net stores it turned 90° clockwise).
    const upright = path.join(dir, "figure-of-seg.png");
    await sharp(seg.path).rotate(270).resize(260).png().toFile(upright);
    const images = [
      { id: "luna", source: "luna16" as const, path: luna.path },
      { id: "seg", source: "covid19-ct-seg" as const, path: seg.path },
      { id: "other-seg", source: "covid19-ct-seg" as const, path: other.path },
      { id: "fig-luna", source: "covid-ct" as const, path: fig },
      { id: "fig-seg", source: "covid-ct" as const, path: upright },
    ];
    const { hashes, unreadable } = await hashImages(images, { cache: false });
    assert.deepEqual(unreadable, []);
    const pairs = crossSourcePairs(images, hashes);
    const found = pairs.map((x) => [x.a, x.b].sort().join("+"));
    assert.ok(found.includes("fig-luna+luna"), JSON.stringify(pairs));
    assert.ok(found.includes("fig-seg+seg"), JSON.stringify(pairs));
    assert.ok(!found.some((f) => f.includes("other-seg")), JSON.stringify(pairs));
    // Orientation matters: the plain pHash of the stored (turned) slice does not match the figure.
    assert.ok(hammingHex(await imagePhash(seg.path), await imagePhash(upright)) > 10);
  });

  it("an evaluation slice planted among the released NonCOVID images is removed from evaluation and reported", async function () {
    const base = await buildProtocol("paper");
    assert.deepEqual(protocolLeaksOf(base), []);
    const counts = protocolCounts(base);
    const removedOf = (prefix: string) => base.removed.filter((r) => r.id.startsWith(prefix)).length;
    // Every count equals the table's except images listed in `removed` (val/test only hold COVID-Seg and LUNA).
    assert.equal(counts.val.covid.images + counts.test.covid.images + removedOf("covid19-ct-seg/"), 88 + 173);
    assert.equal(counts.val.noncovid.images + counts.test.noncovid.images + removedOf("luna16/"), 48 + 164);
    // Plant an upright copy of a test COVID-Seg slice as a NonCOVID figure (a cross-class copy).
    const victim = base.splits.test.covid.filter((m) => m.patient.startsWith("coronacases"))[20];
    const root = linkedCopyOfRealData();
    await sharp(victim.path).rotate(270).jpeg({ quality: 90 }).toFile(path.join(root, imageDirRel("noncovid"), "planted.jpg"));
    const p = await buildProtocol("paper", { dataRoot: root });
    const r = p.removed.find((x) => x.id === victim.id);
    assert.ok(r, `${victim.id} not removed: ${JSON.stringify(p.removed)}`);
    assert.match(r!.reason, /near-duplicate of training image covid-ct\/noncovid\/planted\.jpg/);
    assert.ok(!p.splits.test.covid.some((m) => m.id === victim.id));
    assert.equal(p.splits.train.noncovid.filter((m) => m.source === "covid-ct").length, 398);
    assert.notEqual(p.hash, base.hash);
    assert.ok(REAL_ROOT !== root);
  });
});
