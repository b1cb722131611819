/**
 * DICOM CT slices → the 8-bit gray slices every other source is. A scanner stores stored values;
 * Rescale Slope and Intercept (0028,1053/1052) turn them into Hounsfield units, and a lung window
 * turns HU into 8 bits:
 *
 *   LUNG_WINDOW: level −600 HU, width 1500 HU, so [−1350, +150] HU → [0, 255].
 *
 * Why this window: it is the window chest radiologists read COVID-19 CT in, and the one the
 * training sources were shown in (the paper's figures and the São Paulo slices are lung-window
 * images). Air (−1000) stays near black, ground-glass opacity (about −700 to −300 HU) and
 * consolidation (about −100 to +100 HU) fall inside the ramp, and bone and contrast (> +150)
 * saturate to white, as in those images.
 *
 * Parsing is dicom-parser's (cornerstone's Part 10 reader). Supported: the uncompressed transfer
 * syntaxes (implicit and explicit VR little endian, explicit VR big endian, deflated explicit VR
 * little endian); a compressed one is refused with its name. One frame, one sample per pixel, 8 or
 * 16 bits, Modality CT. A series is a folder of such files, ordered by their position along the
 * slice normal (Image Position / Orientation Patient), else Instance Number, else file name.
 */
import * as fs from "fs";
import * as zlib from "zlib";
import dicomParser from "dicom-parser";

/** A lung window in HU. */
export interface HuWindow {
  level: number;
  width: number;
}

/** Level −600 HU, width 1500 HU: [−1350, +150] HU → [0, 255] (see the top of this file). */
export const LUNG_WINDOW: HuWindow = { level: -600, width: 1500 };

const UNCOMPRESSED: Record<string, string> = {
  "1.2.840.10008.1.2": "Implicit VR Little Endian",
  "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
  "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
  "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
};

/** Names of compressed transfer syntaxes, for the refusal. */
const COMPRESSED: Record<string, string> = {
  "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
  "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
  "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
  "1.2.840.10008.1.2.4.70": "JPEG Lossless, First-Order Prediction (Process 14, SV1)",
  "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
  "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
  "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
  "1.2.840.10008.1.2.4.91": "JPEG 2000",
  "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Lossless",
  "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
  "1.2.840.10008.1.2.5": "RLE Lossless",
};

/** A DICOM file this reader cannot turn into a CT slice: the message names the file and says why. */
export class DicomError extends Error {
  constructor(readonly file: string, why: string) {
    super(`${file}: ${why}`);
    this.name = "DicomError";
  }
}

/** One CT slice in Hounsfield units, with what orders it in its series. */
export interface DicomSlice {
  file: string;
  rows: number;
  columns: number;
  /** Hounsfield units, row-major. */
  hu: Float32Array;
  transferSyntax: string;
  seriesUid?: string;
  instanceNumber?: number;
  /** Image Position (Patient), mm. */
  position?: [number, number, number];
  /** Image Orientation (Patient): row and column direction cosines. */
  orientation?: [number, number, number, number, number, number];
  /** Pixel Spacing (0028,0030): row spacing, column spacing in mm. */
  pixelSpacing?: [number, number];
}

/** True when the file starts like a DICOM Part 10 file (128-byte preamble, then "DICM"). */
export function isDicomFile(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, "r");
    const b = Buffer.alloc(132);
    const n = fs.readSync(fd, b, 0, 132, 0);
    return n === 132 && b.toString("latin1", 128, 132) === "DICM";
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function numbers(ds: dicomParser.DataSet, tag: string, n: number): number[] | undefined {
  const s = ds.string(tag);
  if (!s) return undefined;
  const v = s.split("\\").map((x) => parseFloat(x));
  return v.length === n && v.every(Number.isFinite) ? v : undefined;
}

