/**
 * Source probe (beyond the paper; issue 18): how visible is an image's SOURCE to the diagnosis
 * network? The frozen backbone and the head of Study I's frozen-features run, trained to tell the
 * paper protocol's training-set sources apart within one class, and reported as AUC on held-out
 * patients. Near 1.0: the features carry the source, so a classifier trained on sources that differ
 * by class can learn "which dataset" instead of "which disease" (notebooks 02–04 read their
 * tables with it).
 *
 *   covid-ct-vs-covid-seg   positives: COVID-CT figures vs COVID-Seg slices
 *   covid-ct-vs-luna        negatives: COVID-CT NonCOVID images vs LUNA slices
 *   luna-vs-rest            every training image: LUNA vs the rest
 *
 * Patients (source paper + patient, volume, series) of each side are split into K folds with a seed; each fold
 * is predicted by a head trained on K−2 folds and selected on the remaining one, and the held-out
 * predictions of all folds give one AUC with a bootstrap interval (per image).
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { initBackend } from "../backend";
import { PROJECT_ROOT } from "../config";
import { Example } from "../data/examples";
import { SourceName } from "../data/sources";
import { bootstrapCI, metricFn, rocAuc } from "../evaluation";
import { makeManifest, saveResult } from "../manifest";
import { buildModel, featureExtractors, ModelName, pooledHeadModel } from "../models";
import { findWeightsDir, loadImagenetWeights, preprocessFor, weightsChecksum } from "../models/weights";
import { HarmoniseName, harmoniseKey } from "../data/harmonise";
import { protocolHarmoniser, selectProtocol } from "../protocols";
import { classificationTask, predictProbabilities, trainModel } from "../training/loop";
import { getProfile, ProfileName } from "../training/profiles";
import { CosineSchedule } from "../training/schedule";
import { permutationOf } from "../util/random";
import { computeFeatures, featureNormalisation, FeatureSource } from "./inputs";

export interface SourceProbePair {
  key: string;
  label: string;
  /** Which training images are side A (label 1) and side B (label 0). */
  a: (img: ProbeImage) => boolean;
  b: (img: ProbeImage) => boolean;
}

export interface ProbeImage {
  example: Example;
  source: SourceName;
  patient: string;
  cls: "covid" | "noncovid";
}

export const SOURCE_PROBE_PAIRS: readonly SourceProbePair[] = [
  { key: "covid-ct-vs-covid-seg", label: "positives: COVID-CT vs COVID-Seg", a: (i) => i.cls === "covid" && i.source === "covid-ct", b: (i) => i.cls === "covid" && i.source === "covid19-ct-seg" },
  { key: "covid-ct-vs-luna", label: "negatives: COVID-CT vs LUNA", a: (i) => i.cls === "noncovid" && i.source === "covid-ct", b: (i) => i.cls === "noncovid" && i.source === "luna16" },
  { key: "luna-vs-rest", label: "all training images: LUNA vs the rest", a: (i) => i.source === "luna16", b: (i) => i.source !== "luna16" },
];

export interface SourceProbeConfig {
  /** Whose frozen features: the profile's Study I backbone (quick: DenseNet-169 from ImageNet at 224²). */
  profile: ProfileName;
  model?: "densenet169" | "resnet50";
  /** Patient folds (default 5). */
  folds?: number;
  seed?: number;
  /** Result folder (default runs/probes/paper/<profile>/source-<model>-seed<N>). */
  out?: string;
  force?: boolean;
  /** Harmonisation of the images (default none; lib/data/harmonise.ts): recorded and in the folder name only when on. */
  harmonise?: HarmoniseName;
}

export interface SourceProbeResult {
  key: string;
  label: string;
  nA: number;
  nB: number;
  patientsA: number;
  patientsB: number;
  auc: number;
  ci95: [number, number];
}

/** Seeded assignment of patient groups to k folds (every image of a patient in one fold). */
export function patientFolds(patients: readonly string[], k: number, seed: number | string): number[] {
  const groups = [...new Set(patients)].sort();
  const order = permutationOf(groups.length, seedrandom(`source-probe:${seed}`));
  const foldOf = new Map(order.map((g, i) => [groups[g], i % k]));
  return patients.map((p) => foldOf.get(p)!);
}

/**
 * Held-out source predictions from frozen features: fold f is predicted by a head (`makeHead`)
 * trained on the folds other than f and f+1, selected on fold f+1 (validation AUC).
 */
export async function probeFromFeatures(
  features: readonly Float32Array[],
  labels: readonly (0 | 1)[],
  patients: readonly string[],
  makeHead: (seed: number) => tf.LayersModel,
  o: { folds: number; seed: number; epochs: number; batchSize: number; schedule: CosineSchedule },
): Promise<{ auc: number; ci95: [number, number]; probs: number[] }> {
  // Stratified: each side's patients are spread over the folds on their own, so every fold holds
  // both sides in about the same ratio (pooled held-out scores are then comparable across folds).
  const folds = new Array<number>(labels.length);
  for (const side of [0, 1] as const) {
    const idx = labels.flatMap((y, i) => (y === side ? [i] : []));
    patientFolds(idx.map((i) => patients[i]), o.folds, `${o.seed}:${side}`).forEach((f, k) => (folds[idx[k]] = f));
  }
  const probs = new Array<number>(features.length).fill(NaN);
  const ex = (idx: number[]) => idx.map((i) => ({ id: String(i), path: "", label: labels[i] }));
  for (let f = 0; f < o.folds; f++) {
    const test = folds.flatMap((g, i) => (g === f ? [i] : []));
    const val = folds.flatMap((g, i) => (g === (f + 1) % o.folds ? [i] : []));
    const train = folds.flatMap((g, i) => (g !== f && g !== (f + 1) % o.folds ? [i] : []));
    if (!test.length) continue;
    const tf3 = (idx: number[]) => idx.map((i) => [features[i]]);
    const norm = featureNormalisation(tf3(train));
    const head = makeHead(o.seed * 100 + f);
    const opt = tf.train.adam(o.schedule.lr);
    try {
      await trainModel(head, opt, classificationTask, new FeatureSource(tf3(train), ex(train), norm), new FeatureSource(tf3(val), ex(val), norm), {
        epochs: o.epochs, batchSize: o.batchSize, schedule: o.schedule, seed: o.seed * 100 + f,
      });
      const p = await predictProbabilities(head, new FeatureSource(tf3(test), ex(test), norm));
      test.forEach((i, k) => (probs[i] = p[k]));
    } finally {
      opt.dispose();
      head.dispose();
    }
  }
  const y = labels.filter((_, i) => Number.isFinite(probs[i]));
  const s = probs.filter((p) => Number.isFinite(p));
  const b = bootstrapCI(y, s, metricFn("auc", 0.5), { n: 1000, seed: `source-probe:${o.seed}` });
  return { auc: rocAuc(y, s).auc, ci95: [b.lower, b.upper], probs };
}

