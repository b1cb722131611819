/**
 * One orientation for every source: the radiological convention of COVID-CT figures and LUNA16
 * slices (patient's front at the top, spine at the bottom, patient's left on the image's right).
 *
 * The slices prepared by Inf-Net (COVID-Seg and MedSeg) are stored turned by 90°; left as they are,
 * a classifier can tell them from LUNA by orientation alone. Each source gets a fixed transform
 * (lib/data/sources.ts says which, after looking at its images):
 *   identity     covid-ct, luna16
 *   rotate90ccw  COVID-Seg `coronacases_*` volumes (spine on the left, heart on the right)
 *   transpose    COVID-Seg `radiopaedia_*` volumes and MedSeg (spine on the right, heart on the left):
 *                a mirror about the main diagonal, i.e. 90° clockwise then a left–right flip
 * Pure array code on 8-bit pixels, so it runs before the chest crop and before any tensor exists.
 *
 * `uprightMeasure` is the check: a documented image measure that says whether a slice is upright.
 */
import { chestCropBox, ChestCropOptions } from "./preprocess";

export const ORIENTATIONS = ["identity", "rotate90ccw", "rotate90cw", "rotate180", "transpose"] as const;
export type Orientation = (typeof ORIENTATIONS)[number];

export function isOrientation(x: unknown): x is Orientation {
  return typeof x === "string" && (ORIENTATIONS as readonly string[]).includes(x);
}

/** Output (height, width) of a transform. */
export function orientedSize(o: Orientation, height: number, width: number): { height: number; width: number } {
  return o === "identity" || o === "rotate180" ? { height, width } : { height: width, width: height };
}

/**
 * Re-orient interleaved 8-bit pixels (row-major, `channels` per pixel). Returns a new buffer
 * (the input itself for identity).
 */
export function orientPixels(
  pixels: Uint8Array,
  height: number,
  width: number,
  channels: number,
  o: Orientation,
): { data: Uint8Array; height: number; width: number } {
  if (o === "identity") return { data: pixels, height, width };
  const { height: H, width: W } = orientedSize(o, height, width);
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      // Source pixel (sx, sy) of output pixel (x, y).
      let sx: number, sy: number;
      if (o === "rotate90ccw") { sx = width - 1 - y; sy = x; }       // source left column → output bottom row
      else if (o === "rotate90cw") { sx = y; sy = height - 1 - x; }   // source right column → output bottom row
      else if (o === "rotate180") { sx = width - 1 - x; sy = height - 1 - y; }
      else { sx = y; sy = x; }                                       // transpose
      const s = (sy * width + sx) * channels, d = (y * W + x) * channels;
      for (let c = 0; c < channels; c++) out[d + c] = pixels[s + c];
    }
  }
  return { data: out, height: H, width: W };
}

export interface UprightMeasure {
  /** Body bounding box width / height (chest crop box): > 1 when the chest lies left–right. */
  aspect: number;
  /**
   * Vertical centroid of the brightest pixels (top `brightFraction` of intensities, i.e. bone) in
   * the central column band (middle 20 % of the box width), in [0, 1] of the box height, 0 = top.
   * That band holds the sternum, the mediastinum and the vertebral body; the vertebra is the
   * largest bone there, so upright slices put the centroid in the lower half (> 0.5).
   */
  boneCentroidY: number;
  /** aspect > 1 and boneCentroidY > 0.5. */
  upright: boolean;
}

/**
 * Is a gray slice upright (spine at the bottom)? Two measures on the chest crop box: the body is
 * wider than deep (an axial chest is about 1.3–1.5 times wider than deep; this separates 90° turns)
 * and bone in the central band sits in the lower half (this separates up from down). Measured on
 * 30-image samples: aspect > 1 on every transformed COVID-Seg, MedSeg and LUNA slice and on no
 * untransformed Inf-Net slice; boneCentroidY > 0.5 on 30/30 COVID-Seg coronacases, 29/29 Radiopaedia,
 * 28/28 LUNA, 24/25 MedSeg, about 80 % of the COVID-CT figures (labels and arrows are bright too).
 */
export function uprightMeasure(gray: ArrayLike<number>, height: number, width: number, opts: { brightFraction?: number; cropOptions?: ChestCropOptions } = {}): UprightMeasure {
  const brightFraction = opts.brightFraction ?? 0.03;
  const crop = chestCropBox(gray, height, width, opts.cropOptions);
  const { top, left, height: bh, width: bw } = crop.box;
  const x0 = left + Math.floor(bw * 0.4), x1 = Math.max(x0 + 1, left + Math.floor(bw * 0.6));
  const hist = new Float64Array(256);
  for (let y = top; y < top + bh; y++) for (let x = x0; x < x1; x++) hist[gray[y * width + x] | 0]++;
  const total = bh * (x1 - x0);
  // Intensity cut: the smallest value with at most brightFraction of the band above or at it.
  let cut = 255, above = hist[255];
  while (cut > 1 && above + hist[cut - 1] <= brightFraction * total) above += hist[--cut];
  let sumY = 0, n = 0;
  for (let y = top; y < top + bh; y++) for (let x = x0; x < x1; x++) if (gray[y * width + x] >= cut) { sumY += y - top; n++; }
  const boneCentroidY = n > 0 ? sumY / n / Math.max(1, bh - 1) : 0.5;
  const aspect = bw / Math.max(1, bh);
  return { aspect, boneCentroidY, upright: aspect > 1 && boneCentroidY > 0.5 };
}
