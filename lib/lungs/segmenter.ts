/**
 * Study II's lung segmenter: the residual U-Net (lib/models/unet.ts) trained on the RADIOLOGISTS'
 * lung masks of covid19-ct-seg-lungs (162 COVID-19-CT-Seg slices), split by volume block:
 *   test blocks 3, 7, 12 · validation blocks 5, 10 (checkpoint and mask threshold) · training the rest;
 * optionally with classical pseudo masks (lib/lungs/classical.ts) of some of the paper protocol's
 * training slices added to training (profile.pseudoLabels; measured, see profiles.ts). Every source
 * goes through one input normalisation (slices.ts segmenterInput: CLAHE), in training and inference.
 * Measured against humans and on sources without lung labels:
 *   - Dice/IoU against the experts' lung masks on the test blocks, pooled and per slice, at the
 *     files' 256² (the classical extractor is the baseline row);
 *   - MedSeg lesion coverage: the share of the radiologists' lesion pixels inside the lung mask;
 *   - the chest-wall check (chestWallShare): the share of mask pixels that are dense tissue and not
 *     lesion, on MedSeg, beside the same measure of the experts' own masks on the test blocks.
 * One run directory per (profile, seed) through openRun: runs/lungs/expert/<profile>/resunet-seed<N>.
 *
 * ensureLungSegmenter trains (or reuses the finished run) and serves masks at each file's own size
 * and orientation, cached on disk by (image content, model weights, normalisation, threshold).
 */
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot, resolveSegLungsRoot } from "../config";
import { DiskCache, mapLimit } from "../data/cache";
import { otsuThreshold } from "../data/preprocess";
import { listMedsegSlices, listSegLungs, SourceImage, SourceName } from "../data/sources";
import { maskOverlap, MaskOverlap, overlapMetrics, summariseSegmentation } from "../evaluation";
import { buildProtocol, protocolExamples } from "../protocols";
import { ProfileName } from "../training/profiles";
import { SegmentationSource } from "../training/segmentation";
import { writeJsonAtomic } from "../util/fs";
import { rngFor } from "../util/random";
import { expertLungMask, lesionMask } from "../segmenter/reference";
import { dataChecksums, Item, OverlapSummary, overlapSummary, loadPredictor, loadSegmenter, MaskResult, pick, predictItems, referenceSource, runNormalisation, Segmenter, SegmenterPrediction, SegmenterPredictor, SegmenterRunConfig, SegmenterTarget, THRESHOLD_GRID, trainSegmenter } from "../segmenter/engine";
import { bodyHull, LUNG_DEFAULTS } from "./classical";
import { consolidationRng, densifyLesions, synthConsolidation } from "./consolidation";
import { ConsolidationKind, getLungProfile, LungProfile } from "./profiles";
import { classicalMask, LUNG_INPUT_NORMALISATION, LungInputNormalisation, unetMask, resizeMask, segmenterInput, uprightSlice, UprightSlice } from "./slices";

export type { OverlapSummary } from "../segmenter/engine";
export { Item, loadLayersModel, MODEL_DIR, MODEL_LAST_DIR, modelSha256, predictionOf, saveLayersModel, THRESHOLD_GRID } from "../segmenter/engine";

/** Bump when served masks change for the same model and image (old cache entries are then ignored). */
export const MASK_CACHE_VERSION = 4;
/**
 * U-Net masks are cut to the classical body hull (lib/lungs/classical bodyHull): outside air is
 * never lung, and the U-Net, trained on slices with a thin black margin, meets wide ones on LUNA.
 */
export const CUT_TO_BODY = true;
/** The mask threshold of runs that did not choose one (pseudo-label runs before expert masks). */
export const MASK_THRESHOLD = 0.5;
/** DiskCache namespace of the served masks. */
export const MASK_CACHE_NAMESPACE = "lung-masks";

/**
 * The block split of covid19-ct-seg-lungs (issue 16): blocks hold whole volumes, so no volume is
 * on two sides. Test blocks never reach training, checkpoint or threshold choice.
 */
export const LUNG_SPLIT: { readonly test: readonly number[]; readonly val: readonly number[] } = { test: [3, 7, 12], val: [5, 10] };

