/**
 * Is a slice upright? The check behind every source's orientation transform (lib/data/sources.ts)
 * and the orientation gallery of notebook 01.
 */
import { chestCropBox, ChestCropOptions } from "./preprocess";

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
