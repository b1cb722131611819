/**
 * NIfTI-1 CT volumes (`.nii`, `.nii.gz`: the format COVID-19-CT-Seg and MosMed ship CT in) → a
 * stack of axial slices in Hounsfield units, each laid out pixel for pixel as the DICOM axial
 * series of the same scan is (lib/data/dicom.ts), so a volume can be scored like a series.
 *
 * HU. stored × scl_slope + scl_inter. scl_slope 0 means "no scaling" (nifti1.h: the fields are
 * used only when scl_slope is nonzero), so stored values are HU as they are; a NaN or infinite
 * scl_slope or scl_inter is refused by name. Datatypes: uint8, int8, int16, uint16, int32,
 * uint32, float32, float64; any other (int64, complex, RGB, …) is refused by name.
 *
 * Orientation. The voxel → world affine is the sform when sform_code > 0, else the qform when
 * qform_code > 0 (quaternion, as nifti1_io.c computes it); with both codes 0 the file is refused
 * by name: the voxel axes' directions in the patient are then unknown, and guessing them could
 * show the lungs upside down or mirrored. NIfTI's world frame is RAS+ (+x towards the patient's
 * Right, +y Anterior, +z Superior; checked against dcm2niix, which writes DICOM's LPS Image
 * Position (x, y, z) as (−x, −y, z)). The affine is turned into DICOM's LPS (x and y negated) and
 * each patient axis gets the voxel axis closest to it (the assignment of voxel axes to L, P, S
 * that maximises the summed |direction cosines|), with a flip where that voxel axis runs the other
 * way. The output is the radiological view of a standard (Image Orientation 1\0\0\0\1\0) DICOM
 * axial series:
 *
 *   - columns run patient right → left (image left = patient right): LPS +x;
 *   - rows run anterior → posterior (top of the image = anterior): LPS +y;
 *   - slices run inferior → superior: LPS +z, the order lib/data/dicom.ts `sortSeries` gives such
 *     a series (ascending position along the slice normal, row × column cosines = +z).
 *
 * So a sagittal or coronal acquisition is resliced along its voxel axis nearest to S–I. Voxels are
 * never resampled: a voxel axis may be up to OBLIQUE_TOLERANCE_DEG (30°) from its patient axis (a
 * tilted gantry) and is shown as the voxel grid lies, as a viewer's nearest-orthogonal view does;
 * beyond that the volume is refused by name.
 *
 * A volume reports its rows, columns, slices, spacing [between rows, between columns, between
 * slices] in mm (the order of DICOM's Pixel Spacing, then the slice step; NIfTI's xyzt_units
 * meters and microns are converted, unknown units are taken as mm) and, per slice, its position
 * along S–I: the z (mm) of the slice's first (top-left) pixel, as DICOM's Image Position (Patient)
 * z is.
 *
 * Memory. Slices are handed out one at a time by `sliceHu(k)`, each a new rows × columns
 * Float32Array (1 MiB at 512²); the volume is never held as Float32.
 *   - `.nii.gz`: stream-decompressed (fflate's synchronous Gunzip, 64 KiB of compressed bytes at a
 *     time) straight into one buffer of the stored voxels, held once for the volume's life:
 *     600 × 512² int16 = 315 MB (the compressed file is never held whole; decompression stops
 *     after the first volume's bytes). Measured on a 154 × 512² int16 volume (51 MB gzipped): the
 *     process grows by ~117 MB (the 81 MB of voxels plus transient chunks) and reading takes
 *     2.5–4 s on a busy 2-core machine, about 4× Node's one-shot zlib.gunzipSync, which would hold
 *     the whole compressed file as well.
 *   - `.nii` whose slice axis is voxel axis k (every axial acquisition): nothing is held;
 *     `sliceHu(k)` reads that slice's bytes from the file (nx × ny × bytes per voxel).
 *   - `.nii` that must be resliced (sagittal, coronal): its stored voxels are read once and held.
 *
 * Refused, each as a one-line NiftiError naming the file: not NIfTI (no magic), NIfTI-2 (540-byte
 * header: convert to NIfTI-1), a header-only ".hdr/.img" pair header ("ni1"), a truncated header or
 * voxel data, a corrupt gzip stream, more than one volume (4D+: give one 3D volume), an
 * unsupported datatype, a bad scl_slope/scl_inter, no orientation, a degenerate or too oblique
 * affine.
 *
 * The header is parsed by nifti-reader-js (rii-mango's NIfTI reader: byte order, dims, datatype,
 * pixdim, scaling, codes, quaternion); the srow_* rows are read from the same 348 bytes here, since
 * the package keeps only its own pick of affine (it prefers the qform when qform_code >
 * sform_code).
 */
