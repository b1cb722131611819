/**
 * The lesion scores as first-class models (notebook 05, `covid-ct lesion-score`): each writes a run
 * directory laid out like a diagnosis run — manifest.json, predictions.csv (`set,file,label,
 * probability` for val, test, medseg-test and external), metrics.json from the same
 * metricsFromPredictions every table uses (`covid-ct evaluate` recomputes it) — plus
 * features.csv (every image's lesion statistics) and, for the logistic model, model.json.
 *
 *   lesion-burden    the predicted lesion's share of the predicted lung (lib/lesions/burden.ts):
 *                    fitted to no label; its decision threshold, like every run's, is chosen on the
 *                    protocol's validation set (Youden's J).
 *   lesion-logistic  a logistic model on lesion statistics, fitted on the protocol's TRAINING
 *                    images only; threshold on validation.
 *
 * Neither ever sees the external set before predicting it: fits and thresholds take the train and
 * val rows only (fitOnTraining, and metricsFromPredictions' threshold on `val`).
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot, resolveSarsRoot, resolveSegLungsRoot } from "../config";
import { Example } from "../data/examples";
import { listMedsegSlices, SourceName } from "../data/sources";
import { DiagnosisMetrics, metricsFromPredictions, PredictionRow, writePredictions } from "../diagnosis/results";
import { ensureLungSegmenter } from "../lungs/segmenter";
import { makeManifest, writeManifest } from "../manifest";
import { buildProtocol, protocolExamples, protocolExternalExamples } from "../protocols";
import { openRun } from "../runs";
import { Segmenter } from "../segmenter/engine";
import { getProfile, ProfileName } from "../training/profiles";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { rngFor } from "../util/random";
import { featureVector, fitLogistic, LESION_FEATURES, LesionStatistics, lesionStatistics, LogisticModel, logisticProbability } from "./burden";
import { ensureLesionSegmenter } from "./segmenter";

export const LESION_SCORES = ["lesion-burden", "lesion-logistic"] as const;
export type LesionScoreName = (typeof LESION_SCORES)[number];
/** Bump when the statistics or the fit change for the same masks. */
export const LESION_SCORE_VERSION = 1;
/** L2 penalty of the logistic model on standardised features (a mild one: 4 features, ~900 images). */
export const LOGISTIC_L2 = 1;

/** Every set a score reads; `train` only feeds the logistic fit and is never in predictions.csv. */
export type ScoreSet = "train" | "val" | "test" | "medseg-test" | "external";

export interface FeatureRow {
  set: ScoreSet;
  id: string;
  label: number;
  stats: LesionStatistics;
}

export interface LesionScoreConfig {
  profile: ProfileName;
  /** Seed of the lesion segmenter (default 1); the lung segmenter is the profile's seed-1 run, as Study II's. */
  seed?: number;
  force?: boolean;
  /** Folder of the score runs (default runs/lesions/score/paper/<profile>/): `<score>-seed<N>` inside it. */
  out?: string;
  /** The lesion and lung segmenter runs (default: the profile's, trained when missing). */
  lesionRun?: string;
  lungRun?: string;
  log?: (m: string) => void;
  onProgress?: (done: number, total: number) => void;
}

/** A finished score run, shaped like a diagnosis result so the tables read both alike. */
export interface LesionScoreResult {
  score: LesionScoreName;
  runDir: string;
  metrics: DiagnosisMetrics & { score: LesionScoreName; model?: LogisticModel };
  reused: boolean;
}

export function defaultScoreDir(score: LesionScoreName, profile: ProfileName, seed: number): string {
  return path.join(PROJECT_ROOT, "runs", "lesions", "score", "paper", profile, `${score}-seed${seed}`);
}

/** The paper protocol's images by set (capped per class under smoke), and the MedSeg test and external slices. */
export async function scoreExamples(profile: ProfileName): Promise<{ protocolHash: string; externalHash: string; sets: Record<ScoreSet, Example[]> }> {
  const p = await buildProtocol("paper");
  const lim = getProfile(profile).limitPerClass;
  // Under smoke: a seeded draw of `lim` per class (the full sets are whole otherwise).
  const cap = (xs: Example[], set: string) => {
    if (lim === undefined) return xs;
    return [1, 0].flatMap((label) => {
      const c = xs.filter((e) => e.label === label);
      const rng = rngFor("lesion-score", set, label);
      return c.map((e) => ({ e, k: rng() })).sort((a, b) => a.k - b.k).slice(0, lim).map((x) => x.e);
    });
  };
  return {
    protocolHash: p.hash,
    externalHash: p.external.hash,
    sets: {
      train: cap(protocolExamples(p, "train"), "train"),
      val: cap(protocolExamples(p, "val"), "val"),
      test: cap(protocolExamples(p, "test"), "test"),
      "medseg-test": cap(listMedsegSlices("test").map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: "medseg" as const })), "medseg-test"),
      external: cap(protocolExternalExamples(p), "external"),
    },
  };
}

/** Lesion statistics of examples from the two segmenters' (cached) masks. */
export async function featuresOf(examples: readonly (Example & { set: ScoreSet })[], lungs: Segmenter, lesions: Segmenter, onProgress?: (done: number, total: number) => void): Promise<FeatureRow[]> {
  const out: FeatureRow[] = [];
  const batch = 32;
  for (let i = 0; i < examples.length; i += batch) {
    const chunk = examples.slice(i, i + batch);
    const items = chunk.map((e) => ({ file: e.path, source: (e.source ?? "covid-ct") as SourceName }));
    const lung = await lungs.masksFor(items);
    const lesion = await lesions.masksFor(items);
    chunk.forEach((e, k) => {
      if (lung[k].height !== lesion[k].height || lung[k].width !== lesion[k].width) throw new Error(`${e.path}: lung mask ${lung[k].height}×${lung[k].width}, lesion mask ${lesion[k].height}×${lesion[k].width}`);
      out.push({ set: e.set, id: e.id, label: e.label, stats: lesionStatistics(lung[k].data, lesion[k].data, lung[k].height, lung[k].width) });
    });
    onProgress?.(Math.min(examples.length, i + batch), examples.length);
  }
  return out;
}