/** Options of a lung run (the engine's; profile overrides are lung profile knobs). */
export type LungSegmenterConfig = SegmenterRunConfig<LungProfile>;


/** Pooled share of mask pixels on dense non-lesion tissue (chestWallShare), with the pixel counts. */
export interface ChestWall {
  share: number;
  densePixels: number;
  maskPixels: number;
}

export interface LungMetrics {
  profile: ProfileName;
  seed: number;
  bestEpoch: number;
  epochs: number;
  /** Best validation Dice at the input size (checkpoint selection, threshold 0.5). */
  valDice: number;
  /** What the U-Net learned from. */
  labels: "expert" | "expert+pseudo";
  /** The model folders whose probabilities are averaged (model = the selected epoch, model-last = the last, when it is another epoch) and the test-time flip; absent in runs before the knobs (model alone). loadLungPredictor follows it. */
  prediction?: { members: string[]; flip: boolean; lastEpoch: number };
  split: typeof LUNG_SPLIT;
  counts: { trainExpert: number; trainPseudo: number; val: number; test: number; medseg: number };
  /** U-Net masks cut to the body hull (CUT_TO_BODY), probabilities thresholded at `threshold`. */
  cutToBody: boolean;
  /** Chosen on the validation blocks from THRESHOLD_GRID (pooled Dice at 256²). */
  threshold: number;
  thresholds: { threshold: number; valDice: number }[];
  /** Against the radiologists' lung masks on the test blocks (files' 256²). */
  expertTest: { unet: OverlapSummary; classical: OverlapSummary; perSlice: { id: string; dice: number; iou: number }[] };
  /** Lesion coverage (the `coverage` fields) on MedSeg's radiologists' lesion masks. */
  medsegCoverage: { classical: OverlapSummary; unet: OverlapSummary };
  /** Dense non-lesion share of the mask: the experts' own masks on the test blocks are the reference. */
  chestWall: { expertTest: { experts: ChestWall; unet: ChestWall }; medseg: { classical: ChestWall; unet: ChestWall } };
  /** Mean share of the image inside the lung mask. */
  lungShare: { expertTest: { experts: number; unet: number }; medseg: { classical: number; unet: number } };
  seconds: { prepare: number; train: number; evaluate: number };
}

export interface LungRunResult {
  runDir: string;
  metrics: LungMetrics;
  reused: boolean;
}

export function defaultLungRunDir(profile: ProfileName, seed: number): string {
  return path.join(PROJECT_ROOT, "runs", "lungs", "expert", profile, `resunet-seed${seed}`);
}


/** The block of an expert slice (its patient is `block<k>`). */
export function blockOf(img: Pick<SourceImage, "patient">): number {
  const m = img.patient.match(/^block(\d+)$/);
  if (!m) throw new Error(`${img.patient} is not a covid19-ct-seg-lungs block`);
  return parseInt(m[1], 10);
}

/** The expert slices split by block: test and validation blocks as given, training the rest. */
export function expertSplit<T extends Pick<SourceImage, "patient">>(images: readonly T[], split = LUNG_SPLIT): Record<"train" | "val" | "test", T[]> {
  const overlap = split.test.filter((b) => split.val.includes(b));
  if (overlap.length) throw new Error(`Lung split: block(s) ${overlap.join(", ")} are both test and validation.`);
  const out: Record<"train" | "val" | "test", T[]> = { train: [], val: [], test: [] };
  for (const img of images) {
    const b = blockOf(img);
    out[split.test.includes(b) ? "test" : split.val.includes(b) ? "val" : "train"].push(img);
  }
  for (const k of ["val", "test"] as const) if (out[k].length === 0) throw new Error(`Lung split: no slice in the ${k} blocks ${split[k].join(", ")}; is covid19-ct-seg-lungs complete?`);
  return out;
}


/**
 * The chest-wall check: of the mask's pixels, those that are dense tissue (brighter than Otsu's
 * threshold of the body's pixels: muscle, fat, bone, heart — not aerated lung) and not lesion.
 * Inside true lungs only vessels, airway walls and lesion edges are dense, so the experts' own
 * masks set the reference; a mask that takes ribs and chest-wall muscle scores well above it.
 */
