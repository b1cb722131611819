/**
 * The lesion segmenter (beyond the paper, notebook 05): the lung segmenter's residual U-Net and
 * engine (lib/segmenter/engine.ts) with the lesion target — the RADIOLOGISTS' infection masks:
 *   training    MedSeg train/ (50 slices) + the expert slices of covid19-ct-seg-lungs outside the
 *               lung split's validation and test blocks;
 *   validation  expert blocks 5, 10 (checkpoint and mask threshold), and every k-th MedSeg train
 *               slice where the profile says (medsegValidationEvery): the blocks alone did not track MedSeg;
 *   test        expert blocks 3, 7, 12, and MedSeg test/ (48 slices: Inf-Net's split, so its
 *               published Dice of 0.739 there is the anchor). Never in training or selection.
 * Measured: Dice/IoU pooled and per slice at each file's size; at the slice level, sensitivity
 * (a lesion found on a slice the radiologists marked) and, since every radiologist slice holds a
 * lesion, the share of LUNA16 slices (non-COVID, no infection) where a lesion is "found" as the
 * specificity proxy. Masks are thresholded probabilities cut to the body (outside air is never lesion).
 * One run directory per (profile, seed) through openRun: runs/lesions/expert/<profile>/resunet-seed<N>.
 */
import * as path from "path";
import { PROJECT_ROOT, resolveLunaRoot, resolveMedsegRoot, resolveSegLungsRoot } from "../config";
import { listLuna, listMedsegSlices, listSegLungs, SourceName } from "../data/sources";
import { maskOverlap, MaskOverlap, overlapMetrics } from "../evaluation";
import { bodyHull } from "../lungs/classical";
import { expertSplit, LUNG_SPLIT } from "../lungs/segmenter";
import { LUNG_INPUT_NORMALISATION, LungInputNormalisation, probabilitiesToMask, UprightSlice } from "../lungs/slices";
import { dataChecksums, Item, loadSegmenter, OverlapSummary, overlapSummary, pick, predictItems, referenceSource, Segmenter, SegmenterMetrics, SegmenterPrediction, SegmenterRunConfig, SegmenterRunResult, SegmenterTarget, THRESHOLD_GRID, trainSegmenter } from "../segmenter/engine";
import { lesionMask } from "../segmenter/reference";
import { ProfileName } from "../training/profiles";
import { getLesionProfile, LesionProfile } from "./profiles";

/** Bump when served lesion masks change for the same model and image. */
export const LESION_CACHE_VERSION = 1;
/** DiskCache namespace of the served lesion masks. */
export const LESION_CACHE_NAMESPACE = "lesion-masks";
/** Inf-Net (Fan et al., IEEE TMI 2020, Table I): Dice 0.739 on the same 48 MedSeg test slices — the anchor row. */
export const INF_NET_MEDSEG_DICE = 0.739;

export interface LesionSets {
  train: Item[];
  /** MedSeg train slices among `train` (the rest are expert training blocks). */
  trainMedseg: number;
  val: Item[];
  /** The expert test blocks. */
  test: Item[];
  medsegTest: Item[];
  /** LUNA16 slices: non-COVID, no infection mask (the slice-level specificity proxy). */
  lesionFree: Item[];
}

/** One held-out set measured against the radiologists. */
export interface LesionSetScore extends OverlapSummary {
  /** Slice level: the radiologists marked a lesion (every slice here) and the mask holds more than minLesionShare of the image. */
  detection: { sensitivity: number; found: number; missed: number };
  perSlice: { id: string; dice: number; iou: number; predShare: number; refShare: number }[];
}

export interface LesionEvaluation {
  /** Chosen on the validation blocks from THRESHOLD_GRID (pooled Dice at the files' size). */
  threshold: number;
  thresholds: { threshold: number; valDice: number }[];
  minLesionShare: number;
  val: LesionSetScore;
  expertTest: LesionSetScore;
  medsegTest: LesionSetScore;
  /** LUNA16 slices where the mask holds more than minLesionShare: specificity proxy = 1 − withLesion / n. */
  lesionFree: { n: number; withLesion: number; specificity: number };
}

export interface LesionFacts {
  labels: "radiologists";
  split: typeof LUNG_SPLIT;
  counts: { trainMedseg: number; trainExpert: number; val: number; valMedseg: number; test: number; medsegTest: number; lesionFree: number };
}

export type LesionMetrics = SegmenterMetrics<LesionEvaluation, LesionFacts>;
export type LesionRunResult = SegmenterRunResult<LesionMetrics>;

export function defaultLesionRunDir(profile: ProfileName, seed: number): string {
  return path.join(PROJECT_ROOT, "runs", "lesions", "expert", profile, `resunet-seed${seed}`);
}

