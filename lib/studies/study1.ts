/**
 * Study I (paper Section 3, Table 5): is CT extracted from papers useful for training?
 * DenseNet-169 / ResNet-50 from ImageNet, trained with one of three positive training sets; the
 * negatives, validation and test sets are fixed (official COVID-CT split).
 *
 * Arms (our protocol; the paper's COVID-Seg and LUNA images are not reachable):
 *   covid-ct-all  all 191 official COVID training images          (paper: COVID-CT-349)
 *   covid-ct-118  a seeded random 118 of them                      (paper: COVID-CT-118)
 *   original-ct   the 50 expert-labelled MedSeg training slices    (paper: COVID-Seg, 118 original CTs)
 * Each run also reports recall on the 48 MedSeg test slices (original CTs, all COVID).
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { initBackend } from "../backend";
import { PROJECT_ROOT, resolveDataRoot, resolveMedsegRoot } from "../config";
import { openDataset } from "../data/dataset";
import { BinaryMetrics, binaryMetrics, bootstrapCI, chooseThreshold, metricFn, officialMetrics, rocAuc } from "../evaluation";
import { makeManifest, sha256OfManifest, writeManifest } from "../manifest";
import { buildModel, featureExtractor, headModel, isModelName, ModelName } from "../models";
import { loadImagenetWeights, preprocessFor } from "../models/weights";
import { EpochLog, ExampleSource, predictProbabilities, StepLog, trainClassifier } from "../training/loop";
import { getProfile, ProfileName, StudyProfile } from "../training/profiles";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { computeFeatures, Example, FeatureNormalisation, featureNormalisation, FeatureSource, foldNormalisation, ImageSource } from "./inputs";

/** Training-set feature statistics of a frozen-features run (part of its model). */
export const NORMALISATION_FILE = "feature-normalisation.json";

export const POSITIVE_ARMS = ["covid-ct-all", "covid-ct-118", "original-ct"] as const;
export type PositiveArm = (typeof POSITIVE_ARMS)[number];
export const STUDY1_MODELS = ["densenet169", "resnet50"] as const;

export interface StudyOneConfig {
  model: ModelName;
  positives: PositiveArm;
  profile: ProfileName;
  seed: number;
  /** Run directory; default runs/study1/<profile>/<model>-<arm>-seed<seed>. */
  out?: string;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
  /** Train again even when a finished run with the same config exists. */
  force?: boolean;
  /** Override the profile's epoch count (ablations, tests). */
  epochs?: number;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
  /** Stop after this many epochs in this call, as if interrupted (tests of --resume). */
  stopAfterEpochs?: number;
}

export interface StudyOneData {
  train: Example[];
  val: Example[];
  test: Example[];
  /** MedSeg test slices: original CTs, all COVID (domain-shift check). */
  medsegTest: Example[];
}

function listMedseg(root: string, part: "train" | "test"): Example[] {
  const dir = path.join(root, part, "images");
  if (!fs.existsSync(dir)) {
    throw new Error(`MedSeg slices not found at ${dir}. Set COVIDCT_MEDSEG to the folder holding train/images and test/images (see README, "Data and weights").`);
  }
  const files = fs.readdirSync(dir).filter((f) => /\.(jpe?g|png)$/i.test(f));
  files.sort((a, b) => parseInt(a, 10) - parseInt(b, 10) || a.localeCompare(b));
  return files.map((f) => ({ id: `medseg/${part}/${f}`, path: path.join(dir, f), label: 1 as const }));
}

function take<T>(xs: readonly T[], n: number | undefined, rng: () => number): T[] {
  if (n === undefined || n >= xs.length) return [...xs];
  const pool = [...xs];
  const out: T[] = [];
  while (out.length < n) out.push(pool.splice(Math.floor(rng() * pool.length), 1)[0]);
  return out;
}

