/**
 * NIfTI-1 volumes (lib/data/nifti.ts) against two independent writers: dcm2niix (Debian's, from a
 * DICOM series written by dcmjs and read back by lib/data/dicom.ts) and headers written by hand
 * below. Slices must come out pixel for pixel as the DICOM axial series does: rows anterior →
 * posterior, columns patient right → left, slices inferior → superior (sortSeries' order).
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import * as zlib from "zlib";
import { readDicomSlice, sortSeries } from "../lib/data/dicom";
import { isNiftiFile, NiftiError, readNiftiVolume } from "../lib/data/nifti";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { phantom, writeDicom } from "./support/dicom";

after(cleanupTempDirs);

/** Run dcm2niix on a DICOM folder; fail clearly when it is not installed. */
function dcm2niix(dicomDir: string, outDir: string, gzip: boolean): string {
  fs.mkdirSync(outDir, { recursive: true });
  const r = spawnSync("dcm2niix", ["-z", gzip ? "y" : "n", "-b", "n", "-f", "vol", "-o", outDir, dicomDir], { encoding: "utf8" });
  if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") assert.fail("dcm2niix is not installed: these tests check the NIfTI reader against it (apt-get install dcm2niix; .ci/run installs it)");
  assert.equal(r.status, 0, `dcm2niix failed: ${r.stderr}${r.stdout}`);
  const file = path.join(outDir, gzip ? "vol.nii.gz" : "vol.nii");
  assert.ok(fs.existsSync(file), `dcm2niix wrote ${fs.readdirSync(outDir).join(", ")}, not ${path.basename(file)}`);
  return file;
}

// A 3D phantom on an LPS grid: x (columns, patient right → left) 48, y (rows, anterior →
// posterior) 40, z (slices, inferior → superior) 5. Chest-like (phantom(): one lung holds a
// ground-glass patch, so left and right differ) plus a ramp that makes every voxel distinct, so a
// flip or transpose anywhere changes values.
const NX = 48, NY = 40, NZ = 5;
const SPACING = { x: 0.8, y: 0.7, z: 2.5 };
const ORIGIN = [-10.5, -20.25, -30];
const SLOPE = 2, INTERCEPT = -1024;
const axial = Array.from({ length: NZ }, (_, z) => phantom(NY, NX, INTERCEPT, 0.03 * z));
/** Stored value at grid (x, y, z). */
const stored = (x: number, y: number, z: number) => Math.round(axial[z][y * NX + x] / SLOPE) + ((x * 3 + y * 5 + z * 7) % 11);

/** Write the phantom as a DICOM series: axial (rows y, columns x) or coronal (rows −z, columns x). */
function writeSeries(dir: string, kind: "axial" | "coronal"): void {
  // Shuffled file order and instance numbers that disagree with position: only position orders it.
  const order = kind === "axial" ? [3, 0, 4, 1, 2] : Array.from({ length: NY }, (_, k) => (k * 17) % NY);
  order.forEach((k, f) => {
    if (kind === "axial") {
      const px = new Int16Array(NY * NX);
      for (let y = 0; y < NY; y++) for (let x = 0; x < NX; x++) px[y * NX + x] = stored(x, y, k);
      writeDicom(path.join(dir, `f${f}.dcm`), { stored: px, rows: NY, columns: NX, slope: SLOPE, intercept: INTERCEPT, instanceNumber: 50 - f, position: [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SPACING.z], orientation: [1, 0, 0, 0, 1, 0], pixelSpacing: [SPACING.y, SPACING.x], sliceThickness: SPACING.z });
    } else {
      // Coronal slice at y = k: rows run superior → inferior (column cosines 0\0\−1), columns along x.
      const px = new Int16Array(NZ * NX);
      for (let r = 0; r < NZ; r++) for (let x = 0; x < NX; x++) px[r * NX + x] = stored(x, k, NZ - 1 - r);
      writeDicom(path.join(dir, `c${f}.dcm`), { stored: px, rows: NZ, columns: NX, slope: SLOPE, intercept: INTERCEPT, instanceNumber: 100 - f, position: [ORIGIN[0], +(ORIGIN[1] + k * SPACING.y).toFixed(4), ORIGIN[2] + (NZ - 1) * SPACING.z], orientation: [1, 0, 0, 0, 0, -1], pixelSpacing: [SPACING.z, SPACING.x], sliceThickness: SPACING.y });
    }
  });
}

