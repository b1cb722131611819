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
 * Parsing is dicom-parser's (cornerstone's Part 10 reader). Transfer syntaxes read: the
 * uncompressed ones (implicit and explicit VR little endian, explicit VR big endian, deflated
 * explicit VR little endian) and the compressed ones a hospital export uses — JPEG Lossless (.4.57,
 * .4.70), JPEG-LS (.4.80, .4.81), JPEG 2000 (.4.90, .4.91), RLE Lossless (.5) and 8-bit JPEG
 * Baseline (.4.50), decoded by lib/data/dicom-codecs.ts (the wasm ones need `await
 * initDicomCodecs()` once). Encapsulated frames are found with dicom-parser's fragment helpers;
 * decoded stored values go through the same Bits Stored / Pixel Representation / slope / intercept
 * path as uncompressed ones. Other compressed syntaxes are refused by name.
 *
 * A CT image (CT Image Storage, one frame) is one slice; an Enhanced CT image (multi-frame) is one
 * slice per frame, its position, orientation, rescale and pixel spacing read from its functional
 * groups (per-frame, else shared). One sample per pixel, 8 or 16 bits, Modality CT, Rescale Slope
 * and Intercept present. What an export folder also holds is not an error but a DicomSkip with a
 * reason (DICOMDIR, structured reports, presentation states, SEG, RTSTRUCT, other non-image
 * objects, secondary captures, LOCALIZER scouts): lib/data/inputs.ts counts them. A series is a
 * folder's slices of one Series Instance UID, ordered by their position along the slice normal
 * (Image Position / Orientation Patient), else Instance Number, else file name (natural order).
 */
import * as fs from "fs";
import * as path from "path";
import * as zlib from "zlib";
import dicomParser from "dicom-parser";
import { CodecError, DECODERS, FrameShape, JPEG_FAMILY, NOT_DECODED, StoredValues } from "./dicom-codecs";

export { initDicomCodecs, dicomCodecsReady } from "./dicom-codecs";

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

/** Every transfer syntax read, by UID: its name. */
export const TRANSFER_SYNTAXES: Record<string, string> = { ...UNCOMPRESSED, ...Object.fromEntries(Object.entries(DECODERS).map(([u, d]) => [u, d.name])) };

const CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2";
const ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1";
const LEGACY_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2";

/** A DICOM file this reader cannot turn into a CT slice: the message names the file and says why. */
export class DicomError extends Error {
  constructor(readonly file: string, why: string) {
    super(`${file}: ${why}`);
    this.name = "DicomError";
  }
}

/**
 * A DICOM file that is not a CT slice to score and is no error either: what a real export folder
 * also holds (DICOMDIR, SR, PR, SEG, RTSTRUCT, a LOCALIZER scout, …). `reason` names the kind; a
 * folder walk counts files by it.
 */
export class DicomSkip extends DicomError {
  constructor(file: string, readonly reason: string) {
    super(file, `${reason}: not a CT slice, skipped`);
    this.name = "DicomSkip";
  }
}

/** What orders a slice in its series and sizes it: everything of a slice but its pixels. */
export interface DicomHeader {
  file: string;
  rows: number;
  columns: number;
  transferSyntax: string;
  seriesUid?: string;
  instanceNumber?: number;
  /** The frame of a multi-frame (Enhanced CT) file, 0-based; undefined for a one-frame file. */
  frame?: number;
  /** Image Position (Patient), mm. */
  position?: [number, number, number];
  /** Image Orientation (Patient): row and column direction cosines. */
  orientation?: [number, number, number, number, number, number];
  /** Pixel Spacing (0028,0030): [row spacing, column spacing], mm (between rows, between columns). */
  pixelSpacing?: [number, number];
  /** Slice Thickness (0018,0050), mm. */
  sliceThickness?: number;
  /** Spacing Between Slices (0018,0088), mm. */
  spacingBetweenSlices?: number;
}

/** One CT slice in Hounsfield units, with what orders it in its series. */
export interface DicomSlice extends DicomHeader {
  /** Hounsfield units, row-major. */
  hu: Float32Array;
}