/** The examples of one arm. `limitPerClass` (smoke profile) caps every class/split. */
export function studyOneData(arm: PositiveArm, seed: number, o: { dataRoot?: string; medsegRoot?: string; limitPerClass?: number } = {}): StudyOneData {
  const ds = openDataset(resolveDataRoot(o.dataRoot).dir);
  const medseg = resolveMedsegRoot(o.medsegRoot).dir;
  const ex = (split: "train" | "val" | "test", cls: "covid" | "noncovid"): Example[] =>
    ds.bySplit(split, cls).map((r) => ({ id: `covid-ct/${cls}/${r.file}`, path: r.path, label: cls === "covid" ? 1 : 0 }));
  const rng = seedrandom(`study1:${arm}:${seed}`);
  const lim = o.limitPerClass;
  let positives: Example[];
  if (arm === "covid-ct-all") positives = ex("train", "covid");
  else if (arm === "covid-ct-118") positives = take(ex("train", "covid"), 118, rng);
  else positives = listMedseg(medseg, "train");
  const pick = (xs: Example[]) => take(xs, lim, rng);
  return {
    train: [...pick(positives), ...pick(ex("train", "noncovid"))],
    val: [...pick(ex("val", "covid")), ...pick(ex("val", "noncovid"))],
    test: [...pick(ex("test", "covid")), ...pick(ex("test", "noncovid"))],
    medsegTest: pick(listMedseg(medseg, "test")),
  };
}

export function defaultRunDir(c: Pick<StudyOneConfig, "model" | "positives" | "profile" | "seed">): string {
  return path.join(PROJECT_ROOT, "runs", "study1", c.profile, `${c.model}-${c.positives}-seed${c.seed}`);
}

/** Metrics of one set of predictions, as stored in metrics.json. */
export type SetMetrics = Pick<BinaryMetrics, "n" | "accuracy" | "precision" | "recall" | "f1" | "specificity" | "auc" | "threshold"> & {
  confusion: Pick<BinaryMetrics, "tp" | "fp" | "tn" | "fn">;
};

export interface StudyOneMetrics {
  /** Test at threshold 0.5, COVID positive (what Table 5 compares). */
  test: SetMetrics & { ci95: { accuracy: [number, number]; f1: [number, number]; auc: [number, number] } };
  /** Test at the threshold chosen on validation (Youden's J). */
  testAtValThreshold: SetMetrics;
  /** Test at 0.5 with NonCOVID as the positive class (the official code's convention). */
  testNonCovidPositive: SetMetrics;
  val: SetMetrics;
  /** MedSeg original CTs, all positive: recall at 0.5 and at the validation threshold. */
  medsegTest: { n: number; recall: number; recallAtValThreshold: number };
  bestEpoch: number;
  selectedOn: "validation AUC";
}

export interface StudyOneResult {
  config: StudyOneConfig;
  runDir: string;
  metrics: StudyOneMetrics;
  history: EpochLog[];
  /** True when an earlier finished run was reused. */
  reused: boolean;
  /** True when stopAfterEpochs ended the call early (no metrics yet). */
  interrupted?: boolean;
}

function setMetrics(labels: number[], scores: number[], threshold: number, positive: "covid" | "noncovid" = "covid"): SetMetrics {
  const m = positive === "covid" ? binaryMetrics(labels, scores, { threshold }) : officialMetrics(labels, scores, threshold);
  return {
    n: labels.length,
    accuracy: m.accuracy,
    precision: m.precision,
    recall: m.recall,
    f1: m.f1,
    specificity: m.specificity,
    auc: rocAuc(labels, scores).auc,
    threshold,
    confusion: { tp: m.tp, fp: m.fp, tn: m.tn, fn: m.fn },
  };
}

/** All metrics of a run from its predictions (also used by `covid-ct evaluate`). */
export function metricsFromPredictions(rows: PredictionRow[], bestEpoch: number, seed: number): StudyOneMetrics {
  const of = (set: PredictionRow["set"]) => rows.filter((r) => r.set === set);
  const lab = (rs: PredictionRow[]) => rs.map((r) => r.label);
  const sc = (rs: PredictionRow[]) => rs.map((r) => r.probability);
  const val = of("val");
  const test = of("test");
  const med = of("medseg-test");
  const t = chooseThreshold(lab(val), sc(val), "youden").threshold;
  const ci = (name: "accuracy" | "f1" | "auc") => {
    const b = bootstrapCI(lab(test), sc(test), metricFn(name, 0.5), { n: 1000, seed: `${seed}:${name}` });
    return [b.lower, b.upper] as [number, number];
  };
  const recallAt = (th: number) => (med.length ? med.filter((r) => r.probability >= th).length / med.length : NaN);
  return {
    test: { ...setMetrics(lab(test), sc(test), 0.5), ci95: { accuracy: ci("accuracy"), f1: ci("f1"), auc: ci("auc") } },
    testAtValThreshold: setMetrics(lab(test), sc(test), t),
    testNonCovidPositive: setMetrics(lab(test), sc(test), 0.5, "noncovid"),
    val: setMetrics(lab(val), sc(val), 0.5),
    medsegTest: { n: med.length, recall: recallAt(0.5), recallAtValThreshold: recallAt(t) },
    bestEpoch,
    selectedOn: "validation AUC",
  };
}

