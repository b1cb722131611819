import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import * as tf from "@tensorflow/tfjs";
import {
  CLASSES, DataRootError, FetchError, ImageClass, ImageDecodeError, MANIFEST_FILE, SPLITS, Split, UPSTREAM_BASE_URL, UPSTREAM_FILES,
  chestCropBox, computeStats, contentHash, decodeGray, decodeRgb, describeVerify, fetchData, formatManifest, generateManifest,
  imageDirRel, imageSize, imageToTensor, imagesToBatch, loadCovidMetadata, loadNonCovidMetadata, metadataCounts, normaliseGender,
  noncovidPatientFromFile, openDataset, parseAge, parseManifest, preprocessCached, preprocessImage, readManifest, splitListRel,
  verifyData,
} from "../lib/data";
import { REAL_ROOT, cleanupTempDirs, linkedCopyOfRealData, realList, requireRealData, tempDir, writeLists, writeZip } from "./data-fixtures";

const EXPECTED_SPLITS: Record<ImageClass, Record<Split, number>> = {
  covid: { train: 191, val: 60, test: 98 },
  noncovid: { train: 234, val: 58, test: 105 },
};

/** An 8-bit gray test pattern as raw pixels. */
function pattern(width: number, height: number): Buffer {
  const b = Buffer.alloc(width * height);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7) % 256;
  return b;
}

after(cleanupTempDirs);

describe("data: dataset layout and split lists", function () {
  before(function () { requireRealData(this); });

  it("indexes the real release: 349 / 397 images, official split sizes, nothing missing or unlisted", function () {
    const ds = openDataset(REAL_ROOT);
    assert.equal(ds.byClass("covid").length, 349);
    assert.equal(ds.byClass("noncovid").length, 397);
    for (const cls of CLASSES) for (const s of SPLITS) assert.equal(ds.bySplit(s, cls).length, EXPECTED_SPLITS[cls][s], `${cls} ${s}`);
    assert.deepEqual(ds.missing, []);
    assert.deepEqual(ds.unlisted, []);
    assert.deepEqual(ds.multiListed, []);
    const rec = ds.get("covid", "2020.01.24.919183-p27-132.png")!;
    assert.equal(rec.split, "train");
    assert.equal(rec.rel, "Images-processed/CT_COVID/2020.01.24.919183-p27-132.png");
    assert.ok(fs.existsSync(rec.path));
  });
});

