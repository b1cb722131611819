import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import seedrandom from "seedrandom";
import sharp from "sharp";
import { resolveMedsegRoot, resolveCovidSegRoot } from "../lib/config";
import { maskOverlap, segmentationMetrics, summariseSegmentation } from "../lib/evaluation";
import { extractLungs, extractLungsFromFile, fillHoles, morph } from "../lib/lungs/classical";
import { alignMask, preprocessWithLungMask } from "../lib/lungs/input";

/** A generated chest: ellipse body in black air, two dark lungs, a dense lesion biting into one lung's outer edge. */
export function chestPhantom(size = 160, seed = 1): { gray: Uint8Array; lungs: Uint8Array; lesion: Uint8Array } {
  const rng = seedrandom(String(seed));
  const gray = new Uint8Array(size * size);
  const lungs = new Uint8Array(size * size);
  const lesion = new Uint8Array(size * size);
  const inEllipse = (x: number, y: number, cx: number, cy: number, rx: number, ry: number) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;
  const s = size;
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      const i = y * s + x;
      let v = 10; // outside air
      if (inEllipse(x, y, s / 2, s / 2, 0.45 * s, 0.36 * s)) v = 170; // soft tissue
      const lung = inEllipse(x, y, 0.32 * s, s / 2, 0.12 * s, 0.24 * s) || inEllipse(x, y, 0.68 * s, s / 2, 0.12 * s, 0.24 * s);
      if (lung) { v = 45; lungs[i] = 1; }
      // Dense lesion (consolidation, as bright as tissue) on the outer edge of the left lung.
      if (lung && inEllipse(x, y, 0.23 * s, 0.55 * s, 0.06 * s, 0.07 * s)) { v = 175; lesion[i] = 1; }
      gray[i] = Math.max(0, Math.min(255, Math.round(v + (rng() - 0.5) * 30)));
    }
  }
  return { gray, lungs, lesion };
}

function rotate90(a: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n * n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) out[x * n + (n - 1 - y)] = a[y * n + x];
  return out;
}

/** The orientation-free steps only (posteriorReach extends lungs towards the bottom of the image). */
const NO_REACH = { posteriorReach: 0 };

