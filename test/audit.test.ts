import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { AuditReport, DEFAULT_PHASH_THRESHOLD, auditDataset, duplicateKind, hammingHex, imagePhash } from "../lib/audit";
import { imageDirRel } from "../lib/data";
import { REAL_ROOT, cleanupTempDirs, linkedCopyOfRealData, requireRealData, tempDir, writeLists } from "./data-fixtures";

after(cleanupTempDirs);

describe("audit: helpers", function () {
  it("Hamming distance of hex pHashes and duplicate kinds", function () {
    assert.equal(hammingHex("0000000000000000", "0000000000000000"), 0);
    assert.equal(hammingHex("ffffffffffffffff", "0000000000000000"), 64);
    assert.equal(hammingHex("8000000000000001", "0000000000000000"), 2);
    assert.equal(duplicateKind({ cls: "covid", split: "train" }, { cls: "covid", split: "train" }), "within-split");
    assert.equal(duplicateKind({ cls: "covid", split: "train" }, { cls: "covid", split: null }), "cross-split");
    assert.equal(duplicateKind({ cls: "covid", split: "train" }, { cls: "noncovid", split: "train" }), "cross-class");
    assert.ok(DEFAULT_PHASH_THRESHOLD >= 3 && DEFAULT_PHASH_THRESHOLD <= 10);
  });
});

describe("audit: planted problems in a small copy", function () {
  let report: AuditReport;
  const P1 = ["2020.01.24.919183-p27-132.png", "2020.01.24.919183-p27-133.png", "2020.01.24.919183-p27-134.png", "2020.01.24.919183-p27-135.png"];
  const OTHER = "kjr-21-e25-p1-6.png";

  before(async function () {
    requireRealData(this);
    const root = linkedCopyOfRealData({ images: { covid: [...P1, OTHER], noncovid: ["0.jpg", "1%0.jpg", "1%1.jpg", "1100.png"] } });
    const non = path.join(root, imageDirRel("noncovid"));
    // A re-encoded, slightly shrunk copy of a train image, under another name, in the test split.
    const src = path.join(REAL_ROOT, imageDirRel("noncovid"), "0.jpg");
    const { width } = await sharp(src).metadata();
    await sharp(src).resize(Math.round(width! * 0.9)).jpeg({ quality: 80 }).toFile(path.join(non, "copy-of-0.jpg"));
    // A byte-identical copy labelled COVID.
    fs.copyFileSync(src, path.join(root, imageDirRel("covid"), "planted.jpg"));
    writeLists(root, {
      // Patient 1 of 2020.01.24.919183 in train and test: a leak.
      covid: { train: [P1[0], P1[1], OTHER], val: ["planted.jpg"], test: [P1[2], P1[3], "no-such-file.png"] },
      // crawled_patient_1 (from NonCOVID-CT-MetaInfo.csv) in train and val: a leak.
      noncovid: { train: ["0.jpg", "1%0.jpg"], val: ["1%1.jpg"], test: ["copy-of-0.jpg"] },
    });
    report = await auditDataset(root, { cacheDir: tempDir("audit-cache") });
  });

  it("finds the planted leaks by patient identity (paper + Patient ID; NonCOVID CSV)", function () {
    const covid = report.leaks.find((l) => l.cls === "covid")!;
    assert.equal(covid.patient, "10.1101/2020.01.24.919183#Patient 1");
    assert.deepEqual(covid.splits, ["train", "test"]);
    assert.deepEqual(covid.bySplit, { train: [P1[0], P1[1]], test: [P1[2], P1[3]] });
    assert.deepEqual(covid.files.sort(), [...P1].sort());
    const non = report.leaks.find((l) => l.cls === "noncovid")!;
    assert.equal(non.patient, "noncovid#crawled_patient_1");
    assert.deepEqual(non.splits, ["train", "val"]);
    assert.equal(report.leaks.length, 2);
    assert.equal(report.summary.leakedPatients, 2);
  });

  it("finds the planted duplicates: a re-encoded copy across splits, a byte copy across classes", function () {
    const cross = report.duplicates.find((d) => [d.a, d.b].sort().join() === ["0.jpg", "copy-of-0.jpg"].join())!;
    assert.ok(cross, JSON.stringify(report.duplicates));
    assert.equal(cross.kind, "cross-split");
    assert.equal(cross.identical, false);
    assert.ok(cross.distance <= DEFAULT_PHASH_THRESHOLD);
    assert.deepEqual([cross.aClass, cross.bClass], ["noncovid", "noncovid"]);
    const planted = report.duplicates.find((d) => d.a === "planted.jpg" || d.b === "planted.jpg")!;
    assert.ok(planted);
    assert.equal(planted.kind, "cross-class");
    assert.equal(planted.identical, true);
    assert.equal(planted.distance, 0);
    const other = planted.a === "planted.jpg" ? { cls: planted.bClass, split: planted.bSplit, f: planted.b } : { cls: planted.aClass, split: planted.aSplit, f: planted.a };
    assert.deepEqual(other, { cls: "noncovid", split: "train", f: "0.jpg" });
  });

  it("reports the missing entry and the unlisted file; every image hashed", function () {
    assert.deepEqual(report.missing, [{ class: "covid", split: "test", entry: "no-such-file.png" }]);
    assert.deepEqual(report.unlisted, [{ class: "noncovid", file: "1100.png" }]);
    assert.deepEqual(report.unreadable, []);
    assert.equal(Object.keys(report.hashes).length, report.images);
    assert.equal(report.images, 11);
  });
});

describe("audit: the real release (one full audit)", function () {
  let report: AuditReport;
  before(async function () {
    requireRealData(this);
    report = await auditDataset(REAL_ROOT); // hashes cached under cacheDir(): later runs take ~1 s
  });

  it("hashes all 746 images; no missing, unlisted or unreadable files", function () {
    assert.equal(report.images, 746);
    assert.equal(Object.keys(report.hashes).length, 746);
    assert.deepEqual([report.missing, report.unlisted, report.unreadable, report.withoutPatient], [[], [], [], []]);
    assert.equal(report.patientSource.noncovid, "csv");
  });

  it("the official split keeps patients apart (by paper + Patient ID and the NonCOVID CSV)", function () {
    assert.deepEqual(report.leaks, []);
  });

  it("finds COVID figures of kjr-21-e24 re-used as NonCOVID images (cross-class duplicates)", function () {
    const pairs = report.duplicates.filter((d) => d.kind === "cross-class").map((d) => [d.a, d.b].sort().join(" ↔ "));
    assert.ok(pairs.includes("71%0.jpg ↔ kjr-21-e24-p5-29.png"), pairs.join("; "));
    assert.ok(pairs.includes("71%1.jpg ↔ kjr-21-e24-p5-31.png"), pairs.join("; "));
    // Everything else under the threshold is neighbouring slices of one scan, within one split.
    assert.equal(report.summary.byKind["cross-split"], 0);
    assert.ok(report.summary.byKind["within-split"] > 0);
    assert.equal(report.summary.identicalPairs, 0);
  });

  it("a second audit is served from the hash cache", async function () {
    const t = Date.now();
    const again = await auditDataset(REAL_ROOT);
    assert.deepEqual(again.hashes, report.hashes);
    assert.ok(Date.now() - t < 10000);
  });

  it("imagePhash is stable for identical bytes", async function () {
    const f = path.join(REAL_ROOT, imageDirRel("covid"), "kjr-21-e24-p5-29.png");
    assert.equal(await imagePhash(f), report.hashes["covid/kjr-21-e24-p5-29.png"]);
  });
});
