/**
 * The residual U-Net segmenter, one target at a time: the lungs (lib/lungs/segmenter.ts) or the
 * lesions (lib/lesions/segmenter.ts). A target says what the U-Net learns from (its sets and
 * masks), how its masks are measured against the radiologists, and how probabilities become a
 * served mask; everything else is this one road, for every target:
 *
 *   sets → training / validation sources (one input normalisation: lungs/slices segmenterInput)
 *        → the engine's loop (lib/training/loop.ts, segmentationTask)
 *        → run directory through openRun: manifest.json, history.json, checkpoints/, model/ (the
 *          selected epoch), model-last/ (the last, when the profile averages it in), metrics.json
 *        → served masks at each file's own size and orientation, cached on disk by (image content,
 *          every model member's weights, flip, post-processing, threshold, normalisation).
 *
 * Reuse and refusal are openRun's (lib/runs/open.ts): a finished run with the same recorded config
 * and data checksums is reused; another config is refused with the way out.
 */
import * as tf from "@tensorflow/tfjs";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { cacheDir } from "../config";
import { cacheKey, contentHash, DiskCache, mapLimit } from "../data/cache";
import { SourceName, sourceManifestFile, sourceOrientation } from "../data/sources";
import { MaskOverlap, summariseSegmentation } from "../evaluation";
import { makeManifest, writeManifest } from "../manifest";
import { foldBatchNorm } from "../models/fold";
import { buildResUNet } from "../models/unet";
import { spreadIndices } from "../protocols";
import { openRun } from "../runs";
import { loadModel } from "../training/checkpoint";
import { EpochLog, trainModel } from "../training/loop";
import { ProfileName } from "../training/profiles";
import { predictMasks, SegmentationSource, segmentationTask } from "../training/segmentation";
import { sha256File, writeFileAtomic, writeJsonAtomic } from "../util/fs";
import type { SegmenterProfile } from "./profile";
import { LUNG_INPUT_NORMALISATION, LungInputNormalisation, maskToPng, readMaskPng, resizeMask, segmenterInput, toFileOrientation, uprightSlice, UprightSlice } from "./slices";

/** Folder of the selected model (tfjs layers format: model.json + weights.bin) inside a run. */
export const MODEL_DIR = "model";
/** Folder of the last epoch's model inside a run whose profile averages it in (ensembleLastEpoch). */
export const MODEL_LAST_DIR = "model-last";
/** Mask thresholds tried on the validation slices; the best pooled Dice against the radiologists is used. */
export const THRESHOLD_GRID = [0.3, 0.4, 0.5, 0.6, 0.7] as const;

export type { SegmenterProfile } from "./profile";

/** An image a segmenter reads: its id, file and source. */
export interface Item {
  id: string;
  path: string;
  source: SourceName;
}

/** What every target's sets have: training, validation (checkpoint and threshold) and the held-out test slices. */
export interface TargetSets {
  train: Item[];
  val: Item[];
  test: Item[];
}

/** The models a run predicts with, and whether each also sees the mirrored slice (predictMasks). */
export interface SegmenterPrediction {
  models: tf.LayersModel[];
  flip: boolean;
}

/** A finished run's prediction, loaded, with the identity of the masks it produces. */
export interface SegmenterPredictor extends SegmenterPrediction {
  /** Model folders inside the run, in the order of `models`. */
  members: string[];
  /** modelSha256 of the selected model alone; with more members or the flip, a hash over them all. */
  sha256: string;
  dispose(): void;
}