/** The source probes of a profile's frozen Study I backbone on the paper protocol's training images (reused when done). */
export async function runSourceProbes(c: SourceProbeConfig, log: (m: string) => void = () => undefined): Promise<{ dir: string; modelBuilt: ModelName; results: SourceProbeResult[]; reused: boolean }> {
  const profile = getProfile(c.profile);
  const model = c.model ?? "densenet169";
  const built: ModelName = profile.tinyModels ? (model.startsWith("resnet") ? "tiny-resnet" : "tiny-densenet") : model;
  const seed = c.seed ?? 1;
  const folds = c.folds ?? 5;
  const harmonise = c.harmonise ?? "none";
  const dir = path.resolve(c.out ?? path.join(PROJECT_ROOT, "runs", "probes", "paper", profile.name, `source-${built}${harmonise === "none" ? "" : `-harmonise-${harmonise}`}-seed${seed}`));
  const protocol = await selectProtocol({ protocol: "paper" });
  const weights = profile.imagenet ? weightsChecksum(findWeightsDir(model)).sha256 : "random";
  const harmoniser = await protocolHarmoniser(protocol, harmonise, profile.inputSize);
  // harmoniseKey is empty for none: the probes stored before harmonisation existed are reused.
  const config = { probe: "source", protocol: "paper", protocolHash: protocol.hash, profile: profile.name, model, modelBuilt: built, inputSize: profile.inputSize, weights, folds, seed, epochs: profile.epochs, lr: profile.schedule.lr, ...harmoniseKey(harmoniser) };
  const file = path.join(dir, "source-probe.json");
  if (!c.force && fs.existsSync(file)) {
    const stored = JSON.parse(fs.readFileSync(file, "utf8")) as { config: unknown; results: SourceProbeResult[] };
    if (JSON.stringify(stored.config) === JSON.stringify(config)) return { dir, modelBuilt: built, results: stored.results, reused: true };
  }
  await initBackend();
  const images: ProbeImage[] = (["covid", "noncovid"] as const).flatMap((cls) =>
    protocol.splits.train[cls].map((m) => ({ example: { id: m.id, path: m.path, label: (cls === "covid" ? 1 : 0) as 0 | 1, source: m.source }, source: m.source, patient: `${m.source}:${m.patient}`, cls })),
  );
  // Frozen features exactly as Study I's frozen-features run caches them (same keys: reused).
  const net = buildModel(built, { inputSize: profile.inputSize, seed: 1 });
  if (profile.imagenet) await loadImagenetWeights(net.model, built);
  const key = { model: built, weightsSha256: weights, size: profile.inputSize };
  log(`source probe: frozen ${built} features of ${images.length} training images at ${profile.inputSize}²${harmoniser ? ` (harmonised: ${harmoniser.name})` : ""}`);
  const feats = (await computeFeatures(featureExtractors(net, ["pooled", "map"]), images.map((i) => i.example), [key, { ...key, which: "map" as const }], preprocessFor(built), { views: 1, harmonise: harmoniser })).map((v) => v[0]);
  const results: SourceProbeResult[] = [];
  try {
    for (const pair of SOURCE_PROBE_PAIRS) {
      const idx = images.flatMap((img, i) => (pair.a(img) || pair.b(img) ? [i] : []));
      const labels = idx.map((i) => (pair.a(images[i]) ? 1 : 0) as 0 | 1);
      const patients = idx.map((i) => images[i].patient);
      const r = await probeFromFeatures(idx.map((i) => feats[i]), labels, patients, (s) => pooledHeadModel(feats[0].length, { seed: s }), {
        folds, seed, epochs: profile.epochs, batchSize: profile.batchSize, schedule: profile.schedule,
      });
      const side = (v: 0 | 1) => idx.filter((_, k) => labels[k] === v);
      results.push({ key: pair.key, label: pair.label, nA: side(1).length, nB: side(0).length, patientsA: new Set(side(1).map((i) => images[i].patient)).size, patientsB: new Set(side(0).map((i) => images[i].patient)).size, auc: r.auc, ci95: r.ci95 });
      log(`source probe ${pair.label}: AUC ${r.auc.toFixed(3)}`);
    }
  } finally {
    net.model.dispose();
  }
  fs.mkdirSync(dir, { recursive: true });
  saveResult(dir, "source-probe", { config, results }, makeManifest("source-probe", config, { [`protocol/paper`]: protocol.hash, [`weights/${built}`]: weights }, seed));
  return { dir, modelBuilt: built, results, reused: false };
}