/** A parsed, checked DICOM CT image: its frames' headers, and each frame's HU on demand. */
export interface DicomImage {
  file: string;
  rows: number;
  columns: number;
  transferSyntax: string;
  /** One per frame. */
  headers: DicomHeader[];
  /** Frame `i` in HU (decoded now: hold one at a time for a long series). */
  slice(i: number): DicomSlice;
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

function numbers(ds: dicomParser.DataSet | undefined, tag: string, n: number): number[] | undefined {
  const s = ds?.string(tag);
  if (!s) return undefined;
  const v = s.split("\\").map((x) => parseFloat(x));
  return v.length === n && v.every(Number.isFinite) ? v : undefined;
}

function positive(ds: dicomParser.DataSet | undefined, tag: string): number | undefined {
  const v = numbers(ds, tag, 1)?.[0];
  return v !== undefined && v > 0 ? v : undefined;
}

/** Sequences an Enhanced CT reads (so that implicit VR files parse them too). */
const SEQUENCES = new Set(["x52009229", "x52009230", "x00209113", "x00209116", "x00289145", "x00289110", "x00209111", "x00189329", "x00209071"]);

function parse(file: string, bytes: Buffer): dicomParser.DataSet {
  try {
    return dicomParser.parseDicom(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), {
      // Deflated explicit VR little endian: the dataset after the meta header is raw deflate.
      inflater: (arr: Uint8Array, position: number) => {
        const inflated = zlib.inflateRawSync(Buffer.from(arr.buffer, arr.byteOffset + position, arr.length - position));
        const out = new Uint8Array(position + inflated.length);
        out.set(arr.subarray(0, position));
        out.set(inflated, position);
        return out;
      },
      vrCallback: (tag: string) => (SEQUENCES.has(tag) ? "SQ" : undefined),
    } as unknown as dicomParser.ParseDicomOptions);
  } catch (e) {
    const why = typeof e === "string" ? e : e instanceof Error ? e.message : String((e as { exception?: string }).exception ?? e);
    throw new DicomError(file, `not a readable DICOM file (${why.replace(/^dicomParser[.:][\w.:]*?: ?/, "")}); it may be truncated`);
  }
}

/**
 * Why a DICOM file is no CT slice to score though it is no error either, or undefined. By SOP
 * Class UID, else Modality; a LOCALIZER by Image Type (0008,0008) value 3.
 */
function skipReason(file: string, ds: dicomParser.DataSet): string | undefined {
  const sop = (ds.string("x00080016") ?? ds.string("x00020002") ?? "").trim();
  const modality = (ds.string("x00080060") ?? "").trim().toUpperCase();
  const under = (root: string) => sop === root || sop.startsWith(root + ".");
  if (sop === "1.2.840.10008.1.3.10" || path.basename(file).toUpperCase() === "DICOMDIR") return "DICOMDIR (a media directory)";
  if (sop === "1.2.840.10008.5.1.4.1.1.88.59" || modality === "KO") return "key object selection (KO)";
  if (under("1.2.840.10008.5.1.4.1.1.88") || modality === "SR") return "structured report (SR)";
  if (under("1.2.840.10008.5.1.4.1.1.11") || modality === "PR") return "presentation state (PR)";
  if (sop === "1.2.840.10008.5.1.4.1.1.481.3" || modality === "RTSTRUCT") return "RT structure set (RTSTRUCT)";
  if (under("1.2.840.10008.5.1.4.1.1.481") || /^RT/.test(modality)) return "radiotherapy object (RT)";
  if (sop === "1.2.840.10008.5.1.4.1.1.66.4" || modality === "SEG") return "segmentation (SEG)";
  if (under("1.2.840.10008.5.1.4.1.1.66") || modality === "REG") return "registration, fiducials or raw data";
  if (under("1.2.840.10008.5.1.4.1.1.104") || modality === "DOC") return "encapsulated document (PDF, CDA)";
  if (under("1.2.840.10008.5.1.4.1.1.7")) return "secondary capture (a screen capture, e.g. a dose report)";
  if (under("1.2.840.10008.5.1.4.1.1.9")) return "waveform";
  const ctClass = sop === "" || sop === CT_IMAGE || sop === ENHANCED_CT || sop === LEGACY_ENHANCED_CT;
  if (!ctClass && !ds.elements.x7fe00010) return `non-image object (SOP class ${sop})`;
  const imageType = (ds.string("x00080008") ?? "").split("\\").map((v) => v.trim().toUpperCase());
  if (imageType[2] === "LOCALIZER") return "LOCALIZER (a scout image)";
  return undefined;
}

/** The first item of a functional group macro, per-frame first, else shared. */
function group(perFrame: dicomParser.DataSet | undefined, shared: dicomParser.DataSet | undefined, tag: string): dicomParser.DataSet | undefined {
  return perFrame?.elements[tag]?.items?.[0]?.dataSet ?? shared?.elements[tag]?.items?.[0]?.dataSet;
}

