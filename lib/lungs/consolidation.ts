/**
 * Synthetic consolidation for the lung U-Net's training (issue 16). The radiologists' slices show
 * mostly ground-glass lesions; MedSeg and the COVID-CT figures also show dense consolidation at the
 * lung's edge, as bright as the chest wall next to it. A U-Net that never saw that look cuts it out
 * of the lung (MedSeg lesion coverage 0.85 without this step). So each training slice also appears
 * with a few blobs inside its lung mask, at the lung's edge, painted with the brightness of the
 * slice's own non-lung tissue; the target mask is unchanged: that tissue is still lung.
 */
import { Rng, rngFor } from "../util/random";

export interface ConsolidationOptions {
  /** Blobs per synthetic slice, drawn from [1, maxBlobs] (default 3). */
  maxBlobs?: number;
  /** Blob radius as a share of the side, drawn from [minRadius, maxRadius] (default 0.04–0.12). */
  minRadius?: number;
  maxRadius?: number;
  /** Quantile of the non-lung pixels near the lungs that gives the blob's brightness (default 0.7: soft tissue). */
  tissueQuantile?: number;
}

const DEFAULTS: Required<ConsolidationOptions> = { maxBlobs: 3, minRadius: 0.04, maxRadius: 0.12, tissueQuantile: 0.7 };

/**
 * A copy of `image` (side × side gray bytes, normalised as the U-Net sees it) with synthetic
 * consolidation inside `mask` (0/1, lung): discs centred on lung-edge pixels, clipped to the lung,
 * with a 2-pixel soft rim and ±6 grey-level noise. A slice without lung comes back unchanged.
 */
export function synthConsolidation(image: Uint8Array, mask: Uint8Array, side: number, rng: Rng, options: ConsolidationOptions = {}): Uint8Array {
  const o = { ...DEFAULTS, ...options };
  if (image.length !== side * side || mask.length !== side * side) throw new Error(`synthConsolidation: ${image.length} pixels and a mask of ${mask.length} for ${side}×${side}`);
  const out = image.slice();
  const edge: number[] = [];
  let x0 = side, x1 = -1, y0 = side, y1 = -1;
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
    const i = y * side + x;
    if (!mask[i]) continue;
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    if (x === 0 || y === 0 || x === side - 1 || y === side - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - side] || !mask[i + side]) edge.push(i);
  }
  if (edge.length === 0) return out;
  // The slice's own tissue brightness: non-lung pixels inside the lungs' bounding box (chest wall, mediastinum).
  const tissue: number[] = [];
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) if (!mask[y * side + x]) tissue.push(image[y * side + x]);
  if (tissue.length === 0) return out;
  tissue.sort((a, b) => a - b);
  const level = tissue[Math.min(tissue.length - 1, Math.floor(o.tissueQuantile * tissue.length))];
  const blobs = 1 + Math.floor(rng() * o.maxBlobs);
  for (let b = 0; b < blobs; b++) {
    const c = edge[Math.floor(rng() * edge.length)];
    const cy = Math.floor(c / side), cx = c % side;
    const r = side * (o.minRadius + rng() * (o.maxRadius - o.minRadius));
    const R = Math.ceil(r + 2);
    for (let y = Math.max(0, cy - R); y <= Math.min(side - 1, cy + R); y++) for (let x = Math.max(0, cx - R); x <= Math.min(side - 1, cx + R); x++) {
      const i = y * side + x;
      if (!mask[i]) continue;
      const a = Math.max(0, Math.min(1, (r - Math.hypot(y - cy, x - cx)) / 2));
      if (a === 0) continue;
      const v = level + (rng() - 0.5) * 12;
      out[i] = Math.max(0, Math.min(255, Math.round((1 - a) * out[i] + a * v)));
    }
  }
  return out;
}

/**
 * A copy of `image` whose radiologist-marked lesion pixels (`lesion`, 0/1, inside the lung) are
 * made dense: blended towards the slice's own tissue brightness (the same level as
 * synthConsolidation) with strength drawn from [0.6, 1], ±6 grey-level noise. Real lesion shapes
 * and places (subpleural, dependent) with the look of consolidation; the lung target is unchanged
 * (the radiologists' lung masks include the lesions). A slice without lesion comes back unchanged.
 */
export function densifyLesions(image: Uint8Array, mask: Uint8Array, lesion: Uint8Array, side: number, rng: Rng, options: Pick<ConsolidationOptions, "tissueQuantile"> = {}): Uint8Array {
  const q = options.tissueQuantile ?? DEFAULTS.tissueQuantile;
  if (image.length !== side * side || mask.length !== side * side || lesion.length !== side * side) throw new Error(`densifyLesions: ${image.length} pixels, masks of ${mask.length} and ${lesion.length} for ${side}×${side}`);
  const out = image.slice();
  let x0 = side, x1 = -1, y0 = side, y1 = -1, n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i]) { const y = Math.floor(i / side), x = i % side; x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  for (let i = 0; i < lesion.length; i++) n += lesion[i] && mask[i] ? 1 : 0;
  if (n === 0 || x1 < 0) return out;
  const tissue: number[] = [];
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) if (!mask[y * side + x]) tissue.push(image[y * side + x]);
  if (tissue.length === 0) return out;
  tissue.sort((a, b) => a - b);
  const level = tissue[Math.min(tissue.length - 1, Math.floor(q * tissue.length))];
  const a = 0.6 + 0.4 * rng();
  for (let i = 0; i < out.length; i++) {
    if (!(lesion[i] && mask[i])) continue;
    const v = level + (rng() - 0.5) * 12;
    out[i] = Math.max(0, Math.min(255, Math.round((1 - a) * out[i] + a * v)));
  }
  return out;
}

/** Deterministic per (seed, slice id, copy): the same run draws the same blobs. */
export function consolidationRng(seed: number, id: string, copy: number): Rng {
  return rngFor("consolidation", seed, id, copy);
}