/** The sets of a lesion run: MedSeg train + expert training blocks; validation and test blocks as the lung split; MedSeg test; LUNA16 lesion-free slices. */
export async function lesionSets(profile: LesionProfile): Promise<LesionSets> {
  const asItem = (m: { id: string; path: string; source: SourceName }): Item => ({ id: m.id, path: m.path, source: m.source });
  const expert = expertSplit(listSegLungs());
  const k = profile.medsegValidationEvery ?? 0;
  const medseg = listMedsegSlices("train").map(asItem);
  const medVal = k > 0 ? medseg.filter((_, i) => i % k === k - 1) : [];
  const medTrain = pick(medseg.filter((m) => !medVal.includes(m)), profile.limit);
  const train = [...medTrain, ...pick(expert.train.map(asItem), profile.limit)];
  return {
    train,
    trainMedseg: medTrain.length,
    val: [...pick(expert.val.map(asItem), profile.limit), ...pick(medVal, profile.limit)],
    test: pick(expert.test.map(asItem), profile.limit),
    medsegTest: pick(listMedsegSlices("test").map(asItem), profile.limit),
    lesionFree: pick(listLuna().map(asItem), profile.lesionFreeSlices),
  };
}

/** The served lesion mask of an upright slice: probabilities resized to its size, thresholded, cut to the body hull. */
export async function lesionMaskOf(prob: ArrayLike<number>, side: number, s: UprightSlice, threshold: number): Promise<Uint8Array> {
  const m = await probabilitiesToMask(prob, side, s.height, s.width, threshold);
  const body = bodyHull(s.gray, s.height, s.width);
  if (body) for (let i = 0; i < m.length; i++) m[i] &= body[i];
  return m;
}

const shareOf = (m: ArrayLike<number>) => {
  let a = 0;
  for (let i = 0; i < m.length; i++) a += m[i] ? 1 : 0;
  return a / Math.max(1, m.length);
};

/** A slice "has a lesion" when its mask holds more than minShare of the image. */
export function hasLesion(mask: ArrayLike<number>, minShare: number): boolean {
  return shareOf(mask) > minShare;
}

type Predicted = { item: Item; s: UprightSlice; prob: Float32Array; ref: Uint8Array | null };

async function predicted(prediction: SegmenterPrediction, items: readonly Item[], side: number, norm: LungInputNormalisation): Promise<Predicted[]> {
  const out: Predicted[] = [];
  for (const p of await predictItems(prediction, items, side, norm)) out.push({ ...p, ref: await lesionMask(p.item, p.s) });
  return out;
}

async function scoreSet(rows: readonly Predicted[], side: number, threshold: number, minShare: number): Promise<LesionSetScore> {
  const o: MaskOverlap[] = [];
  const perSlice: LesionSetScore["perSlice"] = [];
  let found = 0, missed = 0;
  for (const r of rows) {
    const m = await lesionMaskOf(r.prob, side, r.s, threshold);
    const ov = maskOverlap(m, r.ref!);
    o.push(ov);
    const x = overlapMetrics(ov);
    perSlice.push({ id: r.item.id, dice: x.dice, iou: x.iou, predShare: shareOf(m), refShare: shareOf(r.ref!) });
    if (shareOf(r.ref!) > 0) {
      if (hasLesion(m, minShare)) found++;
      else missed++;
    }
  }
  return { ...overlapSummary(o), detection: { sensitivity: found + missed ? found / (found + missed) : NaN, found, missed }, perSlice };
}

/** Threshold on the validation blocks (pooled Dice; ties to the one nearest 0.5), then every held-out set. */
export async function evaluateLesionModel(prediction: SegmenterPrediction, sets: LesionSets, side: number, minShare: number, norm: LungInputNormalisation, log: (m: string) => void = () => undefined): Promise<LesionEvaluation> {
  log(`evaluating: ${sets.val.length} validation, ${sets.test.length} test-block, ${sets.medsegTest.length} MedSeg test and ${sets.lesionFree.length} LUNA16 slices`);
  const val = await predicted(prediction, sets.val, side, norm);
  const thresholds: LesionEvaluation["thresholds"] = [];
  for (const t of THRESHOLD_GRID) thresholds.push({ threshold: t, valDice: (await scoreSet(val, side, t, minShare)).pooled.dice });
  const threshold = [...thresholds].sort((a, b) => b.valDice - a.valDice || Math.abs(a.threshold - 0.5) - Math.abs(b.threshold - 0.5))[0].threshold;
  const free = await predictItems(prediction, sets.lesionFree, side, norm);
  let withLesion = 0;
  for (const r of free) if (hasLesion(await lesionMaskOf(r.prob, side, r.s, threshold), minShare)) withLesion++;
  return {
    threshold,
    thresholds,
    minLesionShare: minShare,
    val: await scoreSet(val, side, threshold, minShare),
    expertTest: await scoreSet(await predicted(prediction, sets.test, side, norm), side, threshold, minShare),
    medsegTest: await scoreSet(await predicted(prediction, sets.medsegTest, side, norm), side, threshold, minShare),
    lesionFree: { n: free.length, withLesion, specificity: free.length ? 1 - withLesion / free.length : NaN },
  };
}

