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
import * as tf from "@tensorflow/tfjs";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot, resolveSegLungsRoot } from "../config";
import { cacheDir } from "../config";
import { cacheKey, contentHash, DiskCache, mapLimit } from "../data/cache";
import { decodeRaw } from "../data/decode";
import { orientPixels } from "../data/orientation";
import { otsuThreshold } from "../data/preprocess";
import { lesionMaskFolder, listMedsegSlices, listSegLungs, maskFileBeside, SourceImage, SourceName, sourceManifestFile, sourceOrientation } from "../data/sources";
import { maskOverlap, MaskOverlap, overlapMetrics, summariseSegmentation } from "../evaluation";
import { makeManifest, writeManifest } from "../manifest";
import { buildResUNet } from "../models/unet";
import { buildProtocol, protocolExamples, spreadIndices } from "../protocols";
import { openRun } from "../runs";
import { loadModel } from "../training/checkpoint";
import { EpochLog, trainModel } from "../training/loop";
import { ProfileName } from "../training/profiles";
import { predictMasks, SegmentationSource, segmentationTask } from "../training/segmentation";
import { sha256File, writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { rngFor } from "../util/random";
import { bodyHull, LUNG_DEFAULTS } from "./classical";
import { consolidationRng, densifyLesions, synthConsolidation } from "./consolidation";
import { ConsolidationKind, getLungProfile, LungProfile } from "./profiles";
import { classicalMask, LUNG_INPUT_NORMALISATION, LungInputNormalisation, maskToPng, readMaskPng, unetMask, resizeMask, segmenterInput, toFileOrientation, uprightSlice, UprightSlice } from "./slices";

/** Bump when served masks change for the same model and image (old cache entries are then ignored). */
export const MASK_CACHE_VERSION = 4;
/**
 * U-Net masks are cut to the classical body hull (lib/lungs/classical bodyHull): outside air is
 * never lung, and the U-Net, trained on slices with a thin black margin, meets wide ones on LUNA.
 */
export const CUT_TO_BODY = true;
/** The mask threshold of runs that did not choose one (pseudo-label runs before expert masks). */
export const MASK_THRESHOLD = 0.5;
/** Thresholds tried on the validation blocks; the best pooled Dice against the experts is used. */
export const THRESHOLD_GRID = [0.3, 0.4, 0.5, 0.6, 0.7] as const;
/** DiskCache namespace of the served masks. */
export const MASK_CACHE_NAMESPACE = "lung-masks";
/** Folder of the selected model (tfjs layers format: model.json + weights.bin) inside a run. */
export const MODEL_DIR = "model";
/** Folder of the last epoch's model inside a run whose profile averages it in (ensembleLastEpoch). */
export const MODEL_LAST_DIR = "model-last";

/**
 * The block split of covid19-ct-seg-lungs (issue 16): blocks hold whole volumes, so no volume is
 * on two sides. Test blocks never reach training, checkpoint or threshold choice.
 */
export const LUNG_SPLIT: { readonly test: readonly number[]; readonly val: readonly number[] } = { test: [3, 7, 12], val: [5, 10] };

export interface LungSegmenterConfig {
  profile: ProfileName;
  /** Seed of initialisation, shuffling and augmentation (default 1). */
  seed?: number;
  /** Run directory (default runs/lungs/expert/<profile>/resunet-seed<seed>). */
  out?: string;
  /** Replace a finished or interrupted run. */
  force?: boolean;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
  /** Override profile knobs (ablations: input size, width, pseudo labels); recorded with the profile. */
  profileOverrides?: Partial<Omit<LungProfile, "name">>;
  log?: (m: string) => void;
  onEpoch?: (e: EpochLog) => void;
}

export interface Item {
  id: string;
  path: string;
  source: SourceName;
}

/** One set's overlap summary: pooled and per-image mean. */
export interface OverlapSummary {
  n: number;
  pooled: { dice: number; iou: number; coverage: number };
  perImage: { dice: number; iou: number; coverage: number };
}

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

function summary(o: readonly MaskOverlap[]): OverlapSummary {
  const s = summariseSegmentation(o);
  return {
    n: s.n,
    pooled: { dice: s.pooled.dice, iou: s.pooled.iou, coverage: s.pooled.coverage },
    perImage: { dice: s.perImage.dice.mean, iou: s.perImage.iou.mean, coverage: s.perImage.coverage.mean },
  };
}

/** Evenly spread subset (smoke limits), so every source of a mixed set is represented. */
function pick<T>(items: readonly T[], limit?: number): T[] {
  return limit === undefined || items.length <= limit ? [...items] : spreadIndices(items.length, limit).map((i) => items[i]);
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


/** A 0/255 mask file as 0/1, upright like its image. */
async function uprightMaskFile(file: string, s: UprightSlice): Promise<Uint8Array> {
  const raw = await decodeRaw(file, 1);
  if (raw.height !== s.fileHeight || raw.width !== s.fileWidth) throw new Error(`${file}: ${raw.height}×${raw.width}, its image ${s.fileHeight}×${s.fileWidth}`);
  const bin = new Uint8Array(raw.data.length);
  for (let i = 0; i < bin.length; i++) bin[i] = raw.data[i] >= 128 ? 1 : 0; // pseudo lesions hold grey values: threshold 128
  return orientPixels(bin, raw.height, raw.width, 1, s.orientation).data;
}

/** The radiologists' lung mask of an expert slice, upright (null for other sources). */
function expertLungMask(it: Item, s: UprightSlice): Promise<Uint8Array> | null {
  return it.source === "covid19-ct-seg-lungs" ? uprightMaskFile(maskFileBeside(it.path, "lungs", it.source, "lung mask"), s) : null;
}

/** The lesion mask of an expert, MedSeg or COVID-Seg slice, upright like its image (null for other sources). */
function lesionMask(it: Item, s: UprightSlice): Promise<Uint8Array> | null {
  const folder = lesionMaskFolder(it.source);
  return folder ? uprightMaskFile(maskFileBeside(it.path, folder, it.source, "lesion mask"), s) : null;
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
export async function segmentationSource(items: readonly Item[], side: number, cache: DiskCache, norm: LungInputNormalisation = LUNG_INPUT_NORMALISATION): Promise<SegmentationSource> {
  const rows = await mapLimit(items, 2, async (it) => {
    const s = await uprightSlice(it.path, it.source);
    const m = (await expertLungMask(it, s)) ?? (await classicalMask(it.path, s, {}, cache));
    return { image: await segmenterInput(s, side, norm), mask: await resizeMask(m, s.height, s.width, side, side) };
  });
  return new SegmentationSource(items.map((i) => i.id), rows.map((r) => r.image), rows.map((r) => r.mask), side);
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

/** The run's probabilities [side²] for upright slices, through the one input road (segmenterInput), in one batch. */
async function probabilitiesOf(predictor: LungPrediction, slices: readonly UprightSlice[], side: number, norm: LungInputNormalisation): Promise<Float32Array[]> {
  const inputs = await Promise.all(slices.map((s) => segmenterInput(s, side, norm)));
  const src = new SegmentationSource(slices.map((_, k) => String(k)), inputs, inputs.map(() => new Uint8Array(side * side)), side);
  const probs: Float32Array[] = [];
  await predictMasks(predictor.models, src, Math.max(1, slices.length), (k, p) => (probs[k] = p.slice()), { flip: predictor.flip });
  return probs;
}

/** Predict every item (batched) and collect what the metrics compare. */
export async function evaluatedSet(predictor: LungPrediction, items: readonly Item[], side: number, cache: DiskCache, norm: LungInputNormalisation, batch = 16): Promise<Evaluated[]> {
  const out: Evaluated[] = [];
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const slices = await Promise.all(chunk.map((it) => uprightSlice(it.path, it.source)));
    const probs = await probabilitiesOf(predictor, slices, side, norm);
    for (let k = 0; k < chunk.length; k++) {
      const s = slices[k];
      out.push({ item: chunk[k], s, prob: probs[k], body: bodyHull(s.gray, s.height, s.width), classical: await classicalMask(chunk[k].path, s, {}, cache), expert: await expertLungMask(chunk[k], s), lesion: await lesionMask(chunk[k], s) });
    }
  }
  return out;
}

const unetOf = (e: Evaluated, side: number, cutToBody: boolean, threshold: number) => unetMask(e.prob, side, e.s, cutToBody, threshold);

/** The models a lung run predicts with, and whether each also sees the mirrored slice (predictMasks). */
export interface LungPrediction {
  models: tf.LayersModel[];
  flip: boolean;
}

/** A finished lung run's prediction, loaded, with the identity of the masks it produces. */
export interface LungPredictor extends LungPrediction {
  /** Model folders inside the run, in the order of `models`. */
  members: string[];
  /** modelSha256 of the selected model alone; with more members or the flip, a hash over them all. */
  sha256: string;
  dispose(): void;
}

/**
 * The model folders and flip a profile asks for, given the selected and the last epoch: the last
 * epoch is a second member only when it is another epoch (runs made before the knobs: the selected
 * model alone, no flip).
 */
export function predictionOf(profile: Pick<LungProfile, "ensembleLastEpoch" | "testTimeFlip">, epochs: { best: number; last: number }): { members: string[]; flip: boolean } {
  return { members: profile.ensembleLastEpoch && epochs.last !== epochs.best ? [MODEL_DIR, MODEL_LAST_DIR] : [MODEL_DIR], flip: profile.testTimeFlip ?? false };
}

/** Load what a finished lung run predicts with: the members and flip its metrics.json records (runs before the knobs: model/ alone). */
export async function loadLungPredictor(runDir: string): Promise<LungPredictor> {
  const metricsFile = path.join(runDir, "metrics.json");
  const recorded = fs.existsSync(metricsFile) ? (JSON.parse(fs.readFileSync(metricsFile, "utf8")) as LungMetrics).prediction : undefined;
  const { members, flip } = recorded ?? { members: [MODEL_DIR], flip: false };
  for (const m of members) {
    if (!fs.existsSync(path.join(runDir, m, "model.json"))) throw new Error(`${runDir}: ${m}/model.json is missing; the run is incomplete: train it again (--force)`);
  }
  const hashes = members.map((m) => modelSha256(path.join(runDir, m)));
  const sha256 = members.length === 1 && !flip ? hashes[0] : crypto.createHash("sha256").update(JSON.stringify({ members: hashes, flip })).digest("hex");
  const models = await Promise.all(members.map((m) => loadLayersModel(path.join(runDir, m))));
  return { models, flip, members, sha256, dispose: () => models.forEach((m) => m.dispose()) };
}

/** Save a layers model in the tfjs layers format (model.json with weightsManifest + weights.bin). */
export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const data = Array.isArray(a.weightData) ? Buffer.concat(a.weightData.map((d) => Buffer.from(d))) : Buffer.from(a.weightData ?? new ArrayBuffer(0));
      writeFileAtomic(path.join(dir, "weights.bin"), data);
      writeJsonAtomic(path.join(dir, "model.json"), { format: "layers-model", generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`, modelTopology: a.modelTopology, weightsManifest: [{ paths: ["weights.bin"], weights: a.weightSpecs ?? [] }] });
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
}

/** Load a model saved by saveLayersModel (no file:// handler needed: works on wasm and cpu). */
export async function loadLayersModel(dir: string): Promise<tf.LayersModel> {
  const j = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  const b = fs.readFileSync(path.join(dir, "weights.bin"));
  const weightData = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: j.modelTopology, weightSpecs: j.weightsManifest[0].weights, weightData }));
}

/** SHA-256 over the saved model's topology and weights: the identity of the masks it produces. */
export function modelSha256(dir: string): string {
  return crypto.createHash("sha256").update(sha256File(path.join(dir, "model.json"))).update(sha256File(path.join(dir, "weights.bin"))).digest("hex");
}

/** Checksums of every input: the data manifests of the sources read, and the protocol when pseudo labels are used. */
function inputChecksums(protocolHash: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of ["covid19-ct-seg-lungs", "medseg", ...(protocolHash ? (["covid-ct", "covid19-ct-seg", "luna16"] as const) : [])] as const) {
    const f = sourceManifestFile(s);
    if (fs.existsSync(f)) out[`data/${s}.sha256`] = sha256File(f);
  }
  if (protocolHash) out["protocol/paper"] = protocolHash;
  return out;
}

/** The run's recorded config (keys reuse): profile, seed, split, labels, normalisation. */
function recordedLungConfig(profile: LungProfile, seed: number) {
  return { profile, seed, model: "resunet", labels: profile.pseudoLabels > 0 ? "expert+pseudo" : "expert", split: LUNG_SPLIT, input: LUNG_INPUT_NORMALISATION, lungOptions: LUNG_DEFAULTS, cutToBody: CUT_TO_BODY, fillHoles: true, thresholdGrid: THRESHOLD_GRID };
}

/**
 * Train the lung U-Net of a profile (or reuse the finished identical run) and write its run
 * directory: manifest.json, history.json, checkpoints/, model/ and metrics.json.
 */
export async function trainLungSegmenter(cfg: LungSegmenterConfig): Promise<LungRunResult> {
  const log = cfg.log ?? (() => undefined);
  const profile: LungProfile = { ...getLungProfile(cfg.profile), ...(cfg.profileOverrides ?? {}) };
  const seed = cfg.seed ?? 1;
  await initBackend();
  const sets = await lungSets(profile);
  const rec = recordedLungConfig(profile, seed);
  const checksums = inputChecksums(sets.protocolHash);
  const run = openRun({
    out: cfg.out,
    defaultDir: defaultLungRunDir(profile.name, seed),
    kind: "lungs",
    config: rec,
    checksums,
    resume: cfg.resume,
    force: cfg.force,
    protect: [resolveSegLungsRoot().dir, resolveDataRoot().dir, resolveCovidSegRoot().dir, resolveLunaRoot().dir, resolveMedsegRoot().dir],
    // The notebooks and `covid-ct lungs` reach this run without flags of their own: name the command that replaces it.
    flags: { out: "--segmenter", force: `--retrain-segmenter (npx covid-ct lungs --profile ${profile.name} --seed ${seed} --retrain-segmenter --source medseg --out <new folder>; or delete the directory and the notebooks train it again)` },
  });
  if (run.state === "reused") {
    log(`reusing finished lung segmenter run ${run.dir}`);
    return { runDir: run.dir, metrics: JSON.parse(fs.readFileSync(path.join(run.dir, "metrics.json"), "utf8")), reused: true };
  }
  try {
    const cache = new DiskCache();
    const t0 = Date.now();
    const counts = { trainExpert: sets.trainExpert, trainPseudo: sets.train.length - sets.trainExpert, val: sets.val.length, test: sets.test.length, medseg: sets.medseg.length };
    // Which slice was in which set, as this run saw them (the test blocks never reach training or selection).
    const ids = (xs: Item[]) => xs.map((x) => x.id);
    writeManifest(run.workDir, makeManifest("lungs", rec, checksums, seed, { counts, sets: { train: ids(sets.train), val: ids(sets.val), test: ids(sets.test) } }));
    log(`radiologists' lung masks: ${counts.trainExpert} training slices (blocks other than ${[...LUNG_SPLIT.val, ...LUNG_SPLIT.test].join(", ")})${counts.trainPseudo ? ` + ${counts.trainPseudo} pseudo-labelled protocol slices` : ""}, ${counts.val} validation slices (blocks ${LUNG_SPLIT.val.join(", ")})`);
    const S = profile.inputSize;
    const base = await segmentationSource(sets.train, S, cache);
    const train = await withChestCrops(await withConsolidation(base, sets.train, sets.trainExpert, profile.consolidationCopies, profile.consolidation, seed), sets.train, sets.trainExpert, profile.chestCropCopies ?? 0, profile.chestCropSlack ?? 0, seed, cache);
    const val = await segmentationSource(sets.val, S, cache);
    const t1 = Date.now();
    const model = buildResUNet({ inputSize: S, width: profile.width, seed, bnMomentum: profile.bnMomentum });
    const opt = tf.train.adam(profile.schedule.lr);
    log(`training the residual U-Net (${S}², width ${profile.width}, ${profile.epochs} epochs) → ${run.dir}`);
    const r = await trainModel(model, opt, segmentationTask({ augment: profile.augment }), train, val, {
      epochs: profile.epochs,
      batchSize: profile.batchSize,
      microBatch: profile.microBatch,
      schedule: profile.schedule,
      seed,
      runDir: run.workDir,
      resume: run.state === "resumed",
      onEpoch: (e) => {
        log(`epoch ${e.epoch + 1}/${profile.epochs}: train loss ${e.trainLoss.toFixed(4)}, val Dice ${(e.valDice ?? NaN).toFixed(4)} (${e.seconds.toFixed(0)} s)`);
        cfg.onEpoch?.(e);
      },
    });
    opt.dispose();
    const t2 = Date.now();
    await saveLayersModel(model, path.join(run.workDir, MODEL_DIR));
    const prediction = predictionOf(profile, { best: r.bestEpoch, last: r.history.length - 1 });
    const models = [model];
    if (prediction.members.includes(MODEL_LAST_DIR)) {
      // The last epoch's weights are in the engine's last checkpoint (model holds the selected epoch's).
      const last = await loadModel(path.join(run.workDir, "checkpoints", "last"));
      await saveLayersModel(last, path.join(run.workDir, MODEL_LAST_DIR));
      models.push(last);
    }
    let evaluation: Awaited<ReturnType<typeof evaluateLungModel>>;
    try {
      evaluation = await evaluateLungModel({ models, flip: prediction.flip }, sets, S, cache, LUNG_INPUT_NORMALISATION, log);
    } finally {
      models.forEach((m) => m.dispose());
    }
    const metrics: LungMetrics = {
      profile: profile.name,
      seed,
      bestEpoch: r.bestEpoch,
      epochs: r.history.length,
      valDice: r.bestValue,
      labels: rec.labels as LungMetrics["labels"],
      split: LUNG_SPLIT,
      counts,
      prediction: { ...prediction, lastEpoch: r.history.length - 1 },
      ...evaluation,
      seconds: { prepare: (t1 - t0) / 1000, train: (t2 - t1) / 1000, evaluate: 0 },
    };
    metrics.seconds.evaluate = (Date.now() - t2) / 1000;
    writeJsonAtomic(path.join(run.workDir, "metrics.json"), metrics);
    run.finish();
    log(
      `Dice against the radiologists (test blocks ${LUNG_SPLIT.test.join(", ")}): U-Net ${metrics.expertTest.unet.pooled.dice.toFixed(4)}, classical ${metrics.expertTest.classical.pooled.dice.toFixed(4)} (pooled); ` +
        `MedSeg lesion coverage U-Net ${metrics.medsegCoverage.unet.pooled.coverage.toFixed(4)}; chest-wall share MedSeg U-Net ${metrics.chestWall.medseg.unet.share.toFixed(3)} (experts on their slices ${metrics.chestWall.expertTest.experts.share.toFixed(3)}) → ${run.dir}`,
    );
    return { runDir: run.dir, metrics, reused: false };
  } catch (e) {
    run.abandon();
    throw e;
  }
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
    expertTest: { unet: summary(unetT), classical: summary(classicalT), perSlice },
    medsegCoverage: { classical: summary(lesionC), unet: summary(lesionU) },
    chestWall: { expertTest: { experts: chestWall(cwExperts), unet: chestWall(cwUnetT) }, medseg: { classical: chestWall(cwC), unet: chestWall(cwU) } },
    lungShare: { expertTest: { experts: shareExperts, unet: shareUnetT }, medseg: { classical: shareC, unet: shareU } },
  };
}

/** The input normalisation a run was trained with (its manifest; runs before CLAHE: the plain resize). */
function runNormalisation(manifest: { config: { input?: LungInputNormalisation } }): LungInputNormalisation {
  return manifest.config.input ?? { kind: "none" };
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

export interface LungMaskResult {
  data: Uint8Array;
  height: number;
  width: number;
}

export interface LungSegmenter {
  runDir: string;
  profile: ProfileName;
  /** Identity of the masks: the selected model's SHA-256, or one over every member and the flip (LungPredictor.sha256). */
  modelSha256: string;
  /** Binary 0/1 mask of the file at the image's own height×width and orientation, cached on disk by (image content hash, model hash). */
  maskFor(file: string, source: SourceName): Promise<LungMaskResult>;
  /** maskFor over many files, predicted in batches (cache hits are read, misses batched). */
  masksFor(items: readonly { file: string; source: SourceName }[], onProgress?: (done: number, total: number) => void): Promise<LungMaskResult[]>;
  dispose(): void;
}

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
export async function loadLungSegmenter(runDir: string, o: { cacheDir?: string; batch?: number } = {}): Promise<LungSegmenter> {
  await initBackend();
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const profile = manifest.config.profile as LungProfile;
  const norm = runNormalisation(manifest);
  const metricsFile = path.join(runDir, "metrics.json");
  const threshold: number = fs.existsSync(metricsFile) ? JSON.parse(fs.readFileSync(metricsFile, "utf8")).threshold ?? MASK_THRESHOLD : MASK_THRESHOLD;
  const predictor = await loadLungPredictor(runDir);
  const sha = predictor.sha256;
  const cache = new DiskCache(o.cacheDir ?? cacheDir());
  const batch = o.batch ?? 16;
  const key = (file: string, source: SourceName) => cacheKey("lung-mask", MASK_CACHE_VERSION, contentHash(file), sha, sourceOrientation(source, file), CUT_TO_BODY, threshold, norm);
  const masksFor: LungSegmenter["masksFor"] = async (items, onProgress) => {
    const out: LungMaskResult[] = new Array(items.length);
    const misses: number[] = [];
    let done = 0;
    for (let i = 0; i < items.length; i++) {
      const hit = cache.get(MASK_CACHE_NAMESPACE, key(items[i].file, items[i].source));
      const m = hit ? await readMaskPng(hit) : null;
      if (m) {
        out[i] = m;
        onProgress?.(++done, items.length);
      } else misses.push(i);
    }
    const side = profile.inputSize;
    for (let b = 0; b < misses.length; b += batch) {
      const idx = misses.slice(b, b + batch);
      const slices = await Promise.all(idx.map((i) => uprightSlice(items[i].file, items[i].source)));
      const probs = await probabilitiesOf(predictor, slices, side, norm);
      for (let k = 0; k < idx.length; k++) {
        const s = slices[k];
        const data = toFileOrientation(await unetMask(probs[k], side, s, CUT_TO_BODY, threshold), s);
        out[idx[k]] = { data, height: s.fileHeight, width: s.fileWidth };
        cache.put(MASK_CACHE_NAMESPACE, key(items[idx[k]].file, items[idx[k]].source), await maskToPng(data, s.fileHeight, s.fileWidth));
        onProgress?.(++done, items.length);
      }
    }
    return out;
  };
  return {
    runDir,
    profile: profile.name,
    modelSha256: sha,
    maskFor: async (file, source) => (await masksFor([{ file, source }]))[0],
    masksFor,
    dispose: () => predictor.dispose(),
  };
}