export function chestWallCounts(gray: ArrayLike<number>, mask: ArrayLike<number>, body: ArrayLike<number> | null, lesion: ArrayLike<number> | null): { dense: number; mask: number } {
  const inBody: number[] = [];
  for (let i = 0; i < gray.length; i++) if (!body || body[i]) inBody.push(gray[i]);
  const t = otsuThreshold(inBody.length ? inBody : Array.from(gray));
  let dense = 0, area = 0;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    area++;
    if (gray[i] > t && !(lesion && lesion[i])) dense++;
  }
  return { dense, mask: area };
}

function chestWall(c: { dense: number; mask: number }[]): ChestWall {
  const d = c.reduce((a, x) => a + x.dense, 0), m = c.reduce((a, x) => a + x.mask, 0);
  return { share: m ? d / m : NaN, densePixels: d, maskPixels: m };
}

export interface LungSets {
  train: Item[];
  /** Expert training slices among `train` (the rest carry classical pseudo masks). */
  trainExpert: number;
  val: Item[];
  test: Item[];
  medseg: Item[];
  /** The paper protocol's hash, when pseudo-labelled protocol slices are in training. */
  protocolHash?: string;
}

/** The images of each set: expert blocks (+ pseudo-labelled protocol training slices) and MedSeg. */
export async function lungSets(profile: LungProfile): Promise<LungSets> {
  const expert = expertSplit(listSegLungs());
  const asItem = (m: { id: string; path: string; source: SourceName }): Item => ({ id: m.id, path: m.path, source: m.source });
  const train = pick(expert.train.map(asItem), profile.limit);
  let protocolHash: string | undefined;
  if (profile.pseudoLabels > 0) {
    const p = await buildProtocol("paper");
    protocolHash = p.hash;
    const pool = protocolExamples(p, "train").map((e) => ({ id: e.id, path: e.path, source: e.source as SourceName }));
    train.push(...pick(pool, Math.min(profile.pseudoLabels, profile.limit ?? Infinity)));
  }
  const medseg = pick([...listMedsegSlices("train"), ...listMedsegSlices("test")].map(asItem), profile.limit);
  return { train, trainExpert: Math.min(expert.train.length, profile.limit ?? Infinity), val: pick(expert.val.map(asItem), profile.limit), test: pick(expert.test.map(asItem), profile.limit), medseg, protocolHash };
}

/**
 * U-Net inputs and targets at the input size: the experts' lung mask where one exists, else the
 * classical pseudo mask. Inputs go through segmenterInput, the one road inference takes too.
 */
export function segmentationSource(items: readonly Item[], side: number, cache: DiskCache, norm: LungInputNormalisation = LUNG_INPUT_NORMALISATION): Promise<SegmentationSource> {
  return referenceSource(LUNG_TARGET, items, side, cache, norm);
}

/**
 * The training source with `copies` synthetic-consolidation versions of each of its first `n`
 * slices (the radiologists' ones) appended, their masks unchanged (lib/lungs/consolidation):
 * "lesions" makes the radiologists' lesion pixels dense (slices without lesion get no copy),
 * "blobs" paints discs at the lung's edge.
 */
export async function withConsolidation(src: SegmentationSource, items: readonly Item[], n: number, copies: number, kind: ConsolidationKind, seed: number): Promise<SegmentationSource> {
  if (copies <= 0 || kind === "none") return src;
  const ids = [...src.ids], images = [...src.images], masks = [...src.masks];
  const lesions = kind === "lesions" ? await mapLimit(items.slice(0, n), 2, async (it) => {
    const s = await uprightSlice(it.path, it.source);
    const l = await lesionMask(it, s);
    return l ? resizeMask(l, s.height, s.width, src.side, src.side) : null;
  }) : [];
  for (let c = 1; c <= copies; c++) for (let i = 0; i < n; i++) {
    const rng = consolidationRng(seed, src.ids[i], c);
    let img: Uint8Array;
    if (kind === "lesions") {
      const l = lesions[i];
      if (!l || !l.some((v, k) => v && src.masks[i][k])) continue;
      img = densifyLesions(src.images[i], src.masks[i], l, src.side, rng);
    } else img = synthConsolidation(src.images[i], src.masks[i], src.side, rng);
    ids.push(`${src.ids[i]}#consolidation${c}`);
    images.push(img);
    masks.push(src.masks[i]);
  }
  return new SegmentationSource(ids, images, masks, src.side);
}