describe("data: root validation", function () {
  it("a missing root names the folder and says how to get the data", function () {
    const dir = path.join(tempDir("noroot"), "nowhere");
    assert.throws(() => openDataset(dir), (e: unknown) => {
      assert.ok(e instanceof DataRootError);
      assert.match(e.message, new RegExp(dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
      assert.match(e.message, /npx covid-ct fetch-data/);
      assert.match(e.message, /--data DIR/);
      assert.match(e.message, /COVIDCT_DATA/);
      return true;
    });
  });

  it("a root without the layout lists exactly what is missing (and notices unextracted zips)", function () {
    const dir = tempDir("partial");
    fs.mkdirSync(path.join(dir, imageDirRel("covid")), { recursive: true });
    fs.writeFileSync(path.join(dir, "Images-processed", "CT_NonCOVID.zip"), "");
    assert.throws(() => openDataset(dir), (e: unknown) => {
      assert.ok(e instanceof DataRootError);
      assert.ok(!e.missing.includes(imageDirRel("covid")));
      assert.ok(e.missing.includes(imageDirRel("noncovid")));
      assert.ok(e.missing.includes(splitListRel("covid", "train")));
      assert.equal(e.missing.length, 7);
      assert.match(e.message, /Images-processed\/CT_NonCOVID\.zip/);
      return true;
    });
  });
});

describe("data: tolerant split matching", function () {
  it("matches exact, then case, then the same stem with another extension; reports missing and unlisted", async function () {
    const root = tempDir("match");
    for (const cls of CLASSES) fs.mkdirSync(path.join(root, imageDirRel(cls)), { recursive: true });
    const px = { raw: { width: 8, height: 8, channels: 1 as const } };
    const covid = path.join(root, imageDirRel("covid"));
    await sharp(pattern(8, 8), px).jpeg().toFile(path.join(covid, "a.jpg"));
    for (const f of ["Bb.png", "c.png", "d.png", "e.png"]) await sharp(pattern(8, 8), px).png().toFile(path.join(covid, f));
    fs.writeFileSync(path.join(covid, ".DS_Store"), "x"); // not an image
    writeLists(root, {
      covid: {
        train: ["a.png", "\uFEFF bb.PNG \r", "CT_COVID/c.png"],
        val: ["", "# comment", "e"],
        test: ["gone.png"],
      },
    });
    const ds = openDataset(root);
    const by = new Map(ds.entries.map((e) => [e.entry, e]));
    assert.deepEqual([by.get("a.png")!.file, by.get("a.png")!.match], ["a.jpg", "extension"]);
    assert.deepEqual([by.get("bb.PNG")!.file, by.get("bb.PNG")!.match], ["Bb.png", "case"]);
    assert.deepEqual([by.get("c.png")!.file, by.get("c.png")!.match], ["c.png", "exact"]);
    assert.deepEqual([by.get("e")!.file, by.get("e")!.match], ["e.png", "extension"]);
    assert.deepEqual(ds.missing.map((e) => [e.cls, e.split, e.entry]), [["covid", "test", "gone.png"]]);
    assert.deepEqual(ds.tolerant.map((e) => e.entry).sort(), ["a.png", "bb.PNG", "e"]);
    assert.deepEqual(ds.unlisted.map((r) => r.file), ["d.png"]);
    assert.equal(ds.byClass("covid").length, 5);
    assert.deepEqual(ds.bySplit("train").map((r) => r.file).sort(), ["Bb.png", "a.jpg", "c.png"]);
  });

  it("a file named by two lists is reported and counted once, in the first split", async function () {
    const root = tempDir("multi");
    for (const cls of CLASSES) fs.mkdirSync(path.join(root, imageDirRel(cls)), { recursive: true });
    await sharp(pattern(8, 8), { raw: { width: 8, height: 8, channels: 1 } }).png().toFile(path.join(root, imageDirRel("noncovid"), "x.png"));
    writeLists(root, { noncovid: { train: ["x.png"], test: ["x.jpg"] } });
    const ds = openDataset(root);
    assert.deepEqual(ds.multiListed, [{ cls: "noncovid", file: "x.png", splits: ["train", "test"] }]);
    assert.equal(ds.bySplit("train").length, 1);
    assert.equal(ds.bySplit("test").length, 0);
  });
});

describe("data: metadata", function () {
  before(function () { requireRealData(this); });

  it("reads the xlsx into a DataFrame and typed rows; the README's counts hold", async function () {
    const meta = await loadCovidMetadata(REAL_ROOT);
    assert.deepEqual(meta.frame.shape, [349, 11]);
    assert.equal(meta.rows.length, 349);
    assert.ok(meta.rows.every((r) => r.image !== null), "every metadata row matches an image (83 only by stem)");
    assert.equal(new Set(meta.rows.map((r) => r.patientId)).size, 213);
    const c = metadataCounts(meta.rows);
    assert.equal(c.imagesWithAge, 169);
    assert.equal(c.imagesWithGender, 137);
    assert.equal(c.male, 86);
    assert.equal(c.female, 51);
    // Patient level is far smaller than the image level the paper reports.
    assert.equal(c.patients, 213);
    assert.equal(c.patientsWithAge, 72);
    assert.equal(c.patientsWithGender, 58);
    assert.equal(c.malePatients + c.femalePatients, 58);
    // Identity = paper + patient id; a DOI-less medRxiv row gets the DOI its file name implies.
    const r = meta.rows.find((x) => x.file === "2020.01.24.919183-p27-132.png")!;
    assert.equal(r.patient, "10.1101/2020.01.24.919183#Patient 1");
    assert.deepEqual([r.age, r.gender], [41, "M"]);
    assert.ok(meta.rows.some((x) => x.ageRaw === "40+" && x.age === 40 && x.ageApprox));
    assert.ok(meta.rows.some((x) => x.ageRaw === "Young Child" && x.age === null));
  });

  it("reads NonCOVID-CT-MetaInfo.csv when present", async function () {
    const non = await loadNonCovidMetadata(REAL_ROOT);
    assert.ok(non);
    assert.equal(non.rows.length, 397);
    assert.equal(new Set(non.rows.map((r) => r.patient)).size, 171);
    assert.ok(non.rows.every((r) => r.image !== null));
  });

  it("parses ages and genders tolerantly", function () {
    const cases: [unknown, number | null, boolean][] = [
      [41, 41, false], ["41", 41, false], [" 41 years old", 41, false], ["40+", 40, true], ["30-40", 35, true],
      ["40s", 45, true], ["6 months", 0.5, true], ["Young Child", null, false], ["", null, false], [null, null, false],
    ];
    for (const [cell, value, approx] of cases) {
      const a = parseAge(cell);
      assert.equal(a.value, value, String(cell));
      assert.equal(a.approx, approx, String(cell));
    }
    assert.equal(parseAge("Young Child").raw, "Young Child");
    assert.deepEqual(["M", "M ", "female", " F", "x", null, "Woman"].map(normaliseGender), ["M", "M", "F", "F", null, null, "F"]);
    assert.equal(noncovidPatientFromFile("12%3.jpg"), "noncovid#crawled_patient_12");
    assert.equal(noncovidPatientFromFile("1100.png"), "noncovid#file_1100");
  });
});

describe("data: decoding", function () {
  let dir: string;
  const W = 40, H = 30;
  before(async function () {
    dir = tempDir("decode");
    const gray = pattern(W, H);
    const raw1 = { raw: { width: W, height: H, channels: 1 as const } };
    await sharp(gray, raw1).toColourspace("b-w").png().toFile(path.join(dir, "gray.png"));
    await sharp(gray, raw1).png({ palette: true }).toFile(path.join(dir, "palette.png"));
    await sharp(gray, raw1).toColourspace("b-w").jpeg({ quality: 100 }).toFile(path.join(dir, "gray.jpg"));
    await sharp(gray, raw1).jpeg({ quality: 100 }).toFile(path.join(dir, "jpeg-named.png")); // a JPEG with a .png name, as upstream has 34
    const rgb = Buffer.alloc(W * H * 3);
    for (let i = 0; i < W * H; i++) { rgb[3 * i] = 255; rgb[3 * i + 1] = 0; rgb[3 * i + 2] = 0; }
    await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toFile(path.join(dir, "red.png"));
    const rgba = Buffer.alloc(W * H * 4, 200);
    for (let i = 0; i < W * H; i++) rgba[4 * i + 3] = 255;
    rgba[3] = 0; // first pixel transparent → flattened onto black
    await sharp(rgba, { raw: { width: W, height: H, channels: 4 } }).png().toFile(path.join(dir, "rgba.png"));
    const g16 = new Uint16Array(W * H);
    for (let i = 0; i < g16.length; i++) g16[i] = i * 50;
    await sharp(g16, { raw: { width: W, height: H, channels: 1 } }).toColourspace("grey16").png().toFile(path.join(dir, "gray16.png"));
  });

  it("decodes grayscale, palette, RGB, RGBA, 16-bit PNG and JPEG (by content, not name) to [0,1]", async function () {
    for (const f of ["gray.png", "palette.png", "gray.jpg", "jpeg-named.png", "red.png", "rgba.png", "gray16.png"]) {
      const file = path.join(dir, f);
      const g = await decodeGray(file);
      const c = await decodeRgb(file);
      assert.deepEqual([g.height, g.width, g.channels, g.data.length], [H, W, 1, H * W], f);
      assert.deepEqual([c.height, c.width, c.channels, c.data.length], [H, W, 3, H * W * 3], f);
      assert.ok(g.data.every((v) => v >= 0 && v <= 1) && c.data.every((v) => v >= 0 && v <= 1), f);
      const size = await imageSize(file);
      assert.deepEqual([size.height, size.width], [H, W], f);
    }
    const g = await decodeGray(path.join(dir, "gray.png"));
    assert.ok(Math.abs(g.data[100] - 700 % 256 / 255) < 1e-6);
    const pal = await decodeGray(path.join(dir, "palette.png"));
    assert.ok(Math.abs(pal.data[100] - g.data[100]) < 2 / 255);
    const g16 = await decodeGray(path.join(dir, "gray16.png"));
    assert.ok(Math.abs(g16.data[100] - 5000 / 65535) < 1e-6, "16-bit precision kept");
    const red = await decodeRgb(path.join(dir, "red.png"));
    assert.deepEqual(Array.from(red.data.slice(0, 3)), [1, 0, 0]);
    const rgba = await decodeGray(path.join(dir, "rgba.png"));
    assert.equal(rgba.data[0], 0);
    assert.ok(Math.abs(rgba.data[1] - 200 / 255) < 1e-6);
    assert.equal((await imageSize(path.join(dir, "jpeg-named.png"))).format, "jpeg");
  });

  it("a corrupt or truncated file gives an Error naming the file and what to do", async function () {
    const good = fs.readFileSync(path.join(dir, "gray.png"));
    const jpg = fs.readFileSync(path.join(dir, "gray.jpg"));
    const files = {
      "truncated.png": good.subarray(0, Math.floor(good.length / 2)),
      "truncated.jpg": jpg.subarray(0, Math.floor(jpg.length / 2)),
      "corrupt.png": Buffer.concat([good.subarray(0, 16), Buffer.alloc(64, 0xab), good.subarray(80)]),
      "garbage.jpg": Buffer.from("definitely not an image"),
    };
    for (const [name, bytes] of Object.entries(files)) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      for (const fn of [decodeGray, decodeRgb, (f: string) => preprocessImage(f)]) {
        await assert.rejects(fn(file), (e: unknown) => {
          assert.ok(e instanceof ImageDecodeError, `${name}: ${e}`);
          assert.ok(e.message.includes(file), e.message);
          assert.match(e.message, /verify-data/);
          assert.match(e.message, /fetch-data/);
          return true;
        });
      }
    }
  });
});

describe("data: chest crop and preprocessing", function () {
  it("crops to the body: the largest component's hull, not labels beside it", function () {
    const W = 300, H = 200;
    const g = new Uint8Array(W * H);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const inBody = ((x - 150) / 90) ** 2 + ((y - 110) / 60) ** 2 <= 1; // x 60–240, y 50–170
        const inLung = ((x - 120) / 25) ** 2 + ((y - 110) / 35) ** 2 <= 1; // dark hole inside
        const label = x >= 5 && x < 15 && y >= 5 && y < 12; // bright text-like blob in a corner
        g[y * W + x] = label ? 255 : inBody && !inLung ? 180 : inBody ? 30 : 0;
      }
    }
    const c = chestCropBox(g, H, W, { margin: 0 });
    assert.equal(c.fallback, null);
    const { left, top, width, height } = c.box;
    assert.ok(Math.abs(left - 60) <= 3 && Math.abs(top - 50) <= 3, JSON.stringify(c.box));
    assert.ok(Math.abs(left + width - 241) <= 3 && Math.abs(top + height - 171) <= 3, JSON.stringify(c.box));
    assert.ok(c.hull.length >= 8);
  });

  it("never throws on blank, flat or tiny images: falls back to the full frame", function () {
    assert.equal(chestCropBox(new Uint8Array(64 * 64), 64, 64).fallback, "flat-image");
    assert.equal(chestCropBox(new Uint8Array(64 * 64).fill(255), 64, 64).fallback, "flat-image");
    assert.equal(chestCropBox(new Uint8Array(4 * 4).fill(9), 4, 4).fallback, "tiny-image");
    assert.equal(chestCropBox(new Uint8Array(0), 0, 0).fallback, "tiny-image");
    const speck = new Uint8Array(100 * 100);
    speck[5050] = 255;
    const c = chestCropBox(speck, 100, 100);
    assert.equal(c.fallback, "body-too-small");
    assert.deepEqual(c.box, { top: 0, left: 0, height: 100, width: 100 });
  });

  it("preprocesses files of any kind to size² × channels, and to tensors", async function () {
    const dir = tempDir("prep");
    const blank = path.join(dir, "blank.png");
    await sharp({ create: { width: 50, height: 30, channels: 3, background: "#000000" } }).png().toFile(blank);
    const tiny = path.join(dir, "tiny.png");
    await sharp({ create: { width: 3, height: 2, channels: 4, background: "#ff000080" } }).png().toFile(tiny);
    for (const f of [blank, tiny]) {
      const p = await preprocessImage(f, { size: 32 });
      assert.deepEqual([p.size, p.channels, p.data.length], [32, 3, 32 * 32 * 3]);
      assert.notEqual(p.crop!.fallback, null);
    }
    const gray = await preprocessImage(blank, { size: 16, channels: 1, crop: false });
    assert.deepEqual([gray.data.length, gray.crop], [256, null]);
    const a = await preprocessImage(tiny, { size: 8 });
    const t = imageToTensor(a);
    assert.deepEqual(t.shape, [8, 8, 3]);
    const b = imagesToBatch([a, a]);
    assert.deepEqual(b.shape, [2, 8, 8, 3]);
    const max = (await b.max().data())[0];
    assert.ok(max <= 1 && max > 0.2);
    tf.dispose([t, b]);
  });

  it("preprocesses real images of each kind (RGBA PNG, JPEG named .png, gray JPEG)", async function () {
    requireRealData(this);
    const real = [
      path.join(REAL_ROOT, imageDirRel("covid"), "2020.01.24.919183-p27-132.png"),
      path.join(REAL_ROOT, imageDirRel("noncovid"), "0.jpg"),
      path.join(REAL_ROOT, imageDirRel("noncovid"), "1100.png"),
    ];
    for (const f of real) {
      const p = await preprocessImage(f, { size: 64 });
      assert.equal(p.data.length, 64 * 64 * 3);
      assert.equal(p.crop!.fallback, null, f);
      const { box } = p.crop!;
      assert.ok(box.left >= 0 && box.top >= 0 && box.left + box.width <= p.source.width && box.top + box.height <= p.source.height);
    }
  });
});

