/**
 * Sources and orientation: the readers of the new sources, and that the fixed per-source transform
 * puts the spine at the bottom (uprightMeasure) on a sample of every source, while the untransformed
 * Inf-Net slices fail the same measure.
 */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { resolveCovidSegRoot, resolveLunaRoot, resolveMedsegRoot } from "../lib/config";
import { cacheKey } from "../lib/data/cache";
import { readManifest, verifyData } from "../lib/data/checksums";
import { decodeRaw } from "../lib/data/decode";
import { chestCropBox, normalisePreprocessOptions, preprocessImage } from "../lib/data/preprocess";
import { orientPixels } from "../lib/data/orientation";
import { uprightMeasure } from "../lib/data/upright";
import { SourceImage, SourceRootError, listCovidCt, listCovidSeg, listLuna, listMedsegSlices, parseCovidSegName, parseLunaName, sourceManifestFile, sourceOrientation, sourcePreprocessing } from "../lib/data/sources";
import * as datasetReport from "../lib/reports/dataset";
import { HAVE_REAL_DATA, cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

const HAVE_SOURCES = HAVE_REAL_DATA && fs.existsSync(path.join(resolveCovidSegRoot().dir, "images")) && fs.existsSync(resolveLunaRoot().dir) && fs.existsSync(path.join(resolveMedsegRoot().dir, "train", "images"));

after(cleanupTempDirs);

describe("orientation: pixel transforms", function () {
  // 2 × 3 image, values = index: 0 1 2 / 3 4 5
  const px = Uint8Array.from([0, 1, 2, 3, 4, 5]);
  it("rotate90ccw, rotate90cw, rotate180, transpose move pixels as named", function () {
    const ccw = orientPixels(px, 2, 3, 1, "rotate90ccw");
    assert.deepEqual([ccw.height, ccw.width], [3, 2]);
    assert.deepEqual([...ccw.data], [2, 5, 1, 4, 0, 3]); // left column (0, 3) ends at the bottom
    assert.deepEqual([...orientPixels(px, 2, 3, 1, "rotate90cw").data], [3, 0, 4, 1, 5, 2]);
    assert.deepEqual([...orientPixels(px, 2, 3, 1, "rotate180").data], [5, 4, 3, 2, 1, 0]);
    assert.deepEqual([...orientPixels(px, 2, 3, 1, "transpose").data], [0, 3, 1, 4, 2, 5]);
    assert.equal(orientPixels(px, 2, 3, 1, "identity").data, px);
  });

  it("agrees with sharp's rotation on a synthetic RGB image (channels interleaved)", async function () {
    const img = await sharp({ create: { width: 5, height: 3, channels: 3, background: "#000" } }).raw().toBuffer();
    for (let i = 0; i < img.length; i++) img[i] = (i * 37) % 251;
    const mine = orientPixels(new Uint8Array(img), 3, 5, 3, "rotate90ccw");
    const ref = await sharp(img, { raw: { width: 5, height: 3, channels: 3 } }).rotate(270).raw().toBuffer();
    assert.deepEqual([...mine.data], [...ref]);
  });

  it("identity orientation and a zero opening leave the preprocessing cache key as before", function () {
    const before = cacheKey("preprocess", 1, "x", normalisePreprocessOptions({ size: 64, channels: 1 }));
    assert.equal(cacheKey("preprocess", 1, "x", normalisePreprocessOptions({ size: 64, channels: 1, orientation: "identity", cropOptions: { openRadius: 0 } })), before);
    assert.notEqual(cacheKey("preprocess", 1, "x", normalisePreprocessOptions({ size: 64, channels: 1, orientation: "transpose" })), before);
    assert.deepEqual(sourcePreprocessing("covid-ct"), {});
    // Exactly the options object of PREPROCESS_VERSION 1 before orientation existed: old cache entries still hit.
    assert.deepEqual(normalisePreprocessOptions({ size: 64, channels: 1, orientation: "identity" }), {
      size: 64, crop: true, channels: 1, fit: "fill", cropOptions: { workSide: 256, keepFraction: 0.25, margin: 0.02, minAreaFraction: 0.05, bodyLevel: 0.5 },
    });
  });
});

describe("sources: readers", function () {
  before(function () {
    if (!HAVE_SOURCES) this.skip();
  });

  it("COVID-Seg: 1,600 slices of 20 volumes, ids and slice numbers from the file name", function () {
    const seg = listCovidSeg();
    assert.equal(seg.length, 1600);
    assert.equal(new Set(seg.map((s) => s.patient)).size, 20);
    assert.ok(seg.every((s) => s.id === `covid19-ct-seg/${path.basename(s.path)}` && s.cls === "covid" && s.source === "covid19-ct-seg"));
    assert.deepEqual(parseCovidSegName("Data-1_coronacases_org_001_17.jpg"), { volume: "coronacases_org_001", slice: 17 });
    const v1 = seg.filter((s) => s.patient === "coronacases_org_001").map((s) => s.slice);
    assert.deepEqual(v1, Array.from({ length: 100 }, (_, i) => i + 1)); // sorted numerically, 1..100
  });

  it("LUNA16: 250 slices of 125 series, 2 each", function () {
    const luna = listLuna();
    assert.equal(luna.length, 250);
    const series = new Map<string, number>();
    for (const l of luna) series.set(l.patient, (series.get(l.patient) ?? 0) + 1);
    assert.equal(series.size, 125);
    assert.ok([...series.values()].every((n) => n === 2));
    assert.equal(parseLunaName("1.2.3.mhd_45.png")?.z, 45);
    assert.ok(luna.every((l) => l.cls === "noncovid" && l.id.startsWith("luna16/1.3.6.1.4.1.14519.5.2.1.6279.6001.")));
  });

  it("MedSeg and COVID-CT keep Study I's ids", async function () {
    assert.deepEqual(listMedsegSlices("train").slice(0, 2).map((m) => m.id), ["medseg/train/0.jpg", "medseg/train/1.jpg"]);
    const cct = await listCovidCt();
    assert.equal(cct.length, 746);
    assert.ok(cct.some((c) => c.id === "covid-ct/noncovid/0.jpg" && c.officialSplit !== null));
    assert.ok(cct.filter((c) => c.cls === "covid").every((c) => c.patient.includes("#"))); // source paper # patient id
  });

  it("the committed manifests verify the shared copies, and a changed slice is reported", async function () {
    this.timeout(60_000);
    const ok = await verifyData(resolveLunaRoot().dir, { manifest: sourceManifestFile("luna16") });
    assert.deepEqual([ok.ok, ok.checked, ok.missing.length, ok.mismatched.length], [true, 250, 0, 0]);
    const entries = readManifest(sourceManifestFile("covid19-ct-seg"));
    assert.equal(entries.length, 3200); // images/ and pseudo-infection/
    // A copy of two LUNA slices, one altered and one absent.
    const root = tempDir("luna");
    const two = readManifest(sourceManifestFile("luna16")).slice(0, 2);
    fs.copyFileSync(path.join(resolveLunaRoot().dir, two[0].path), path.join(root, two[0].path));
    fs.appendFileSync(path.join(root, two[0].path), "x");
    const bad = await verifyData(root, { manifest: two });
    assert.equal(bad.ok, false);
    assert.deepEqual(bad.mismatched.map((m) => m.path), [two[0].path]);
    assert.deepEqual(bad.missing, [two[1].path]);
  });

  it("a missing folder is an error naming it and the variable to set", function () {
    const empty = tempDir("nosrc");
    assert.throws(() => listLuna(path.join(empty, "absent")), (e: Error) => e instanceof SourceRootError && /absent does not exist/.test(e.message) && /COVIDCT_LUNA/.test(e.message));
    assert.throws(() => listCovidSeg(empty), (e: Error) => /images does not exist/.test(e.message) && /COVIDCT_COVIDSEG/.test(e.message));
    fs.mkdirSync(path.join(empty, "images"));
    fs.writeFileSync(path.join(empty, "images", "slice.jpg"), "x");
    assert.throws(() => listCovidSeg(empty), /cannot read volume and slice from .*slice\.jpg/);
  });
});

describe("orientation: the spine at the bottom for every source", function () {
  this.timeout(120_000);
  before(function () {
    requireRealData(this);
    if (!HAVE_SOURCES) this.skip();
  });

  /** Every k-th image, about n of them: spread over volumes/series, deterministic. */
  const sample = (xs: SourceImage[], n: number) => xs.filter((_, i) => i % Math.ceil(xs.length / n) === 0);

  async function measure(xs: SourceImage[], transform: (x: SourceImage) => "as-stored" | "oriented" | "oriented+180") {
    let upright = 0;
    for (const x of xs) {
      const raw = await decodeRaw(x.path, 1);
      let img = { data: new Uint8Array(raw.data), height: raw.height, width: raw.width };
      const t = transform(x);
      if (t !== "as-stored") img = orientPixels(img.data, img.height, img.width, 1, sourceOrientation(x.source, x.path));
      if (t === "oriented+180") img = orientPixels(img.data, img.height, img.width, 1, "rotate180");
      if (uprightMeasure(img.data, img.height, img.width).upright) upright++;
    }
    return upright / xs.length;
  }

  let sets: Record<string, SourceImage[]>;
  before(async function () {
    const cct = await listCovidCt();
    const seg = listCovidSeg();
    sets = {
      "covid19-ct-seg coronacases": sample(seg.filter((s) => s.patient.startsWith("coronacases")), 20),
      "covid19-ct-seg radiopaedia": sample(seg.filter((s) => s.patient.startsWith("radiopaedia")), 20),
      luna16: sample(listLuna(), 20),
      medseg: sample([...listMedsegSlices("train"), ...listMedsegSlices("test")], 20),
      "covid-ct": sample(cct, 20),
    };
  });

  it("after the transform most of each source's sample is upright (measured: 100 % COVID-Seg, ~80–90 % others)", async function () {
    for (const [name, xs] of Object.entries(sets)) {
      const f = await measure(xs, () => "oriented");
      assert.ok(f >= 0.7, `${name}: only ${(f * 100).toFixed(0)} % of ${xs.length} slices upright after the orientation transform`);
    }
  });

  it("the untransformed Inf-Net slices fail the measure, and so does a 180° turn of the oriented ones", async function () {
    for (const name of ["covid19-ct-seg coronacases", "covid19-ct-seg radiopaedia", "medseg"]) {
      const f = await measure(sets[name], () => "as-stored");
      assert.ok(f <= 0.15, `${name}: ${(f * 100).toFixed(0)} % upright as stored; expected the 90° turn to fail the measure`);
    }
    for (const name of ["covid19-ct-seg coronacases", "luna16"]) {
      const f = await measure(sets[name], () => "oriented+180");
      assert.ok(f <= 0.3, `${name}: ${(f * 100).toFixed(0)} % upright upside down; the measure must tell up from down`);
    }
  });

  it("the chest crop frames every source alike: the body fills the output (LUNA's wide margins do not)", async function () {
    const coverage = async (x: SourceImage, crop: boolean) => {
      const img = await preprocessImage(x.path, { size: 128, channels: 1, crop, ...sourcePreprocessing(x.source, x.path) });
      const b = chestCropBox(img.data, 128, 128).box; // the body's box found again in the output
      return (b.width * b.height) / (128 * 128);
    };
    const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
    // Measured on 30-image samples: 1.00 COVID-Seg, 0.99–1.00 LUNA, MedSeg, COVID-CT; uncropped LUNA about 0.7.
    for (const [name, xs] of Object.entries(sets)) {
      const c = mean(await Promise.all(xs.slice(0, 10).map((x) => coverage(x, true))));
      assert.ok(c >= 0.95, `${name}: the body covers only ${(c * 100).toFixed(0)} % of the preprocessed frame`);
    }
    const raw = mean(await Promise.all(sets.luna16.slice(0, 10).map((x) => coverage(x, false))));
    assert.ok(raw < 0.85, `uncropped LUNA slices: body covers ${(raw * 100).toFixed(0)} % (expected wide margins)`);
  });

  it("notebook 01's orientation gallery shows Inf-Net slices not upright as stored and upright after", async function () {
    const g = await datasetReport.orientationGallery([...sets["covid19-ct-seg coronacases"], ...sets.luna16], { perSource: 2, side: 64 });
    const lines = g["text/plain"].split("\n");
    assert.equal(lines.length, 4);
    assert.ok(lines.filter((l) => l.startsWith("covid19-ct-seg/")).every((l) => /stored not upright .*after rotate90ccw upright/.test(l)), g["text/plain"]);
    // LUNA is left as stored: the same measure before and after (about 9 in 10 LUNA slices pass it).
    assert.ok(lines.filter((l) => l.startsWith("luna16/")).every((l) => /stored (not )?upright (\(.*\)); after identity (not )?upright \2$/.test(l)), g["text/plain"]);
    assert.equal((g["text/html"].match(/<img /g) ?? []).length, 8);
  });

  it("preprocessing with the source's options yields an upright square crop", async function () {
    const x = sets["covid19-ct-seg radiopaedia"][3];
    const img = await preprocessImage(x.path, { size: 96, channels: 1, ...sourcePreprocessing(x.source, x.path) });
    assert.deepEqual(img.source, { height: (await decodeRaw(x.path, 1)).width, width: (await decodeRaw(x.path, 1)).height }); // turned
    // Of the square output only the vertical measure means anything (the aspect was stretched away).
    assert.ok(uprightMeasure(img.data, 96, 96).boneCentroidY > 0.5);
  });
});