import * as fs from "fs";
import * as path from "path";
import { constants as bufferConstants } from "buffer";
import { Gunzip } from "fflate";
import type * as NiftiReaderJs from "nifti-reader-js";

/** How far (degrees) a voxel axis may be from the patient axis it is shown along. */
export const OBLIQUE_TOLERANCE_DEG = 30;

/** A NIfTI file this reader cannot turn into CT slices: the message names the file and says why, on one line. */
export class NiftiError extends Error {
  constructor(readonly file: string, why: string) {
    super(`${file}: ${why}`);
    this.name = "NiftiError";
  }
}

/** A NIfTI-1 CT volume as axial slices in HU (see the top of this file for the layout). */
export interface NiftiVolume {
  file: string;
  /** Pixels per column of a slice (anterior → posterior). */
  rows: number;
  /** Pixels per row of a slice (patient right → left). */
  columns: number;
  /** Number of axial slices (inferior → superior). */
  slices: number;
  /** mm: [between rows, between columns, between slices]. */
  spacing: [number, number, number];
  /** Per slice, mm: z (S–I, superior positive) of its first (top-left) pixel; ascending. */
  positions: number[];
  /** Slice k (0 = most inferior) in HU, rows × columns, row-major: a new array each call. */
  sliceHu(k: number): Float32Array;
  /** Which header transform oriented it. */
  orientation: "sform" | "qform";
  /** The stored datatype, e.g. "int16". */
  datatype: string;
  /** Whether the file is gzip-compressed. */
  gzip: boolean;
}

// nifti-reader-js 0.8 is an ES module whose package.json exports only an "import" condition, so
// require("nifti-reader-js") is refused (ERR_PACKAGE_PATH_NOT_EXPORTED) from this CommonJS build.
// Node >= 20.19 can require() an ES module by its file path (as lib/notebook/html.ts does for ansi_up).
let niftiReaderJs: typeof NiftiReaderJs | undefined;
function niftiReader(): typeof NiftiReaderJs {
  if (niftiReaderJs) return niftiReaderJs;
  for (const dir of require.resolve.paths("nifti-reader-js") ?? []) {
    const f = path.join(dir, "nifti-reader-js", "dist", "nifti.js");
    if (fs.existsSync(f)) return (niftiReaderJs = require(f) as typeof NiftiReaderJs);
  }
  throw new Error("nifti-reader-js is not installed: run `npm ci`");
}

/** NIfTI-1 datatype codes → name, bytes per voxel; only these are read. */
const DATATYPES: Record<number, { name: string; bytes: number }> = {
  2: { name: "uint8", bytes: 1 },
  4: { name: "int16", bytes: 2 },
  8: { name: "int32", bytes: 4 },
  16: { name: "float32", bytes: 4 },
  64: { name: "float64", bytes: 8 },
  256: { name: "int8", bytes: 1 },
  512: { name: "uint16", bytes: 2 },
  768: { name: "uint32", bytes: 4 },
};
/** Names of the others, for the refusal. */
const OTHER_DATATYPES: Record<number, string> = {
  0: "none (DT_UNKNOWN)",
  1: "binary (1 bit)",
  32: "complex64",
  128: "RGB24",
  1024: "int64",
  1280: "uint64",
  1536: "float128",
  1792: "complex128",
  2048: "complex256",
  2304: "RGBA32",
};

const HEADER = 348;
const CHUNK = 64 * 1024;

/**
 * Sequential bytes of a file, gunzipped on the fly when it is gzip: fflate's streaming Gunzip is
 * synchronous, so the compressed file is read 64 KiB at a time and never held whole.
 */
class ByteStream {
  private pending: Uint8Array[] = [];
  private target?: { out: Uint8Array; at: number; end: number };
  private filePos = 0;
  private eof = false;
  private gunzip?: Gunzip;