const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol;

describe("NIfTI volumes", () => {
  let axialDir: string;
  let dicom: ReturnType<typeof readDicomSlice>[];
  before(() => {
    axialDir = path.join(tempDir("nifti-dicom"), "axial");
    writeSeries(axialDir, "axial");
    dicom = sortSeries(fs.readdirSync(axialDir).map((f) => readDicomSlice(path.join(axialDir, f)))).slices;
  });

  /** The volume equals the sorted DICOM series slice for slice, with its spacing and positions. */
  function assertLikeSeries(file: string): void {
    const v = readNiftiVolume(file);
    assert.deepEqual([v.rows, v.columns, v.slices], [NY, NX, NZ], "rows, columns, slices");
    assert.ok(close(v.spacing[0], SPACING.y, 1e-5) && close(v.spacing[1], SPACING.x, 1e-5) && close(v.spacing[2], SPACING.z, 1e-5), `spacing ${v.spacing}`);
    assert.equal(v.positions.length, NZ);
    for (let k = 0; k < NZ; k++) {
      const d = dicom[k];
      assert.ok(close(v.positions[k], d.position![2], 1e-4), `slice ${k} at z ${v.positions[k]}, DICOM ${d.position![2]}`);
      const hu = v.sliceHu(k);
      assert.equal(hu.length, d.hu.length);
      for (let i = 0; i < hu.length; i++) if (hu[i] !== d.hu[i]) assert.fail(`${path.basename(file)} slice ${k} pixel (${Math.floor(i / NX)}, ${i % NX}): ${hu[i]} HU, DICOM ${d.hu[i]} HU`);
    }
  }

  it("an axial DICOM series through dcm2niix (.nii.gz and .nii) reads back as the series, slice for slice", () => {
    assert.deepEqual(dicom.map((d) => d.position![2]), [0, 1, 2, 3, 4].map((k) => ORIGIN[2] + k * SPACING.z), "DICOM sorted inferior → superior");
    const out = tempDir("nifti-dcm2niix");
    const gz = dcm2niix(axialDir, path.join(out, "gz"), true);
    const raw = dcm2niix(axialDir, path.join(out, "raw"), false);
    for (const f of [gz, raw]) {
      assert.ok(isNiftiFile(f), f);
      assertLikeSeries(f);
      const v = readNiftiVolume(f);
      assert.equal(v.orientation, "sform");
      assert.equal(v.gzip, f === gz);
    }
  });

  it("the folder walk: a NIfTI volume is one series (the DICOM series' slices, geometry and spacing); a truncated one is one error line, nothing of it kept", async () => {
    const { collectInputs } = await import("../lib/data/inputs");
    const { decodeRaw } = await import("../lib/data/decode");
    const dir = tempDir("nifti-walk");
    const gz = dcm2niix(axialDir, path.join(dir, "in"), true);
    const whole = fs.readFileSync(gz);
    const cut = path.join(dir, "in", "cut.nii.gz");
    fs.writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * 0.6)));
    const work = path.join(dir, "work");
    const nii = await collectInputs([path.join(dir, "in")], work);
    const viaDicom = await collectInputs([axialDir], path.join(dir, "work-dicom"));
    assert.deepEqual(nii.errors.map((e) => e.file), [cut]);
    assert.ok(!nii.errors[0].message.includes("\n"), nii.errors[0].message);
    assert.equal(nii.series.length, 1);
    const [v, d] = [nii.series[0], viaDicom.series[0]];
    // The same place in the patient: sides and head end; the voxel size to the header's float32.
    assert.deepEqual([v.geometry.rightOnImageLeft, v.geometry.superiorLast], [d.geometry.rightOnImageLeft, d.geometry.superiorLast]);
    assert.deepEqual([d.geometry.rightOnImageLeft, d.geometry.superiorLast], [true, true]);
    v.geometry.spacing!.forEach((x, i) => assert.ok(close(x, d.geometry.spacing![i], 1e-6), `spacing ${v.geometry.spacing} vs ${d.geometry.spacing}`));
    assert.equal(v.slices.length, NZ);
    assert.deepEqual(v.slices.map((s) => s.input), Array(NZ).fill(gz));
    assert.deepEqual(v.slices.map((s) => s.frame), [0, 1, 2, 3, 4]);
    for (let k = 0; k < NZ; k++) assert.deepEqual(await decodeRaw(v.slices[k].file, 1), await decodeRaw(d.slices[k].file, 1), `slice ${k + 1}: the same lung-windowed PNG`);
    assert.deepEqual(fs.readdirSync(work).sort(), [path.basename(v.name)], "nothing of the truncated volume kept");
  });

  it("a coronal DICOM series of the same phantom, through dcm2niix, is resliced into the same axial slices", () => {
    const dir = path.join(tempDir("nifti-coronal"), "coronal");
    writeSeries(dir, "coronal");
    assertLikeSeries(dcm2niix(dir, path.join(path.dirname(dir), "out"), true));
  });

  // Hand-written headers: the expected output is a function of (column, row, slice), laid into
  // voxels along permuted and flipped axes, with the sform or qform that says so.
  const C = 6, R = 4, S = 3;
  const expected = (c: number, r: number, s: number) => -1000 + c + 10 * r + 100 * s;

  it("a hand-written sform with permuted and flipped voxel axes (and big-endian, gzip, qform variants) gives the expected slices", () => {
    const dir = tempDir("nifti-hand");
    // axisOf[w]: the voxel axis along patient axis w (0 = x right→left, 1 = y ant→post, 2 = z inf→sup); flip[w]: it runs the other way.
    const layouts: { axisOf: number[]; flip: boolean[] }[] = [
      { axisOf: [0, 1, 2], flip: [false, false, false] },
      { axisOf: [0, 1, 2], flip: [true, true, false] }, // how most NIfTI writers lay out an axial series (RAS-ish)
      { axisOf: [2, 0, 1], flip: [false, true, true] }, // i = rows (flipped), j = slices (flipped), k = columns
      { axisOf: [1, 2, 0], flip: [true, false, true] }, // i = slices (flipped), j = columns (flipped), k = rows
    ];
    const origin = [-100, -50, 20], sp = [0.6, 0.9, 3]; // LPS of output pixel (0, 0) of slice 0; mm along x, y, z
    for (const [li, { axisOf, flip }] of layouts.entries()) {
      const size = [C, R, S];
      const n = [0, 0, 0];
      for (let w = 0; w < 3; w++) n[axisOf[w]] = size[w];
      const values = new Float64Array(n[0] * n[1] * n[2]);
      for (let k = 0; k < n[2]; k++) for (let j = 0; j < n[1]; j++) for (let i = 0; i < n[0]; i++) {
        const v = [i, j, k];
        const o = [0, 1, 2].map((w) => (flip[w] ? size[w] - 1 - v[axisOf[w]] : v[axisOf[w]]));
        values[i + n[0] * (j + n[1] * k)] = expected(o[0], o[1], o[2]);
      }
      // sform rows (RAS): voxel axis a = axisOf[w] moves ±sp[w] along LPS axis w; RAS negates x and y.
      const ras = [-1, -1, 1];
      const srow = [0, 1, 2].map(() => [0, 0, 0, 0]);
      for (let w = 0; w < 3; w++) {
        srow[w][axisOf[w]] = ras[w] * (flip[w] ? -1 : 1) * sp[w];
        srow[w][3] = ras[w] * (origin[w] + (flip[w] ? (size[w] - 1) * sp[w] : 0));
      }
      const pixdim = [1, 0, 0, 0];
      for (let w = 0; w < 3; w++) pixdim[axisOf[w] + 1] = sp[w];
      for (const variant of ["le", "be", "gz"]) {
        const bytes = nifti({ dims: n, datatype: 4, values, pixdim, srow, sformCode: 2, qformCode: 0, littleEndian: variant !== "be" });
        const file = path.join(dir, `l${li}-${variant}.nii${variant === "gz" ? ".gz" : ""}`);
        fs.writeFileSync(file, variant === "gz" ? zlib.gzipSync(bytes) : bytes);
        assert.ok(isNiftiFile(file), file);
        const vol = readNiftiVolume(file);
        assert.deepEqual([vol.rows, vol.columns, vol.slices], [R, C, S], file);
        assert.deepEqual(vol.spacing.map((x) => +x.toFixed(5)), [sp[1], sp[0], sp[2]], file);
        assert.deepEqual(vol.positions.map((x) => +x.toFixed(4)), [0, 1, 2].map((s) => origin[2] + s * sp[2]), file);
        for (let s = 0; s < S; s++) assert.deepEqual(Array.from(vol.sliceHu(s)), Array.from({ length: R * C }, (_, p) => expected(p % C, Math.floor(p / C), s)), `${file} slice ${s}`);
      }
    }
    // qform only: quaternion (0, 0, 1) is a 180° turn about z (voxel i → LPS +x, j → +y) and
    // qfac −1 flips k, so voxel k = 0 is the top slice.
    const values = new Float64Array(C * R * S);
    for (let k = 0; k < S; k++) for (let j = 0; j < R; j++) for (let i = 0; i < C; i++) values[i + C * (j + R * k)] = expected(i, j, S - 1 - k);
    const q = path.join(dir, "qform.nii");
    fs.writeFileSync(q, nifti({ dims: [C, R, S], datatype: 4, values, pixdim: [-1, 0.6, 0.9, 3], quatern: [0, 0, 1], qoffset: [100, 50, 26], qformCode: 1, sformCode: 0 }));
    const vol = readNiftiVolume(q);
    assert.equal(vol.orientation, "qform");
    assert.deepEqual(vol.positions.map((x) => +x.toFixed(4)), [20, 23, 26]);
    for (let s = 0; s < S; s++) assert.deepEqual(Array.from(vol.sliceHu(s)), Array.from({ length: R * C }, (_, p) => expected(p % C, Math.floor(p / C), s)), `qform slice ${s}`);
    // The sform wins over the qform when sform_code > 0 (here the qform says something else).
    const both = path.join(dir, "both.nii");
    fs.writeFileSync(both, nifti({ dims: [C, R, S], datatype: 4, values, pixdim: [1, 0.6, 0.9, 3], quatern: [0, 0, 0], qformCode: 1, sformCode: 1, srow: [[0.6, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, -3, 0]] }));
    assert.equal(readNiftiVolume(both).orientation, "sform");
    // Meters are turned into mm.
    const m = path.join(dir, "meters.nii");
    fs.writeFileSync(m, nifti({ dims: [C, R, S], datatype: 4, values, srow: [[-0.0006, 0, 0, 0], [0, -0.0009, 0, 0], [0, 0, 0.003, 0.02]], sformCode: 1, xyztUnits: 1 }));
    assert.deepEqual(readNiftiVolume(m).spacing.map((x) => +x.toFixed(4)), [0.9, 0.6, 3]);
    assert.deepEqual(readNiftiVolume(m).positions.map((x) => +x.toFixed(3)), [20, 23, 26]);
  });

  it("HU = stored × scl_slope + scl_inter for every supported datatype; scl_slope 0 means no scaling", () => {
    const dir = tempDir("nifti-types");
    const axes = { srow: [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0]], sformCode: 1 };
    const stored = Float64Array.from({ length: 8 }, (_, i) => i * 3 + 1);
    for (const [dt, name] of [[2, "uint8"], [256, "int8"], [4, "int16"], [512, "uint16"], [8, "int32"], [768, "uint32"], [16, "float32"], [64, "float64"]] as const) {
      const file = path.join(dir, `${name}.nii`);
      fs.writeFileSync(file, nifti({ dims: [4, 2, 1], datatype: dt, values: stored, slope: 2, inter: -1024, ...axes }));
      const v = readNiftiVolume(file);
      assert.equal(v.datatype, name);
      assert.deepEqual(Array.from(v.sliceHu(0)), Array.from(stored, (x) => x * 2 - 1024), name);
    }
    const noScale = path.join(dir, "slope0.nii");
    fs.writeFileSync(noScale, nifti({ dims: [4, 2, 1], datatype: 4, values: stored, slope: 0, inter: -1024, ...axes }));
    assert.deepEqual(Array.from(readNiftiVolume(noScale).sliceHu(0)), Array.from(stored));
  });

  it("refuses, on one line naming the file: not NIfTI, short, truncated (.nii, .nii.gz), NIfTI-2, .hdr/.img header, 4D, datatype, scl_slope/scl_inter, no orientation, oblique, empty", () => {
    const dir = tempDir("nifti-bad");
    const good = { dims: [4, 3, 2], datatype: 4, values: new Float64Array(24), srow: [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0]], sformCode: 1 };
    const write = (name: string, bytes: Buffer) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, bytes);
      return f;
    };
    const whole = nifti(good);
    const c = Math.cos(Math.PI / 4);
    const nifti2 = Buffer.alloc(560);
    nifti2.writeInt32LE(540, 0);
    nifti2.write("n+2\0\r\n\x1a\n", 4, "latin1");
    // A gzip stream cut in the middle of its voxels.
    const ramp = nifti({ ...good, dims: [100, 100, 1], values: Float64Array.from({ length: 10000 }, (_, i) => (i * 7919) % 3001) });
    const rampGz = zlib.gzipSync(ramp);
    const cutGz = rampGz.subarray(0, rampGz.length >> 1);
    const cases: [string, RegExp][] = [
      [write("random.nii", Buffer.alloc(400, 7)), /not a NIfTI file: no NIfTI-1 magic "n\+1" at byte 344/],
      [write("short.nii", whole.subarray(0, 100)), /holds 100 bytes, fewer than a NIfTI-1 header's 348/],
      [write("cut.nii", whole.subarray(0, whole.length - 10)), /voxel data holds 38 bytes, 4×3×2 int16 needs 48 bytes: the file is truncated/],
      [write("cut.nii.gz", cutGz), /gzip stream is corrupt or truncated \(.*\): 100×100×1 int16 needs 20000 bytes after vox_offset 352/],
      [write("cut-header.nii.gz", zlib.gzipSync(whole).subarray(0, 15)), /gzip stream is corrupt or truncated before the header ends/],
      [write("short-gz.nii.gz", zlib.gzipSync(whole.subarray(0, whole.length - 10))), /voxel data holds 38 bytes once gunzipped, 4×3×2 int16 needs 48 bytes: the file is truncated/],
      [write("v2.nii", nifti2), /is NIfTI-2 \(magic "n\+2", 540-byte header\): only NIfTI-1 is supported/],
      [write("pair.nii", nifti({ ...good, magic: "ni1" })), /is the header of a \.hdr\/\.img pair \(magic "ni1"\)/],
      [write("4d.nii", nifti({ ...good, dims: [4, 3, 2, 2], values: new Float64Array(48) })), /holds 2 volumes \(dim = \[4, 3, 2, 2\]\): one 3D CT volume per file is read/],
      [write("int64.nii", nifti({ ...good, datatype: 1024 })), /datatype 1024 \(int64\) is not supported: uint8, int8, int16/],
      [write("rgb.nii", nifti({ ...good, datatype: 128 })), /datatype 128 \(RGB24\) is not supported/],
      [write("slope-nan.nii", nifti({ ...good, slope: NaN })), /scl_slope is NaN: a finite number is needed/],
      [write("slope-inf.nii", nifti({ ...good, slope: Infinity })), /scl_slope is Infinity/],
      [write("inter-nan.nii", nifti({ ...good, slope: 1, inter: NaN })), /scl_inter is NaN/],
      [write("no-orientation.nii", nifti({ ...good, sformCode: 0, qformCode: 0 })), /has no orientation \(sform_code and qform_code are both 0\)/],
      [write("oblique.nii", nifti({ ...good, srow: [[-c, -c, 0, 0], [c, -c, 0, 0], [0, 0, 1, 0]] })), /is oblique: voxel axis [ij] is 45\.0° from the patient's (left–right|anterior–posterior) axis \(its sform\), more than the 30°/],
      [write("empty.nii", Buffer.alloc(0)), /empty file \(0 bytes\)/],
    ];
    for (const [file, why] of cases) {
      assert.throws(() => readNiftiVolume(file), (e: Error) => {
        assert.ok(e instanceof NiftiError, `${file}: ${e.stack}`);
        assert.ok(e.message.startsWith(`${file}: `), e.message);
        assert.match(e.message, why);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
    }
    // A tilt within the tolerance is read, without resampling.
    const t = Math.PI / 12;
    const tilted = write("tilt15.nii", nifti({ ...good, srow: [[-1, 0, 0, 0], [0, -Math.cos(t), Math.sin(t), 0], [0, Math.sin(t), Math.cos(t), 0]] }));
    assert.equal(readNiftiVolume(tilted).slices, 2);
    // isNiftiFile: by name and magic (gz-aware); NIfTI-2 counts, so that it is refused by name.
    const gz = write("ok.nii.gz", zlib.gzipSync(whole));
    assert.deepEqual(
      [gz, path.join(dir, "random.nii"), path.join(dir, "v2.nii"), write("ok.img", whole), path.join(dir, "empty.nii"), path.join(dir, "missing.nii")].map(isNiftiFile),
      [true, false, true, false, false, false],
    );
  });
});