function recordedLesionConfig(profile: LesionProfile, seed: number) {
  return { profile, seed, model: "resunet", target: "lesions", labels: "radiologists", split: LUNG_SPLIT, medseg: { train: "train/", test: "test/ (held out)" }, input: profile.input ?? LUNG_INPUT_NORMALISATION, cutToBody: true, thresholdGrid: THRESHOLD_GRID };
}

/** The lesion target of the segmenter engine. */
export const LESION_TARGET: SegmenterTarget<LesionProfile, LesionSets, LesionEvaluation, LesionFacts> = {
  kind: "lesions",
  what: "lesion",
  profile: getLesionProfile,
  defaultRunDir: defaultLesionRunDir,
  recordedConfig: recordedLesionConfig,
  sets: lesionSets,
  checksums: () => dataChecksums(["covid19-ct-seg-lungs", "medseg", "luna16"]),
  protect: () => [resolveSegLungsRoot().dir, resolveMedsegRoot().dir, resolveLunaRoot().dir],
  retrainHint: (profile, seed) => `--retrain-segmenter (npx covid-ct lesions --profile ${profile.name} --seed ${seed} --retrain-segmenter --source medseg --out <new folder>; or delete the directory and notebook 05 trains it again)`,
  facts: (sets) => ({
    labels: "radiologists",
    split: LUNG_SPLIT,
    counts: { trainMedseg: sets.trainMedseg, trainExpert: sets.train.length - sets.trainMedseg, val: sets.val.length, valMedseg: sets.val.filter((x) => x.source === "medseg").length, test: sets.test.length, medsegTest: sets.medsegTest.length, lesionFree: sets.lesionFree.length },
  }),
  describeSets: (sets) =>
    `radiologists' lesion masks: ${sets.trainMedseg} MedSeg train + ${sets.train.length - sets.trainMedseg} expert training slices (blocks other than ${[...LUNG_SPLIT.val, ...LUNG_SPLIT.test].join(", ")}), ${sets.val.length} validation slices (blocks ${LUNG_SPLIT.val.join(", ")}${sets.val.some((x) => x.source === "medseg") ? " and every few MedSeg train slices" : ""}); held out: ${sets.test.length} test-block and ${sets.medsegTest.length} MedSeg test slices`,
  trainingSource: (sets, profile, _seed, cache) => referenceSource(LESION_TARGET, sets.train, profile.inputSize, cache, profile.input ?? LUNG_INPUT_NORMALISATION),
  async referenceMask(it, s) {
    const m = await lesionMask(it, s);
    if (!m) throw new Error(`${it.path}: the ${it.source} source has no lesion masks; a lesion segmenter learns from medseg and covid19-ct-seg-lungs slices only`);
    return m;
  },
  evaluate: (prediction, sets, profile, _cache, norm, log) => evaluateLesionModel(prediction, sets, profile.inputSize, profile.minLesionShare, norm, log),
  summary: (m) =>
    `lesion Dice against the radiologists (pooled): MedSeg test ${m.medsegTest.pooled.dice.toFixed(4)} (Inf-Net ${INF_NET_MEDSEG_DICE}), test blocks ${m.expertTest.pooled.dice.toFixed(4)}; ` +
    `slice sensitivity ${m.medsegTest.detection.sensitivity.toFixed(3)} (MedSeg), LUNA16 lesion-free ${m.lesionFree.specificity.toFixed(3)}; threshold ${m.threshold}`,
  maskOf: lesionMaskOf,
  cache: { tag: "lesion-mask", version: LESION_CACHE_VERSION, namespace: LESION_CACHE_NAMESPACE, keyParts: (threshold) => ["body-cut", threshold] },
  defaultThreshold: 0.5,
};

/** Options of a lesion run (the engine's; profile overrides are lesion profile knobs). */
export type LesionSegmenterConfig = SegmenterRunConfig<LesionProfile>;

/** Train the lesion U-Net of a profile (or reuse the finished identical run). */
export function trainLesionSegmenter(cfg: LesionSegmenterConfig): Promise<LesionRunResult> {
  return trainSegmenter(LESION_TARGET, cfg);
}

/** Load a finished lesion segmenter run serving masks. */
export function loadLesionSegmenter(runDir: string, o: { cacheDir?: string; batch?: number } = {}): Promise<Segmenter> {
  return loadSegmenter(LESION_TARGET, runDir, o);
}

/** Train the profile's lesion segmenter if no finished run exists (or reuse it), then load it. */
export async function ensureLesionSegmenter(o: { profile: ProfileName; seed?: number; out?: string; force?: boolean; cacheDir?: string; log?: (m: string) => void }): Promise<Segmenter & { metrics: LesionMetrics }> {
  const r = await trainLesionSegmenter({ profile: o.profile, seed: o.seed, out: o.out, force: o.force, log: o.log });
  return Object.assign(await loadLesionSegmenter(r.runDir, { cacheDir: o.cacheDir }), { metrics: r.metrics });
}