describe("data: preprocessing cache", function () {
  it("keys entries by content + parameters, writes atomically, survives renames and damaged entries", async function () {
    const dir = tempDir("cache");
    const cache = path.join(dir, "cache");
    const a = path.join(dir, "a.png");
    await sharp(pattern(60, 40), { raw: { width: 60, height: 40, channels: 1 } }).png().toFile(a);
    const first = await preprocessCached(a, { size: 24 }, { dir: cache });
    const entries = () => fs.readdirSync(path.join(cache, "preprocessed"), { recursive: true }).map(String).filter((f) => /^[0-9a-f]{2}[\\/][0-9a-f]{64}$/.test(f));
    assert.equal(entries().length, 1);
    assert.ok(!fs.readdirSync(path.join(cache, "preprocessed"), { recursive: true }).map(String).some((f) => f.endsWith(".tmp")));
    const second = await preprocessCached(a, { size: 24 }, { dir: cache });
    assert.deepEqual(Buffer.from(second.data), Buffer.from(first.data));
    assert.deepEqual(second.crop, first.crop);
    // Same bytes under another name → same entry.
    const b = path.join(dir, "b.png");
    fs.copyFileSync(a, b);
    assert.equal(contentHash(a), contentHash(b));
    await preprocessCached(b, { size: 24 }, { dir: cache });
    assert.equal(entries().length, 1);
    // Other parameters → another entry.
    await preprocessCached(a, { size: 16 }, { dir: cache });
    assert.equal(entries().length, 2);
    // A damaged entry is recomputed, not trusted.
    for (const e of entries()) fs.writeFileSync(path.join(cache, "preprocessed", e), "junk");
    const again = await preprocessCached(a, { size: 24 }, { dir: cache });
    assert.deepEqual(Buffer.from(again.data), Buffer.from(first.data));
  });
});

