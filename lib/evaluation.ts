/**
 * Binary classification metrics for COVID vs NonCOVID.
 *
 * Conventions (one place, so every notebook agrees):
 * - `labels[i]` is 1 for COVID, 0 for NonCOVID; `scores[i]` is the model's P(COVID).
 * - COVID is the positive class; an image is predicted COVID when score ≥ threshold (default 0.5).
 *   At 0.5 this equals argmax over [P(COVID), P(NonCOVID)] with ties going to COVID — the official
 *   code's `output.argmax` with COVID at class index 0.
 * - The official COVID-CT code (UCSD-AI4H, DenseNet_predict.py) counts TP as "predicted 1 and
 *   target 1" with class 1 = CT_NonCOVID, i.e. NonCOVID is its positive class, and its AUC is of
 *   P(NonCOVID). `positive: "noncovid"` reports precision/recall/F1/specificity in that convention
 *   from the same predictions (accuracy and AUC do not depend on it).
 * - 0/0 in precision, recall, specificity or F1 gives 0, as scikit-learn's default
 *   (zero_division="warn" → 0); AUC of a one-class sample is NaN with `aucDefined: false`.
 */
import seedrandom from "seedrandom";

export type PositiveClass = "covid" | "noncovid";

export interface Confusion {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export interface BinaryMetrics extends Confusion {
  n: number;
  threshold: number;
  positive: PositiveClass;
  accuracy: number;
  precision: number;
  /** Sensitivity, true positive rate. */
  recall: number;
  f1: number;
  specificity: number;
  /** Area under the ROC curve; NaN when only one class is present (see aucDefined). */
  auc: number;
  aucDefined: boolean;
}

function check(labels: ArrayLike<number>, scores: ArrayLike<number>): void {
  if (labels.length !== scores.length) {
    throw new Error(`labels (${labels.length}) and scores (${scores.length}) differ in length`);
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 0 && labels[i] !== 1) throw new Error(`labels[${i}] = ${labels[i]}; labels must be 0 (NonCOVID) or 1 (COVID)`);
    if (Number.isNaN(scores[i])) throw new Error(`scores[${i}] is NaN`);
  }
}

/** a / b, or 0 when b = 0 (scikit-learn's zero_division default). */
function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

/** Confusion counts with COVID (label 1) as positive; predicted positive when score ≥ threshold. */
export function confusionMatrix(labels: ArrayLike<number>, scores: ArrayLike<number>, threshold = 0.5): Confusion {
  check(labels, scores);
  const c: Confusion = { tp: 0, fp: 0, tn: 0, fn: 0 };
  for (let i = 0; i < labels.length; i++) {
    const pred = scores[i] >= threshold;
    if (labels[i] === 1) pred ? c.tp++ : c.fn++;
    else pred ? c.fp++ : c.tn++;
  }
  return c;
}

/** The same predictions seen with the other class as positive (TP↔TN, FP↔FN). */
export function swapPositive(c: Confusion): Confusion {
  return { tp: c.tn, fp: c.fn, tn: c.tp, fn: c.fp };
}

export const accuracy = (c: Confusion): number => ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn);
export const precision = (c: Confusion): number => ratio(c.tp, c.tp + c.fp);
export const recall = (c: Confusion): number => ratio(c.tp, c.tp + c.fn);
export const specificity = (c: Confusion): number => ratio(c.tn, c.tn + c.fp);
export function f1(c: Confusion): number {
  // 2TP / (2TP + FP + FN) equals 2PR/(P+R) and is 0 rather than NaN when TP = 0.
  return ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn);
}

/** All threshold metrics plus AUC. */
export function binaryMetrics(
  labels: ArrayLike<number>,
  scores: ArrayLike<number>,
  opts: { threshold?: number; positive?: PositiveClass } = {},
): BinaryMetrics {
  const threshold = opts.threshold ?? 0.5;
  const positive = opts.positive ?? "covid";
  const covid = confusionMatrix(labels, scores, threshold);
  const c = positive === "covid" ? covid : swapPositive(covid);
  const a = rocAuc(labels, scores);
  return {
    ...c,
    n: labels.length,
    threshold,
    positive,
    accuracy: accuracy(c),
    precision: precision(c),
    recall: recall(c),
    f1: f1(c),
    specificity: specificity(c),
    auc: a.auc,
    aucDefined: a.defined,
  };
}

/** binaryMetrics in the official code's convention (NonCOVID positive). */
export function officialMetrics(labels: ArrayLike<number>, scores: ArrayLike<number>, threshold = 0.5): BinaryMetrics {
  return binaryMetrics(labels, scores, { threshold, positive: "noncovid" });
}

