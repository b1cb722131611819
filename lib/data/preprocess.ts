/**
 * Chest crop and resize. The images are CT figures cut from papers: the body sits somewhere in the
 * frame with black margins, labels and arrows around it. We keep the body's bounding box:
 *   Otsu threshold → 8-connected components → largest component (plus any at least `keepFraction`
 *   of its area, since a threshold can split the body) → convex hull → its bounding box + margin.
 * Segmentation runs on a copy shrunk to `workSide` pixels (speed; a bounding box needs no detail).
 * Blank, flat or tiny images, or a "body" too small to be one, fall back to the full image — never
 * an exception, so a batch cannot die on one odd figure.
 */
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { decodeRaw } from "./decode";
import { Orientation, orientPixels } from "./orientation";

export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

export interface ChestCrop {
  /** Crop in source pixels. */
  box: CropBox;
  /** Convex hull of the kept components, [x, y] in source pixels (empty on fallback). */
  hull: [number, number][];
  /** Body threshold in [0, 1] (NaN on fallback before thresholding). */
  threshold: number;
  /** Why the full image is used, or null when the crop came from segmentation. */
  fallback: null | "tiny-image" | "flat-image" | "no-foreground" | "body-too-small";
}

export interface ChestCropOptions {
  /** Longest side of the working copy used for segmentation (default 256). */
  workSide?: number;
  /** Components at least this fraction of the largest one are kept too (default 0.25). */
  keepFraction?: number;
  /** Margin added on every side, as a fraction of the box size (default 0.02). */
  margin?: number;
  /** A box under this fraction of the image area is not trusted (default 0.05). */
  minAreaFraction?: number;
  /**
   * Body threshold = darkest + bodyLevel × (Otsu − darkest), default 0.5. Otsu alone (1.0) splits
   * bright organs from everything else on mediastinal-window figures and keeps only the heart; half
   * way down to the background keeps soft tissue (the body outline) in both window settings.
   */
  bodyLevel?: number;
  /**
   * Morphological opening of the body mask, radius in working-copy pixels (default 0: off). The
   * LUNA slices show the scanner table as thin bright arcs touching the back; an opening detaches
   * them so the crop frames the body alone, as in the tightly cropped Inf-Net slices.
   */
  openRadius?: number;
}

const CROP_DEFAULTS: Required<ChestCropOptions> = { workSide: 256, keepFraction: 0.25, margin: 0.02, minAreaFraction: 0.05, bodyLevel: 0.5, openRadius: 0 };

/** Square min (erode) or max (dilate) filter of radius r on a 0/1 mask, separable. */
function morph(mask: Uint8Array, h: number, w: number, r: number, op: "erode" | "dilate"): Uint8Array {
  const tmp = new Uint8Array(h * w), out = new Uint8Array(h * w);
  const want = op === "erode" ? 0 : 1; // the value that wins inside the window
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let v = 1 - want;
    for (let d = -r; d <= r && v !== want; d++) { const xx = x + d; v = xx < 0 || xx >= w ? (op === "erode" ? 0 : v) : mask[y * w + xx] === want ? want : v; }
    tmp[y * w + x] = v;
  }
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let v = 1 - want;
    for (let d = -r; d <= r && v !== want; d++) { const yy = y + d; v = yy < 0 || yy >= h ? (op === "erode" ? 0 : v) : tmp[yy * w + x] === want ? want : v; }
    out[y * w + x] = v;
  }
  return out;
}

/** Otsu's threshold of 8-bit values, returned in [0, 255]. */
export function otsuThreshold(values: ArrayLike<number>): number {
  const hist = new Float64Array(256);
  for (let i = 0; i < values.length; i++) hist[Math.max(0, Math.min(255, Math.round(values[i])))]++;
  const total = values.length;
  let sumAll = 0;
  for (let t = 0; t < 256; t++) sumAll += t * hist[t];
  let wB = 0, sumB = 0, best = -1, bestT = 0;
  for (let t = 0; t < 256; t++) {
    wB += hist[t];
    if (wB === 0) continue;
    const wF = total - wB;
    if (wF === 0) break;
    sumB += t * hist[t];
    const mB = sumB / wB, mF = (sumAll - sumB) / wF;
    const between = wB * wF * (mB - mF) * (mB - mF);
    if (between > best) { best = between; bestT = t; }
  }
  return bestT;
}

/** Label 8-connected foreground components; returns labels (0 = background) and areas by label. */
export function connectedComponents(mask: Uint8Array, height: number, width: number): { labels: Int32Array; areas: number[] } {
  const labels = new Int32Array(height * width);
  const areas: number[] = [0];
  const stack = new Int32Array(height * width);
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || labels[start]) continue;
    const label = areas.length;
    let sp = 0, area = 0;
    stack[sp++] = start;
    labels[start] = label;
    while (sp > 0) {
      const p = stack[--sp];
      area++;
      const y = (p / width) | 0, x = p - y * width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (mask[q] && !labels[q]) { labels[q] = label; stack[sp++] = q; }
        }
      }
    }
    areas.push(area);
  }
  return { labels, areas };
}