interface Rescale {
  slope: number;
  intercept: number;
}

/** Rescale Slope and Intercept of a dataset (or functional group item): both present and numbers, or a refusal. */
function rescaleOf(file: string, ds: dicomParser.DataSet | undefined, where: string): Rescale {
  const slopeText = ds?.string("x00281053"), interceptText = ds?.string("x00281052");
  const missing = [slopeText === undefined ? "Rescale Slope (0028,1053)" : "", interceptText === undefined ? "Rescale Intercept (0028,1052)" : ""].filter(Boolean);
  if (missing.length) throw new DicomError(file, `has no ${missing.join(" and no ")}${where}: its Hounsfield units are unknown; export the series again with them (a CT scanner writes both)`);
  const slope = ds!.floatString("x00281053"), intercept = ds!.floatString("x00281052");
  if (slope === undefined || !Number.isFinite(slope) || slope === 0) throw new DicomError(file, `Rescale Slope (0028,1053) is '${slopeText}'${where}: a number other than 0 is needed to turn stored values into HU`);
  if (intercept === undefined || !Number.isFinite(intercept)) throw new DicomError(file, `Rescale Intercept (0028,1052) is '${interceptText}'${where}: a number is needed to turn stored values into HU`);
  return { slope, intercept };
}

/**
 * Parse and check one DICOM file as a CT image (one frame, or an Enhanced CT's frames): throws a
 * DicomSkip for what is no CT slice (DICOMDIR, SR, a LOCALIZER, …) and a DicomError that says what
 * is wrong for a CT image that cannot be read. Pixels are decoded by `slice(i)`, one frame a call.
 */
