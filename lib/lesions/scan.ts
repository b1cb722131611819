/**
 * A whole chest CT, scored as a scan (issue 30): the lungs found in 3D, the volumetric lesion
 * burden, and the involvement of six lung zones on the scale of the chest CT severity score.
 *
 *   volumetric burden = Σ lesion ∩ lung voxels over the scan / Σ lung voxels over the scan
 *
 * Lungs in 3D. The lung U-Net sees one slice at a time, so gas in the bowel below the lung bases,
 * or in the neck above the apices, can look like lung to it. A lung is one connected volume from
 * the apex to the base; bowel gas is not connected to it through adjacent slices. As in
 * JoHof/lungmask's post-processing, the slices' lung masks are stacked, labelled as 3D components
 * (8-connected within a slice, overlapping pixels between adjacent slices), and every component
 * below LUNG_COMPONENT_MIN of the largest one is removed (both lungs stay: they are the two largest
 * components, or one when they touch). Memory: the masks themselves, plus one slice of labels at a
 * time (the labelling runs twice instead of storing a label volume). The lesion masks are cut to the kept
 * lung in place.
 *
 * Zones, not lobes. Each lung (image side of the scan's lung midline) is cut into upper, middle and
 * lower thirds of its own craniocaudal extent. The severity score of Chung et al. (Radiology 2020)
 * grades five LOBES 0–5; we have no lobe segmentation, so we grade six ZONES on the same scale and
 * sum them to 0–30. A zone is not a lobe: the fissures are oblique, so the "upper zone" holds most
 * of the upper lobe and the top of the lower lobe, and the right middle lobe spans the middle and
 * lower zones. Lesion burden measures pneumonia-like involvement (ground glass, consolidation), not
 * COVID-19 specifically: community-acquired pneumonia has lesions too.
 */
import { connectedComponents } from "../data/preprocess";
import type { ScanGeometry } from "../data/geometry";

/** A lung component smaller than this share of the largest is not lung (bowel or neck gas, specks). */
export const LUNG_COMPONENT_MIN = 0.1;

/**
 * The series call: COVID-19-like involvement when the volumetric burden reaches this share of the
 * lung. Rule: twice the lesion-free floor, the burden that the development normal scan (COVID-CT-MD
 * normal002, no lesion) reads: 0.295 % → 0.6 % (bench/ctmd.ts, bench/RESULTS.md "A patient's chest
 * CT"). The development COVID-19 scan (P002) reads 2.78 %. A series threshold, not the slice
 * threshold of the lesion-burden score (chosen between COVID-Seg and LUNA16 slices).
 */
export const SERIES_BURDEN_THRESHOLD = 0.006;
/**
 * A single slice (no series) whose lungs cover less than this share of its body gives no burden
 * and is flagged: a slice through the abdomen or the neck has no lung to measure, and gas there
 * is not lung.
 */
export const MIN_LUNG_BODY_SHARE = 0.05;

/** The six zones, in report order. */
export const ZONES = ["right upper", "right middle", "right lower", "left upper", "left middle", "left lower"] as const;
export type ZoneName = (typeof ZONES)[number];

export type { ScanGeometry } from "../data/geometry";
export { scanGeometry } from "../data/geometry";

/** One slice's masks (0/1, row-major, one size for the whole scan), and its lung-window gray pixels for the aeration rule. */
export interface ScanSliceMasks {
  lung: Uint8Array;
  lesion: Uint8Array;
  gray?: ArrayLike<number>;
}

export interface ZoneScore {
  zone: ZoneName;
  /** Lung voxels in the zone, lesion voxels inside them. */
  lungVoxels: number;
  lesionVoxels: number;
  /** lesion / lung (0 when the zone holds no lung). */
  share: number;
  /** 0–5 on the chest CT severity score's scale (chungGrade). */
  grade: number;
}

export interface SliceScanRow {
  /** Lung pixels kept after the 3D clean-up, and those removed by it. */
  lungPixels: number;
  removedLungPixels: number;
  lesionPixels: number;
  /** lesion / lung on this slice (null without lung). */
  burden: number | null;
  /** Lung and lesion pixels of each lung (the patient's sides, or the image's when unknown: see ScanScore.patientSides). */
  right: { lung: number; lesion: number };
  left: { lung: number; lesion: number };
}

export interface ScanScore {
  slices: number;
  lungVoxels: number;
  lesionVoxels: number;
  /** Σ lesion / Σ lung (0 without lung). */
  burden: number;
  /** Volumes in mm³ (null when the spacing is unknown). */
  lungMm3: number | null;
  lesionMm3: number | null;
  zones: ZoneScore[];
  /** Σ zone grades, 0–30. */
  severity: number;
  /** The zones' sides and ends are the patient's (true) or the image's and the series order's (false: orientation unknown). */
  patientSides: boolean;
  perSlice: SliceScanRow[];
  /** The column that splits right from left, and each side's craniocaudal extent (slice indices, inclusive). */
  midline: number;
  extent: { right: [number, number] | null; left: [number, number] | null };
}