  constructor(private readonly fd: number, gzip: boolean) {
    if (gzip) {
      this.gunzip = new Gunzip((data) => {
        // Copy what fits straight into the current target, keep the rest for the next read.
        let d = data;
        const t = this.target;
        if (t && t.at < t.end) {
          const n = Math.min(d.length, t.end - t.at);
          t.out.set(d.subarray(0, n), t.at);
          t.at += n;
          d = d.subarray(n);
        }
        if (d.length) this.pending.push(d.slice());
      });
    }
  }

  /** Fill out[at, at + n) from the stream; returns the bytes filled (fewer only at its end). */
  read(out: Uint8Array, at: number, n: number): number {
    const t = { out, at, end: at + n };
    while (this.pending.length && t.at < t.end) {
      const p = this.pending[0];
      const k = Math.min(p.length, t.end - t.at);
      out.set(p.subarray(0, k), t.at);
      t.at += k;
      if (k === p.length) this.pending.shift();
      else this.pending[0] = p.subarray(k);
    }
    while (t.at < t.end && !this.eof) {
      // A fresh chunk each time: fflate's inflater keeps a view of the unconsumed end of its input.
      const chunk = Buffer.allocUnsafe(CHUNK);
      const got = fs.readSync(this.fd, chunk, 0, CHUNK, this.filePos);
      this.filePos += got;
      if (!this.gunzip) {
        const k = Math.min(got, t.end - t.at);
        out.set(chunk.subarray(0, k), t.at);
        t.at += k;
        if (k < got) this.pending.push(chunk.subarray(k, got));
        if (got === 0) this.eof = true;
        continue;
      }
      this.target = t;
      try {
        if (got === 0) {
          this.eof = true;
          this.gunzip.push(new Uint8Array(0), true);
        } else this.gunzip.push(chunk.subarray(0, got), false);
      } finally {
        this.target = undefined;
      }
    }
    return t.at - at;
  }
}

const isGzip = (b: Uint8Array) => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

/** The first `n` bytes of the file's content (gunzipped if gzip), fewer if it is shorter. */
function readStart(fd: number, n: number): { bytes: Uint8Array; gzip: boolean } {
  const head = Buffer.alloc(2);
  const gzip = isGzip(head.subarray(0, fs.readSync(fd, head, 0, 2, 0)));
  const out = new Uint8Array(n);
  const got = new ByteStream(fd, gzip).read(out, 0, n);
  return { bytes: out.subarray(0, got), gzip };
}

type Magic = "n+1" | "ni1" | "n+2" | "ni2";
function magicOf(b: Uint8Array): Magic | undefined {
  const s = (at: number) => (b.length >= at + 4 ? Buffer.from(b.buffer, b.byteOffset + at, 4).toString("latin1") : "");
  const m1 = s(344), m2 = s(4);
  if (m1 === "n+1\0" || m1 === "ni1\0") return m1.slice(0, 3) as Magic;
  if (m2.startsWith("n+2\0") || m2.startsWith("ni2\0")) return m2.slice(0, 3) as Magic;
  return undefined;
}

/**
 * True when the file is named `.nii` or `.nii.gz` and its (gunzipped) header carries a NIfTI magic:
 * NIfTI-1 "n+1" (or "ni1", a .hdr/.img pair's header) and also NIfTI-2 "n+2"/"ni2", so that a
 * NIfTI-2 file reaches readNiftiVolume and is refused by name rather than skipped.
 */
export function isNiftiFile(file: string): boolean {
  if (!/\.nii(\.gz)?$/i.test(file)) return false;
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, "r");
    return magicOf(readStart(fd, HEADER).bytes) !== undefined;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

type Mat3 = number[][]; // [world row][voxel axis]

/** nifti1_io.c's quaternion → rotation, with pixdim scaling and qfac (nifti_quatern_to_mat44). */
function qformAffine(h: NiftiReaderJs.NIFTI1): { m: Mat3; t: number[] } {
  let b = h.quatern_b, c = h.quatern_c, d = h.quatern_d;
  let a = 1 - (b * b + c * c + d * d);
  if (a < 1e-7) {
    // Special case (nifti1_io.c): a 180° rotation; renormalise (b, c, d).
    a = 1 / Math.sqrt(b * b + c * c + d * d);
    b *= a; c *= a; d *= a;
    a = 0;
  } else a = Math.sqrt(a);
  const xd = h.pixDims[1] > 0 ? h.pixDims[1] : 1, yd = h.pixDims[2] > 0 ? h.pixDims[2] : 1;
  let zd = h.pixDims[3] > 0 ? h.pixDims[3] : 1;
  if (h.pixDims[0] < 0) zd = -zd; // qfac
  const r = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ];
  return { m: r.map((row) => [row[0] * xd, row[1] * yd, row[2] * zd]), t: [h.qoffset_x, h.qoffset_y, h.qoffset_z] };
}