export function openDicom(file: string): DicomImage {
  const bytes = fs.readFileSync(file);
  if (bytes.length === 0) throw new DicomError(file, "empty file (0 bytes)");
  const ds = parse(file, bytes);
  const skip = skipReason(file, ds);
  if (skip) throw new DicomSkip(file, skip);
  const ts = ds.string("x00020010")?.replace(/\0/g, "").trim() ?? "1.2.840.10008.1.2";
  const codec = DECODERS[ts];
  if (NOT_DECODED[ts]) {
    throw new DicomError(file, `transfer syntax ${ts} (${NOT_DECODED[ts]}) is compressed in a way this reader does not decode: convert the series to an uncompressed syntax first (e.g. \`gdcmconv --raw\` or \`dcmdjpeg\`)`);
  }
  if (!UNCOMPRESSED[ts] && !codec) throw new DicomError(file, `transfer syntax ${ts} is not one this reader supports (${Object.entries(TRANSFER_SYNTAXES).map(([u, n]) => `${n} ${u}`).join(", ")}): convert the series to one of them first (e.g. \`gdcmconv --raw\`)`);
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
  if (!(frames >= 1)) throw new DicomError(file, `Number of Frames (0028,0008) is '${ds.string("x00280008")}': a whole number of at least 1 is needed`);
  const perFrame = ds.elements.x52009230?.items;
  const shared = ds.elements.x52009229?.items?.[0]?.dataSet;
  const enhanced = perFrame !== undefined || shared !== undefined;
  if (frames > 1 && !enhanced) throw new DicomError(file, `holds ${frames} frames but no functional groups (5200,9229/9230) that place them: give one slice per file, or an Enhanced CT image`);
  if (perFrame && perFrame.length !== frames) throw new DicomError(file, `holds ${frames} frames but ${perFrame.length} Per-frame Functional Groups items: the file is inconsistent; export it again`);
  const allocated = ds.uint16("x00280100") ?? 16;
  const stored = ds.uint16("x00280101") ?? allocated;
  const signed = (ds.uint16("x00280103") ?? 0) === 1;
  if (allocated !== 8 && allocated !== 16) throw new DicomError(file, `has ${allocated} bits allocated per pixel: 8 or 16 are supported`);
  if (stored < 1 || stored > allocated) throw new DicomError(file, `Bits Stored (0028,0101) is ${stored} with Bits Allocated ${allocated}: the header is inconsistent`);
  if (ts === "1.2.840.10008.1.2.4.50" && allocated !== 8) throw new DicomError(file, `is JPEG Baseline with ${allocated} bits allocated: baseline JPEG holds 8 bits; the file is inconsistent`);
  const n = rows * columns;
  const frameBytes = (n * allocated) / 8;
  if (!codec) {
    if (pixel.encapsulatedPixelData) throw new DicomError(file, `has encapsulated (compressed) pixel data under the uncompressed transfer syntax ${ts}: the file is inconsistent; export it again`);
    const need = frameBytes * frames;
    if (pixel.length < need || pixel.dataOffset + need > ds.byteArray.length) throw new DicomError(file, `pixel data holds ${Math.min(pixel.length, ds.byteArray.length - pixel.dataOffset)} bytes, ${frames > 1 ? `${frames} frames of ` : ""}${rows}×${columns} at ${allocated} bits needs ${need}: the file is truncated`);
    // Odd lengths are padded to even: one byte more is fine, more is a header that does not match its pixels.
    if (pixel.length > need + 1) throw new DicomError(file, `pixel data holds ${pixel.length} bytes, but Rows × Columns (${rows}×${columns}) at ${allocated} bits is ${need}: the header does not match the pixels`);
  } else {
    if (!pixel.encapsulatedPixelData) throw new DicomError(file, `transfer syntax ${ts} (${codec.name}) but the pixel data is not encapsulated: the file is inconsistent; export it again`);
    if (!pixel.fragments?.length) throw new DicomError(file, "has no compressed frames in its pixel data: the file is truncated");
  }

  // Per frame: position, orientation, rescale, pixel spacing (Enhanced CT: from the functional groups).
  const top: Omit<DicomHeader, "frame"> = {
    file,
    rows,
    columns,
    transferSyntax: ts,
    seriesUid: ds.string("x0020000e")?.trim() || undefined,
    instanceNumber: ds.intString("x00200013"),
  };
  const headers: DicomHeader[] = [];
  const rescales: Rescale[] = [];
  for (let f = 0; f < frames; f++) {
    const item = perFrame?.[f]?.dataSet;
    const where = enhanced ? ` (frame ${f + 1}: neither its Per-frame nor the Shared Functional Groups' Pixel Value Transformation (0028,9145) has it, nor the top level)` : "";
    const measures = enhanced ? group(item, shared, "x00289110") : ds;
    const pixelValue = enhanced ? group(item, shared, "x00289145") ?? (ds.string("x00281053") !== undefined || ds.string("x00281052") !== undefined ? ds : undefined) : ds;
    if (enhanced) {
      // An Enhanced CT frame can be a localizer too (CT Image Frame Type (0018,9329) → Frame Type (0008,9007) value 3).
      const frameType = (group(item, shared, "x00189329")?.string("x00089007") ?? "").split("\\").map((v) => v.trim().toUpperCase());
      if (frameType[2] === "LOCALIZER") throw new DicomSkip(file, "LOCALIZER (a scout image)");
    }
    rescales.push(rescaleOf(file, pixelValue, where));
    const pos = numbers(enhanced ? group(item, shared, "x00209113") : ds, "x00200032", 3);
    const ori = numbers(enhanced ? group(item, shared, "x00209116") : ds, "x00200037", 6);
    const spacing = numbers(measures, "x00280030", 2);
    headers.push({
      ...top,
      ...(frames > 1 ? { frame: f } : {}),
      position: pos as DicomHeader["position"],
      orientation: ori as DicomHeader["orientation"],
      pixelSpacing: spacing && spacing[0] > 0 && spacing[1] > 0 ? (spacing as [number, number]) : undefined,
      sliceThickness: positive(measures, "x00180050") ?? positive(ds, "x00180050"),
      spacingBetweenSlices: positive(measures, "x00180088") ?? positive(ds, "x00180088"),
    });
  }

  const shape: FrameShape = { rows, columns, bitsAllocated: allocated };
  const mask = stored >= 32 ? 0xffffffff : (1 << stored) - 1;
  let offsets: number[] | undefined;
  const encapsulatedFrame = (f: number): Uint8Array => {
    const fragments = pixel.fragments!;
    try {
      if (frames === 1) return dicomParser.readEncapsulatedPixelDataFromFragments(ds, pixel, 0, fragments.length);
      if (pixel.basicOffsetTable?.length) return dicomParser.readEncapsulatedImageFrame(ds, pixel, f);
      if (fragments.length === frames) return dicomParser.readEncapsulatedPixelDataFromFragments(ds, pixel, f, 1);
      if (JPEG_FAMILY.has(ts)) {
        offsets ??= dicomParser.createJPEGBasicOffsetTable(ds, pixel);
        return dicomParser.readEncapsulatedImageFrame(ds, pixel, f, offsets);
      }
    } catch (e) {
      throw new DicomError(file, `frame ${f + 1}'s compressed data cannot be found (${typeof e === "string" ? e.replace(/^dicomParser\.\w+: /, "") : (e as Error).message}): the file may be truncated; decompress it first (\`gdcmconv --raw\`)`);
    }
    throw new DicomError(file, `holds ${frames} frames in ${fragments.length} fragments and no Basic Offset Table: the frames cannot be told apart; decompress it first (\`gdcmconv --raw\`)`);
  };
  const slice = (f: number): DicomSlice => {
    if (!(f >= 0 && f < frames)) throw new RangeError(`${file}: frame ${f} of ${frames}`);
    const { slope, intercept } = rescales[f];
    const hu = new Float32Array(n);
    if (codec) {
      let values: StoredValues;
      try {
        values = codec.decode(encapsulatedFrame(f), shape);
      } catch (e) {
        if (e instanceof CodecError) throw new DicomError(file, `${frames > 1 ? `frame ${f + 1}: ` : ""}${e.message}; check it with \`dcmdjpeg\`/\`gdcmconv --raw\``);
        throw e;
      }
      if (signed && values instanceof Int16Array) {
        // A decoder that knows the sign (JPEG 2000) gives values: clamp a lossy overshoot into Bits Stored.
        const lo = -(2 ** (stored - 1)), hi = 2 ** (stored - 1) - 1;
        for (let i = 0; i < n; i++) hu[i] = Math.min(hi, Math.max(lo, values[i])) * slope + intercept;
      } else if (signed) {
        // Signed data in an unsigned stream (JPEG Lossless, JPEG-LS, RLE): two's complement in Bits Stored.
        for (let i = 0; i < n; i++) {
          let v = values[i] & mask;
          if (v & (1 << (stored - 1))) v -= 1 << stored;
          hu[i] = v * slope + intercept;
        }
      } else {
        // Unsigned: a lossy decoder may overshoot the Bits Stored range; clamp it rather than wrap.
        for (let i = 0; i < n; i++) hu[i] = Math.min(mask, values[i]) * slope + intercept;
      }
    } else {
      const view = new DataView(ds.byteArray.buffer, ds.byteArray.byteOffset + pixel.dataOffset + f * frameBytes, frameBytes);
      const little = ts !== "1.2.840.10008.1.2.2";
      for (let i = 0; i < n; i++) {
        let v = allocated === 16 ? view.getUint16(2 * i, little) : view.getUint8(i);
        v &= mask;
        if (signed && v & (1 << (stored - 1))) v -= 1 << stored;
        hu[i] = v * slope + intercept;
      }
    }
    return { ...headers[f], hu };
  };
  return { file, rows, columns, transferSyntax: ts, headers, slice };
}