interface HandHeader {
  /** nx, ny, nz (and more for 4D). */
  dims: number[];
  datatype: number;
  values: Float64Array;
  pixdim?: number[];
  slope?: number;
  inter?: number;
  qformCode?: number;
  sformCode?: number;
  quatern?: [number, number, number];
  qoffset?: [number, number, number];
  srow?: number[][];
  magic?: string;
  littleEndian?: boolean;
  xyztUnits?: number;
}

/** A single-file NIfTI-1 (348-byte header, 4 bytes of no extension, voxels at 352), written field by field per nifti1.h. */
function nifti(h: HandHeader): Buffer {
  const bytesPer: Record<number, number> = { 2: 1, 256: 1, 4: 2, 512: 2, 8: 4, 768: 4, 16: 4, 64: 8, 1024: 8, 128: 3 };
  const bpv = bytesPer[h.datatype];
  const le = h.littleEndian ?? true;
  const b = Buffer.alloc(352 + h.values.length * bpv);
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  v.setInt32(0, 348, le); // sizeof_hdr
  v.setInt16(40, h.dims.length, le); // dim[0]
  h.dims.forEach((d, i) => v.setInt16(42 + 2 * i, d, le));
  v.setInt16(70, h.datatype, le);
  v.setInt16(72, bpv * 8, le); // bitpix
  (h.pixdim ?? [1, 1, 1, 1]).forEach((p, i) => v.setFloat32(76 + 4 * i, p, le));
  v.setFloat32(108, 352, le); // vox_offset
  v.setFloat32(112, h.slope ?? 1, le);
  v.setFloat32(116, h.inter ?? 0, le);
  b[123] = h.xyztUnits ?? 2; // mm
  v.setInt16(252, h.qformCode ?? 0, le);
  v.setInt16(254, h.sformCode ?? 0, le);
  (h.quatern ?? [0, 0, 0]).forEach((q, i) => v.setFloat32(256 + 4 * i, q, le));
  (h.qoffset ?? [0, 0, 0]).forEach((q, i) => v.setFloat32(268 + 4 * i, q, le));
  (h.srow ?? []).forEach((row, r) => row.forEach((x, c) => v.setFloat32(280 + 16 * r + 4 * c, x, le)));
  b.write(`${h.magic ?? "n+1"}\0`, 344, "latin1");
  h.values.forEach((x, i) => {
    const o = 352 + i * bpv;
    switch (h.datatype) {
      case 2: v.setUint8(o, x); break;
      case 256: v.setInt8(o, x); break;
      case 4: v.setInt16(o, x, le); break;
      case 512: v.setUint16(o, x, le); break;
      case 8: v.setInt32(o, x, le); break;
      case 768: v.setUint32(o, x, le); break;
      case 16: v.setFloat32(o, x, le); break;
      case 64: v.setFloat64(o, x, le); break;
      default: break; // refused datatypes: the bytes do not matter
    }
  });
  return b;
}