/** What a segmenter learns and how its masks are judged and served. */
export interface SegmenterTarget<P extends SegmenterProfile, S extends TargetSets, E extends { threshold: number }, X extends object = object> {
  /** The run kind (manifest.json `kind`) and the command that writes masks: `covid-ct <kind>`. */
  kind: "lungs" | "lesions";
  /** "lung" | "lesion", for messages. */
  what: string;
  profile(name: string): P;
  defaultRunDir(profile: ProfileName, seed: number): string;
  /** The run's recorded config (keys reuse). */
  recordedConfig(profile: P, seed: number): Record<string, unknown>;
  sets(profile: P): Promise<S>;
  /** Checksums of every input (data manifests, protocol). */
  checksums(sets: S): Record<string, string>;
  /** Data roots the run directory must never be written over, into or above. */
  protect(): string[];
  /** The refusal's way out: how a user replaces the run (openRun's flags.force). */
  retrainHint(profile: P, seed: number): string;
  /** Counts and other facts recorded in metrics.json (and the manifest's `counts`). */
  facts(sets: S, profile: P): X & { counts: Record<string, number> };
  describeSets(sets: S): string;
  /** Training examples at the input size (with the target's extra copies). */
  trainingSource(sets: S, profile: P, seed: number, cache: DiskCache): Promise<SegmentationSource>;
  /** The target's reference mask of a slice, upright like it. */
  referenceMask(item: Item, s: UprightSlice, cache: DiskCache): Promise<Uint8Array>;
  /** Measure a trained prediction: choose the threshold on validation, then the held-out sets. */
  evaluate(prediction: SegmenterPrediction, sets: S, profile: P, cache: DiskCache, norm: LungInputNormalisation, log: (m: string) => void): Promise<E>;
  /** The last log line of a finished run. */
  summary(metrics: E): string;
  /** Upright probabilities [side²] → served 0/1 mask at the upright slice's size. */
  maskOf(prob: ArrayLike<number>, side: number, s: UprightSlice, threshold: number): Promise<Uint8Array>;
  /** Served masks' cache: key tag, version, namespace, and the post-processing parts of the key. */
  cache: { tag: string; version: number; namespace: string; keyParts(threshold: number): unknown[] };
  /** Threshold of runs that did not record one. */
  defaultThreshold: number;
}

/** metrics.json of a segmenter run: what every target records, then the target's facts and evaluation. */
export type SegmenterMetrics<E, X = object> = {
  profile: ProfileName;
  seed: number;
  bestEpoch: number;
  epochs: number;
  /** Best validation Dice at the input size (checkpoint selection, threshold 0.5). */
  valDice: number;
  /** The model folders whose probabilities are averaged and the test-time flip (absent in runs before the knobs: model/ alone). */
  prediction?: { members: string[]; flip: boolean; lastEpoch: number };
  seconds: { prepare: number; train: number; evaluate: number };
} & X & E;

export interface SegmenterRunConfig<P extends SegmenterProfile> {
  profile: ProfileName;
  /** Seed of initialisation, shuffling and augmentation (default 1). */
  seed?: number;
  /** Run directory (default: the target's). */
  out?: string;
  /** Replace a finished or interrupted run. */
  force?: boolean;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
  /** Override profile knobs (ablations); recorded with the profile. */
  profileOverrides?: Partial<Omit<P, "name">>;
  log?: (m: string) => void;
  onEpoch?: (e: EpochLog) => void;
}

export interface SegmenterRunResult<M> {
  runDir: string;
  metrics: M;
  reused: boolean;
}

/** Reference masks and normalised inputs of items at the input size (the one road inference takes too). */
export async function referenceSource<P extends SegmenterProfile, S extends TargetSets, E extends { threshold: number }>(target: SegmenterTarget<P, S, E>, items: readonly Item[], side: number, cache: DiskCache, norm: LungInputNormalisation = LUNG_INPUT_NORMALISATION): Promise<SegmentationSource> {
  const rows = await mapLimit(items, 2, async (it) => {
    const s = await uprightSlice(it.path, it.source);
    const m = await target.referenceMask(it, s, cache);
    return { image: await segmenterInput(s, side, norm), mask: await resizeMask(m, s.height, s.width, side, side) };
  });
  return new SegmentationSource(items.map((i) => i.id), rows.map((r) => r.image), rows.map((r) => r.mask), side);
}

/**
 * The model folders and flip a profile asks for, given the selected and the last epoch: the last
 * epoch is a second member only when it is another epoch (runs made before the knobs: the selected
 * model alone, no flip).
 */