/** Read one DICOM file as a CT slice in HU, or throw a DicomError that says what is wrong (a DicomSkip for what is no CT slice). */
export function readDicomSlice(file: string): DicomSlice {
  const im = openDicom(file);
  if (im.headers.length !== 1) throw new DicomError(file, `holds ${im.headers.length} frames (an Enhanced CT image): read it with readDicomFrames, one slice per frame`);
  return im.slice(0);
}

/** Every frame of a DICOM file as CT slices in HU (one for a classic CT image; all of them are held: for a long Enhanced CT, use openDicom). */
export function readDicomFrames(file: string): DicomSlice[] {
  const im = openDicom(file);
  return im.headers.map((_, i) => im.slice(i));
}

/** HU → 8 bits through a window (linear ramp, clipped at both ends). */
export function windowHu(hu: ArrayLike<number>, w: HuWindow = LUNG_WINDOW): Uint8Array {
  const lo = w.level - w.width / 2;
  const out = new Uint8Array(hu.length);
  for (let i = 0; i < hu.length; i++) out[i] = Math.max(0, Math.min(255, Math.round(((hu[i] - lo) / w.width) * 255)));
  return out;
}

/** File names in natural order (IM2 before IM10), then frame. */
export function compareFiles(a: DicomHeader, b: DicomHeader): number {
  return a.file.localeCompare(b.file, undefined, { numeric: true }) || (a.frame ?? 0) - (b.frame ?? 0);
}