export interface PredictionRow {
  set: "val" | "test" | "medseg-test";
  file: string;
  label: number;
  probability: number;
}

export const PREDICTIONS_HEADER = "set,file,label,probability";

export function writePredictions(file: string, rows: PredictionRow[]): void {
  const q = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  writeFileAtomic(file, [PREDICTIONS_HEADER, ...rows.map((r) => `${r.set},${q(r.file)},${r.label},${r.probability}`)].join("\n") + "\n");
}

export function readPredictions(file: string): PredictionRow[] {
  if (!fs.existsSync(file)) throw new Error(`No predictions at ${file}: is this a finished run directory?`);
  const lines = fs.readFileSync(file, "utf8").trim().split("\n");
  if (lines[0] !== PREDICTIONS_HEADER) throw new Error(`${file}: expected header '${PREDICTIONS_HEADER}', got '${lines[0]}'`);
  return lines.slice(1).map((line, i) => {
    const m = line.match(/^([^,]+),("(?:[^"]|"")*"|[^,]*),([01]),([^,]+)$/);
    if (!m) throw new Error(`${file}:${i + 2}: cannot parse '${line}'`);
    const f = m[2].startsWith('"') ? m[2].slice(1, -1).replace(/""/g, '"') : m[2];
    return { set: m[1] as PredictionRow["set"], file: f, label: Number(m[3]), probability: Number(m[4]) };
  });
}