/** Andrew's monotone chain; input points need not be unique. Counter-clockwise, no repeat of the first point. */
export function convexHull(points: [number, number][]): [number, number][] {
  const pts = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (pts.length < 3) return pts;
  const cross = (o: number[], a: number[], b: number[]) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const lower: [number, number][] = [];
  for (const p of pts) {
    while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], p) <= 0) lower.pop();
    lower.push(p);
  }
  const upper: [number, number][] = [];
  for (let i = pts.length - 1; i >= 0; i--) {
    const p = pts[i];
    while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], p) <= 0) upper.pop();
    upper.push(p);
  }
  return lower.slice(0, -1).concat(upper.slice(0, -1));
}

/** Block-average an 8-bit gray image down so its longest side is at most `side`. */
export function shrink(gray: ArrayLike<number>, height: number, width: number, side: number): { data: Float32Array; h: number; w: number; step: number } {
  const step = Math.max(1, Math.ceil(Math.max(height, width) / side));
  const h = Math.ceil(height / step), w = Math.ceil(width / step);
  const data = new Float32Array(h * w);
  const count = new Float32Array(h * w);
  for (let y = 0; y < height; y++) {
    const row = ((y / step) | 0) * w;
    for (let x = 0; x < width; x++) {
      const k = row + ((x / step) | 0);
      data[k] += gray[y * width + x];
      count[k]++;
    }
  }
  for (let i = 0; i < data.length; i++) data[i] /= count[i];
  return { data, h, w, step };
}

/**
 * Chest bounding box of an 8-bit grayscale image (values 0–255, row-major). Never throws on
 * degenerate input: it falls back to the full frame and says why.
 */
export function chestCropBox(gray: ArrayLike<number>, height: number, width: number, options: ChestCropOptions = {}): ChestCrop {
  const o = { ...CROP_DEFAULTS, ...options, openRadius: options.openRadius ?? 0 };
  const full: CropBox = { top: 0, left: 0, height, width };
  if (height < 8 || width < 8) return { box: full, hull: [], threshold: NaN, fallback: "tiny-image" };
  const { data, h, w, step } = shrink(gray, height, width, o.workSide);
  let lo = 255, hi = 0;
  for (let i = 0; i < data.length; i++) { lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]); }
  if (hi - lo < 8) return { box: full, hull: [], threshold: NaN, fallback: "flat-image" };
  const t = lo + o.bodyLevel * (otsuThreshold(data) - lo);
  let mask = new Uint8Array(h * w);
  for (let i = 0; i < mask.length; i++) mask[i] = data[i] > t ? 1 : 0;
  if (o.openRadius > 0) mask = morph(morph(mask, h, w, o.openRadius, "erode"), h, w, o.openRadius, "dilate");
  const { labels, areas } = connectedComponents(mask, h, w);
  const largest = Math.max(0, ...areas.slice(1));
  if (largest === 0) return { box: full, hull: [], threshold: t / 255, fallback: "no-foreground" };
  const keep = new Uint8Array(areas.length);
  for (let l = 1; l < areas.length; l++) keep[l] = areas[l] >= o.keepFraction * largest ? 1 : 0;

  // Hull of the kept pixels: each row's outermost kept pixels (as pixel corners) suffice.
  const pts: [number, number][] = [];
  for (let y = 0; y < h; y++) {
    let x0 = -1, x1 = -1;
    for (let x = 0; x < w; x++) if (keep[labels[y * w + x]] && labels[y * w + x]) { if (x0 < 0) x0 = x; x1 = x; }
    if (x0 >= 0) pts.push([x0, y], [x0, y + 1], [x1 + 1, y], [x1 + 1, y + 1]);
  }
  const hull = convexHull(pts).map(([x, y]): [number, number] => [Math.min(width, x * step), Math.min(height, y * step)]);
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of hull) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); }
  const mx = Math.round((x1 - x0) * o.margin), my = Math.round((y1 - y0) * o.margin);
  const left = Math.max(0, x0 - mx), top = Math.max(0, y0 - my);
  const box: CropBox = { left, top, width: Math.min(width, x1 + mx) - left, height: Math.min(height, y1 + my) - top };
  if (box.width < 2 || box.height < 2 || box.width * box.height < o.minAreaFraction * width * height) {
    return { box: full, hull, threshold: t / 255, fallback: "body-too-small" };
  }
  return { box, hull, threshold: t / 255, fallback: null };
}

export interface PreprocessOptions {
  /** Output side in pixels (default 224, the ImageNet backbones' input). */
  size?: number;
  /** Apply the chest crop (default true). */
  crop?: boolean;
  /** 3 = RGB (gray replicated for gray sources), 1 = grayscale (default 3). */
  channels?: 1 | 3;
  /** "fill" stretches to the square (default); "contain" pads with black to keep the aspect ratio. */
  fit?: "fill" | "contain";
  cropOptions?: ChestCropOptions;
  /**
   * Turn the source to the common orientation before the crop (default "identity"; the per-source
   * value comes from sourceOrientation in lib/data/sources.ts). Identity leaves the cache key of
   * earlier versions unchanged.
   */
  orientation?: Orientation;
}