const PERMUTATIONS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/** Read a NIfTI-1 CT volume as axial slices in HU, or throw a NiftiError that says what is wrong. */
export function readNiftiVolume(file: string): NiftiVolume {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new NiftiError(file, `cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return readOpen(file, fd);
  } finally {
    fs.closeSync(fd);
  }
}

function readOpen(file: string, fd: number): NiftiVolume {
  const size = fs.fstatSync(fd).size;
  if (size === 0) throw new NiftiError(file, "empty file (0 bytes)");
  const head = Buffer.alloc(2);
  const gzip = isGzip(head.subarray(0, fs.readSync(fd, head, 0, 2, 0)));
  const stream = new ByteStream(fd, gzip);
  const hdr = new Uint8Array(HEADER);
  let got: number;
  try {
    got = stream.read(hdr, 0, HEADER);
  } catch (e) {
    throw new NiftiError(file, `gzip stream is corrupt or truncated before the header ends (${(e as Error).message})`);
  }
  const magic = magicOf(hdr.subarray(0, got));
  if (magic === "n+2" || magic === "ni2") throw new NiftiError(file, `is NIfTI-2 (magic "${magic}", 540-byte header): only NIfTI-1 is supported; convert it to NIfTI-1 first (e.g. nibabel's Nifti1Image, or dcm2niix from the DICOM series)`);
  if (got < HEADER) throw new NiftiError(file, `holds ${got} bytes${gzip ? " once gunzipped" : ""}, fewer than a NIfTI-1 header's ${HEADER}: not NIfTI, or truncated`);
  if (!magic) throw new NiftiError(file, `not a NIfTI file: no NIfTI-1 magic "n+1" at byte 344${gzip ? " of the gunzipped content" : ""}`);
  if (magic === "ni1") throw new NiftiError(file, `is the header of a .hdr/.img pair (magic "ni1"): the voxels are in a separate .img file, which is not read; convert the pair to a single .nii first`);
  let h: NiftiReaderJs.NIFTI1;
  try {
    h = niftiReader().readHeader(hdr.buffer.slice(hdr.byteOffset, hdr.byteOffset + HEADER) as ArrayBuffer) as NiftiReaderJs.NIFTI1;
  } catch (e) {
    throw new NiftiError(file, `has an unreadable NIfTI-1 header (${(e as Error).message}): sizeof_hdr is not 348 in either byte order`);
  }
  const le = h.littleEndian;
  const dv = new DataView(hdr.buffer, hdr.byteOffset, HEADER);

  // Dimensions: one 3D volume (a 2D image is one slice).
  const dim0 = h.dims[0];
  if (!(dim0 >= 1 && dim0 <= 7)) throw new NiftiError(file, `dim[0] is ${dim0}: a NIfTI-1 header has 1 to 7 dimensions`);
  const dims = h.dims.slice(1, dim0 + 1);
  if (dims.some((n) => n < 1)) throw new NiftiError(file, `has a dimension below 1 (dim = [${dims.join(", ")}])`);
  const n = [dims[0], dims[1] ?? 1, dims[2] ?? 1];
  const volumes = dims.slice(3).reduce((p, q) => p * q, 1);
  if (volumes > 1) throw new NiftiError(file, `holds ${volumes} volumes (dim = [${dims.join(", ")}]): one 3D CT volume per file is read; split it first (e.g. fslsplit) and give one volume`);

  // Datatype and scaling.
  const dt = DATATYPES[h.datatypeCode];
  if (!dt) throw new NiftiError(file, `datatype ${h.datatypeCode} (${OTHER_DATATYPES[h.datatypeCode] ?? "not a NIfTI-1 datatype"}) is not supported: uint8, int8, int16, uint16, int32, uint32, float32 and float64 are`);
  if (h.numBitsPerVoxel !== dt.bytes * 8) throw new NiftiError(file, `bitpix is ${h.numBitsPerVoxel}, but datatype ${dt.name} has ${dt.bytes * 8} bits per voxel: the header contradicts itself`);
  let slope = h.scl_slope, inter = h.scl_inter;
  if (!Number.isFinite(slope)) throw new NiftiError(file, `scl_slope is ${slope}: a finite number is needed to turn stored values into HU`);
  if (slope === 0) {
    // nifti1.h: scaling applies only when scl_slope is nonzero.
    slope = 1;
    inter = 0;
  } else if (!Number.isFinite(inter)) throw new NiftiError(file, `scl_inter is ${inter}: a finite number is needed to turn stored values into HU`);

  // Orientation: voxel (i, j, k) → RAS mm, then LPS.
  let m: Mat3, t: number[], orientation: NiftiVolume["orientation"];
  if (h.sform_code > 0) {
    const row = (r: number) => [0, 1, 2, 3].map((c) => dv.getFloat32(280 + (r * 4 + c) * 4, le));
    const rows = [row(0), row(1), row(2)];
    m = rows.map((r) => r.slice(0, 3));
    t = rows.map((r) => r[3]);
    orientation = "sform";
  } else if (h.qform_code > 0) {
    ({ m, t } = qformAffine(h));
    orientation = "qform";
  } else throw new NiftiError(file, "has no orientation (sform_code and qform_code are both 0): which way is the patient's left, front and head in the voxel grid is unknown, so the slices cannot be laid out as a DICOM series");
  const lps = [-1, -1, 1];
  m = m.map((r, w) => r.map((v) => v * lps[w]));
  t = t.map((v, w) => v * lps[w]);
  const units = h.xyzt_units & 7;
  const mm = units === 1 ? 1000 : units === 3 ? 0.001 : 1; // meter, micron, else mm (2) or unknown (0)
  const len = [0, 1, 2].map((a) => Math.hypot(m[0][a], m[1][a], m[2][a]));
  if (!m.flat().concat(t).every(Number.isFinite) || len.some((l) => !(l > 0))) throw new NiftiError(file, `the ${orientation} is degenerate (a voxel axis has zero or non-finite length: [${m.map((r) => r.map((v) => +v.toFixed(4)).join(" ")).join("; ")}])`);
  // Voxel axis for each patient axis (L, P, S): the assignment with the largest summed |cosines|.
  const cos = (w: number, a: number) => m[w][a] / len[a];
  let axis = PERMUTATIONS[0], best = -1;
  for (const p of PERMUTATIONS) {
    const s = Math.abs(cos(0, p[0])) + Math.abs(cos(1, p[1])) + Math.abs(cos(2, p[2]));
    if (s > best + 1e-12) { best = s; axis = p; }
  }
  const NAMES = ["left–right", "anterior–posterior", "superior–inferior"];
  for (let w = 0; w < 3; w++) {
    const deg = (Math.acos(Math.min(1, Math.abs(cos(w, axis[w])))) * 180) / Math.PI;
    if (deg > OBLIQUE_TOLERANCE_DEG) throw new NiftiError(file, `is oblique: voxel axis ${"ijk"[axis[w]]} is ${deg.toFixed(1)}° from the patient's ${NAMES[w]} axis (its ${orientation}), more than the ${OBLIQUE_TOLERANCE_DEG}° this reader shows without resampling; reslice it to an axial grid first`);
  }
  const flip = [0, 1, 2].map((w) => cos(w, axis[w]) < 0);

  // The output grid: column c, row r, slice s → voxel index (and its byte offset).
  const stride = [1, n[0], n[0] * n[1]];
  const columns = n[axis[0]], rows = n[axis[1]], slices = n[axis[2]];
  const colStep = (flip[0] ? -1 : 1) * stride[axis[0]];
  const rowStep = (flip[1] ? -1 : 1) * stride[axis[1]];
  const sliceVoxel = (s: number) => (flip[2] ? slices - 1 - s : s);
  const origin = (s: number) => {
    // Voxel index vector of slice s's first (top-left) pixel.
    const v = [0, 0, 0];
    v[axis[0]] = flip[0] ? columns - 1 : 0;
    v[axis[1]] = flip[1] ? rows - 1 : 0;
    v[axis[2]] = sliceVoxel(s);
    return v;
  };
  const positions = Array.from({ length: slices }, (_, s) => {
    const v = origin(s);
    return (m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2] + t[2]) * mm;
  });
  const spacing: [number, number, number] = [len[axis[1]] * mm, len[axis[0]] * mm, len[axis[2]] * mm];

  // The voxels.
  const voxOffset = h.vox_offset;
  if (!(Number.isInteger(voxOffset) && voxOffset >= HEADER)) throw new NiftiError(file, `vox_offset is ${voxOffset}: the voxel data must start at a whole byte at or after the ${HEADER}-byte header`);
  const bytes = n[0] * n[1] * n[2] * dt.bytes;
  const describe = `${n.join("×")} ${dt.name} needs ${bytes} bytes`;
  let data: Buffer | undefined;
  if (gzip || axis[2] !== 2) {
    if (bytes > bufferConstants.MAX_LENGTH) throw new NiftiError(file, `voxel data is too large to hold (${describe}, more than ${bufferConstants.MAX_LENGTH})`);
    data = Buffer.allocUnsafe(bytes);
    let filled: number;
    try {
      const skip = new Uint8Array(voxOffset - HEADER);
      if (stream.read(skip, 0, skip.length) < skip.length) throw new NiftiError(file, `ends before vox_offset ${voxOffset}: the file is truncated`);
      filled = stream.read(data, 0, bytes);
    } catch (e) {
      if (e instanceof NiftiError) throw e;
      throw new NiftiError(file, `gzip stream is corrupt or truncated (${(e as Error).message}): ${describe} after vox_offset ${voxOffset}`);
    }
    if (filled < bytes) throw new NiftiError(file, `voxel data holds ${filled} bytes${gzip ? " once gunzipped" : ""}, ${describe}: the file is truncated`);
  } else if (size < voxOffset + bytes) {
    throw new NiftiError(file, `voxel data holds ${Math.max(0, size - voxOffset)} bytes, ${describe}: the file is truncated`);
  }

  const slab = n[0] * n[1];
  const getter = (view: DataView): ((i: number) => number) => {
    switch (dt.name) {
      case "uint8": return (i) => view.getUint8(i);
      case "int8": return (i) => view.getInt8(i);
      case "int16": return (i) => view.getInt16(2 * i, le);
      case "uint16": return (i) => view.getUint16(2 * i, le);
      case "int32": return (i) => view.getInt32(4 * i, le);
      case "uint32": return (i) => view.getUint32(4 * i, le);
      case "float32": return (i) => view.getFloat32(4 * i, le);
      default: return (i) => view.getFloat64(8 * i, le);
    }
  };
  const whole = data ? getter(new DataView(data.buffer, data.byteOffset, data.length)) : undefined;
  const sliceHu = (s: number): Float32Array => {
    if (!Number.isInteger(s) || s < 0 || s >= slices) throw new RangeError(`${file}: slice ${s} is outside 0..${slices - 1}`);
    const v = origin(s);
    let start = v[0] * stride[0] + v[1] * stride[1] + v[2] * stride[2];
    let get = whole;
    if (!get) {
      // Plain .nii, slice axis k: read this slice's bytes from the file.
      const buf = Buffer.allocUnsafe(slab * dt.bytes);
      const f = fs.openSync(file, "r");
      try {
        const got = fs.readSync(f, buf, 0, buf.length, voxOffset + v[2] * slab * dt.bytes);
        if (got < buf.length) throw new NiftiError(file, `voxel data of slice ${s} holds ${got} bytes, ${buf.length} needed: the file was truncated since it was opened`);
      } finally {
        fs.closeSync(f);
      }
      get = getter(new DataView(buf.buffer, buf.byteOffset, buf.length));
      start -= v[2] * stride[2];
    }
    const out = new Float32Array(rows * columns);
    for (let r = 0, o = 0; r < rows; r++) {
      let i = start + r * rowStep;
      for (let c = 0; c < columns; c++, o++, i += colStep) out[o] = get(i) * slope + inter;
    }
    return out;
  };
  return { file, rows, columns, slices, spacing, positions, sliceHu, orientation, datatype: dt.name, gzip };
}