describe("data: checksum manifest and verify-data", function () {
  it("the committed manifest is sha256sum format, sorted, and covers the upstream files only", function () {
    const text = fs.readFileSync(MANIFEST_FILE, "utf8");
    const entries = parseManifest(text);
    assert.equal(entries.length, 746 + 6 + 1);
    assert.equal(formatManifest(entries), text, "sorted and formatted as sha256sum writes it");
    const paths = entries.map((e) => e.path);
    assert.equal(paths.filter((p) => p.startsWith("Images-processed/CT_COVID/")).length, 349);
    assert.equal(paths.filter((p) => p.startsWith("Images-processed/CT_NonCOVID/")).length, 397);
    assert.equal(paths.filter((p) => p.startsWith("Data-split/")).length, 6);
    assert.ok(paths.includes("COVID-CT-MetaInfo.xlsx"));
    assert.ok(!paths.some((p) => p.endsWith(".csv")), "the CSVs are not upstream files");
  });

  it("the real data verifies; the two CSV extras are reported but do not fail", async function () {
    requireRealData(this);
    const r = await verifyData(REAL_ROOT);
    assert.equal(r.ok, true, describeVerify(r));
    assert.equal(r.checked, 753);
    assert.deepEqual(r.extra, ["COVID-CT-MetaInfo.csv", "NonCOVID-CT-MetaInfo.csv"]);
  });

  it("reports missing, different and extra files", async function () {
    requireRealData(this);
    const covid = fs.readdirSync(path.join(REAL_ROOT, imageDirRel("covid"))).sort().slice(0, 3);
    const root = linkedCopyOfRealData({ images: { covid, noncovid: [] } });
    const manifest = readManifest().filter((e) => e.path.startsWith("Data-split/") || covid.some((f) => e.path.endsWith(`/${f}`)));
    fs.rmSync(path.join(root, imageDirRel("covid"), covid[0]));
    const changed = path.join(root, imageDirRel("covid"), covid[1]);
    fs.rmSync(changed);
    fs.writeFileSync(changed, "tampered");
    fs.writeFileSync(path.join(root, imageDirRel("covid"), "stray.png"), "x");
    const r = await verifyData(root, { manifest });
    assert.equal(r.ok, false);
    assert.deepEqual(r.missing, [`${imageDirRel("covid")}/${covid[0]}`]);
    assert.deepEqual(r.mismatched.map((m) => m.path), [`${imageDirRel("covid")}/${covid[1]}`]);
    assert.ok(r.extra.includes(`${imageDirRel("covid")}/stray.png`));
    assert.match(describeVerify(r), /1 missing, 1 different/);
  });
});

