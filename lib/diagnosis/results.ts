/**
 * What a diagnosis run leaves and how it is read back: metrics from predictions (Tables 5–7's
 * numbers, also `covid-ct evaluate`), the result types, lesion predictions, and the selected model
 * rebuilt for Grad-CAM and embeddings.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { BinaryMetrics, binaryMetrics, bootstrapCI, chooseThreshold, metricFn, officialMetrics, rocAuc, SegmentationSummary } from "../evaluation";
import { buildModel, ModelName } from "../models";
import { loadImagenetWeights, preprocessFor } from "../models/weights";
import { PredictionRow, readPredictions as readPredictionsFile, readRunManifest, writePredictions } from "../runs";
import { EpochLog } from "../training/loop";
import { StudyProfile } from "../training/profiles";
import { writeJsonAtomic } from "../util/fs";
import { DiagnosisConfig, defaultRunDir, DiagnosisModel, recordedConfig, SHORTCUT_MODEL } from "./config";
import { FeatureNormalisation, foldNormalisation } from "./inputs";

/** Training-set feature statistics of a frozen-features run (part of its model). */
export const NORMALISATION_FILE = "feature-normalisation.json";

/** Per-channel standardisation of a frozen-map run's training maps (part of its head model). */
export const CHANNEL_NORMALISATION_FILE = "map-normalisation.json";

/** Metrics of one set of predictions, as stored in metrics.json. */
export type SetMetrics = Pick<BinaryMetrics, "n" | "accuracy" | "precision" | "recall" | "f1" | "specificity" | "auc" | "threshold"> & {
  confusion: Pick<BinaryMetrics, "tp" | "fp" | "tn" | "fn">;
};

export interface DiagnosisMetrics {
  /** Test at threshold 0.5, COVID positive (what Table 5 compares). */
  test: SetMetrics & { ci95: { accuracy: [number, number]; f1: [number, number]; auc: [number, number] } };
  /** Test at the threshold chosen on validation (Youden's J). */
  testAtValThreshold: SetMetrics;
  /** Test at 0.5 with NonCOVID as the positive class (the official code's convention). */
  testNonCovidPositive: SetMetrics;
  val: SetMetrics;
  /** MedSeg original CTs, all positive: recall at 0.5 and at the validation threshold. */
  medsegTest: { n: number; recall: number; recallAtValThreshold: number };
  /**
   * The external set (São Paulo: both classes from one hospital, so the source cannot give the
   * label away), predicted only: at 0.5 with bootstrap intervals, and at the validation threshold.
   * `covidCallRate`: share of its slices the model calls COVID (at the validation threshold), beside
   * `trueCovidRate`, the share that are COVID. Intervals are per slice (no patient ids): optimistic.
   * Absent for runs without external predictions.
   */
  external?: ExternalMetrics;
  bestEpoch: number;
  selectedOn: "validation AUC";
  /**
   * Runs with a lesion branch: Dice/IoU of the predicted lesion masks, pooled and per image, at the
   * lesion output's size — on the MedSeg test slices (radiologists' masks) and on the validation
   * COVID-Seg slices (Inf-Net pseudo labels). Not derivable from predictions.csv.
   */
  lesion?: { medsegTest: SegmentationSummary | null; val: SegmentationSummary | null; size: number };
}

export interface ExternalMetrics {
  n: number;
  atHalf: SetMetrics & { ci95: { accuracy: [number, number]; f1: [number, number]; auc: [number, number] } };
  atValThreshold: SetMetrics;
  covidCallRate: number;
  trueCovidRate: number;
  intervals: "per slice (no patient ids): optimistic";
}

/** A finished (or reused) diagnosis run. */
export interface DiagnosisResult {
  config: DiagnosisConfig;
  runDir: string;
  metrics: DiagnosisMetrics;
  history: EpochLog[];
  /** The model that was trained: c.model, or its tiny stand-in under the smoke profile. */
  modelBuilt: DiagnosisModel;
  /** True when an earlier finished run was reused. */
  reused: boolean;
  interrupted: false;
}