/** Read one DICOM file as a CT slice in HU, or throw a DicomError that says what is wrong. */
export function readDicomSlice(file: string): DicomSlice {
  const bytes = fs.readFileSync(file);
  if (bytes.length === 0) throw new DicomError(file, "empty file (0 bytes)");
  let ds: dicomParser.DataSet;
  try {
    ds = dicomParser.parseDicom(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), {
      // Deflated explicit VR little endian: the dataset after the meta header is raw deflate.
      inflater: (arr: Uint8Array, position: number) => {
        const inflated = zlib.inflateRawSync(Buffer.from(arr.buffer, arr.byteOffset + position, arr.length - position));
        const out = new Uint8Array(position + inflated.length);
        out.set(arr.subarray(0, position));
        out.set(inflated, position);
        return out;
      },
    } as dicomParser.ParseDicomOptions);
  } catch (e) {
    const why = typeof e === "string" ? e : e instanceof Error ? e.message : String((e as { exception?: string }).exception ?? e);
    throw new DicomError(file, `not a readable DICOM file (${why.replace(/^dicomParser[.:][\w.:]*?: ?/, "")}); it may be truncated`);
  }
  const ts = ds.string("x00020010")?.trim() ?? "1.2.840.10008.1.2";
  if (COMPRESSED[ts]) {
    throw new DicomError(file, `transfer syntax ${ts} (${COMPRESSED[ts]}) is compressed and not supported: convert the series to an uncompressed syntax first (e.g. \`gdcmconv --raw\` or \`dcmdjpeg\`)`);
  }
  if (!UNCOMPRESSED[ts]) throw new DicomError(file, `transfer syntax ${ts} is not one this reader supports (${Object.entries(UNCOMPRESSED).map(([u, n]) => `${n} ${u}`).join(", ")}): convert the series to one of them first (e.g. \`gdcmconv --raw\`)`);
  const modality = ds.string("x00080060")?.trim();
  if (!modality) throw new DicomError(file, "has no Modality (0008,0060): only CT slices can be scored");
  if (modality !== "CT") throw new DicomError(file, `modality is ${modality}, not CT: only CT slices can be scored`);
  const pixel = ds.elements.x7fe00010;
  if (!pixel) throw new DicomError(file, "has no pixel data (7FE0,0010): it is not an image (a structured report, a presentation state, or a header only)");
  const rows = ds.uint16("x00280010") ?? 0, columns = ds.uint16("x00280011") ?? 0;
  if (rows < 1 || columns < 1) throw new DicomError(file, `has no image size (Rows ${rows}, Columns ${columns})`);
  const samples = ds.uint16("x00280002") ?? 1;
  if (samples !== 1) throw new DicomError(file, `has ${samples} samples per pixel: a CT slice has 1 (gray)`);
  const frames = ds.intString("x00280008") ?? 1;
  if (frames > 1) throw new DicomError(file, `holds ${frames} frames: multi-frame files are not supported, give one slice per file`);
  const allocated = ds.uint16("x00280100") ?? 16;
  const stored = ds.uint16("x00280101") ?? allocated;
  const signed = (ds.uint16("x00280103") ?? 0) === 1;
  if (allocated !== 8 && allocated !== 16) throw new DicomError(file, `has ${allocated} bits allocated per pixel: 8 or 16 are supported`);
  const n = rows * columns;
  const need = (n * allocated) / 8;
  if (pixel.length < need || pixel.dataOffset + need > ds.byteArray.length) throw new DicomError(file, `pixel data holds ${Math.min(pixel.length, ds.byteArray.length - pixel.dataOffset)} bytes, ${rows}×${columns} at ${allocated} bits needs ${need}: the file is truncated`);
  // Odd lengths are padded to even: one byte more is fine, more is a header that does not match its pixels.
  if (pixel.length > need + 1) throw new DicomError(file, `pixel data holds ${pixel.length} bytes, but Rows × Columns (${rows}×${columns}) at ${allocated} bits is ${need}: the header does not match the pixels`);
  const slope = ds.string("x00281053") === undefined ? 1 : ds.floatString("x00281053");
  const intercept = ds.string("x00281052") === undefined ? 0 : ds.floatString("x00281052");
  if (slope === undefined || !Number.isFinite(slope) || slope === 0) throw new DicomError(file, `Rescale Slope (0028,1053) is '${ds.string("x00281053")}': a number other than 0 is needed to turn stored values into HU`);
  if (intercept === undefined || !Number.isFinite(intercept)) throw new DicomError(file, `Rescale Intercept (0028,1052) is '${ds.string("x00281052")}': a number is needed to turn stored values into HU`);
  const view = new DataView(ds.byteArray.buffer, ds.byteArray.byteOffset + pixel.dataOffset, need);
  const little = ts !== "1.2.840.10008.1.2.2";
  const mask = stored >= 32 ? 0xffffffff : (1 << stored) - 1;
  const hu = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = allocated === 16 ? view.getUint16(2 * i, little) : view.getUint8(i);
    // Only Bits Stored carry the value; signed values are two's complement in those bits.
    v &= mask;
    if (signed && v & (1 << (stored - 1))) v -= 1 << stored;
    hu[i] = v * slope + intercept;
  }
  const pos = numbers(ds, "x00200032", 3);
  const ori = numbers(ds, "x00200037", 6);
  return {
    file,
    rows,
    columns,
    hu,
    transferSyntax: ts,
    seriesUid: ds.string("x0020000e")?.trim() || undefined,
    instanceNumber: ds.intString("x00200013"),
    position: pos as DicomSlice["position"],
    orientation: ori as DicomSlice["orientation"],
    pixelSpacing: numbers(ds, "x00280030", 2) as DicomSlice["pixelSpacing"],
  };
}

/** HU → 8 bits through a window (linear ramp, clipped at both ends). */
export function windowHu(hu: ArrayLike<number>, w: HuWindow = LUNG_WINDOW): Uint8Array {
  const lo = w.level - w.width / 2;
  const out = new Uint8Array(hu.length);
  for (let i = 0; i < hu.length; i++) out[i] = Math.max(0, Math.min(255, Math.round(((hu[i] - lo) / w.width) * 255)));
  return out;
}

/**
 * A series' slices in anatomical order: by position along the slice normal when every slice has
 * Image Position and Orientation, else by Instance Number when every slice has one, else by file
 * name. Returns the order used with the slices.
 */
export function sortSeries(slices: readonly DicomSlice[]): { slices: DicomSlice[]; by: "position" | "instance number" | "file name" } {
  const withPos = slices.every((s) => s.position && s.orientation);
  if (withPos) {
    const o = slices[0].orientation!;
    // The slice normal: row cosines × column cosines.
    const nrm = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    const d = (s: DicomSlice) => s.position![0] * nrm[0] + s.position![1] * nrm[1] + s.position![2] * nrm[2];
    // Ties (the same position) by instance number, then file name.
    return { slices: [...slices].sort((a, b) => d(a) - d(b) || (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0) || a.file.localeCompare(b.file)), by: "position" };
  }
  if (slices.every((s) => s.instanceNumber !== undefined)) return { slices: [...slices].sort((a, b) => a.instanceNumber! - b.instanceNumber! || a.file.localeCompare(b.file)), by: "instance number" };
  return { slices: [...slices].sort((a, b) => a.file.localeCompare(b.file)), by: "file name" };
}