/** Bounding box (inclusive) of a 0/1 mask, or null when it is empty. */
function maskBox(m: ArrayLike<number>, height: number, width: number): { x0: number; y0: number; x1: number; y1: number } | null {
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (m[y * width + x]) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  return x1 < 0 ? null : { x0, y0, x1, y1 };
}

/**
 * The training source with `copies` chest crops of each of its first `n` slices appended. Each
 * side of a crop lies between the lungs' bounding box and the body's, at a share drawn from
 * [slack, 1] of the gap (0: on the lungs, 1: on the skin); the crop then goes through
 * segmenterInput like any slice, so its aspect ratio is stretched to the square input. MedSeg's
 * slices and many COVID-CT figures are cut to the chest like this, often through the ribs; the
 * radiologists' slices show the whole field of view, and a U-Net that only saw those cut
 * consolidation out of MedSeg's lungs (bench/RESULTS.md).
 */
export async function withChestCrops(src: SegmentationSource, items: readonly Item[], n: number, copies: number, slack: number, seed: number, cache: DiskCache, norm: LungInputNormalisation = LUNG_INPUT_NORMALISATION): Promise<SegmentationSource> {
  if (copies <= 0) return src;
  const ids = [...src.ids], images = [...src.images], masks = [...src.masks];
  const rows = await mapLimit(items.slice(0, n), 2, async (it) => {
    const s = await uprightSlice(it.path, it.source);
    const m = (await expertLungMask(it, s)) ?? (await classicalMask(it.path, s, {}, cache));
    const lungs = maskBox(m, s.height, s.width);
    if (!lungs) return [];
    const body = maskBox(bodyHull(s.gray, s.height, s.width) ?? new Uint8Array(s.gray.length).fill(1), s.height, s.width)!;
    const out: { image: Uint8Array; mask: Uint8Array }[] = [];
    for (let c = 1; c <= copies; c++) {
      const rng = rngFor("chest-crop", seed, it.id, c);
      const reach = () => slack + (1 - slack) * rng();
      const l = Math.round(lungs.x0 - reach() * Math.max(0, lungs.x0 - body.x0)), r = Math.round(lungs.x1 + reach() * Math.max(0, body.x1 - lungs.x1));
      const t = Math.round(lungs.y0 - reach() * Math.max(0, lungs.y0 - body.y0)), b = Math.round(lungs.y1 + reach() * Math.max(0, body.y1 - lungs.y1));
      const w = r - l + 1, h = b - t + 1;
      const gray = new Uint8Array(w * h), mask = new Uint8Array(w * h);
      for (let y = 0; y < h; y++) {
        gray.set(s.gray.subarray((t + y) * s.width + l, (t + y) * s.width + l + w), y * w);
        mask.set(m.subarray((t + y) * s.width + l, (t + y) * s.width + l + w), y * w);
      }
      out.push({ image: await segmenterInput({ ...s, gray, height: h, width: w }, src.side, norm), mask: await resizeMask(mask, h, w, src.side, src.side) });
    }
    return out;
  });
  rows.forEach((r, i) => r.forEach((x, c) => {
    ids.push(`${src.ids[i]}#chest-crop${c + 1}`);
    images.push(x.image);
    masks.push(x.mask);
  }));
  return new SegmentationSource(ids, images, masks, src.side);
}

const share = (m: Uint8Array) => m.reduce((a, b) => a + b, 0) / Math.max(1, m.length);

/** Per image of a set: upright slice, U-Net probabilities, and the masks it is compared with. */
export interface Evaluated {
  item: Item;
  s: UprightSlice;
  prob: Float32Array;
  body: Uint8Array | null;
  classical: Uint8Array;
  expert: Uint8Array | null;
  lesion: Uint8Array | null;
}