// ---------------------------------------------------------------------------------------------
// ROC

export interface AucResult {
  /** NaN when undefined. */
  auc: number;
  defined: boolean;
  /** Why it is undefined. */
  reason?: string;
  nPos: number;
  nNeg: number;
}

/**
 * Exact ROC AUC = Mann–Whitney U / (nPos·nNeg): the probability that a random COVID image scores
 * higher than a random NonCOVID one, ties counting 1/2 (midranks). Equal to the trapezoidal area
 * under `rocCurve` and to scikit-learn's roc_auc_score. O(n log n).
 */
export function rocAuc(labels: ArrayLike<number>, scores: ArrayLike<number>): AucResult {
  check(labels, scores);
  const n = labels.length;
  let nPos = 0;
  for (let i = 0; i < n; i++) nPos += labels[i];
  const nNeg = n - nPos;
  if (nPos === 0 || nNeg === 0) {
    return { auc: NaN, defined: false, reason: `AUC needs both classes; got ${nPos} COVID and ${nNeg} NonCOVID`, nPos, nNeg };
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let rankSumPos = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const midrank = (i + j) / 2 + 1; // ranks are 1-based
    for (let k = i; k <= j; k++) if (labels[order[k]] === 1) rankSumPos += midrank;
    i = j + 1;
  }
  const u = rankSumPos - (nPos * (nPos + 1)) / 2;
  return { auc: u / (nPos * nNeg), defined: true, nPos, nNeg };
}

/** AUC as a number (NaN for a one-class sample), the form bootstrapCI takes. */
export function auc(labels: ArrayLike<number>, scores: ArrayLike<number>): number {
  return rocAuc(labels, scores).auc;
}

export interface RocPoint {
  /** Predicted COVID when score ≥ threshold; the first point has threshold +Infinity. */
  threshold: number;
  fpr: number;
  tpr: number;
}

/**
 * ROC points at every distinct score (descending), from (0,0) at +∞ to (1,1) at the lowest score.
 * Tied scores form one point, so ties give diagonal segments. One-class input gives NaN rates for
 * the missing class.
 */
export function rocCurve(labels: ArrayLike<number>, scores: ArrayLike<number>): RocPoint[] {
  check(labels, scores);
  const n = labels.length;
  let nPos = 0;
  for (let i = 0; i < n; i++) nPos += labels[i];
  const nNeg = n - nPos;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const pts: RocPoint[] = [{ threshold: Infinity, fpr: nNeg ? 0 : NaN, tpr: nPos ? 0 : NaN }];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < n; ) {
    const s = scores[order[i]];
    while (i < n && scores[order[i]] === s) {
      labels[order[i]] === 1 ? tp++ : fp++;
      i++;
    }
    pts.push({ threshold: s, fpr: nNeg ? fp / nNeg : NaN, tpr: nPos ? tp / nPos : NaN });
  }
  return pts;
}