/**
 * The chest CT severity score's grade of one lobe's (here: zone's) involved share: 0 none, 1 < 5 %,
 * 2 5–25 %, 3 26–50 %, 4 51–75 %, 5 > 75 % (Chung et al., Radiology 2020).
 */
export function chungGrade(share: number): number {
  if (!(share > 0)) return 0;
  if (share < 0.05) return 1;
  if (share <= 0.25) return 2;
  if (share <= 0.5) return 3;
  if (share <= 0.75) return 4;
  return 5;
}

/** Union–find over the 2D components of all slices (ids offset per slice). */
class UnionFind {
  parent: number[] = [];
  size: number[] = [];
  add(n: number, sizes: readonly number[]): void {
    for (let k = 0; k < n; k++) {
      this.parent.push(this.parent.length);
      this.size.push(sizes[k]);
    }
  }
  find(a: number): number {
    while (this.parent[a] !== a) {
      this.parent[a] = this.parent[this.parent[a]];
      a = this.parent[a];
    }
    return a;
  }
  union(a: number, b: number): void {
    a = this.find(a);
    b = this.find(b);
    if (a === b) return;
    if (this.size[a] < this.size[b]) [a, b] = [b, a];
    this.parent[b] = a;
    this.size[a] += this.size[b];
  }
}

/**
 * 3D components of a stack of 0/1 masks (2D components joined where they overlap on adjacent
 * slices): for each slice, a keep-function over its 2D labels. `keep(rootSize, largest)` decides per
 * component. The masks are changed in place (removed pixels set to 0); returns the pixels removed per slice.
 */
export function keep3dComponents(masks: Uint8Array[], height: number, width: number, keep: (size: number, largest: number) => boolean): number[] {
  const uf = new UnionFind();
  const offsets: number[] = [];
  let prev: Int32Array | null = null;
  let prevOffset = 0;
  for (let z = 0; z < masks.length; z++) {
    const { labels, areas } = connectedComponents(masks[z], height, width);
    const count = areas.length - 1;
    const sizes = areas.slice(1);
    const offset = uf.parent.length;
    offsets.push(offset);
    uf.add(count, sizes);
    if (prev) {
      // One union per run of the same pair of labels, not per pixel.
      let la = 0, lb = 0;
      for (let i = 0; i < labels.length; i++) {
        if (!labels[i] || !prev[i] || (labels[i] === la && prev[i] === lb)) continue;
        la = labels[i];
        lb = prev[i];
        uf.union(offset + la - 1, prevOffset + lb - 1);
      }
    }
    prev = labels;
    prevOffset = offset;
  }
  let largest = 0;
  for (let c = 0; c < uf.parent.length; c++) if (uf.find(c) === c) largest = Math.max(largest, uf.size[c]);
  const removed: number[] = [];
  for (let z = 0; z < masks.length; z++) {
    // The second pass labels each slice again (the same raster order gives the same labels) rather than keeping a label volume.
    const { labels } = connectedComponents(masks[z], height, width);
    let n = 0;
    const m = masks[z];
    for (let i = 0; i < labels.length; i++) {
      if (!labels[i]) continue;
      const root = uf.find(offsets[z] + labels[i] - 1);
      if (!keep(uf.size[root], largest)) {
        m[i] = 0;
        n++;
      }
    }
    removed.push(n);
  }
  return removed;
}

/**
 * Lung holds air. In the lung window (level −600, width 1500: lib/data/dicom.ts) gray ≤ 144 is
 * below −500 HU: aerated lung (and ground glass at its lighter end), never liver, spleen or muscle.
 */
export const AERATED_GRAY_MAX = 144;
/**
 * Below the lung bases the slice-wise lung U-Net marks liver, kidneys and bowel as "lung" (it never
 * saw a slice without lungs), and at the bases that false region joins the real lung in 3D. So a
 * lung-mask pixel is kept only within this distance (mm) of an aerated lung pixel of its slice:
 * dense lesions (consolidation) next to aerated lung stay, a liver with no air beside it goes.
 * Chosen on the development scans (bench/ctmd.ts --sweep).
 */
export const AERATED_REACH_MM = 10;

/**
 * Gas is not lung. A 2D component of the lung mask's aerated pixels whose mean lung-window gray is
 * at most this (about −940 HU) is gas: stomach or bowel gas under the diaphragm, or the trachea. Lung
 * parenchyma with its vessels averages −900 to −700 HU (gray 77–111), emphysematous lung rarely
 * below −920. Removed before the aeration rule's reach is measured and before the 3D labelling, so
 * gas under a hemidiaphragm neither keeps the tissue around it nor joins the lung through the slices.
 */