/** Predict every item (batched) and collect what the metrics compare. */
export async function evaluatedSet(predictor: LungPrediction, items: readonly Item[], side: number, cache: DiskCache, norm: LungInputNormalisation, batch = 16): Promise<Evaluated[]> {
  const out: Evaluated[] = [];
  for (const { item, s, prob } of await predictItems(predictor, items, side, norm, batch)) {
    out.push({ item, s, prob, body: bodyHull(s.gray, s.height, s.width), classical: await classicalMask(item.path, s, {}, cache), expert: await expertLungMask(item, s), lesion: await lesionMask(item, s) });
  }
  return out;
}

const unetOf = (e: Evaluated, side: number, cutToBody: boolean, threshold: number) => unetMask(e.prob, side, e.s, cutToBody, threshold);

/** The models a lung run predicts with, and whether each also sees the mirrored slice (predictMasks). */
export type LungPrediction = SegmenterPrediction;
/** A finished lung run's prediction, loaded, with the identity of the masks it produces. */
export type LungPredictor = SegmenterPredictor;
/** Load what a finished lung run predicts with: the members and flip its metrics.json records (runs before the knobs: model/ alone). */
export const loadLungPredictor = loadPredictor;

/** Checksums of every input: the data manifests of the sources read, and the protocol when pseudo labels are used. */
function inputChecksums(protocolHash: string | undefined): Record<string, string> {
  const out = dataChecksums(["covid19-ct-seg-lungs", "medseg", ...(protocolHash ? (["covid-ct", "covid19-ct-seg", "luna16"] as const) : [])]);
  if (protocolHash) out["protocol/paper"] = protocolHash;
  return out;
}

/** The run's recorded config (keys reuse): profile, seed, split, labels, normalisation. */
function recordedLungConfig(profile: LungProfile, seed: number) {
  return { profile, seed, model: "resunet", labels: profile.pseudoLabels > 0 ? "expert+pseudo" : "expert", split: LUNG_SPLIT, input: LUNG_INPUT_NORMALISATION, lungOptions: LUNG_DEFAULTS, cutToBody: CUT_TO_BODY, fillHoles: true, thresholdGrid: THRESHOLD_GRID };
}

type LungEvaluation = Awaited<ReturnType<typeof evaluateLungModel>>;
type LungFacts = { labels: "expert" | "expert+pseudo"; split: typeof LUNG_SPLIT; counts: LungMetrics["counts"] };

/**
 * The lung target of the segmenter engine (lib/segmenter/engine.ts): the radiologists' lung masks
 * (+ classical pseudo masks of protocol slices when the profile asks), synthetic-consolidation and
 * chest-crop copies of the expert slices, measured against the experts and on MedSeg.
 */