/** Trapezoidal area under ROC points (sorted as rocCurve returns them). */
export function trapezoidAuc(points: readonly RocPoint[]): number {
  let a = 0;
  for (let i = 1; i < points.length; i++) {
    a += ((points[i].fpr - points[i - 1].fpr) * (points[i].tpr + points[i - 1].tpr)) / 2;
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Threshold selection

export type ThresholdCriterion = "youden" | "f1";

export interface ThresholdChoice {
  threshold: number;
  criterion: ThresholdCriterion;
  /** Value of the criterion at the threshold (J = TPR − FPR, or F1 with COVID positive). */
  value: number;
}

/**
 * Pick a decision threshold on validation data, to be applied unchanged to the test set.
 *
 * Candidates are the distinct scores (predict COVID when score ≥ t), so the choice is exact on the
 * data it is chosen on. `"youden"` (default) maximises Youden's J = sensitivity + specificity − 1,
 * which does not depend on class balance; `"f1"` maximises F1 with COVID positive. Among equally
 * good thresholds the one closest to 0.5 (the argmax rule) wins, then the larger one.
 * One-class data cannot define J; the default 0.5 is returned with value NaN.
 */
export function chooseThreshold(
  labels: ArrayLike<number>,
  scores: ArrayLike<number>,
  criterion: ThresholdCriterion = "youden",
): ThresholdChoice {
  check(labels, scores);
  const pts = rocCurve(labels, scores).slice(1); // +∞ predicts nothing positive; never useful
  let nPos = 0;
  for (let i = 0; i < labels.length; i++) nPos += labels[i];
  const nNeg = labels.length - nPos;
  if (pts.length === 0 || (criterion === "youden" && (nPos === 0 || nNeg === 0))) {
    return { threshold: 0.5, criterion, value: NaN };
  }
  let best: ThresholdChoice | undefined;
  const eps = 1e-12;
  for (const p of pts) {
    const value =
      criterion === "youden" ? p.tpr - p.fpr : f1({ tp: p.tpr * nPos, fn: nPos - p.tpr * nPos, fp: p.fpr * nNeg, tn: nNeg - p.fpr * nNeg });
    const better =
      !best ||
      value > best.value + eps ||
      (Math.abs(value - best.value) <= eps &&
        (Math.abs(p.threshold - 0.5) < Math.abs(best.threshold - 0.5) ||
          (Math.abs(p.threshold - 0.5) === Math.abs(best.threshold - 0.5) && p.threshold > best.threshold)));
    if (better) best = { threshold: p.threshold, criterion, value };
  }
  return best!;
}

// ---------------------------------------------------------------------------------------------
// Uncertainty

export type MetricFn = (labels: number[], scores: number[]) => number;

/** Metric functions for bootstrapCI: `metricFn("f1", 0.42)`. */
export function metricFn(name: "accuracy" | "precision" | "recall" | "f1" | "specificity" | "auc", threshold = 0.5): MetricFn {
  if (name === "auc") return auc;
  const f = { accuracy, precision, recall, f1, specificity }[name];
  return (l, s) => f(confusionMatrix(l, s, threshold));
}

export interface BootstrapResult {
  /** The metric on the full sample. */
  estimate: number;
  lower: number;
  upper: number;
  alpha: number;
  /** Resamples drawn. */
  n: number;
  /** Resamples where the metric was NaN (e.g. AUC of a one-class resample); left out. */
  nInvalid: number;
  seed: number | string;
  stratified: boolean;
}

/**
 * Percentile bootstrap confidence interval (1 − alpha) of a metric over images, reproducible from
 * the seed (seedrandom). `stratified: true` resamples within each class, keeping the class counts
 * (no one-class resamples); default false, the plain nonparametric bootstrap. Percentiles use
 * linear interpolation between order statistics (numpy's default).
 */
export function bootstrapCI(
  labels: ArrayLike<number>,
  scores: ArrayLike<number>,
  metric: MetricFn,
  opts: { n?: number; seed?: number | string; alpha?: number; stratified?: boolean } = {},
): BootstrapResult {
  check(labels, scores);
  const n = opts.n ?? 1000;
  const alpha = opts.alpha ?? 0.05;
  const seed = opts.seed ?? 0;
  const stratified = opts.stratified ?? false;
  const L = Array.from(labels);
  const S = Array.from(scores);
  const rng = seedrandom(String(seed));
  const groups = stratified ? [0, 1].map((c) => L.flatMap((l, i) => (l === c ? [i] : []))) : [L.map((_, i) => i)];
  const values: number[] = [];
  let nInvalid = 0;
  const bl: number[] = new Array(L.length);
  const bs: number[] = new Array(L.length);
  for (let b = 0; b < n; b++) {
    let k = 0;
    for (const g of groups) {
      for (let j = 0; j < g.length; j++) {
        const i = g[Math.floor(rng() * g.length)];
        bl[k] = L[i];
        bs[k] = S[i];
        k++;
      }
    }
    const v = metric(bl, bs);
    if (Number.isNaN(v)) nInvalid++;
    else values.push(v);
  }
  values.sort((a, b) => a - b);
  return {
    estimate: metric(L, S),
    lower: quantile(values, alpha / 2),
    upper: quantile(values, 1 - alpha / 2),
    alpha,
    n,
    nInvalid,
    seed,
    stratified,
  };
}

/** Quantile of sorted values with linear interpolation (numpy "linear"); NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export interface MeanSd {
  mean: number;
  /** Sample standard deviation (n − 1); NaN for fewer than two values. */
  sd: number;
  n: number;
}

/** Mean and sample SD over runs (e.g. seeds), as "mean ± sd" tables report them. */
export function meanSd(values: ArrayLike<number>): MeanSd {
  const n = values.length;
  if (n === 0) return { mean: NaN, sd: NaN, n };
  let m = 0;
  for (let i = 0; i < n; i++) m += values[i];
  m /= n;
  if (n < 2) return { mean: m, sd: NaN, n };
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (values[i] - m) ** 2;
  return { mean: m, sd: Math.sqrt(ss / (n - 1)), n };
}

// ---------------------------------------------------------------------------------------------
// Segmentation (Study II: lung and lesion masks)
//
// Conventions:
// - A mask is a row-major array of per-pixel values; a pixel is inside when value ≥ threshold
//   (default 0.5: binary 0/1 masks and probabilities; pass 128 for 8-bit 0/255 masks, which is also
//   how COVID-Seg's pseudo lesion masks must be read).
// - Dice = 2|P∩R| / (|P| + |R|), IoU = |P∩R| / |P∪R|. Both masks empty: 1 — nothing to find and
//   nothing predicted is perfect agreement (negatives have all-zero lesion masks that are true
//   labels, so a model that predicts nothing there must not be punished). One empty: 0.
// - Coverage = |P∩R| / |R|, the share of reference pixels inside the predicted mask (e.g. lesion
//   pixels inside the lung mask). An empty reference gives NaN ("nothing to cover"): it is left out
//   of per-image means and adds nothing to pooled coverage.
// - Per image: the metric of each image, averaged (mean of the defined values). Pooled: counts
//   summed over all images first, then one ratio — large masks weigh more, and empty-reference images
//   cannot dominate (the figure the Study II acceptance target is stated in).

export interface MaskOverlap {
  /** |P ∩ R| in pixels. */
  intersection: number;
  /** |P|: predicted pixels. */
  predArea: number;
  /** |R|: reference pixels. */
  refArea: number;
  /** Pixels compared. */
  n: number;
}

export interface SegmentationMetrics extends MaskOverlap {
  dice: number;
  iou: number;
  /** NaN when the reference is empty. */
  coverage: number;
}

export interface MaskThresholds {
  /** Threshold of the predicted mask (default 0.5). */
  predThreshold?: number;
  /** Threshold of the reference mask (default 0.5). */
  refThreshold?: number;
}

/** Pixel counts of a predicted mask against a reference of the same size. */
export function maskOverlap(pred: ArrayLike<number>, ref: ArrayLike<number>, opts: MaskThresholds = {}): MaskOverlap {
  if (pred.length !== ref.length) {
    throw new Error(`maskOverlap: predicted mask has ${pred.length} pixels, reference ${ref.length}; resize one to the other's size first`);
  }
  const tp = opts.predThreshold ?? 0.5;
  const tr = opts.refThreshold ?? 0.5;
  let intersection = 0, predArea = 0, refArea = 0;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i] >= tp, r = ref[i] >= tr;
    if (Number.isNaN(pred[i]) || Number.isNaN(ref[i])) throw new Error(`maskOverlap: NaN at pixel ${i}`);
    if (p) predArea++;
    if (r) refArea++;
    if (p && r) intersection++;
  }
  return { intersection, predArea, refArea, n: pred.length };
}