export const GAS_GRAY_MAX = 70;

/** Options of scanScore; the defaults are the module's constants. */
export interface ScanScoreOptions {
  lungComponentMin?: number;
  /** mm from aerated lung a lung pixel may lie (null: no aeration rule). */
  aeratedReachMm?: number | null;
  /** Mean gray at or below which a 2D lung component is gas (null: no gas rule). */
  gasGrayMax?: number | null;
}

/** Remove the 2D components of `lung` whose mean gray is ≤ maxGray (gas); in place. Returns the pixels removed. */
export function removeGas(lung: Uint8Array, gray: ArrayLike<number>, height: number, width: number, maxGray: number): number {
  const { labels, areas } = connectedComponents(lung, height, width);
  const sum = new Float64Array(areas.length);
  for (let i = 0; i < labels.length; i++) if (labels[i]) sum[labels[i]] += gray[i];
  let removed = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] && sum[labels[i]] / areas[labels[i]] <= maxGray) {
    lung[i] = 0;
    removed++;
  }
  return removed;
}

/** Chamfer distance (3-4 weights, in pixel units) of every pixel to the nearest pixel of `seed`. */
export function distanceFrom(seed: Uint8Array, height: number, width: number): Float32Array {
  const INF = 1e9;
  const d = new Float32Array(height * width);
  for (let i = 0; i < d.length; i++) d[i] = seed[i] ? 0 : INF;
  const a = 1, b = Math.SQRT2;
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const i = y * width + x;
    let v = d[i];
    if (v === 0) continue;
    if (x > 0) v = Math.min(v, d[i - 1] + a);
    if (y > 0) {
      v = Math.min(v, d[i - width] + a);
      if (x > 0) v = Math.min(v, d[i - width - 1] + b);
      if (x < width - 1) v = Math.min(v, d[i - width + 1] + b);
    }
    d[i] = v;
  }
  for (let y = height - 1; y >= 0; y--) for (let x = width - 1; x >= 0; x--) {
    const i = y * width + x;
    let v = d[i];
    if (v === 0) continue;
    if (x < width - 1) v = Math.min(v, d[i + 1] + a);
    if (y < height - 1) {
      v = Math.min(v, d[i + width] + a);
      if (x < width - 1) v = Math.min(v, d[i + width + 1] + b);
      if (x > 0) v = Math.min(v, d[i + width - 1] + b);
    }
    d[i] = v;
  }
  return d;
}

/**
 * Keep the lung-mask pixels within `reachPx` of aerated lung of the same slice; in place. Aerated
 * lung: the mask's pixels at gray ≤ AERATED_GRAY_MAX, less their 2D components whose mean gray is
 * ≤ gasGrayMax (gas: stomach, bowel, trachea), so that dense tissue around a gas bubble is not kept
 * for the bubble's sake. Returns the pixels removed.
 */
export function keepAerated(lung: Uint8Array, gray: ArrayLike<number>, height: number, width: number, reachPx: number, gasGrayMax: number | null = GAS_GRAY_MAX): number {
  const n = height * width;
  const air = new Uint8Array(n);
  for (let i = 0; i < n; i++) if (lung[i] && gray[i] <= AERATED_GRAY_MAX) air[i] = 1;
  if (gasGrayMax !== null) removeGas(air, gray, height, width, gasGrayMax);
  let any = false;
  for (let i = 0; i < n && !any; i++) any = air[i] === 1;
  let removed = 0;
  const d = any ? distanceFrom(air, height, width) : null;
  for (let i = 0; i < n; i++) if (lung[i] && (!d || d[i] > reachPx)) {
    lung[i] = 0;
    removed++;
  }
  return removed;
}

/**
 * Score one scan from its slices' lung and lesion masks (in series order, one size). The lung masks
 * are cleaned in 3D in place; lesions count only inside the kept lung.
 */
