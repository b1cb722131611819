/**
 * Compressed DICOM and what a real export folder holds (lib/data/dicom.ts, lib/data/inputs.ts).
 * Compressed files are made from an uncompressed one (written by dcmjs) with independent encoders:
 * DCMTK (dcmcjpeg, dcmcjpls, dcmcrle) and GDCM (gdcmconv --j2k). A missing tool fails the test with
 * what to install (CI installs both in .ci/run).
 */
import { strict as assert } from "assert";
import dicomParser from "dicom-parser";
import * as fs from "fs";
import * as path from "path";
import { DicomSkip, initDicomCodecs, openDicom, readDicomFrames, readDicomSlice, seriesSpacing, sortSeries } from "../lib/data/dicom";
import { decodeRle } from "../lib/data/dicom-codecs";
import { collectInputs } from "../lib/data/inputs";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { dicomTool, phantom, writeDicom, writeEnhancedCt, writeObject } from "./support/dicom";

after(cleanupTempDirs);

const N = 64;

/** Largest |a − b| over two HU arrays of one size. */
function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Two sources: signed 16-bit with negative stored values, and unsigned 12-bit like a Siemens export (intercept −1024). */
function sources(dir: string): { signed16: string; unsigned12: string } {
  const signed = phantom(N, N, 0);
  // A ramp through the full signed range on the first rows, so sign and high bits matter.
  for (let i = 0; i < 2 * N; i++) signed[i] = -32768 + i * 517;
  const u = new Uint16Array(phantom(N, N, -1024));
  for (let i = 0; i < N; i++) u[i] = i * 65; // 0 … 4095
  return {
    signed16: writeDicom(path.join(dir, "signed16.dcm"), { stored: signed, rows: N, columns: N, slope: 1, intercept: 0, z: 0 }),
    unsigned12: writeDicom(path.join(dir, "unsigned12.dcm"), { stored: u, rows: N, columns: N, intercept: -1024, unsigned: true, bitsStored: 12, z: 0 }),
  };
}