/** The slice normal of an orientation: row cosines × column cosines. */
function normal(o: NonNullable<DicomHeader["orientation"]>): [number, number, number] {
  return [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
}

/**
 * A series' slices in anatomical order: by position along the slice normal when every slice has
 * Image Position and Orientation, else by Instance Number when every slice has one (a multi-frame
 * file's frames by frame), else by file name in natural order (IM2 before IM10). Returns the order
 * used with the slices.
 */
export function sortSeries<T extends DicomHeader>(slices: readonly T[]): { slices: T[]; by: "position" | "instance number" | "file name" } {
  const withPos = slices.every((s) => s.position && s.orientation);
  if (withPos && slices.length) {
    const nrm = normal(slices[0].orientation!);
    const d = (s: DicomHeader) => s.position![0] * nrm[0] + s.position![1] * nrm[1] + s.position![2] * nrm[2];
    // Ties (the same position) by instance number, then file name.
    return { slices: [...slices].sort((a, b) => d(a) - d(b) || (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0) || compareFiles(a, b)), by: "position" };
  }
  if (slices.every((s) => s.instanceNumber !== undefined)) return { slices: [...slices].sort((a, b) => a.instanceNumber! - b.instanceNumber! || compareFiles(a, b)), by: "instance number" };
  return { slices: [...slices].sort(compareFiles), by: "file name" };
}

/** Largest difference tolerated between two slices' orientation cosines, and between pixel spacings (mm). */
export const GEOMETRY_TOLERANCE = { orientation: 1e-3, pixelSpacing: 1e-3 };

/**
 * Two slices of one series that cannot be one volume: different Image Orientation (Patient) or
 * different Pixel Spacing. Returns the first such pair (what differs, and both slices), or undefined.
 */
export function mixedGeometry(slices: readonly DicomHeader[]): { what: "Image Orientation (Patient)" | "Pixel Spacing" | "image size (Columns × Rows)"; a: DicomHeader; b: DicomHeader; values: [string, string] } | undefined {
  const close = (x: readonly number[], y: readonly number[], tol: number) => x.length === y.length && x.every((v, i) => Math.abs(v - y[i]) <= tol);
  const fmt = (v: readonly number[] | undefined) => (v ? v.map((x) => String(+x.toFixed(6))).join("\\") : "none");
  const firstO = slices.find((s) => s.orientation), firstS = slices.find((s) => s.pixelSpacing);
  for (const s of slices) {
    // One volume has one image size: a scan's masks are stacked slice on slice.
    if (s.rows !== slices[0].rows || s.columns !== slices[0].columns) return { what: "image size (Columns × Rows)", a: slices[0], b: s, values: [`${slices[0].columns}×${slices[0].rows}`, `${s.columns}×${s.rows}`] };
    if (firstO && s.orientation && !close(firstO.orientation!, s.orientation, GEOMETRY_TOLERANCE.orientation)) return { what: "Image Orientation (Patient)", a: firstO, b: s, values: [fmt(firstO.orientation), fmt(s.orientation)] };
    if (firstS && s.pixelSpacing && !close(firstS.pixelSpacing!, s.pixelSpacing, GEOMETRY_TOLERANCE.pixelSpacing)) return { what: "Pixel Spacing", a: firstS, b: s, values: [fmt(firstS.pixelSpacing), fmt(s.pixelSpacing)] };
  }
  return undefined;
}

/**
 * A sorted series' voxel spacing in mm: [row spacing, column spacing, slice spacing], the slice
 * spacing the median distance between consecutive positions along the slice normal (ordered by
 * position), else Spacing Between Slices, else Slice Thickness. Undefined without Pixel Spacing.
 */
export function seriesSpacing(sorted: readonly DicomHeader[], by: "position" | "instance number" | "file name"): [number, number, number] | undefined {
  const ps = sorted.find((s) => s.pixelSpacing)?.pixelSpacing;
  if (!ps) return undefined;
  let slice: number | undefined;
  if (by === "position" && sorted.length > 1) {
    const nrm = normal(sorted[0].orientation!);
    const d = sorted.map((s) => s.position![0] * nrm[0] + s.position![1] * nrm[1] + s.position![2] * nrm[2]);
    const gaps = d.slice(1).map((v, i) => Math.abs(v - d[i])).sort((a, b) => a - b);
    const m = gaps.length >> 1;
    const median = gaps.length % 2 ? gaps[m] : (gaps[m - 1] + gaps[m]) / 2;
    if (median > 0) slice = median;
  }
  slice ??= sorted.find((s) => s.spacingBetweenSlices)?.spacingBetweenSlices ?? sorted.find((s) => s.sliceThickness)?.sliceThickness;
  return slice === undefined ? undefined : [ps[0], ps[1], +slice.toFixed(6)];
}