export function scanScore(slices: readonly ScanSliceMasks[], height: number, width: number, g: ScanGeometry, o: ScanScoreOptions = {}): ScanScore {
  const n = height * width;
  for (const [k, s] of slices.entries()) if (s.lung.length !== n || s.lesion.length !== n) throw new Error(`scanScore: slice ${k + 1} has masks of ${s.lung.length} and ${s.lesion.length} pixels, the scan is ${height}×${width}: every slice of a series must have one size`);
  const lungMin = o.lungComponentMin ?? LUNG_COMPONENT_MIN;
  // Lung holds air: pixels far from aerated lung go first (slices without gray pixels are left as they are).
  const reachMm = o.aeratedReachMm === undefined ? AERATED_REACH_MM : o.aeratedReachMm;
  const pixelMm = g.spacing ? (g.spacing[0] + g.spacing[1]) / 2 : null;
  const gasMax = o.gasGrayMax === undefined ? GAS_GRAY_MAX : o.gasGrayMax;
  const airRemoved = slices.map((s) => {
    if (!s.gray) return 0;
    if (reachMm !== null) return keepAerated(s.lung, s.gray, height, width, pixelMm ? reachMm / pixelMm : reachMm, gasMax);
    return gasMax !== null ? removeGas(s.lung, s.gray, height, width, gasMax) : 0;
  });
  const removed3d = keep3dComponents(slices.map((s) => s.lung), height, width, (size, largest) => size >= lungMin * largest);
  const removed = removed3d.map((r, z) => r + airRemoved[z]);
  // Lesions inside the kept lung only (in place: no second copy of the masks).
  const inside = slices.map((s) => {
    for (let i = 0; i < n; i++) s.lesion[i] &= s.lung[i];
    return s.lesion;
  });
  // The midline: the centre of the lung's bounding box over the whole scan.
  let x0 = width, x1 = -1;
  for (const s of slices) for (let i = 0; i < n; i++) if (s.lung[i]) {
    const x = i % width;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
  }
  const midline = x1 < 0 ? width / 2 : (x0 + x1) / 2;
  // Image side 0 = columns ≤ midline (image left), 1 = image right. Patient right is image left in the radiological view.
  const rightSide = g.rightOnImageLeft === false ? 1 : 0;
  const extents: ([number, number] | null)[] = [null, null];
  const perSlice: SliceScanRow[] = [];
  const sideLung: number[][] = slices.map(() => [0, 0]);
  const sideLesion: number[][] = slices.map(() => [0, 0]);
  let lungVoxels = 0, lesionVoxels = 0;
  for (let z = 0; z < slices.length; z++) {
    const lung = slices[z].lung, les = inside[z];
    let l = 0, e = 0;
    for (let i = 0; i < n; i++) {
      if (!lung[i]) continue;
      const side = i % width <= midline ? 0 : 1;
      l++;
      sideLung[z][side]++;
      if (les[i]) {
        e++;
        sideLesion[z][side]++;
      }
    }
    for (const side of [0, 1]) if (sideLung[z][side]) {
      const ex = extents[side];
      extents[side] = ex ? [ex[0], z] : [z, z];
    }
    lungVoxels += l;
    lesionVoxels += e;
    perSlice.push({
      lungPixels: l,
      removedLungPixels: removed[z],
      lesionPixels: e,
      burden: l ? e / l : null,
      right: { lung: sideLung[z][rightSide], lesion: sideLesion[z][rightSide] },
      left: { lung: sideLung[z][1 - rightSide], lesion: sideLesion[z][1 - rightSide] },
    });
  }
  const zones: ZoneScore[] = [];
  for (const zone of ZONES) {
    const [sideName, level] = zone.split(" ") as ["right" | "left", "upper" | "middle" | "lower"];
    const side = sideName === "right" ? rightSide : 1 - rightSide;
    const ex = extents[side];
    let lungV = 0, lesV = 0;
    if (ex) {
      const len = ex[1] - ex[0] + 1;
      // Thirds of the side's own extent, counted from the superior end.
      const third = level === "upper" ? 0 : level === "middle" ? 1 : 2;
      for (let z = ex[0]; z <= ex[1]; z++) {
        const fromTop = g.superiorLast === true ? ex[1] - z : z - ex[0];
        if (Math.min(2, Math.floor((3 * fromTop) / len)) !== third) continue;
        lungV += sideLung[z][side];
        lesV += sideLesion[z][side];
      }
    }
    const share = lungV ? lesV / lungV : 0;
    zones.push({ zone, lungVoxels: lungV, lesionVoxels: lesV, share, grade: chungGrade(share) });
  }
  const voxelMm3 = g.spacing ? g.spacing[0] * g.spacing[1] * g.spacing[2] : null;
  return {
    slices: slices.length,
    lungVoxels,
    lesionVoxels,
    burden: lungVoxels ? lesionVoxels / lungVoxels : 0,
    lungMm3: voxelMm3 === null ? null : lungVoxels * voxelMm3,
    lesionMm3: voxelMm3 === null ? null : lesionVoxels * voxelMm3,
    zones,
    severity: zones.reduce((a, z) => a + z.grade, 0),
    patientSides: g.rightOnImageLeft !== null && g.superiorLast !== null,
    perSlice,
    midline,
    extent: { right: extents[rightSide], left: extents[1 - rightSide] },
  };
}
