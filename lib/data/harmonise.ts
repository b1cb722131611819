/**
 * Harmonisation: a preparation that makes the sources look alike before any model sees them.
 *
 * Under the paper protocol each class comes from its own sources (COVID-Seg and COVID-CT figures vs
 * LUNA and COVID-CT NonCOVID), and the sources differ in windowing, contrast and encoding. A model
 * can separate them by grey levels instead of by lungs. `body-histogram` maps the grey levels of
 * every image's body region onto one reference histogram, so each source's windowing is undone as
 * far as one monotone curve can undo it:
 *
 *   body     the convex hull of the chest crop (lib/data/preprocess.ts chestCropBox), carried into
 *            the cropped, resized image; the whole image when the crop fell back without a hull.
 *   match    the image's body CDF (mid-bin) is looked up in the reference CDF: one lookup table of
 *            256 grey levels, applied to every pixel (inside and outside the body alike, so the
 *            mapping stays one monotone curve and margins stay dark).
 *   reference the mean of the per-image normalised body histograms of the protocol's *training*
 *            images (every source and class of train; never val, test or the external set:
 *            protocolHarmoniser in lib/protocols). Deterministic: a function of the cached pixels.
 *
 * "none" (the default) leaves pixels and every cache key as they were. The harmonised pixels are
 * not cached: the lookup is cheap, and the unharmonised crop under its old key is the input.
 * What depends on them (frozen features, shortcut cues) is keyed by `harmoniseKey`.
 */
import * as crypto from "crypto";
import type { PreprocessedImage } from "./preprocess";

export const HARMONISE_NAMES = ["none", "body-histogram"] as const;
export type HarmoniseName = (typeof HARMONISE_NAMES)[number];

/** Bump when the body mask or the matching changes for the same reference images. */
export const HARMONISE_VERSION = 1;

export function isHarmoniseName(x: unknown): x is HarmoniseName {
  return typeof x === "string" && (HARMONISE_NAMES as readonly string[]).includes(x);
}

/** A fitted harmonisation: the reference it maps onto, and the key that names it in caches and manifests. */
export interface Harmoniser {
  name: Exclude<HarmoniseName, "none">;
  /** Input size the reference was computed at (images of another size are refused). */
  size: number;
  /** Reference histogram over 0–255, summing to 1. */
  reference: Float64Array;
  /** Number of training images pooled into the reference. */
  n: number;
  /** SHA-256 of name, version, size and the reference (what caches and manifests record). */
  key: string;
}

/** What a harmoniser adds to a cache key: nothing for none (old keys stay valid). */
export function harmoniseKey(h: Harmoniser | null | undefined): { harmonise: { name: string; key: string } } | Record<string, never> {
  return h ? { harmonise: { name: h.name, key: h.key } } : {};
}

/**
 * The body mask of a preprocessed image (1 = body), from its crop's convex hull mapped into the
 * output square (crop box → size×size, "fill" resize as examplePreprocess uses). Whole image when
 * there was no crop or no hull.
 */
export function bodyMask(img: Pick<PreprocessedImage, "size" | "crop">): Uint8Array {
  const n = img.size;
  const mask = new Uint8Array(n * n);
  const hull = img.crop?.hull ?? [];
  if (!img.crop || hull.length < 3) return mask.fill(1);
  const { left, top, width, height } = img.crop.box;
  const pts = hull.map(([x, y]) => [((x - left) * n) / width, ((y - top) * n) / height]);
  // Scanline fill of a convex polygon: each row's span between its edge crossings at the pixel centre.
  for (let y = 0; y < n; y++) {
    const yc = y + 0.5;
    let x0 = Infinity, x1 = -Infinity;
    for (let i = 0; i < pts.length; i++) {
      const [ax, ay] = pts[i], [bx, by] = pts[(i + 1) % pts.length];
      if ((ay <= yc && by >= yc) || (by <= yc && ay >= yc)) {
        const x = ay === by ? Math.min(ax, bx) : ax + ((yc - ay) * (bx - ax)) / (by - ay);
        const xe = ay === by ? Math.max(ax, bx) : x;
        x0 = Math.min(x0, x); x1 = Math.max(x1, xe);
      }
    }
    if (x0 > x1) continue;
    for (let x = Math.max(0, Math.ceil(x0 - 0.5)); x <= Math.min(n - 1, Math.floor(x1 - 0.5)); x++) mask[y * n + x] = 1;
  }
  // A hull that misses every pixel centre (degenerate) must not give an empty body.
  return mask.some((v) => v) ? mask : mask.fill(1);
}