/** A run that stopped early (stopAfterEpochs): checkpoints, no metrics; continue with resume. */
export interface DiagnosisInterrupted {
  config: DiagnosisConfig;
  runDir: string;
  history: EpochLog[];
  interrupted: true;
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
export function metricsFromPredictions(rows: PredictionRow[], bestEpoch: number, seed: number): DiagnosisMetrics {
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
  const ext = of("external");
  const extCi = (name: "accuracy" | "f1" | "auc") => {
    const b = bootstrapCI(lab(ext), sc(ext), metricFn(name, 0.5), { n: 1000, seed: `${seed}:external:${name}` });
    return [b.lower, b.upper] as [number, number];
  };
  const external: ExternalMetrics | undefined = ext.length
    ? {
        n: ext.length,
        atHalf: { ...setMetrics(lab(ext), sc(ext), 0.5), ci95: { accuracy: extCi("accuracy"), f1: extCi("f1"), auc: extCi("auc") } },
        atValThreshold: setMetrics(lab(ext), sc(ext), t),
        covidCallRate: ext.filter((r) => r.probability >= t).length / ext.length,
        trueCovidRate: ext.filter((r) => r.label === 1).length / ext.length,
        intervals: "per slice (no patient ids): optimistic",
      }
    : undefined;
  return {
    test: { ...setMetrics(lab(test), sc(test), 0.5), ci95: { accuracy: ci("accuracy"), f1: ci("f1"), auc: ci("auc") } },
    testAtValThreshold: setMetrics(lab(test), sc(test), t),
    testNonCovidPositive: setMetrics(lab(test), sc(test), 0.5, "noncovid"),
    val: setMetrics(lab(val), sc(val), 0.5),
    medsegTest: { n: med.length, recall: recallAt(0.5), recallAtValThreshold: recallAt(t) },
    ...(external ? { external } : {}),
    bestEpoch,
    selectedOn: "validation AUC",
  };
}

/** The sets a diagnosis run predicts (predictions.csv `set` column), in the file's order. */
export const PREDICTION_SETS = ["val", "test", "medseg-test", "external"] as const;
export type PredictionSet = (typeof PREDICTION_SETS)[number];
export type { PredictionRow };
export { writePredictions };
export const readPredictions = (file: string): PredictionRow[] => readPredictionsFile(file, PREDICTION_SETS);

/** The result of a run that must have finished (grids, notebooks); an interrupted one is an error. */
export function finished(r: DiagnosisResult | DiagnosisInterrupted): DiagnosisResult {
  if (r.interrupted) throw new Error(`Run ${r.runDir} stopped after ${r.history.length} epochs; continue it with --resume.`);
  return r;
}

export function readHistory(dir: string): EpochLog[] {
  const f = path.join(dir, "history.json");
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : [];
}

/** metrics.json of a finished run, typed. */
export function readRunMetrics(dir: string): DiagnosisMetrics {
  const f = path.join(dir, "metrics.json");
  try {
    return JSON.parse(fs.readFileSync(f, "utf8")) as DiagnosisMetrics;
  } catch (e) {
    throw new Error(`Cannot read ${f}: ${(e as Error).message}. Recompute it with \`npx covid-ct evaluate --run ${dir} --write\`.`);
  }
}

/** Where a cell stands on disk: finished (metrics written), partial (started or interrupted), missing. */
export function runState(c: DiagnosisConfig): "finished" | "partial" | "missing" {
  const dir = path.resolve(c.out ?? defaultRunDir(c));
  if (fs.existsSync(path.join(dir, "metrics.json")) && readRunManifest(dir)) return "finished";
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0 ? "partial" : "missing";
}

/** Predicted lesion probabilities of the MedSeg test slices, 8-bit, in lesion-predictions.json (for the notebook's figures). */
export const LESION_PREDICTIONS_FILE = "lesion-predictions.json";
export function writeLesionPredictions(runDir: string, ids: readonly string[], maps: readonly Float32Array[], size: number): void {
  const enc = (m: Float32Array) => Buffer.from(Uint8Array.from(m, (v) => Math.round(v * 255))).toString("base64");
  writeJsonAtomic(path.join(runDir, LESION_PREDICTIONS_FILE), { size, encoding: "base64 uint8, row-major, probability × 255", masks: Object.fromEntries(ids.map((id, i) => [id, enc(maps[i])])) });
}

/** Read lesion-predictions.json: id → probabilities in [0, 1] (size × size). */
export function readLesionPredictions(runDir: string): { size: number; masks: Map<string, Float32Array> } | null {
  const f = path.join(runDir, LESION_PREDICTIONS_FILE);
  if (!fs.existsSync(f)) return null;
  const j = JSON.parse(fs.readFileSync(f, "utf8")) as { size: number; masks: Record<string, string> };
  return { size: j.size, masks: new Map(Object.entries(j.masks).map(([k, v]) => [k, Float32Array.from(Buffer.from(v, "base64"), (b) => b / 255)])) };
}

/** Recompute metrics.json from predictions.csv of a finished run (the `evaluate` command). */
export function evaluateRun(runDir: string): DiagnosisMetrics {
  const manifest = readRunManifest(runDir);
  if (!manifest) throw new Error(`${runDir} is not a run directory of covid-ct (no manifest.json of ours). Pass the directory \`covid-ct train\` wrote.`);
  const file = path.join(runDir, "predictions.csv");
  const rows = readPredictions(file);
  // Both classes in every set that AUC, F1 and the validation threshold are computed on.
  for (const set of ["val", "test"] as const) {
    const labels = new Set(rows.filter((r) => r.set === set).map((r) => r.label));
    if (labels.size < 2) {
      throw new Error(`${file}: the ${set} set has ${labels.size === 0 ? "no rows" : `only label ${[...labels][0]}`}; metrics need both classes. Nothing was written. Re-create the run with \`covid-ct train --force\`.`);
    }
  }
  const history = readHistory(runDir);
  let best = -1, bestAuc = -Infinity;
  history.forEach((h) => { if (h.valAuc > bestAuc) { bestAuc = h.valAuc; best = h.epoch; } });
  // The lesion masks' Dice is not in predictions.csv: keep what the run measured.
  let lesion: DiagnosisMetrics["lesion"];
  try { lesion = (JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8")) as DiagnosisMetrics).lesion; } catch { lesion = undefined; }
  return { ...metricsFromPredictions(rows, best, manifest.seed ?? 0), ...(lesion ? { lesion } : {}) };
}

/** Rebuild a finished run's selected model (ImageNet backbone + trained head, or the fine-tuned net). */
export async function loadRunModel(runDir: string, weightsRoot?: string): Promise<{ built: import("../models").BuiltModel; pre: import("../models/weights").Preprocessing; profile: StudyProfile }> {
  const { loadModel } = await import("../training/checkpoint");
  const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
  const cfg = manifest.config as ReturnType<typeof recordedConfig>;
  if (cfg.model === SHORTCUT_MODEL) throw new Error(`${runDir} is a shortcut-baseline run: it has no image model to rebuild (its inputs are cue vectors).`);
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
  return { built, pre: preprocessFor(profile.imagenet ? (cfg.model as ModelName) : name), profile };
}