export interface PreprocessedImage {
  /** size × size × channels, row-major, interleaved, 0–255 (exactly what is cached). */
  data: Uint8Array;
  size: number;
  channels: 1 | 3;
  /** The crop that was applied (in oriented pixels); null when crop was off. */
  crop: ChestCrop | null;
  source: { height: number; width: number };
  file: string;
}

export type NormalisedPreprocessOptions = Required<Omit<PreprocessOptions, "cropOptions" | "orientation">> & {
  cropOptions: Required<Omit<ChestCropOptions, "openRadius">> & { openRadius?: number };
  orientation?: Orientation;
};

/** Every knob with its default; `orientation` only when it is not the identity (stable cache keys). */
export function normalisePreprocessOptions(o: PreprocessOptions = {}): NormalisedPreprocessOptions {
  const cropOptions = { ...CROP_DEFAULTS, ...(o.cropOptions ?? {}) };
  // Knobs at their "off" value stay out of the normalised options, so cache keys written before
  // they existed still match (COVID-CT output is unchanged by them).
  if (!cropOptions.openRadius) delete (cropOptions as ChestCropOptions).openRadius;
  const n: NormalisedPreprocessOptions = { size: o.size ?? 224, crop: o.crop ?? true, channels: o.channels ?? 3, fit: o.fit ?? "fill", cropOptions };
  if (o.orientation && o.orientation !== "identity") n.orientation = o.orientation;
  return n;
}

/** Crop + resize raw 8-bit pixels already in memory. */
export async function preprocessPixels(
  pixels: Uint8Array,
  height: number,
  width: number,
  channels: 1 | 3,
  options: PreprocessOptions = {},
  file = "<memory>",
): Promise<PreprocessedImage> {
  const o = normalisePreprocessOptions(options);
  if (o.orientation) ({ data: pixels, height, width } = orientPixels(pixels, height, width, channels, o.orientation));
  let crop: ChestCrop | null = null;
  if (o.crop) {
    let gray: ArrayLike<number> = pixels;
    if (channels === 3) {
      const g = new Uint8Array(height * width);
      for (let i = 0; i < g.length; i++) g[i] = Math.round(0.299 * pixels[3 * i] + 0.587 * pixels[3 * i + 1] + 0.114 * pixels[3 * i + 2]);
      gray = g;
    }
    crop = chestCropBox(gray, height, width, o.cropOptions);
  }
  const box = crop?.box ?? { top: 0, left: 0, height, width };
  let img = sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels } });
  if (box.width !== width || box.height !== height) img = img.extract(box);
  const { data, info } = await img
    .resize(o.size, o.size, { fit: o.fit, background: "#000000", kernel: "linear" })
    .toColourspace(o.channels === 1 ? "b-w" : "srgb")
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== o.channels) throw new Error(`preprocess ${file}: expected ${o.channels} channels, got ${info.channels}`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), size: o.size, channels: o.channels, crop, source: { height, width }, file };
}

/** Decode a file, crop the chest, resize to a square. */
export async function preprocessImage(file: string, options: PreprocessOptions = {}): Promise<PreprocessedImage> {
  const o = normalisePreprocessOptions(options);
  const raw = await decodeRaw(file, o.channels);
  return preprocessPixels(raw.data, raw.height, raw.width, o.channels, o, file);
}

/** Float32 in [0, 1]. */
export function imageToFloat32(img: PreprocessedImage): Float32Array {
  const out = new Float32Array(img.data.length);
  for (let i = 0; i < out.length; i++) out[i] = img.data[i] / 255;
  return out;
}

/** [size, size, channels] float32 tensor in [0, 1] (caller disposes). */
export function imageToTensor(img: PreprocessedImage): tf.Tensor3D {
  return tf.tensor3d(imageToFloat32(img), [img.size, img.size, img.channels], "float32");
}

/** [n, size, size, channels] float32 batch in [0, 1]; all images must share size and channels. */
export function imagesToBatch(imgs: readonly PreprocessedImage[]): tf.Tensor4D {
  if (imgs.length === 0) throw new Error("imagesToBatch: no images");
  const { size, channels } = imgs[0];
  const per = size * size * channels;
  const out = new Float32Array(imgs.length * per);
  imgs.forEach((img, n) => {
    if (img.size !== size || img.channels !== channels) throw new Error(`imagesToBatch: ${img.file} is ${img.size}²×${img.channels}, expected ${size}²×${channels}`);
    for (let i = 0; i < per; i++) out[n * per + i] = img.data[i] / 255;
  });
  return tf.tensor4d(out, [imgs.length, size, size, channels], "float32");
}