/** Normalised 256-bin histogram of the gray pixels where mask is 1 (channel 0 of interleaved data). */
export function maskedHistogram(gray: Uint8Array, mask: Uint8Array, channels = 1): Float64Array {
  const h = new Float64Array(256);
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i]) { h[gray[i * channels]]++; n++; }
  if (n > 0) for (let v = 0; v < 256; v++) h[v] /= n;
  return h;
}

/**
 * Histogram matching as a lookup table: grey level v of the source goes to the reference level
 * whose CDF first reaches the source's mid-bin CDF at v (monotone; identity when both agree).
 */
export function matchingLut(source: Float64Array, reference: Float64Array): Uint8Array {
  const ref = new Float64Array(256);
  let acc = 0;
  for (let v = 0; v < 256; v++) ref[v] = acc += reference[v];
  const lut = new Uint8Array(256);
  let below = 0, r = 0;
  for (let v = 0; v < 256; v++) {
    const q = below + source[v] / 2;
    below += source[v];
    while (r < 255 && ref[r] < q - 1e-12) r++;
    lut[v] = r;
  }
  return lut;
}

/** The image's gray pixels, harmonised (a new array), or the cached pixels themselves when h is null. */
export function harmoniseImage(img: PreprocessedImage, h: Harmoniser | null | undefined): Uint8Array {
  if (!h) return img.data;
  if (img.size !== h.size) throw new Error(`harmonise: ${img.file} is ${img.size}², the reference was computed at ${h.size}²`);
  const lut = matchingLut(maskedHistogram(img.data, bodyMask(img), img.channels), h.reference);
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < out.length; i++) out[i] = lut[img.data[i]];
  return out;
}

/** SHA-256 of a reference (with name, version and size). */
export function referenceKey(name: string, size: number, reference: Float64Array): string {
  return crypto.createHash("sha256").update(JSON.stringify([name, HARMONISE_VERSION, size, Array.from(reference, (x) => Number(x.toPrecision(12)))])).digest("hex");
}

/** The reference of `body-histogram`: the mean normalised body histogram of the given images. */
export function bodyHistogramReference(images: readonly PreprocessedImage[]): Float64Array {
  if (images.length === 0) throw new Error("harmonise: no reference images");
  const ref = new Float64Array(256);
  for (const img of images) {
    const h = maskedHistogram(img.data, bodyMask(img), img.channels);
    for (let v = 0; v < 256; v++) ref[v] += h[v] / images.length;
  }
  return ref;
}

/**
 * Fit a harmonisation on reference images ("none" gives null). The caller chooses them: training
 * images only (lib/protocols protocolHarmoniser).
 */
export function fitHarmoniser(name: HarmoniseName, images: readonly PreprocessedImage[]): Harmoniser | null {
  if (!isHarmoniseName(name)) throw new Error(`Unknown harmonisation '${name}'. Use one of: ${HARMONISE_NAMES.join(", ")}.`);
  if (name === "none") return null;
  if (images.length === 0) throw new Error("harmonise: no reference images");
  const size = images[0].size;
  if (images.some((i) => i.size !== size)) throw new Error("harmonise: reference images of different sizes");
  const reference = bodyHistogramReference(images);
  return { name, size, reference, n: images.length, key: referenceKey(name, size, reference) };
}