export const LUNG_TARGET: SegmenterTarget<LungProfile, LungSets, LungEvaluation, LungFacts> = {
  kind: "lungs",
  what: "lung",
  profile: getLungProfile,
  defaultRunDir: defaultLungRunDir,
  recordedConfig: recordedLungConfig,
  sets: lungSets,
  checksums: (sets) => inputChecksums(sets.protocolHash),
  protect: () => [resolveSegLungsRoot().dir, resolveDataRoot().dir, resolveCovidSegRoot().dir, resolveLunaRoot().dir, resolveMedsegRoot().dir],
  retrainHint: (profile, seed) => `--retrain-segmenter (npx covid-ct lungs --profile ${profile.name} --seed ${seed} --retrain-segmenter --source medseg --out <new folder>; or delete the directory and the notebooks train it again)`,
  facts: (sets, profile) => ({
    labels: profile.pseudoLabels > 0 ? "expert+pseudo" : "expert",
    split: LUNG_SPLIT,
    counts: { trainExpert: sets.trainExpert, trainPseudo: sets.train.length - sets.trainExpert, val: sets.val.length, test: sets.test.length, medseg: sets.medseg.length },
  }),
  describeSets: (sets) =>
    `radiologists' lung masks: ${sets.trainExpert} training slices (blocks other than ${[...LUNG_SPLIT.val, ...LUNG_SPLIT.test].join(", ")})${sets.train.length > sets.trainExpert ? ` + ${sets.train.length - sets.trainExpert} pseudo-labelled protocol slices` : ""}, ${sets.val.length} validation slices (blocks ${LUNG_SPLIT.val.join(", ")})`,
  async trainingSource(sets, profile, seed, cache) {
    const base = await referenceSource(LUNG_TARGET, sets.train, profile.inputSize, cache);
    const dense = await withConsolidation(base, sets.train, sets.trainExpert, profile.consolidationCopies, profile.consolidation, seed);
    return withChestCrops(dense, sets.train, sets.trainExpert, profile.chestCropCopies ?? 0, profile.chestCropSlack ?? 0, seed, cache);
  },
  // The experts' lung mask where one exists, else the classical pseudo mask.
  referenceMask: async (it, s, cache) => (await expertLungMask(it, s)) ?? (await classicalMask(it.path, s, {}, cache)),
  evaluate: (prediction, sets, profile, cache, norm, log) => evaluateLungModel(prediction, sets, profile.inputSize, cache, norm, log),
  summary: (m) =>
    `Dice against the radiologists (test blocks ${LUNG_SPLIT.test.join(", ")}): U-Net ${m.expertTest.unet.pooled.dice.toFixed(4)}, classical ${m.expertTest.classical.pooled.dice.toFixed(4)} (pooled); ` +
    `MedSeg lesion coverage U-Net ${m.medsegCoverage.unet.pooled.coverage.toFixed(4)}; chest-wall share MedSeg U-Net ${m.chestWall.medseg.unet.share.toFixed(3)} (experts on their slices ${m.chestWall.expertTest.experts.share.toFixed(3)})`,
  maskOf: (prob, side, s, threshold) => unetMask(prob, side, s, CUT_TO_BODY, threshold),
  cache: { tag: "lung-mask", version: MASK_CACHE_VERSION, namespace: MASK_CACHE_NAMESPACE, keyParts: (threshold) => [CUT_TO_BODY, threshold] },
  defaultThreshold: MASK_THRESHOLD,
};

/**
 * Train the lung U-Net of a profile (or reuse the finished identical run) and write its run
 * directory: manifest.json, history.json, checkpoints/, model/ and metrics.json.
 */
export async function trainLungSegmenter(cfg: LungSegmenterConfig): Promise<LungRunResult> {
  return (await trainSegmenter(LUNG_TARGET, cfg)) as LungRunResult;
}

/** The evaluation part of metrics.json (see LungMetrics): threshold on validation, then test and MedSeg. */
async function evaluateLungModel(model: LungPrediction, sets: LungSets, side: number, cache: DiskCache, norm: LungInputNormalisation, log: (m: string) => void) {
  log(`evaluating: ${sets.val.length} validation, ${sets.test.length} test and ${sets.medseg.length} MedSeg slices`);
  const val = await evaluatedSet(model, sets.val, side, cache, norm);
  const thresholds: { threshold: number; valDice: number }[] = [];
  for (const t of THRESHOLD_GRID) {
    const o: MaskOverlap[] = [];
    for (const e of val) o.push(maskOverlap(await unetOf(e, side, CUT_TO_BODY, t), e.expert!));
    thresholds.push({ threshold: t, valDice: summariseSegmentation(o).pooled.dice });
  }
  // Ties go to the threshold nearest 0.5 (the grid's order is kept by a stable sort on Dice only).
  const threshold = [...thresholds].sort((a, b) => b.valDice - a.valDice || Math.abs(a.threshold - 0.5) - Math.abs(b.threshold - 0.5))[0].threshold;
  const test = await evaluatedSet(model, sets.test, side, cache, norm);
  const unetT: MaskOverlap[] = [], classicalT: MaskOverlap[] = [], perSlice: LungMetrics["expertTest"]["perSlice"] = [];
  const cwExperts: { dense: number; mask: number }[] = [], cwUnetT: typeof cwExperts = [];
  let shareExperts = 0, shareUnetT = 0;
  for (const e of test) {
    const u = await unetOf(e, side, CUT_TO_BODY, threshold);
    const o = maskOverlap(u, e.expert!);
    unetT.push(o);
    classicalT.push(maskOverlap(e.classical, e.expert!));
    const m = overlapMetrics(o);
    perSlice.push({ id: e.item.id, dice: m.dice, iou: m.iou });
    cwExperts.push(chestWallCounts(e.s.gray, e.expert!, e.body, e.lesion));
    cwUnetT.push(chestWallCounts(e.s.gray, u, e.body, e.lesion));
    shareExperts += share(e.expert!) / test.length;
    shareUnetT += share(u) / test.length;
  }
  const med = await evaluatedSet(model, sets.medseg, side, cache, norm);
  const lesionU: MaskOverlap[] = [], lesionC: MaskOverlap[] = [], cwU: { dense: number; mask: number }[] = [], cwC: typeof cwU = [];
  let shareU = 0, shareC = 0;
  for (const e of med) {
    const u = await unetOf(e, side, CUT_TO_BODY, threshold);
    lesionU.push(maskOverlap(u, e.lesion!));
    lesionC.push(maskOverlap(e.classical, e.lesion!));
    cwU.push(chestWallCounts(e.s.gray, u, e.body, e.lesion));
    cwC.push(chestWallCounts(e.s.gray, e.classical, e.body, e.lesion));
    shareU += share(u) / med.length;
    shareC += share(e.classical) / med.length;
  }
  return {
    cutToBody: CUT_TO_BODY,
    threshold,
    thresholds,
    expertTest: { unet: overlapSummary(unetT), classical: overlapSummary(classicalT), perSlice },
    medsegCoverage: { classical: overlapSummary(lesionC), unet: overlapSummary(lesionU) },
    chestWall: { expertTest: { experts: chestWall(cwExperts), unet: chestWall(cwUnetT) }, medseg: { classical: chestWall(cwC), unet: chestWall(cwU) } },
    lungShare: { expertTest: { experts: shareExperts, unet: shareUnetT }, medseg: { classical: shareC, unet: shareU } },
  };
}