function sameConfig(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export interface StudyOneHooks {
  log?: (msg: string) => void;
  onStep?: (s: StepLog) => void;
  onEpoch?: (e: EpochLog) => void;
  onFeatures?: (done: number, total: number) => void;
}

/** The config as it is recorded (defaults filled, paths resolved). */
function recordedConfig(c: StudyOneConfig, p: StudyProfile) {
  return {
    study: "study1",
    model: c.model,
    positives: c.positives,
    profile: p,
    seed: c.seed,
    epochs: c.epochs ?? p.epochs,
    dataRoot: resolveDataRoot(c.dataRoot).dir,
    medsegRoot: resolveMedsegRoot(c.medsegRoot).dir,
  };
}

/** Train and evaluate one Study I cell (model × arm × seed), or reuse a finished identical run. */
export async function runStudyOne(c: StudyOneConfig, hooks: StudyOneHooks = {}): Promise<StudyOneResult> {
  if (!isModelName(c.model)) throw new Error(`Unknown model '${c.model}'.`);
  if (!(POSITIVE_ARMS as readonly string[]).includes(c.positives)) throw new Error(`Unknown arm '${c.positives}'. Use one of: ${POSITIVE_ARMS.join(", ")}.`);
  const log = hooks.log ?? (() => undefined);
  const profile = getProfile(c.profile);
  const runDir = path.resolve(c.out ?? defaultRunDir(c));
  const rec = recordedConfig(c, profile);
  const metricsFile = path.join(runDir, "metrics.json");
  const manifestFile = path.join(runDir, "manifest.json");
  if (!c.force && !c.resume && fs.existsSync(metricsFile) && fs.existsSync(manifestFile)) {
    const old = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
    if (sameConfig(old.config, rec)) {
      log(`reusing finished run ${runDir}`);
      return { config: c, runDir, metrics: JSON.parse(fs.readFileSync(metricsFile, "utf8")), history: JSON.parse(fs.readFileSync(path.join(runDir, "history.json"), "utf8")), reused: true };
    }
  }
  if (!c.resume && fs.existsSync(runDir)) fs.rmSync(runDir, { recursive: true, force: true });
  fs.mkdirSync(runDir, { recursive: true });
  await initBackend();

  const data = studyOneData(c.positives, c.seed, { dataRoot: c.dataRoot, medsegRoot: c.medsegRoot, limitPerClass: profile.limitPerClass });
  const modelName: ModelName = profile.tinyModels ? (c.model.startsWith("resnet") ? "tiny-resnet" : "tiny-densenet") : c.model;
  const built = buildModel(modelName, { inputSize: profile.inputSize, seed: c.seed });
  const pre = preprocessFor(profile.imagenet ? c.model : modelName);
  const checksums: Record<string, string> = { "data/covid-ct.sha256": sha256OfManifest() };
  if (profile.imagenet) {
    const w = await loadImagenetWeights(built.model, modelName, c.weightsRoot);
    checksums[`weights/${modelName}`] = w.sha256;
    log(`ImageNet weights: ${w.loaded} tensors from ${w.dir}${w.verified ? " (checksum verified)" : " (checksum differs from the tested copy)"}`);
  }
  writeManifest(runDir, makeManifest("study1", rec, checksums, c.seed, { examples: { train: data.train.length, val: data.val.length, test: data.test.length, medsegTest: data.medsegTest.length }, modelBuilt: modelName }));

  const epochs = c.epochs ?? profile.epochs;
  let trainable: tf.LayersModel;
  let sources: Record<"train" | "val" | "test" | "medseg", ExampleSource>;
  if (profile.strategy === "frozen-features") {
    const extractor = featureExtractor(built, "pooled");
    const key = { model: modelName, weightsSha256: checksums[`weights/${modelName}`] ?? "random", size: profile.inputSize };
    const all = [...data.train, ...data.val, ...data.test, ...data.medsegTest];
    log(`frozen features: ${all.length} images at ${profile.inputSize}² (cached after the first run)`);
    const trainF = await computeFeatures(extractor, data.train, key, pre, { views: profile.trainViews, onProgress: hooks.onFeatures });
    const restEx = [...data.val, ...data.test, ...data.medsegTest];
    const restF = await computeFeatures(extractor, restEx, key, pre, { views: 1, onProgress: hooks.onFeatures });
    const nv = data.val.length, nt = data.test.length;
    const norm = profile.standardiseFeatures ? featureNormalisation(trainF) : undefined;
    if (norm) writeJsonAtomic(path.join(runDir, NORMALISATION_FILE), norm);
    sources = {
      train: new FeatureSource(trainF, data.train, norm),
      val: new FeatureSource(restF.slice(0, nv), data.val, norm),
      test: new FeatureSource(restF.slice(nv, nv + nt), data.test, norm),
      medseg: new FeatureSource(restF.slice(nv + nt), data.medsegTest, norm),
    };
    trainable = headModel(built, "pooled");
  } else {
    const aug = profile.augment;
    sources = {
      train: await ImageSource.create(data.train, profile.inputSize, pre, aug),
      val: await ImageSource.create(data.val, profile.inputSize, pre, null),
      test: await ImageSource.create(data.test, profile.inputSize, pre, null),
      medseg: await ImageSource.create(data.medsegTest, profile.inputSize, pre, null),
    };
    trainable = built.model;
  }

  const opt = tf.train.adam(profile.schedule.lr);
  const result = await trainClassifier(trainable, opt, sources.train, sources.val, {
    epochs,
    batchSize: profile.batchSize,
    microBatch: profile.microBatch,
    schedule: profile.schedule,
    seed: c.seed,
    runDir,
    resume: c.resume,
    stopAfterEpochs: c.stopAfterEpochs,
    onStep: hooks.onStep,
    onEpoch: hooks.onEpoch,
  });

  if (result.interrupted) {
    log(`stopped after ${result.history.length} epochs; continue with --resume`);
    return { config: c, runDir, metrics: undefined as unknown as StudyOneMetrics, history: result.history, reused: false, interrupted: true };
  }
  // Test once, with the checkpoint selected on validation AUC.
  const rows: PredictionRow[] = [];
  for (const [set, src] of [["val", sources.val], ["test", sources.test], ["medseg-test", sources.medseg]] as const) {
    const probs = await predictProbabilities(trainable, src);
    probs.forEach((p, i) => rows.push({ set, file: src.ids[i], label: src.labels[i], probability: p }));
  }
  writePredictions(path.join(runDir, "predictions.csv"), rows);
  const metrics = metricsFromPredictions(rows, result.bestEpoch, c.seed);
  writeJsonAtomic(metricsFile, metrics);
  opt.dispose();
  if (trainable !== built.model) trainable.dispose?.();
  built.model.dispose();
  log(`test AUC ${metrics.test.auc.toFixed(3)}, accuracy ${metrics.test.accuracy.toFixed(3)}, F1 ${metrics.test.f1.toFixed(3)} → ${runDir}`);
  return { config: c, runDir, metrics, history: result.history, reused: false };
}

/** Recompute metrics.json from predictions.csv of a finished run (the `evaluate` command). */
export function evaluateRun(runDir: string): StudyOneMetrics {
  const rows = readPredictions(path.join(runDir, "predictions.csv"));
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const history: EpochLog[] = JSON.parse(fs.readFileSync(path.join(runDir, "history.json"), "utf8"));
  let best = -1, bestAuc = -Infinity;
  history.forEach((h) => { if (h.valAuc > bestAuc) { bestAuc = h.valAuc; best = h.epoch; } });
  return metricsFromPredictions(rows, best, manifest.seed);
}

export interface StudyOneGrid {
  profile: ProfileName;
  models?: readonly ModelName[];
  arms?: readonly PositiveArm[];
  /** Default: the profile's seeds. */
  seeds?: readonly number[];
  force?: boolean;
  epochs?: number;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
}

/** Every cell of Table 5 (models × arms × seeds), reusing finished runs. */
export async function runStudyOneGrid(g: StudyOneGrid, hooks: StudyOneHooks & { onRun?: (c: StudyOneConfig, i: number, n: number) => void } = {}): Promise<StudyOneResult[]> {
  const p = getProfile(g.profile);
  const models = g.models ?? STUDY1_MODELS;
  const arms = g.arms ?? POSITIVE_ARMS;
  const seeds = g.seeds ?? p.seeds;
  const cells: StudyOneConfig[] = [];
  for (const model of models) for (const positives of arms) for (const seed of seeds) {
    cells.push({ model, positives, profile: g.profile, seed, force: g.force, epochs: g.epochs, dataRoot: g.dataRoot, medsegRoot: g.medsegRoot, weightsRoot: g.weightsRoot });
  }
  const out: StudyOneResult[] = [];
  for (let i = 0; i < cells.length; i++) {
    hooks.onRun?.(cells[i], i, cells.length);
    out.push(await runStudyOne(cells[i], hooks));
  }
  return out;
}

/** Rebuild a finished run's selected model (ImageNet backbone + trained head, or the fine-tuned net). */
export async function loadRunModel(runDir: string, weightsRoot?: string): Promise<{ built: import("../models").BuiltModel; pre: import("../models/weights").Preprocessing; profile: StudyProfile }> {
  const { loadModel } = await import("../training/checkpoint");
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const cfg = manifest.config as ReturnType<typeof recordedConfig>;
  const profile = cfg.profile;
  const name: ModelName = manifest.extra?.modelBuilt ?? cfg.model;
  const built = buildModel(name, { inputSize: profile.inputSize, seed: cfg.seed });
  if (profile.imagenet) await loadImagenetWeights(built.model, name, weightsRoot);
  const saved = await loadModel(path.join(runDir, "checkpoints", "best"));
  if (profile.strategy === "frozen-features") {
    // The checkpoint is the head model (trained on standardised features when the profile says
    // so): fold the standardisation into covid_head so the full model takes raw images.
    const head = saved.getLayer("covid_head");
    const normFile = path.join(runDir, NORMALISATION_FILE);
    if (fs.existsSync(normFile)) {
      const norm = JSON.parse(fs.readFileSync(normFile, "utf8")) as FeatureNormalisation;
      const [k, b] = head.getWeights() as [tf.Tensor2D, tf.Tensor1D];
      const folded = foldNormalisation(k, b, norm);
      built.model.getLayer("covid_head").setWeights(folded);
      tf.dispose(folded);
    } else {
      built.model.getLayer("covid_head").setWeights(head.getWeights());
    }
  } else {
    built.model.setWeights(saved.getWeights());
  }
  saved.dispose();
  return { built, pre: preprocessFor(profile.imagenet ? cfg.model : name), profile };
}
