/**
 * Slices as every segmenter sees them (lungs and lesions alike). The U-Net's input is the WHOLE
 * slice turned to the common orientation (sourceOrientation) and resized to S×S gray, with no chest
 * crop, so its output maps back to every pixel of the file: resized to the upright height × width,
 * then turned back with the inverse transform. One input normalisation (segmenterInput) in training
 * and at inference.
 */
import sharp from "sharp";
import { decodeRaw } from "../data/decode";
import { Orientation, orientPixels } from "../data/orientation";
import { SourceName, sourceOrientation } from "../data/sources";


/** The transform that undoes `o` (transpose and 180° undo themselves; the quarter turns swap). */
export function inverseOrientation(o: Orientation): Orientation {
  return o === "rotate90ccw" ? "rotate90cw" : o === "rotate90cw" ? "rotate90ccw" : o;
}

export interface UprightSlice {
  /** Upright gray pixels and size (after sourceOrientation). */
  gray: Uint8Array;
  height: number;
  width: number;
  /** The file's own size. */
  fileHeight: number;
  fileWidth: number;
  orientation: Orientation;
}

/** Decode a file to 8-bit gray and turn it upright. */
export async function uprightSlice(file: string, source: SourceName): Promise<UprightSlice> {
  const raw = await decodeRaw(file, 1);
  const orientation = sourceOrientation(source, file);
  const g = orientPixels(new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.length), raw.height, raw.width, 1, orientation);
  return { gray: g.data, height: g.height, width: g.width, fileHeight: raw.height, fileWidth: raw.width, orientation };
}

/** Resize 8-bit gray (or a 0/1 mask scaled to 0/255) to w×h bilinearly. */
async function resizeGray(data: Uint8Array, height: number, width: number, w: number, h: number): Promise<Uint8Array> {
  const out = await sharp(Buffer.from(data.buffer, data.byteOffset, data.length), { raw: { width, height, channels: 1 } })
    .resize(w, h, { fit: "fill", kernel: "linear" })
    .toColourspace("b-w")
    .raw()
    .toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * How the U-Net's input is normalised, identically for every source, in training and at inference.
 * The radiologists' slices (covid19-ct-seg-lungs) were CLAHE-enhanced upstream and no other source
 * was: CLAHE after the resize gives every source that local-contrast look, so the model never
 * learns "CLAHE look = has a lung mask". `none` is the plain resize (tests, ablations).
 */
export type LungInputNormalisation = { kind: "none" } | { kind: "clahe"; /** tiles per side */ tiles: number; /** sharp's maxSlope (contrast limit) */ maxSlope: number };

/** CLAHE with 8 × 8 tiles (OpenCV's default grid, as upstream) and sharp's default slope limit 3. */
export const LUNG_INPUT_NORMALISATION: LungInputNormalisation = { kind: "clahe", tiles: 8, maxSlope: 3 };
/** The same normalisation under the name every target reads it by (the lesion segmenter uses the lungs' one). */
export const SEGMENTER_INPUT_NORMALISATION = LUNG_INPUT_NORMALISATION;

/** The U-Net input: the upright slice resized to side × side (gray 0–255), then normalised. */
export async function segmenterInput(s: UprightSlice, side: number, norm: LungInputNormalisation = LUNG_INPUT_NORMALISATION): Promise<Uint8Array> {
  if (norm.kind === "none") return resizeGray(s.gray, s.height, s.width, side, side);
  const tile = Math.max(2, Math.floor(side / norm.tiles));
  const out = await sharp(Buffer.from(s.gray.buffer, s.gray.byteOffset, s.gray.length), { raw: { width: s.width, height: s.height, channels: 1 } })
    .resize(side, side, { fit: "fill", kernel: "linear" })
    .clahe({ width: tile, height: tile, maxSlope: norm.maxSlope })
    .toColourspace("b-w")
    .raw()
    .toBuffer();
  if (out.length !== side * side) throw new Error(`segmenterInput: CLAHE returned ${out.length} bytes for ${side}×${side}`);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Resize a 0/1 mask bilinearly and threshold at half, so its edge lands where the image's does. */
export async function resizeMask(mask: Uint8Array, height: number, width: number, w: number, h: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(mask.length);
  for (let i = 0; i < mask.length; i++) bytes[i] = mask[i] ? 255 : 0;
  const r = await resizeGray(bytes, height, width, w, h);
  for (let i = 0; i < r.length; i++) r[i] = r[i] >= 128 ? 1 : 0;
  return r;
}

/** Probabilities side × side → 0/1 mask at the upright height × width (bilinear, then ≥ threshold). */
export async function probabilitiesToMask(prob: ArrayLike<number>, side: number, height: number, width: number, threshold = 0.5): Promise<Uint8Array> {
  const bytes = new Uint8Array(side * side);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.max(0, Math.min(255, Math.round(prob[i] * 255)));
  const r = await resizeGray(bytes, side, side, width, height);
  const t = Math.round(threshold * 255);
  for (let i = 0; i < r.length; i++) r[i] = r[i] >= t ? 1 : 0;
  return r;
}


/** An upright mask turned back to the file's own orientation. */
export function toFileOrientation(mask: Uint8Array, s: Pick<UprightSlice, "height" | "width" | "orientation">): Uint8Array {
  return orientPixels(mask, s.height, s.width, 1, inverseOrientation(s.orientation)).data;
}

/** 0/1 mask → gray PNG 0/255. */
export function maskToPng(mask: Uint8Array, height: number, width: number): Promise<Buffer> {
  const bytes = Buffer.alloc(mask.length);
  for (let i = 0; i < mask.length; i++) bytes[i] = mask[i] ? 255 : 0;
  return sharp(bytes, { raw: { width, height, channels: 1 } }).toColourspace("b-w").png({ compressionLevel: 6 }).toBuffer();
}

/** Gray PNG → 0/1 mask (≥ 128) with its size, or null when it is not a readable PNG. */
export async function readMaskPng(png: Buffer): Promise<{ data: Uint8Array; height: number; width: number } | null> {
  try {
    const { data, info } = await sharp(png).toColourspace("b-w").raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 1) return null;
    const m = new Uint8Array(data.length);
    for (let i = 0; i < m.length; i++) m[i] = data[i] >= 128 ? 1 : 0;
    return { data: m, height: info.height, width: info.width };
  } catch {
    return null;
  }
}