export function predictionOf(profile: Pick<SegmenterProfile, "ensembleLastEpoch" | "testTimeFlip">, epochs: { best: number; last: number }): { members: string[]; flip: boolean } {
  return { members: profile.ensembleLastEpoch && epochs.last !== epochs.best ? [MODEL_DIR, MODEL_LAST_DIR] : [MODEL_DIR], flip: profile.testTimeFlip ?? false };
}

/**
 * Train a target's U-Net under a profile (or reuse the finished identical run) and write its run
 * directory: manifest.json, history.json, checkpoints/, model/ (+ model-last/) and metrics.json.
 */
export async function trainSegmenter<P extends SegmenterProfile, S extends TargetSets, E extends { threshold: number }, X extends object>(target: SegmenterTarget<P, S, E, X>, cfg: SegmenterRunConfig<P>): Promise<SegmenterRunResult<SegmenterMetrics<E, X>>> {
  const log = cfg.log ?? (() => undefined);
  const profile: P = { ...target.profile(cfg.profile), ...(cfg.profileOverrides ?? {}) };
  const seed = cfg.seed ?? 1;
  await initBackend();
  const sets = await target.sets(profile);
  const rec = target.recordedConfig(profile, seed);
  const checksums = target.checksums(sets);
  const run = openRun({
    out: cfg.out,
    defaultDir: target.defaultRunDir(profile.name, seed),
    kind: target.kind,
    config: rec,
    checksums,
    resume: cfg.resume,
    force: cfg.force,
    protect: target.protect(),
    // The notebooks and `covid-ct lungs|lesions` reach this run without flags of their own: name the command that replaces it.
    flags: { out: "--segmenter", force: target.retrainHint(profile, seed) },
  });
  if (run.state === "reused") {
    log(`reusing finished ${target.what} segmenter run ${run.dir}`);
    return { runDir: run.dir, metrics: JSON.parse(fs.readFileSync(path.join(run.dir, "metrics.json"), "utf8")), reused: true };
  }
  try {
    const cache = new DiskCache();
    const t0 = Date.now();
    const facts = target.facts(sets, profile);
    // Which slice was in which set, as this run saw them (the test slices never reach training or selection).
    const ids = (xs: Item[]) => xs.map((x) => x.id);
    writeManifest(run.workDir, makeManifest(target.kind, rec, checksums, seed, { counts: facts.counts, sets: { train: ids(sets.train), val: ids(sets.val), test: ids(sets.test) } }));
    log(target.describeSets(sets));
    const S = profile.inputSize;
    const norm = profile.input ?? LUNG_INPUT_NORMALISATION;
    const train = await target.trainingSource(sets, profile, seed, cache);
    const val = await referenceSource(target, sets.val, S, cache, norm);
    const t1 = Date.now();
    const model = buildResUNet({ inputSize: S, width: profile.width, seed, bnMomentum: profile.bnMomentum });
    const opt = tf.train.adam(profile.schedule.lr);
    log(`training the residual U-Net on ${target.what} masks (${S}², width ${profile.width}, ${profile.epochs} epochs) → ${run.dir}`);
    const r = await trainModel(model, opt, segmentationTask({ augment: profile.augment, ...(profile.loss ? { loss: profile.loss } : {}) }), train, val, {
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
    let evaluation: E;
    // Measured through the graph that serves the masks (loadPredictor folds BN the same way).
    const served = await inferenceModels(models);
    try {
      evaluation = await target.evaluate({ models: served, flip: prediction.flip }, sets, profile, cache, norm, log);
    } finally {
      served.forEach((m) => m.dispose());
    }
    const metrics = {
      profile: profile.name,
      seed,
      bestEpoch: r.bestEpoch,
      epochs: r.history.length,
      valDice: r.bestValue,
      ...facts,
      prediction: { ...prediction, lastEpoch: r.history.length - 1 },
      ...evaluation,
      seconds: { prepare: (t1 - t0) / 1000, train: (t2 - t1) / 1000, evaluate: (Date.now() - t2) / 1000 },
    } as SegmenterMetrics<E, X>;
    writeJsonAtomic(path.join(run.workDir, "metrics.json"), metrics);
    run.finish();
    log(`${target.summary(evaluation)} → ${run.dir}`);
    return { runDir: run.dir, metrics, reused: false };
  } catch (e) {
    run.abandon();
    throw e;
  }
}

/** The input normalisation a run was trained with (its manifest; runs before CLAHE: the plain resize). */
export function runNormalisation(manifest: { config: { input?: LungInputNormalisation } }): LungInputNormalisation {
  return manifest.config.input ?? { kind: "none" };
}

/** The run's probabilities [side²] for upright slices, through the one input road (segmenterInput), in one batch. */
export async function probabilitiesOf(predictor: SegmenterPrediction, slices: readonly UprightSlice[], side: number, norm: LungInputNormalisation): Promise<Float32Array[]> {
  const inputs = await Promise.all(slices.map((s) => segmenterInput(s, side, norm)));
  const src = new SegmentationSource(slices.map((_, k) => String(k)), inputs, inputs.map(() => new Uint8Array(side * side)), side);
  const probs: Float32Array[] = [];
  await predictMasks(predictor.models, src, Math.max(1, slices.length), (k, p) => (probs[k] = p.slice()), { flip: predictor.flip });
  return probs;
}

/** Every item's upright slice and probabilities [side²], predicted in batches. */
export async function predictItems<T extends Item>(prediction: SegmenterPrediction, items: readonly T[], side: number, norm: LungInputNormalisation, batch = 16): Promise<{ item: T; s: UprightSlice; prob: Float32Array }[]> {
  const out: { item: T; s: UprightSlice; prob: Float32Array }[] = [];
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const slices = await Promise.all(chunk.map((it) => uprightSlice(it.path, it.source)));
    const probs = await probabilitiesOf(prediction, slices, side, norm);
    chunk.forEach((item, k) => out.push({ item, s: slices[k], prob: probs[k] }));
  }
  return out;
}

/** Load what a finished run predicts with: the members and flip its metrics.json records (runs before the knobs: model/ alone). */
export async function loadPredictor(runDir: string): Promise<SegmenterPredictor> {
  const metricsFile = path.join(runDir, "metrics.json");
  const recorded = fs.existsSync(metricsFile) ? (JSON.parse(fs.readFileSync(metricsFile, "utf8")) as { prediction?: { members: string[]; flip: boolean } }).prediction : undefined;
  const { members, flip } = recorded ?? { members: [MODEL_DIR], flip: false };
  for (const m of members) {
    if (!fs.existsSync(path.join(runDir, m, "model.json"))) throw new Error(`${runDir}: ${m}/model.json is missing; the run is incomplete: train it again (--force)`);
  }
  const hashes = members.map((m) => modelSha256(path.join(runDir, m)));
  const sha256 = members.length === 1 && !flip ? hashes[0] : crypto.createHash("sha256").update(JSON.stringify({ members: hashes, flip })).digest("hex");
  const models = await inferenceModels(await Promise.all(members.map((m) => loadLayersModel(path.join(runDir, m)))));
  return { models, flip, members, sha256, dispose: () => models.forEach((m) => m.dispose()) };
}

/**
 * The graphs a segmenter predicts with: each model with BN folded into the conv before it
 * (lib/models/fold.ts; same outputs to float rounding, about a fifth less time on wasm). Takes
 * ownership: the given models are disposed.
 */
export async function inferenceModels(models: readonly tf.LayersModel[]): Promise<tf.LayersModel[]> {
  const out: tf.LayersModel[] = [];
  for (const m of models) {
    out.push(await foldBatchNorm(m));
    m.dispose();
  }
  return out;
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

export interface MaskResult {
  data: Uint8Array;
  height: number;
  width: number;
}

/** A loaded segmenter run serving masks. */
export interface Segmenter {
  runDir: string;
  profile: ProfileName;
  /** Identity of the masks: the selected model's SHA-256, or one over every member and the flip (SegmenterPredictor.sha256). */
  modelSha256: string;
  /** The run's mask threshold (chosen on validation). */
  threshold: number;
  /** Binary 0/1 mask of the file at the image's own height×width and orientation, cached on disk by (image content hash, model hash). */
  maskFor(file: string, source: SourceName): Promise<MaskResult>;
  /** maskFor over many files, predicted in batches (cache hits are read, misses batched). */
  masksFor(items: readonly { file: string; source: SourceName }[], onProgress?: (done: number, total: number) => void): Promise<MaskResult[]>;
  dispose(): void;
}

/** Load a finished segmenter run of a target. */
export async function loadSegmenter<P extends SegmenterProfile, S extends TargetSets, E extends { threshold: number }, X extends object>(target: SegmenterTarget<P, S, E, X>, runDir: string, o: { cacheDir?: string; batch?: number } = {}): Promise<Segmenter> {
  await initBackend();
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  if (manifest.kind !== target.kind) throw new Error(`${runDir} is a ${manifest.kind} run, not a ${target.what} segmenter run (covid-ct ${target.kind} --segmenter <dir>).`);
  const profile = manifest.config.profile as P;
  const norm = runNormalisation(manifest);
  const metricsFile = path.join(runDir, "metrics.json");
  const threshold: number = fs.existsSync(metricsFile) ? JSON.parse(fs.readFileSync(metricsFile, "utf8")).threshold ?? target.defaultThreshold : target.defaultThreshold;
  const predictor = await loadPredictor(runDir);
  const sha = predictor.sha256;
  const cache = new DiskCache(o.cacheDir ?? cacheDir());
  const batch = o.batch ?? 16;
  const { tag, version, namespace, keyParts } = target.cache;
  const key = (file: string, source: SourceName) => cacheKey(tag, version, contentHash(file), sha, sourceOrientation(source, file), ...keyParts(threshold), norm);
  const masksFor: Segmenter["masksFor"] = async (items, onProgress) => {
    const out: MaskResult[] = new Array(items.length);
    const misses: number[] = [];
    let done = 0;
    for (let i = 0; i < items.length; i++) {
      const hit = cache.get(namespace, key(items[i].file, items[i].source));
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
        const data = toFileOrientation(await target.maskOf(probs[k], side, s, threshold), s);
        out[idx[k]] = { data, height: s.fileHeight, width: s.fileWidth };
        cache.put(namespace, key(items[idx[k]].file, items[idx[k]].source), await maskToPng(data, s.fileHeight, s.fileWidth));
        onProgress?.(++done, items.length);
      }
    }
    return out;
  };
  return {
    runDir,
    profile: profile.name,
    modelSha256: sha,
    threshold,
    maskFor: async (file, source) => (await masksFor([{ file, source }]))[0],
    masksFor,
    dispose: () => predictor.dispose(),
  };
}

/** Evenly spread subset (smoke limits), so every source of a mixed set is represented. */
export function pick<T>(items: readonly T[], limit?: number): T[] {
  return limit === undefined || items.length <= limit ? [...items] : spreadIndices(items.length, limit).map((i) => items[i]);
}

/** SHA-256 of the committed data manifest of each source read (data/<source>.sha256), keyed `data/<source>.sha256`. */
export function dataChecksums(sources: readonly SourceName[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of sources) {
    const f = sourceManifestFile(s);
    if (fs.existsSync(f)) out[`data/${s}.sha256`] = sha256File(f);
  }
  return out;
}

/** One set's overlap summary: pooled and per-image mean. */
export interface OverlapSummary {
  n: number;
  pooled: { dice: number; iou: number; coverage: number };
  perImage: { dice: number; iou: number; coverage: number };
}

export function overlapSummary(o: readonly MaskOverlap[]): OverlapSummary {
  const s = summariseSegmentation(o);
  return {
    n: s.n,
    pooled: { dice: s.pooled.dice, iou: s.pooled.iou, coverage: s.pooled.coverage },
    perImage: { dice: s.perImage.dice.mean, iou: s.perImage.iou.mean, coverage: s.perImage.coverage.mean },
  };
}