describe("compressed DICOM", () => {
  before(initDicomCodecs);

  it("every lossless syntax gives the stored values of its uncompressed copy: JPEG Lossless .57/.70, JPEG-LS .80, JPEG 2000 .90, RLE", () => {
    const dir = tempDir("dicom-lossless");
    const src = sources(dir);
    // [transfer syntax, tool, arguments]; JPEG Lossless with every predictor (DCMTK's +sv), as a scanner may pick any.
    const encoders: [string, string, string[]][] = [
      ["1.2.840.10008.1.2.4.70", "dcmcjpeg", ["+e1"]],
      ...[1, 2, 3, 4, 5, 6, 7].map((sv): [string, string, string[]] => ["1.2.840.10008.1.2.4.57", "dcmcjpeg", ["+el", "+sv", String(sv)]]),
      ["1.2.840.10008.1.2.4.80", "dcmcjpls", ["+el"]],
      ["1.2.840.10008.1.2.4.90", "gdcmconv", ["--j2k"]],
      ["1.2.840.10008.1.2.5", "dcmcrle", []],
    ];
    for (const [name, file] of Object.entries(src)) {
      const plain = readDicomSlice(file);
      for (const [ts, tool, args] of encoders) {
        const out = path.join(dir, `${name}-${ts}-${args.join("")}.dcm`);
        dicomTool(tool, [...args, file, out]);
        const s = readDicomSlice(out);
        assert.equal(s.transferSyntax, ts, `${tool} ${args.join(" ")}`);
        assert.equal(maxDiff(s.hu, plain.hu), 0, `${name} through ${tool} ${args.join(" ")} (${ts})`);
        assert.deepEqual(s.position, plain.position);
      }
    }
  });

  it("lossy syntaxes decode as the reference decoders do: JPEG-LS near-lossless .81, JPEG 2000 .91, JPEG baseline .50 (8 bit)", () => {
    const dir = tempDir("dicom-lossy");
    const { unsigned12 } = sources(dir);
    const plain = readDicomSlice(unsigned12);
    // JPEG-LS near-lossless (NEAR 2): within 2 of the original, and exactly what DCMTK's decoder gives.
    const ls = path.join(dir, "ls81.dcm"), lsRef = path.join(dir, "ls81-ref.dcm");
    dicomTool("dcmcjpls", ["+en", "+md", "2", unsigned12, ls]);
    dicomTool("dcmdjpls", [ls, lsRef]);
    const s81 = readDicomSlice(ls);
    assert.equal(s81.transferSyntax, "1.2.840.10008.1.2.4.81");
    assert.ok(maxDiff(s81.hu, plain.hu) <= 2, `near-lossless: ${maxDiff(s81.hu, plain.hu)}`);
    assert.equal(maxDiff(s81.hu, readDicomSlice(lsRef).hu), 0);
    // JPEG 2000 (lossy allowed): exactly what GDCM's decoder gives, and close to the original.
    const j2k = path.join(dir, "j2k91.dcm"), j2kRef = path.join(dir, "j2k91-ref.dcm");
    dicomTool("gdcmconv", ["--j2k", "--lossy", "-q", "90", unsigned12, j2k]);
    dicomTool("gdcmconv", ["--raw", j2k, j2kRef]);
    const s91 = readDicomSlice(j2k);
    assert.equal(s91.transferSyntax, "1.2.840.10008.1.2.4.91");
    // GDCM's raw copy says Bits Stored 16 and keeps a lossy overshoot past 4095; the .91 file says 12, and the reader clamps into it.
    const ref91 = readDicomSlice(j2kRef).hu.map((v) => Math.min(v, 4095 - 1024));
    assert.equal(maxDiff(s91.hu, ref91), 0);
    const mean = s91.hu.reduce((a, v, i) => a + Math.abs(v - plain.hu[i]), 0) / s91.hu.length;
    assert.ok(mean < 50, `JPEG 2000 .91 mean |ΔHU| ${mean}`);
    // JPEG baseline holds 8 bits: an 8-bit source (slope 4), within 1 of DCMTK's decoder (IDCTs may round apart).
    const g = new Uint8Array(N * N);
    for (let y = 0; y < N; y++) for (let x = 0; x < N; x++) g[y * N + x] = Math.round(128 + 100 * Math.sin(x / 9) * Math.cos(y / 11));
    const b8 = writeDicom(path.join(dir, "b8.dcm"), { stored: g, rows: N, columns: N, slope: 4, intercept: -1024 });
    const jpg = path.join(dir, "b8-50.dcm"), jpgRef = path.join(dir, "b8-50-ref.dcm");
    dicomTool("dcmcjpeg", ["+eb", "+q", "95", b8, jpg]);
    dicomTool("dcmdjpeg", [jpg, jpgRef]);
    const s50 = readDicomSlice(jpg);
    assert.equal(s50.transferSyntax, "1.2.840.10008.1.2.4.50");
    assert.ok(maxDiff(s50.hu, readDicomSlice(jpgRef).hu) <= 4, `baseline vs dcmdjpeg: ${maxDiff(s50.hu, readDicomSlice(jpgRef).hu)} HU (slope 4)`);
    assert.ok(maxDiff(s50.hu, readDicomSlice(b8).hu) <= 4 * 8, "baseline within 8 gray levels of the original");
  });

  it("multi-frame compressed frames are found with and without a Basic Offset Table, in one or many fragments", () => {
    const dir = tempDir("dicom-frames");
    const frames = [0, 1, 2].map((k) => phantom(N, N, 0, 0.05 * k));
    const enh = writeEnhancedCt(path.join(dir, "enh.dcm"), { rows: N, columns: N, frames, z: [0, 2, 4], intercepts: [0, 0, 0] });
    const plain = readDicomFrames(enh);
    const cases: [string, string, string[]][] = [
      ["bot.dcm", "dcmcjpeg", ["+e1"]], // offset table, one fragment per frame
      ["nobot.dcm", "dcmcjpeg", ["+e1", "-ot"]], // no offset table, one fragment per frame
      ["nobot-split.dcm", "dcmcjpeg", ["+e1", "-ot", "+fs", "1"]], // no offset table, frames split in 1 KB fragments (offsets from JPEG markers)
      ["rle.dcm", "dcmcrle", []],
      ["jls.dcm", "dcmcjpls", []],
    ];
    for (const [name, tool, args] of cases) {
      const out = path.join(dir, name);
      dicomTool(tool, [...args, enh, out]);
      const read = readDicomFrames(out);
      assert.equal(read.length, 3, name);
      read.forEach((s, k) => assert.equal(maxDiff(s.hu, plain[k].hu), 0, `${name} frame ${k + 1}`));
    }
  });

  it("RLE: PackBits runs and literals, 16 bits as two byte planes, most significant first (PS3.5 Annex G)", () => {
    // 2×2 pixels 0x0102, 0x0102, 0x0103, 0xFFFF: plane 0 (high bytes) 01 01 01 FF, plane 1 (low) 02 02 03 FF.
    const seg0 = [0xfe, 0x01, 0x00, 0xff]; // run: 3 × 01, then literal 1 byte FF
    const seg1 = [0xff, 0x02, 0x80, 0x01, 0x03, 0xff]; // run: 2 × 02, a no-op (0x80), literal 2 bytes 03 FF
    const head = new Uint8Array(64);
    const v = new DataView(head.buffer);
    v.setUint32(0, 2, true);
    v.setUint32(4, 64, true);
    v.setUint32(8, 64 + seg0.length, true);
    const frame = new Uint8Array([...head, ...seg0, ...seg1]);
    assert.deepEqual([...decodeRle(frame, { rows: 2, columns: 2, bitsAllocated: 16 })], [0x0102, 0x0102, 0x0103, 0xffff]);
    assert.throws(() => decodeRle(frame.subarray(0, 66), { rows: 2, columns: 2, bitsAllocated: 16 }), /RLE segment/);
  });

  it("a corrupt compressed frame is one line naming the file and what to do", () => {
    const dir = tempDir("dicom-corrupt");
    const { unsigned12 } = sources(dir);
    for (const [tool, args] of [["dcmcjpeg", ["+e1"]], ["dcmcjpls", []], ["gdcmconv", ["--j2k"]], ["dcmcrle", []]] as [string, string[]][]) {
      const out = path.join(dir, `${tool}.dcm`);
      dicomTool(tool, [...args, unsigned12, out]);
      // The file stays well-formed DICOM; its compressed stream (the last fragment) is zeroed.
      const b = fs.readFileSync(out);
      const px = dicomParser.parseDicom(new Uint8Array(b)).elements.x7fe00010;
      const frag = px.fragments![px.fragments!.length - 1];
      b.fill(0, frag.position, frag.position + frag.length);
      const bad = path.join(dir, `${tool}-zeroed.dcm`);
      fs.writeFileSync(bad, b);
      assert.throws(() => readDicomSlice(bad), (e: Error) => {
        assert.ok(e.message.startsWith(`${bad}: `), e.message);
        assert.match(e.message, /could not be decoded|RLE/);
        assert.match(e.message, /dcmdjpeg|gdcmconv/);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
    }
  });
});

describe("a real export folder", () => {
  before(initDicomCodecs);

  const slice = (z: number, extra: Partial<Parameters<typeof writeDicom>[1]> = {}) => ({ stored: phantom(N, N, -1024, 0.01 * z), rows: N, columns: N, intercept: -1024, z, instanceNumber: z + 1, pixelSpacing: [0.7, 0.7] as [number, number], ...extra });

  it("DICOMDIR, SR, PR, SEG, RTSTRUCT, KO and LOCALIZER scouts are skipped and counted, not errors", async () => {
    const dir = tempDir("dicom-export");
    const scan = path.join(dir, "export");
    // Names as a DICOMDIR wants them (no extension, 8 characters).
    for (const z of [0, 1, 2]) writeDicom(path.join(scan, `IM${z}`), slice(z));
    writeDicom(path.join(scan, "SCOUT1"), slice(0, { imageType: ["ORIGINAL", "PRIMARY", "LOCALIZER"], z: undefined }));
    writeObject(path.join(scan, "SR1"), "1.2.840.10008.5.1.4.1.1.88.67", "SR"); // X-Ray Radiation Dose SR
    writeObject(path.join(scan, "PR1"), "1.2.840.10008.5.1.4.1.1.11.1", "PR");
    writeObject(path.join(scan, "SEG1"), "1.2.840.10008.5.1.4.1.1.66.4", "SEG");
    writeObject(path.join(scan, "RTS1"), "1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT");
    writeObject(path.join(scan, "KO1"), "1.2.840.10008.5.1.4.1.1.88.59", "KO");
    // A dose screen the scanner saves as a secondary capture, Modality CT.
    writeDicom(path.join(scan, "SC1"), slice(0, { sopClassUid: "1.2.840.10008.5.1.4.1.1.7", z: undefined }));
    // A real DICOMDIR, by DCMTK, over the three CT slices.
    dicomTool("dcmmkdir", ["+I", "-Pgp", "+id", scan, "+D", path.join(scan, "DICOMDIR"), "IM0", "IM1", "IM2"], scan);
    assert.throws(() => openDicom(path.join(scan, "DICOMDIR")), (e: Error) => e instanceof DicomSkip && /DICOMDIR/.test(e.message));
    const c = await collectInputs([scan], tempDir("dicom-export-out"));
    assert.deepEqual(c.errors, []);
    assert.deepEqual(c.skippedDicom, {
      "DICOMDIR (a media directory)": 1,
      "LOCALIZER (a scout image)": 1,
      "structured report (SR)": 1,
      "presentation state (PR)": 1,
      "segmentation (SEG)": 1,
      "RT structure set (RTSTRUCT)": 1,
      "key object selection (KO)": 1,
      "secondary capture (a screen capture, e.g. a dose report)": 1,
    });
    assert.equal(c.series.length, 1);
    assert.deepEqual(c.series[0].slices.map((s) => path.basename(s.input)), ["IM0", "IM1", "IM2"]);
  });

  it("a CT slice without Rescale Slope and Intercept is refused by name, the rest of its series is scored", async () => {
    const dir = tempDir("dicom-norescale");
    const scan = path.join(dir, "scan");
    for (const z of [0, 1]) writeDicom(path.join(scan, `s${z}.dcm`), slice(z));
    const bad = writeDicom(path.join(scan, "s2.dcm"), slice(2, { noRescale: true }));
    const c = await collectInputs([scan], tempDir("dicom-norescale-out"));
    assert.equal(c.errors.length, 1);
    assert.equal(c.errors[0].file, bad);
    assert.match(c.errors[0].message, /^has no Rescale Slope \(0028,1053\) and no Rescale Intercept \(0028,1052\): its Hounsfield units are unknown; export the series again/);
    assert.equal(c.series[0].slices.length, 2);
    // Enhanced CT: no Pixel Value Transformation anywhere is refused the same way.
    const enh = writeEnhancedCt(path.join(dir, "enh.dcm"), { rows: N, columns: N, frames: [phantom(N, N, 0)], z: [0], intercepts: [0], noRescale: true });
    assert.throws(() => openDicom(enh), /has no Rescale Slope .* \(frame 1: neither its Per-frame nor the Shared Functional Groups' Pixel Value Transformation/);
  });

  it("an Enhanced CT (multi-frame) file is one slice per frame: position, rescale and pixel spacing from its functional groups", async () => {
    const dir = tempDir("dicom-enhanced");
    // Frames stored out of order (z 4, 0, 2) with different intercepts: HU must not depend on either.
    const intercepts = [-1024, 0, -1000];
    const frames = [0, 1, 2].map((k) => phantom(N, N, intercepts[k], 0.05 * k));
    const file = writeEnhancedCt(path.join(dir, "ct", "enhanced.dcm"), { rows: N, columns: N, frames, z: [4, 0, 2], intercepts, pixelSpacing: [0.6, 0.8], sliceThickness: 2 });
    const read = readDicomFrames(file);
    assert.deepEqual(read.map((s) => s.frame), [0, 1, 2]);
    assert.deepEqual(read.map((s) => s.position![2]), [4, 0, 2]);
    for (const [k, s] of read.entries()) {
      assert.deepEqual(s.pixelSpacing, [0.6, 0.8]);
      assert.equal(s.hu[0], -1000, "air");
      assert.deepEqual([...s.hu], [...phantom(N, N, 0, 0.05 * k)], `frame ${k + 1} HU`);
    }
    assert.throws(() => readDicomSlice(file), /holds 3 frames \(an Enhanced CT image\): read it with readDicomFrames/);
    for (const input of [path.dirname(file), file]) {
      const c = await collectInputs([input], tempDir("dicom-enhanced-out"));
      assert.deepEqual(c.errors, []);
      assert.equal(c.series.length, 1, input);
      assert.equal(c.series[0].order, "position");
      assert.deepEqual(c.series[0].slices.map((s) => s.frame), [1, 2, 0]);
      assert.deepEqual(c.series[0].spacing, [0.6, 0.8, 2]);
    }
  });

  it("slices of one series with different sizes: one line naming the folder and both sizes; a coronal reformat series is skipped and counted", async () => {
    const dir = tempDir("dicom-mixed-size");
    const sized = path.join(dir, "sized");
    writeDicom(path.join(sized, "a.dcm"), slice(0));
    writeDicom(path.join(sized, "b.dcm"), { ...slice(1), stored: phantom(N, 2 * N, -1024, 0.01), columns: 2 * N });
    // A coronal reformat: rows along x, columns down the head–foot axis; slices step along y.
    const coronal = path.join(dir, "coronal");
    for (const k of [0, 1, 2]) writeDicom(path.join(coronal, `c${k}.dcm`), { ...slice(k), z: undefined, position: [0, k, 0], orientation: [1, 0, 0, 0, 0, -1] });
    const c = await collectInputs([sized, coronal], tempDir("dicom-mixed-size-out"));
    assert.deepEqual(c.errors.map((e) => e.file), [sized, coronal], c.errors.map((e) => e.message).join("\n"));
    assert.match(c.errors[1].message, /holds nothing to score: its 3 DICOM object\(s\) were all skipped/);
    assert.match(c.errors[0].message, new RegExp(`mixes image size \\(Columns × Rows\\) ${N}×${N} \\(a\\.dcm\\) and ${2 * N}×${N} \\(b\\.dcm\\): not one volume`));
    assert.deepEqual(c.series, []);
    assert.deepEqual(c.slices, []);
    assert.deepEqual(Object.values(c.skippedDicom), [3]);
    assert.match(Object.keys(c.skippedDicom)[0], /coronal or sagittal reformat/);
  });

  it("slices of one series with different orientations or pixel spacings: one line naming the folder and both values", async () => {
    const dir = tempDir("dicom-mixed");
    const ori = path.join(dir, "tilted");
    writeDicom(path.join(ori, "a.dcm"), slice(0));
    writeDicom(path.join(ori, "b.dcm"), slice(1, { orientation: [1, 0, 0, 0, 0.8, -0.6] }));
    const sp = path.join(dir, "respaced");
    writeDicom(path.join(sp, "a.dcm"), slice(0));
    writeDicom(path.join(sp, "b.dcm"), slice(1, { pixelSpacing: [0.7, 0.9] }));
    const good = path.join(dir, "good");
    writeDicom(path.join(good, "a.dcm"), slice(0));
    const c = await collectInputs([ori, sp, good], tempDir("dicom-mixed-out"));
    assert.deepEqual(c.errors.map((e) => e.file), [ori, sp]);
    assert.match(c.errors[0].message, /mixes Image Orientation \(Patient\) 1\\0\\0\\0\\1\\0 \(a\.dcm\) and 1\\0\\0\\0\\0\.8\\-0\.6 \(b\.dcm\): not one volume, not scored; split the series/);
    assert.match(c.errors[1].message, /mixes Pixel Spacing 0\.7\\0\.7 \(a\.dcm\) and 0\.7\\0\.9 \(b\.dcm\)/);
    assert.ok(c.errors.every((e) => !e.message.includes("\n")));
    assert.deepEqual(c.series.map((s) => s.folder), [good]);
    assert.deepEqual(c.slices.map((s) => s.input), [path.join(good, "a.dcm")]);
  });

  it("without position or instance number, file names sort naturally (IM2 before IM10); a series records its spacing in mm", async () => {
    const dir = tempDir("dicom-natural");
    const scan = path.join(dir, "scan");
    for (const k of [10, 2, 1, 21, 3]) writeDicom(path.join(scan, `IM${k}.dcm`), { stored: phantom(N, N, 0), rows: N, columns: N });
    const c = await collectInputs([scan], tempDir("dicom-natural-out"));
    assert.equal(c.series[0].order, "file name");
    assert.deepEqual(c.series[0].slices.map((s) => path.basename(s.input)), ["IM1.dcm", "IM2.dcm", "IM3.dcm", "IM10.dcm", "IM21.dcm"]);
    assert.equal(c.series[0].spacing, undefined, "no Pixel Spacing, no spacing");
    // Positions 2.5 mm apart along the normal (one gap of 5: the median holds), Pixel Spacing [row, column].
    const pos = path.join(dir, "pos");
    const files = [0, 2.5, 5, 10, 12.5].map((z, k) => writeDicom(path.join(pos, `z${k}.dcm`), { ...slice(z), instanceNumber: k + 1, pixelSpacing: [0.6, 0.75], sliceThickness: 3 }));
    const c2 = await collectInputs([pos], tempDir("dicom-natural-out2"));
    assert.deepEqual(c2.series[0].spacing, [0.6, 0.75, 2.5]);
    // Ordered by instance number: Spacing Between Slices is absent, so Slice Thickness.
    const heads = [files[1], files[0]].map((f) => ({ ...readDicomSlice(f), position: undefined }));
    const sorted = sortSeries(heads);
    assert.equal(sorted.by, "instance number");
    assert.deepEqual(seriesSpacing(sorted.slices, sorted.by), [0.6, 0.75, 3]);
  });

  it("collectInputs holds headers, not pixels: each slice's PNG is written under a temporary name, then renamed into series order", async () => {
    const dir = tempDir("dicom-stream");
    const scan = path.join(dir, "scan");
    for (const z of [3, 0, 2, 1]) writeDicom(path.join(scan, `s${z}.dcm`), slice(z));
    const work = tempDir("dicom-stream-out");
    const c = await collectInputs([scan], work);
    assert.deepEqual(c.series[0].slices.map((s) => path.relative(work, s.file)), ["scan/0001.png", "scan/0002.png", "scan/0003.png", "scan/0004.png"]);
    assert.deepEqual(c.series[0].slices.map((s) => path.basename(s.input)), ["s0.dcm", "s1.dcm", "s2.dcm", "s3.dcm"]);
    // Nothing is left under a temporary name, and no HU array rides along with a slice.
    assert.deepEqual(fs.readdirSync(work), ["scan"]);
    assert.ok(c.slices.every((s) => !("hu" in s)));
  });
});