describe("lungs: classical extractor", () => {
  it("phantom: covers both lungs (Dice > 0.9) and the dense lesion biting into one (coverage > 0.9)", () => {
    const p = chestPhantom();
    // The phantom's lungs end well above its back (no dependent consolidation): posteriorReach,
    // the one orientation-dependent step, is tested on MedSeg below, not on the phantom.
    const m = extractLungs(p.gray, 160, 160, NO_REACH);
    assert.equal(m.fallback, null);
    assert.equal(m.components, 2);
    const lung = segmentationMetrics(m.mask, p.lungs);
    const les = segmentationMetrics(m.mask, p.lesion);
    // Without lesion filling the lesion is left out: the test can fail.
    const raw = segmentationMetrics(extractLungs(p.gray, 160, 160, { ...NO_REACH, fill: "none", dilate: 0 }).mask, p.lesion);
    assert.ok(lung.dice > 0.9, `lung Dice ${lung.dice}`);
    assert.ok(les.coverage > 0.9, `lesion coverage ${les.coverage}`);
    assert.ok(raw.coverage < 0.5, `lesion coverage without fill ${raw.coverage}`);
  });

  it("does not depend on orientation (apart from posteriorReach): a 90° rotated phantom gives the rotated mask", () => {
    const p = chestPhantom(160, 2);
    const a = extractLungs(p.gray, 160, 160, NO_REACH);
    const b = extractLungs(rotate90(p.gray, 160), 160, 160, NO_REACH);
    assert.ok(segmentationMetrics(b.mask, rotate90(a.mask, 160)).dice > 0.97);
  });

  it("a lung cut by the frame (tight crop, as the Inf-Net slices) is still found", () => {
    const p = chestPhantom(160, 3);
    // Keep rows 40..119 and columns 20..139: the body touches every side; the lungs touch top and bottom.
    const h = 80, w = 120;
    const crop = (a: Uint8Array) => { const o = new Uint8Array(h * w); for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) o[y * w + x] = a[(y + 40) * 160 + x + 20]; return o; };
    const m = extractLungs(crop(p.gray), h, w, NO_REACH);
    assert.ok(segmentationMetrics(m.mask, crop(p.lungs)).dice > 0.9);
  });

  it("degenerate input: an empty mask with a reason, and a clear error for a wrong pixel count", () => {
    assert.equal(extractLungs(new Uint8Array(64 * 64).fill(90), 64, 64).fallback, "flat-image");
    assert.equal(extractLungs(new Uint8Array(8 * 8), 8, 8).fallback, "tiny-image");
    assert.throws(() => extractLungs(new Uint8Array(10), 4, 4), /10 pixels for 4×4/);
  });

  it("morphology helpers: hole filling and a disk dilation/erosion", () => {
    const ring = new Uint8Array(7 * 7);
    for (let y = 1; y < 6; y++) for (let x = 1; x < 6; x++) ring[y * 7 + x] = y === 1 || y === 5 || x === 1 || x === 5 ? 1 : 0;
    const filled = fillHoles(ring, 7, 7);
    assert.equal(filled.reduce((a, b) => a + b, 0), 25);
    const dot = new Uint8Array(9 * 9);
    dot[4 * 9 + 4] = 1;
    const disk = morph(dot, 9, 9, 2, "dilate");
    assert.equal(disk.reduce((a, b) => a + b, 0), 13); // lattice points with dx²+dy² ≤ 4
    assert.deepEqual(Array.from(morph(disk, 9, 9, 2, "erode")), Array.from(dot));
  });

  it("MedSeg (98 slices, radiologists' lesions): pooled lesion coverage of the lung masks ≥ 0.80", async function () {
    const root = resolveMedsegRoot().dir;
    if (!fs.existsSync(path.join(root, "train", "images"))) this.skip();
    const overlaps = [];
    for (const split of ["train", "test"]) {
      for (const f of fs.readdirSync(path.join(root, split, "images")).sort()) {
        const m = await extractLungsFromFile(path.join(root, split, "images", f));
        const ref = await sharp(path.join(root, split, "infection", f.replace(/\.jpg$/, ".png"))).greyscale().resize(m.width, m.height, { kernel: "nearest" }).raw().toBuffer();
        overlaps.push(maskOverlap(m.mask, ref, { refThreshold: 128 }));
      }
    }
    const s = summariseSegmentation(overlaps);
    console.log(`      MedSeg: ${s.n} slices, pooled lesion coverage ${s.pooled.coverage.toFixed(4)}, per-image mean ${s.perImage.coverage.mean.toFixed(4)}`);
    assert.equal(s.n, 98);
    // Measured 0.8570 here, on the files as stored (turned: posteriorReach extends sideways); 0.9259 on
    // the upright slices (sourceOrientation), as every caller passes them. 0.80 leaves a margin.
    assert.ok(s.pooled.coverage >= 0.8, `pooled coverage ${s.pooled.coverage}`);
  });

  it("COVID-Seg (every 32nd of 1,600 slices, pseudo lesions ≥ 128): pooled lesion coverage ≥ 0.80", async function () {
    const root = resolveCovidSegRoot().dir;
    if (!fs.existsSync(path.join(root, "images"))) this.skip();
    const overlaps = [];
    const list = fs.readdirSync(path.join(root, "images")).sort().filter((_, i) => i % 32 === 0);
    for (const f of list) {
      const m = await extractLungsFromFile(path.join(root, "images", f));
      const ref = await sharp(path.join(root, "pseudo-infection", f.replace(/\.jpg$/, ".png"))).greyscale().resize(m.width, m.height, { kernel: "nearest" }).raw().toBuffer();
      overlaps.push(maskOverlap(m.mask, ref, { refThreshold: 128 }));
    }
    const s = summariseSegmentation(overlaps);
    console.log(`      COVID-Seg: ${s.n} slices, pooled pseudo-lesion coverage ${s.pooled.coverage.toFixed(4)}, per-image mean ${s.perImage.coverage.mean.toFixed(4)}`);
    assert.equal(s.n, 50);
    // Measured 0.8540 (per-image mean 0.7818: small pseudo lesions on the chest wall miss entirely).
    assert.ok(s.pooled.coverage >= 0.8, `pooled coverage ${s.pooled.coverage}`);
  });

  it("input channel: the mask follows its image's chest crop and resize (phantom off-centre in a black frame)", async () => {
    const p = chestPhantom(160, 4);
    // 200×320 black frame, phantom at rows 20.., columns 140..: the chest crop removes most of it.
    const H = 200, W = 320;
    const frame = new Uint8Array(H * W);
    for (let y = 0; y < 160; y++) for (let x = 0; x < 160; x++) frame[(y + 20) * W + x + 140] = p.gray[y * 160 + x];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-lungs-"));
    try {
      const file = path.join(dir, "phantom.png");
      await sharp(Buffer.from(frame), { raw: { width: W, height: H, channels: 1 } }).png().toFile(file);
      const r = await preprocessWithLungMask(file, { size: 96 });
      assert.equal(r.mask.length, 96 * 96);
      assert.ok(r.image.crop && r.image.crop.box.width < 0.7 * W, JSON.stringify(r.image.crop?.box));
      // Reference independent of alignMask: the extractor run on the preprocessed image itself.
      const grey = new Uint8Array(96 * 96);
      for (let i = 0; i < grey.length; i++) grey[i] = r.image.data[3 * i];
      const direct = extractLungs(grey, 96, 96);
      // Control: the full-frame mask resized without the crop lands elsewhere.
      const src = extractLungs(frame, H, W);
      const noCrop = await alignMask(src.mask, H, W, { ...r.image, crop: null }, "fill");
      const aligned = segmentationMetrics(r.mask, direct.mask).dice;
      const misaligned = segmentationMetrics(noCrop, direct.mask).dice;
      assert.ok(aligned > 0.9 && misaligned < 0.6, `aligned Dice ${aligned}, without the crop ${misaligned}`);
      // With a source orientation (Inf-Net slices are stored turned), the mask turns with its image.
      const turned = await preprocessWithLungMask(file, { size: 96, orientation: "rotate90cw" });
      const tg = new Uint8Array(96 * 96);
      for (let i = 0; i < tg.length; i++) tg[i] = turned.image.data[3 * i];
      const turnedDice = segmentationMetrics(turned.mask, extractLungs(tg, 96, 96).mask).dice;
      assert.ok(turnedDice > 0.9, `oriented: aligned Dice ${turnedDice}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