describe("data: fetch-data (download injected; network is not used)", function () {
  // A miniature upstream: two images per class, the six lists, a metadata file.
  let upstream: string; // files as upstream serves them (zips + lists + xlsx)
  let manifest: { path: string; sha256: string }[];
  let served: Map<string, string>;

  before(async function () {
    const layout = tempDir("upstream-layout");
    const mk = async (cls: ImageClass, name: string, seed: number) => {
      const d = path.join(layout, imageDirRel(cls));
      fs.mkdirSync(d, { recursive: true });
      const px = Buffer.alloc(32 * 32);
      for (let i = 0; i < px.length; i++) px[i] = (i * seed) % 251;
      await sharp(px, { raw: { width: 32, height: 32, channels: 1 } }).png().toFile(path.join(d, name));
    };
    await mk("covid", "c1.png", 3);
    await mk("covid", "c2%1.png", 5);
    await mk("noncovid", "n1.png", 7);
    await mk("noncovid", "n2.png", 11);
    writeLists(layout, { covid: { train: ["c1.png"], test: ["c2%1.png"] }, noncovid: { train: ["n1.png"], val: ["n2.png"] } });
    fs.writeFileSync(path.join(layout, "COVID-CT-MetaInfo.xlsx"), "not really a spreadsheet, but checksummed");
    manifest = await generateManifest(layout);
    assert.equal(manifest.length, 4 + 6 + 1);

    upstream = tempDir("upstream-served");
    for (const cls of CLASSES) {
      const dir = imageDirRel(cls);
      const name = path.basename(dir);
      const files = fs.readdirSync(path.join(layout, dir));
      // Zipped like upstream: a top folder, plus macOS debris that must be ignored.
      writeZip(path.join(upstream, `${name}.zip`), [
        { name: `${name}/` },
        ...files.map((f) => ({ name: `${name}/${f}`, data: fs.readFileSync(path.join(layout, dir, f)) })),
        { name: "__MACOSX/" },
        { name: `__MACOSX/${name}/._${files[0]}`, data: Buffer.from("appledouble") },
      ]);
    }
    served = new Map();
    for (const rel of UPSTREAM_FILES) {
      const local = rel.endsWith(".zip") ? path.join(upstream, path.basename(rel)) : path.join(layout, rel);
      served.set(`${UPSTREAM_BASE_URL}/${rel.split("/").map(encodeURIComponent).join("/")}`, local);
    }
  });

  const fakeDownload = (fail: (url: string) => boolean = () => false) => async (url: string, dest: string) => {
    if (fail(url)) throw new Error("getaddrinfo ENOTFOUND raw.githubusercontent.com");
    const src = served.get(url);
    if (!src) throw new Error(`HTTP 404 Not Found`);
    fs.copyFileSync(src, dest);
  };

  it("downloads, extracts the zips into the upstream layout and verifies", async function () {
    const root = path.join(tempDir("fetch"), "covid-ct");
    const logs: string[] = [];
    const r = await fetchData(root, { download: fakeDownload(), manifest, log: (m) => logs.push(m) });
    assert.equal(r.verify.ok, true, describeVerify(r.verify));
    assert.equal(r.downloaded.length, UPSTREAM_FILES.length);
    assert.ok(fs.existsSync(path.join(root, imageDirRel("covid"), "c2%1.png")));
    assert.ok(!fs.existsSync(path.join(root, "__MACOSX")));
    assert.deepEqual(fs.readdirSync(path.dirname(root)), ["covid-ct"], "no temp folder left behind");
    const ds = openDataset(root);
    assert.deepEqual([ds.byClass("covid").length, ds.bySplit("val").length, ds.missing.length], [2, 1, 0]);
    // A second run finds everything verified and does nothing.
    const again = await fetchData(root, { download: fakeDownload(() => true), manifest });
    assert.equal(again.skipped, true);
  });

  it("a network failure names the URL and the files to provide by hand; nothing is installed", async function () {
    const root = path.join(tempDir("fetch-fail"), "covid-ct");
    const zipUrl = [...served.keys()].find((u) => u.endsWith("CT_COVID.zip"))!;
    await assert.rejects(fetchData(root, { download: fakeDownload((u) => u === zipUrl), manifest }), (e: unknown) => {
      assert.ok(e instanceof FetchError);
      assert.match(e.message, new RegExp(`Download failed: ${zipUrl.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
      assert.match(e.message, /ENOTFOUND/);
      assert.match(e.message, /Images-processed\/CT_COVID\.zip/);
      assert.ok(e.message.includes(root));
      assert.deepEqual(e.failures.map((f) => f.file), ["Images-processed/CT_COVID.zip"]);
      return true;
    });
    assert.ok(!fs.existsSync(root));
    assert.deepEqual(fs.readdirSync(path.dirname(root)), []);
  });

  it("uses a zip placed by hand instead of downloading it", async function () {
    const root = path.join(tempDir("fetch-hand"), "covid-ct");
    fs.mkdirSync(path.join(root, "Images-processed"), { recursive: true });
    fs.copyFileSync(path.join(upstream, "CT_COVID.zip"), path.join(root, "Images-processed", "CT_COVID.zip"));
    const r = await fetchData(root, { download: fakeDownload((u) => u.endsWith("CT_COVID.zip")), manifest });
    assert.equal(r.verify.ok, true);
    assert.deepEqual(r.reused, ["Images-processed/CT_COVID.zip"]);
  });

  it("rejects content that does not match the manifest and leaves the root untouched", async function () {
    const root = path.join(tempDir("fetch-bad"), "covid-ct");
    const bad = path.join(tempDir("bad-zip"), "CT_NonCOVID.zip");
    writeZip(bad, [{ name: "CT_NonCOVID/n1.png", data: Buffer.from("tampered") }, { name: "CT_NonCOVID/n2.png", data: Buffer.from("x") }]);
    const download = async (url: string, dest: string) => {
      if (url.endsWith("CT_NonCOVID.zip")) fs.copyFileSync(bad, dest);
      else await fakeDownload()(url, dest);
    };
    await assert.rejects(fetchData(root, { download, manifest }), /does not match the manifest[\s\S]*Images-processed\/CT_NonCOVID\/n1\.png/);
    assert.ok(!fs.existsSync(root));
  });
});

describe("data: statistics", function () {
  before(function () { requireRealData(this); });

  it("computeStats on the real data: the contract shape and the measured numbers", async function () {
    const s = await computeStats(REAL_ROOT);
    assert.deepEqual(s.covid, { images: 349, patients: 213 });
    assert.deepEqual(s.noncovid, { images: 397, patients: 171 });
    assert.deepEqual(s.split, { train: { covid: 191, noncovid: 234 }, val: { covid: 60, noncovid: 58 }, test: { covid: 98, noncovid: 105 } });
    assert.deepEqual(s.metadata, {
      imagesWithAge: 169, imagesWithGender: 137, male: 86, female: 51,
      patientsWithAge: 72, patientsWithGender: 58, malePatients: 32, femalePatients: 26,
    });
    const r = (x: { min: number; mean: number; max: number }) => [x.min, Math.round(x.mean), x.max];
    assert.deepEqual(r(s.sizes.covid.height), [61, 302, 1225]);
    assert.deepEqual(r(s.sizes.covid.width), [115, 430, 1671]);
    assert.ok(s.sizes.noncovid.height.min > 0);
    assert.equal(s.ages.images.length, 163);
    assert.deepEqual(s.ages.unparsed, ["Young Child"]);
    assert.equal(s.patientSource.noncovid, "csv");
    assert.ok(JSON.parse(JSON.stringify(s)), "JSON-serialisable");
  });

  it("on a modified copy (files removed, split entries renamed) agrees with an independent count", async function () {
    const root = linkedCopyOfRealData();
    const covidDir = path.join(root, imageDirRel("covid"));
    const nonDir = path.join(root, imageDirRel("noncovid"));
    // Remove a train and a test COVID image and two non-COVID images.
    const removed = [realList("covid", "train")[0], realList("covid", "test")[5]];
    for (const f of removed) fs.rmSync(path.join(covidDir, f));
    for (const f of [realList("noncovid", "val")[0], realList("noncovid", "train")[3]]) fs.rmSync(path.join(nonDir, f));
    // Rename entries: one to another extension (still matches), one to a name with no file (missing).
    const val = realList("covid", "val");
    const renamedExt = val[0].replace(/\.png$/, ".jpg");
    const lost = val[1];
    fs.writeFileSync(path.join(root, splitListRel("covid", "val")), [renamedExt, "renamed-away.png", ...val.slice(2)].join("\n") + "\n");

    const s = await computeStats(root);

    // Independent count: plain fs, no lib code.
    const files = (d: string) => new Set(fs.readdirSync(d));
    const have: Record<ImageClass, Set<string>> = { covid: files(covidDir), noncovid: files(nonDir) };
    const stem = (f: string) => f.replace(/\.(png|jpg|jpeg)$/i, "").toLowerCase();
    const listed = (cls: ImageClass, split: Split) => {
      const stems = new Set([...have[cls]].map(stem));
      return fs.readFileSync(path.join(root, splitListRel(cls, split)), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && stems.has(stem(l))).length;
    };
    assert.equal(s.covid.images, 347);
    assert.equal(s.noncovid.images, 395);
    assert.equal(s.covid.images, have.covid.size);
    for (const sp of SPLITS) for (const cls of CLASSES) assert.equal(s.split[sp][cls], listed(cls, sp), `${cls} ${sp}`);
    assert.deepEqual(s.split.train, { covid: 190, noncovid: 233 });
    assert.deepEqual(s.split.val, { covid: 59, noncovid: 57 });
    assert.deepEqual(s.split.test, { covid: 97, noncovid: 105 });
    assert.deepEqual(s.splitNotes.tolerant.map((t) => [t.entry, t.file, t.match]), [[renamedExt, val[0], "extension"]]);
    assert.ok(s.splitNotes.missing.some((m) => m.entry === "renamed-away.png"));
    assert.deepEqual(s.splitNotes.unlisted, [{ cls: "covid", file: lost }]);
    // Metadata counts follow the images present.
    const meta = await loadCovidMetadata(root);
    const present = meta.rows.filter((r) => r.image && have.covid.has(r.image));
    assert.equal(s.metadata.imagesWithAge, present.filter((r) => r.ageRaw !== null).length);
    assert.equal(s.metadata.male, present.filter((r) => r.genderRaw?.trim() === "M").length);
    assert.equal(s.covid.patients, new Set(present.map((r) => r.patient)).size);
  });
});
