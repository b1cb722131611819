/**
 * Decode any image of the release into one representation. The release mixes 8-bit grayscale,
 * RGB and RGBA PNGs, grayscale and RGB JPEGs, and 34 JPEGs named `.png`; sharp reads by content, so
 * extensions do not matter. Alpha is flattened onto black (CT background), EXIF orientation is
 * applied, 16-bit inputs keep their precision.
 */
import sharp from "sharp";

export interface DecodedImage {
  /** Row-major, channel-interleaved, values in [0, 1]. */
  data: Float32Array;
  height: number;
  width: number;
  channels: 1 | 3;
  file: string;
}

export interface ImageSize {
  height: number;
  width: number;
  /** sharp's format name (png, jpeg, …): by content, not by extension. */
  format: string;
  /** Channels as stored (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; palette PNGs report 3). */
  channels: number;
  /** "uchar" for 8-bit, "ushort" for 16-bit. */
  depth: string;
}

/** A file sharp cannot decode: corrupt, truncated or not an image. */
export class ImageDecodeError extends Error {
  constructor(
    readonly file: string,
    cause: unknown,
  ) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(
      /pixel limit/i.test(why)
        ? `Cannot decode image ${file}: it has more pixels than the decoder accepts (limit ${PIXEL_LIMIT.toLocaleString("en")} pixels, ` +
            "about 16384 × 16384). The file is not damaged: downscale it (CT slices are at most a few thousand pixels wide) or remove it from the data."
        : `Cannot decode image ${file}: ${why}. The file is corrupt, truncated or not an image: ` +
            "run `npx covid-ct verify-data` to check the data against its manifest, and `npx covid-ct fetch-data` to restore it.",
      { cause },
    );
    this.name = "ImageDecodeError";
  }
}

/** sharp's default limitInputPixels (0x3FFF × 0x3FFF); larger inputs are refused before decoding. */
export const PIXEL_LIMIT = 0x3fff * 0x3fff;

// Fail on truncation and decoder errors, but not on the benign warnings some paper figures carry.
const SHARP_INPUT: sharp.SharpOptions = { failOn: "truncated" };

/** Width/height from the header only (no pixel decode), with EXIF orientation applied. */
export async function imageSize(file: string): Promise<ImageSize> {
  let m: sharp.Metadata;
  try {
    m = await sharp(file, SHARP_INPUT).metadata();
  } catch (e) {
    throw new ImageDecodeError(file, e);
  }
  if (!m.width || !m.height) throw new ImageDecodeError(file, new Error("header has no size"));
  const swap = (m.orientation ?? 1) >= 5; // orientations 5–8 are rotated by 90°
  return {
    height: swap ? m.width : m.height,
    width: swap ? m.height : m.width,
    format: m.format ?? "unknown",
    channels: m.channels ?? 0,
    depth: m.depth ?? "uchar",
  };
}

/** Raw 8-bit pixels after orientation and flattening: the common base of decode and preprocess. */
export async function decodeRaw(file: string, channels: 1 | 3): Promise<{ data: Buffer; height: number; width: number }> {
  try {
    const { data, info } = await sharp(file, SHARP_INPUT)
      .rotate()
      .flatten({ background: "#000000" })
      .toColourspace(channels === 1 ? "b-w" : "srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== channels) throw new Error(`expected ${channels} channels after conversion, got ${info.channels}`);
    return { data, height: info.height, width: info.width };
  } catch (e) {
    throw e instanceof ImageDecodeError ? e : new ImageDecodeError(file, e);
  }
}

async function decode(file: string, channels: 1 | 3): Promise<DecodedImage> {
  let is16 = false;
  try {
    is16 = (await sharp(file, SHARP_INPUT).metadata()).depth === "ushort";
  } catch (e) {
    throw new ImageDecodeError(file, e);
  }
  if (is16) {
    // Keep the 16 bits: sharp's 8-bit conversion would quantise them.
    try {
      const { data, info } = await sharp(file, SHARP_INPUT)
        .rotate()
        .flatten({ background: "#000000" })
        .toColourspace(channels === 1 ? "grey16" : "rgb16")
        .raw({ depth: "ushort" })
        .toBuffer({ resolveWithObject: true });
      if (info.channels !== channels) throw new Error(`expected ${channels} channels after conversion, got ${info.channels}`);
      const u16 = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
      const out = new Float32Array(u16.length);
      for (let i = 0; i < u16.length; i++) out[i] = u16[i] / 65535;
      return { data: out, height: info.height, width: info.width, channels, file };
    } catch (e) {
      throw new ImageDecodeError(file, e);
    }
  }
  const { data, height, width } = await decodeRaw(file, channels);
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] / 255;
  return { data: out, height, width, channels, file };
}

/** Grayscale, one channel, [0, 1]. */
export function decodeGray(file: string): Promise<DecodedImage> {
  return decode(file, 1);
}

/** RGB, three interleaved channels, [0, 1] (grayscale sources are replicated). */
export function decodeRgb(file: string): Promise<DecodedImage> {
  return decode(file, 3);
}
