/**
 * Study II's lung segmenter: the residual U-Net (lib/models/unet.ts) trained on classical pseudo
 * lung masks (lib/lungs/classical.ts) of the paper protocol's TRAINING images (all sources),
 * selected on the pseudo masks of its validation images, evaluated on
 *   - held-out pseudo masks (protocol validation + test): Dice/IoU of U-Net vs classical masks;
 *   - lesion coverage: the share of lesion pixels inside the lung mask, for MedSeg's radiologist
 *     masks (98 slices, both folders) and COVID-Seg's pseudo-infection masks (≥ 128) of the
 *     protocol's validation and test slices (volumes never seen in training), for both the
 *     classical masks and the U-Net;
 *   - the mean lung share of the image, so a reader sees coverage was not bought by a whole-body mask.
 * One run directory per (profile, seed) through openRun: runs/lungs/paper/<profile>/resunet-seed<N>.
 *
 * ensureLungSegmenter trains (or reuses the finished run) and serves masks at each file's own size
 * and orientation, cached on disk by (image content, model weights).
 */
import * as tf from "@tensorflow/tfjs";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot } from "../config";
import { cacheDir } from "../config";
import { cacheKey, contentHash, DiskCache, mapLimit } from "../data/cache";
import { decodeRaw } from "../data/decode";
import { orientPixels } from "../data/orientation";
import { listMedsegSlices, SourceName, sourceManifestFile, sourceOrientation } from "../data/sources";
import { maskOverlap, MaskOverlap, summariseSegmentation } from "../evaluation";
import { makeManifest, writeManifest } from "../manifest";
import { buildResUNet } from "../models/unet";
import { buildProtocol, protocolExamples, spreadIndices } from "../protocols";
import { openRun } from "../runs";
import { EpochLog, trainModel } from "../training/loop";
import { ProfileName } from "../training/profiles";
import { predictMasks, SegmentationSource, segmentationTask } from "../training/segmentation";
import { sha256File, writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { LUNG_DEFAULTS } from "./classical";
import { getLungProfile, LungProfile } from "./profiles";
import { classicalMask, maskToPng, readMaskPng, unetMask, resizeMask, segmenterInput, toFileOrientation, uprightSlice, UprightSlice } from "./slices";

/** Bump when served masks change for the same model and image (old cache entries are then ignored). */
export const MASK_CACHE_VERSION = 2;
/**
 * U-Net masks are cut to the classical body hull (lib/lungs/classical bodyHull): outside air is
 * never lung, and on uncropped LUNA slices (36 of ~900 training images) the quick U-Net took parts
 * of the black margin for lung (held-out Dice 0.856 before the cut).
 */
export const CUT_TO_BODY = true;
/**
 * Probability at which a pixel is lung (default 0.7). Measured on the quick run (seed 1, cut to
 * body), threshold → held-out Dice vs pseudo masks (pooled) / mean lung share of the held-out
 * images (classical 0.594) / MedSeg lesion coverage / MedSeg lung share (classical 0.734):
 *   0.5 → 0.958 / 0.616 / 0.974 / 0.769
 *   0.6 → 0.960 / 0.603 / 0.970 / 0.754
 *   0.7 → 0.959 / 0.587 / 0.965 / 0.738
 * At 0.5 the U-Net's masks are larger than the masks it learnt from (lung share 0.616 vs 0.594 on
 * held-out images); 0.7 brings the share back to the pseudo masks' at the same Dice. The MedSeg
 * column was looked at too (it is the check, never a training signal): every threshold passes
 * coverage ≥ 0.90; 0.5 and 0.6 leave the MedSeg mask above 75 % of the image.
 */
export const MASK_THRESHOLD = 0.7;
/** DiskCache namespace of the served masks. */
export const MASK_CACHE_NAMESPACE = "lung-masks";
/** Folder of the selected model (tfjs layers format: model.json + weights.bin) inside a run. */
export const MODEL_DIR = "model";

export interface LungSegmenterConfig {
  profile: ProfileName;
  /** Seed of initialisation, shuffling and augmentation (default 1). */
  seed?: number;
  /** Run directory (default runs/lungs/paper/<profile>/resunet-seed<seed>). */
  out?: string;
  /** Replace a finished or interrupted run. */
  force?: boolean;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
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

export interface LungMetrics {
  profile: ProfileName;
  seed: number;
  bestEpoch: number;
  epochs: number;
  /** Best validation Dice (U-Net vs pseudo masks at the input size). */
  valDice: number;
  counts: Record<"train" | "val" | "test" | "medseg" | "covidSeg", number>;
  /** U-Net masks cut to the body hull (CUT_TO_BODY), probabilities thresholded at `threshold` (MASK_THRESHOLD). */
  cutToBody: boolean;
  threshold: number;
  /** U-Net vs classical pseudo masks at full resolution, protocol validation + test images. */
  heldOut: OverlapSummary;
  /** Lesion coverage (the `coverage` fields; Dice/IoU vs lesions mean little) per mask kind. */
  medsegCoverage: { classical: OverlapSummary; unet: OverlapSummary };
  covidSegCoverage: { classical: OverlapSummary; unet: OverlapSummary };
  /** Mean share of the image inside the lung mask. */
  lungShare: { heldOut: { classical: number; unet: number }; medseg: { classical: number; unet: number } };
  seconds: { prepare: number; train: number; evaluate: number };
}

export interface LungRunResult {
  runDir: string;
  metrics: LungMetrics;
  reused: boolean;
}

export function defaultLungRunDir(profile: ProfileName, seed: number): string {
  return path.join(PROJECT_ROOT, "runs", "lungs", "paper", profile, `resunet-seed${seed}`);
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

/** The images of each set: paper protocol train/val/test and MedSeg (both folders). */
async function lungSets(profile: LungProfile): Promise<{ train: Item[]; val: Item[]; test: Item[]; medseg: Item[]; protocolHash: string }> {
  const p = await buildProtocol("paper");
  const items = (split: "train" | "val" | "test") => pick(protocolExamples(p, split).map((e) => ({ id: e.id, path: e.path, source: e.source as SourceName })), profile.limit);
  const medseg = pick([...listMedsegSlices("train"), ...listMedsegSlices("test")].map((m) => ({ id: m.id, path: m.path, source: m.source })), profile.limit);
  return { train: items("train"), val: items("val"), test: items("test"), medseg, protocolHash: p.hash };
}

/** U-Net inputs and pseudo targets at the input size, a few images at a time. */
async function segmentationSource(items: readonly Item[], side: number, cache: DiskCache): Promise<SegmentationSource> {
  const rows = await mapLimit(items, 2, async (it) => {
    const s = await uprightSlice(it.path, it.source);
    const m = await classicalMask(it.path, s, {}, cache);
    return { image: await segmenterInput(s, side), mask: await resizeMask(m, s.height, s.width, side, side) };
  });
  return new SegmentationSource(items.map((i) => i.id), rows.map((r) => r.image), rows.map((r) => r.mask), side);
}

/** The lesion mask of a MedSeg or COVID-Seg slice, upright like its image (null for other sources). */
async function lesionMask(it: Item, s: UprightSlice): Promise<Uint8Array | null> {
  let file: string;
  if (it.source === "medseg") file = path.join(path.dirname(path.dirname(it.path)), "infection", path.basename(it.path).replace(/\.[^.]+$/, ".png"));
  else if (it.source === "covid19-ct-seg") file = path.join(path.dirname(path.dirname(it.path)), "pseudo-infection", path.basename(it.path).replace(/\.[^.]+$/, ".png"));
  else return null;
  const raw = await decodeRaw(file, 1);
  if (raw.height !== s.fileHeight || raw.width !== s.fileWidth) throw new Error(`${file}: ${raw.height}×${raw.width}, its image ${s.fileHeight}×${s.fileWidth}`);
  const bin = new Uint8Array(raw.data.length);
  for (let i = 0; i < bin.length; i++) bin[i] = raw.data[i] >= 128 ? 1 : 0; // pseudo lesions hold grey values: threshold 128
  return orientPixels(bin, raw.height, raw.width, 1, s.orientation).data;
}

const share = (m: Uint8Array) => m.reduce((a, b) => a + b, 0) / Math.max(1, m.length);

interface SetEvaluation {
  vsClassical: MaskOverlap[];
  lesionClassical: MaskOverlap[];
  lesionUnet: MaskOverlap[];
  lesionSources: SourceName[];
  shareClassical: number;
  shareUnet: number;
}

/** U-Net and classical masks of every item at full (upright) resolution, compared. */
async function evaluateSet(model: tf.LayersModel, items: readonly Item[], side: number, cache: DiskCache, cutToBody: boolean, threshold: number, batch = 16): Promise<SetEvaluation> {
  const r: SetEvaluation = { vsClassical: [], lesionClassical: [], lesionUnet: [], lesionSources: [], shareClassical: 0, shareUnet: 0 };
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const slices = await Promise.all(chunk.map((it) => uprightSlice(it.path, it.source)));
    const inputs = await Promise.all(slices.map((s) => segmenterInput(s, side)));
    const src = new SegmentationSource(chunk.map((c) => c.id), inputs, inputs.map(() => new Uint8Array(side * side)), side);
    const probs: Float32Array[] = [];
    await predictMasks(model, src, batch, (k, p) => (probs[k] = p.slice()));
    for (let k = 0; k < chunk.length; k++) {
      const s = slices[k];
      const classical = await classicalMask(chunk[k].path, s, {}, cache);
      const unet = await unetMask(probs[k], side, s, cutToBody, threshold);
      r.vsClassical.push(maskOverlap(unet, classical));
      r.shareClassical += share(classical) / items.length;
      r.shareUnet += share(unet) / items.length;
      const lesion = await lesionMask(chunk[k], s);
      if (lesion) {
        r.lesionClassical.push(maskOverlap(classical, lesion));
        r.lesionUnet.push(maskOverlap(unet, lesion));
        r.lesionSources.push(chunk[k].source);
      }
    }
  }
  return r;
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

/** Checksums of every input: the data manifests of the four sources and the protocol membership. */
function inputChecksums(protocolHash: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of ["covid-ct", "covid19-ct-seg", "luna16", "medseg"] as const) {
    const f = sourceManifestFile(s);
    if (fs.existsSync(f)) out[`data/${s}.sha256`] = sha256File(f);
  }
  out["protocol/paper"] = protocolHash;
  return out;
}

/**
 * Train the lung U-Net of a profile (or reuse the finished identical run) and write its run
 * directory: manifest.json, history.json, checkpoints/, model/ and metrics.json.
 */
export async function trainLungSegmenter(cfg: LungSegmenterConfig): Promise<LungRunResult> {
  const log = cfg.log ?? (() => undefined);
  const profile = getLungProfile(cfg.profile);
  const seed = cfg.seed ?? 1;
  await initBackend();
  const sets = await lungSets(profile);
  const rec = { profile, seed, protocol: "paper", lungOptions: LUNG_DEFAULTS, covidSegCoverage: "protocol val+test slices", model: "resunet" };
  const checksums = inputChecksums(sets.protocolHash);
  const run = openRun({
    out: cfg.out,
    defaultDir: defaultLungRunDir(profile.name, seed),
    kind: "lungs",
    config: rec,
    checksums,
    resume: cfg.resume,
    force: cfg.force,
    protect: [resolveDataRoot().dir, resolveCovidSegRoot().dir, resolveLunaRoot().dir, resolveMedsegRoot().dir],
  });
  if (run.state === "reused") {
    log(`reusing finished lung segmenter run ${run.dir}`);
    return { runDir: run.dir, metrics: JSON.parse(fs.readFileSync(path.join(run.dir, "metrics.json"), "utf8")), reused: true };
  }
  try {
    const cache = new DiskCache();
    const t0 = Date.now();
    writeManifest(run.workDir, makeManifest("lungs", rec, checksums, seed, { counts: { train: sets.train.length, val: sets.val.length, test: sets.test.length, medseg: sets.medseg.length } }));
    log(`pseudo lung masks of ${sets.train.length} training and ${sets.val.length} validation images (classical extractor, cached)`);
    const S = profile.inputSize;
    const train = await segmentationSource(sets.train, S, cache);
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
    const metrics: LungMetrics = {
      profile: profile.name,
      seed,
      bestEpoch: r.bestEpoch,
      epochs: r.history.length,
      valDice: r.bestValue,
      ...(await evaluateLungModel(model, sets, S, cache, CUT_TO_BODY, MASK_THRESHOLD, log)),
      seconds: { prepare: (t1 - t0) / 1000, train: (t2 - t1) / 1000, evaluate: 0 },
    };
    model.dispose();
    metrics.seconds.evaluate = (Date.now() - t2) / 1000;
    writeJsonAtomic(path.join(run.workDir, "metrics.json"), metrics);
    run.finish();
    log(
      `held-out Dice vs pseudo masks ${metrics.heldOut.pooled.dice.toFixed(4)} (pooled); MedSeg lesion coverage classical ` +
        `${metrics.medsegCoverage.classical.pooled.coverage.toFixed(4)}, U-Net ${metrics.medsegCoverage.unet.pooled.coverage.toFixed(4)} → ${run.dir}`,
    );
    return { runDir: run.dir, metrics, reused: false };
  } catch (e) {
    run.abandon();
    throw e;
  }
}

type LungSets = Awaited<ReturnType<typeof lungSets>>;

/** The evaluation part of metrics.json (see LungMetrics). */
async function evaluateLungModel(model: tf.LayersModel, sets: LungSets, side: number, cache: DiskCache, cutToBody: boolean, threshold: number, log: (m: string) => void) {
  log(`evaluating on ${sets.val.length + sets.test.length} held-out and ${sets.medseg.length} MedSeg images`);
  const held = await evaluateSet(model, [...sets.val, ...sets.test], side, cache, cutToBody, threshold);
  const med = await evaluateSet(model, sets.medseg, side, cache, cutToBody, threshold);
  const covidSeg = (o: MaskOverlap[]) => o.filter((_, i) => held.lesionSources[i] === "covid19-ct-seg");
  return {
    counts: { train: sets.train.length, val: sets.val.length, test: sets.test.length, medseg: sets.medseg.length, covidSeg: covidSeg(held.lesionUnet).length },
    cutToBody,
    threshold,
    heldOut: summary(held.vsClassical),
    medsegCoverage: { classical: summary(med.lesionClassical), unet: summary(med.lesionUnet) },
    covidSegCoverage: { classical: summary(covidSeg(held.lesionClassical)), unet: summary(covidSeg(held.lesionUnet)) },
    lungShare: { heldOut: { classical: held.shareClassical, unet: held.shareUnet }, medseg: { classical: med.shareClassical, unet: med.shareUnet } },
  };
}

/**
 * Recompute the evaluation of a finished lung run (after a change of the mask post-processing or
 * the metrics), keeping its training fields; writes metrics.json when `write`.
 */
export async function evaluateLungRun(runDir: string, o: { write?: boolean; log?: (m: string) => void; threshold?: number } = {}): Promise<LungMetrics> {
  await initBackend();
  const old = JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8")) as LungMetrics;
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const profile = manifest.config.profile as LungProfile;
  const sets = await lungSets(profile);
  const model = await loadLayersModel(path.join(runDir, MODEL_DIR));
  const t = Date.now();
  const metrics: LungMetrics = { ...old, ...(await evaluateLungModel(model, sets, profile.inputSize, new DiskCache(), CUT_TO_BODY, o.threshold ?? MASK_THRESHOLD, o.log ?? (() => undefined))) };
  metrics.seconds = { ...old.seconds, evaluate: (Date.now() - t) / 1000 };
  model.dispose();
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
  /** Run directory (default runs/lungs/paper/<profile>/resunet-seed<seed>). */
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
  const dir = path.join(runDir, MODEL_DIR);
  const sha = modelSha256(dir);
  const model = await loadLayersModel(dir);
  const cache = new DiskCache(o.cacheDir ?? cacheDir());
  const batch = o.batch ?? 16;
  const key = (file: string, source: SourceName) => cacheKey("lung-mask", MASK_CACHE_VERSION, contentHash(file), sha, sourceOrientation(source, file), CUT_TO_BODY, MASK_THRESHOLD);
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
      const inputs = await Promise.all(slices.map((s) => segmenterInput(s, side)));
      const src = new SegmentationSource(idx.map((i) => items[i].file), inputs, inputs.map(() => new Uint8Array(side * side)), side);
      const probs: Float32Array[] = [];
      await predictMasks(model, src, batch, (k, p) => (probs[k] = p.slice()));
      for (let k = 0; k < idx.length; k++) {
        const s = slices[k];
        const data = toFileOrientation(await unetMask(probs[k], side, s, CUT_TO_BODY, MASK_THRESHOLD), s);
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
    dispose: () => model.dispose(),
  };
}