/**
 * Recompute the evaluation of a finished lung run (after a change of the mask post-processing or
 * the metrics), keeping its training fields; writes metrics.json when `write`.
 */
export async function evaluateLungRun(runDir: string, o: { write?: boolean; log?: (m: string) => void } = {}): Promise<LungMetrics> {
  await initBackend();
  const old = JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8")) as LungMetrics;
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const profile = manifest.config.profile as LungProfile;
  const sets = await lungSets(profile);
  const model = await loadLungPredictor(runDir);
  const t = Date.now();
  let evaluation: Awaited<ReturnType<typeof evaluateLungModel>>;
  try {
    evaluation = await evaluateLungModel(model, sets, profile.inputSize, new DiskCache(), runNormalisation(manifest), o.log ?? (() => undefined));
  } finally {
    model.dispose();
  }
  const metrics: LungMetrics = { ...old, ...evaluation };
  metrics.seconds = { ...old.seconds, evaluate: (Date.now() - t) / 1000 };
  if (o.write) writeJsonAtomic(path.join(runDir, "metrics.json"), metrics);
  return metrics;
}

export type LungMaskResult = MaskResult;
/** A loaded lung segmenter run serving masks (lib/segmenter/engine.ts Segmenter). */
export type LungSegmenter = Segmenter;

export interface EnsureLungSegmenterOptions {
  profile: ProfileName;
  seed?: number;
  log?: (m: string) => void;
  force?: boolean;
  /** Run directory (default runs/lungs/expert/<profile>/resunet-seed<seed>). */
  out?: string;
  /** Mask cache root (default cacheDir()). */
  cacheDir?: string;
  /** Images per forward pass (default 16). */
  batch?: number;
}

/** Train the profile's lung segmenter if no finished run exists (or reuse it), then load it. */
export async function ensureLungSegmenter(o: EnsureLungSegmenterOptions): Promise<LungSegmenter> {
  const r = await trainLungSegmenter({ profile: o.profile, seed: o.seed, log: o.log, force: o.force, out: o.out });
  return loadLungSegmenter(r.runDir, { cacheDir: o.cacheDir, batch: o.batch });
}

/** Load a finished lung segmenter run. */
export function loadLungSegmenter(runDir: string, o: { cacheDir?: string; batch?: number } = {}): Promise<LungSegmenter> {
  return loadSegmenter(LUNG_TARGET, runDir, o);
}