/** Dice, IoU and coverage from counts (see the conventions above). */
export function overlapMetrics(o: MaskOverlap): SegmentationMetrics {
  const sum = o.predArea + o.refArea;
  const union = sum - o.intersection;
  return {
    ...o,
    dice: sum === 0 ? 1 : (2 * o.intersection) / sum,
    iou: union === 0 ? 1 : o.intersection / union,
    coverage: o.refArea === 0 ? NaN : o.intersection / o.refArea,
  };
}

/** Dice, IoU and coverage of one predicted mask against its reference. */
export function segmentationMetrics(pred: ArrayLike<number>, ref: ArrayLike<number>, opts: MaskThresholds = {}): SegmentationMetrics {
  return overlapMetrics(maskOverlap(pred, ref, opts));
}

export interface SegmentationSummary {
  /** Images summarised. */
  n: number;
  /** Images with a non-empty reference (those that define coverage). */
  nWithReference: number;
  /** Counts summed over images, then one ratio each. */
  pooled: SegmentationMetrics;
  /** Mean over images of each per-image metric (coverage over images with a reference). */
  perImage: { dice: MeanSd; iou: MeanSd; coverage: MeanSd };
}

/** Pooled and per-image summaries of many images' overlaps (from maskOverlap / segmentationMetrics). */
export function summariseSegmentation(overlaps: readonly MaskOverlap[]): SegmentationSummary {
  const total: MaskOverlap = { intersection: 0, predArea: 0, refArea: 0, n: 0 };
  for (const o of overlaps) {
    total.intersection += o.intersection;
    total.predArea += o.predArea;
    total.refArea += o.refArea;
    total.n += o.n;
  }
  const each = overlaps.map(overlapMetrics);
  const defined = each.filter((m) => !Number.isNaN(m.coverage));
  return {
    n: overlaps.length,
    nWithReference: defined.length,
    pooled: overlapMetrics(total),
    perImage: {
      dice: meanSd(each.map((m) => m.dice)),
      iou: meanSd(each.map((m) => m.iou)),
      coverage: meanSd(defined.map((m) => m.coverage)),
    },
  };
}