/** The lesion logistic model, fitted on the `train` rows alone (every other row is ignored). */
export function fitOnTraining(rows: readonly FeatureRow[]): LogisticModel {
  const train = rows.filter((r) => r.set === "train");
  return fitLogistic(train.map((r) => featureVector(r.stats)), train.map((r) => r.label), { l2: LOGISTIC_L2, features: LESION_FEATURES });
}

/** predictions.csv rows of a score: every set but train. */
export function scorePredictions(score: LesionScoreName, rows: readonly FeatureRow[], model?: LogisticModel): PredictionRow[] {
  return rows
    .filter((r) => r.set !== "train")
    .map((r) => ({ set: r.set, file: r.id, label: r.label, probability: score === "lesion-burden" ? Math.min(1, Math.max(0, r.stats.burden)) : logisticProbability(model!, featureVector(r.stats)) }));
}

function featuresCsv(rows: readonly FeatureRow[]): string {
  const q = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  return ["set,file,label,lung_share,burden,burden_left,burden_right,bilateral,peripheral,components", ...rows.map((r) => [r.set, q(r.id), r.label, r.stats.lungShare, r.stats.burden, r.stats.sides[0], r.stats.sides[1], r.stats.bilateral, r.stats.peripheral, r.stats.components].join(","))].join("\n") + "\n";
}

/**
 * Both lesion scores under a profile: trains (or reuses) the lesion and lung segmenters, computes
 * the lesion statistics of every image once, then writes (or reuses) one run directory per score.
 */
export async function runLesionScores(cfg: LesionScoreConfig): Promise<Record<LesionScoreName, LesionScoreResult>> {
  const log = cfg.log ?? (() => undefined);
  const seed = cfg.seed ?? 1;
  const lesions = await ensureLesionSegmenter({ profile: cfg.profile, seed, out: cfg.lesionRun, log });
  let lungs: Segmenter | null = null;
  try {
    lungs = await ensureLungSegmenter({ profile: cfg.profile, seed: 1, out: cfg.lungRun, log });
    const { protocolHash, externalHash, sets } = await scoreExamples(cfg.profile);
    const checksums = { "protocol/paper": protocolHash, "external/sars-cov-2-ct-scan": externalHash, "segmenter/lungs": lungs.modelSha256, "segmenter/lesions": lesions.modelSha256 };
    const results = {} as Record<LesionScoreName, LesionScoreResult>;
    let rows: FeatureRow[] | null = null;
    for (const score of LESION_SCORES) {
      const config = { score, version: LESION_SCORE_VERSION, protocol: "paper", profile: cfg.profile, seed, lungThreshold: lungs.threshold, lesionThreshold: lesions.threshold, ...(score === "lesion-logistic" ? { features: LESION_FEATURES, l2: LOGISTIC_L2, fittedOn: "paper protocol train" } : {}) };
      const run = openRun({
        defaultDir: cfg.out ? path.join(path.resolve(cfg.out), `${score}-seed${seed}`) : defaultScoreDir(score, cfg.profile, seed),
        kind: "lesion-score",
        config,
        checksums,
        force: cfg.force,
        protect: [resolveDataRoot().dir, resolveCovidSegRoot().dir, resolveLunaRoot().dir, resolveMedsegRoot().dir, resolveSarsRoot().dir, resolveSegLungsRoot().dir],
      });
      if (run.state === "reused") {
        log(`reusing finished ${score} run ${run.dir}`);
        results[score] = { score, runDir: run.dir, metrics: JSON.parse(fs.readFileSync(path.join(run.dir, "metrics.json"), "utf8")), reused: true };
        continue;
      }
      try {
        if (!rows) {
          const all = (Object.keys(sets) as ScoreSet[]).flatMap((set) => sets[set].map((e) => ({ ...e, set })));
          log(`lesion statistics of ${all.length} images (paper protocol train/val/test, MedSeg test, external) from the lung and lesion masks`);
          rows = await featuresOf(all, lungs, lesions, cfg.onProgress);
        }
        writeManifest(run.workDir, makeManifest("lesion-score", config, checksums, seed, { counts: Object.fromEntries(Object.entries(sets).map(([k, v]) => [k, v.length])) }));
        const model = score === "lesion-logistic" ? fitOnTraining(rows) : undefined;
        if (model) writeJsonAtomic(path.join(run.workDir, "model.json"), model);
        writeFileAtomic(path.join(run.workDir, "features.csv"), featuresCsv(rows));
        const preds = scorePredictions(score, rows, model);
        writePredictions(path.join(run.workDir, "predictions.csv"), preds);
        const metrics = { ...metricsFromPredictions(preds, 0, seed), score, ...(model ? { model } : {}) };
        writeJsonAtomic(path.join(run.workDir, "metrics.json"), metrics);
        run.finish();
        log(`${score}: protocol test AUC ${(100 * metrics.test.auc).toFixed(1)}, external AUC ${(100 * (metrics.external?.atHalf.auc ?? NaN)).toFixed(1)} → ${run.dir}`);
        results[score] = { score, runDir: run.dir, metrics, reused: false };
      } catch (e) {
        run.abandon();
        throw e;
      }
    }
    return results;
  } finally {
    lesions.dispose();
    lungs?.dispose();
  }
}
