/**
 * The diagnosis run shared by every study: one model × one positive training set × one seed,
 * trained by the engine and evaluated into a run directory. Study I uses it as is; Study II adds
 * the lung-mask input and the lesion branch (`lungMask`, `lesionMask`), CSSL the initialisation
 * (`init`). Below, Study I's own description.
 *
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
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot } from "../config";
import { openDataset } from "../data/dataset";
import { CLASS_DIR, ImageClass, Split, splitListRel } from "../data/dataset";
import { BinaryMetrics, binaryMetrics, bootstrapCI, chooseThreshold, metricFn, officialMetrics, rocAuc, SegmentationSummary } from "../evaluation";
import { makeManifest, sha256OfManifest, writeManifest } from "../manifest";
import { buildFeatureHead, buildModel, buildMultiTaskModel, featureExtractors, headModel, isModelName, MODEL_NAMES, ModelName } from "../models";
import { findWeightsDir, hasImagenetWeights, loadImagenetWeights, preprocessFor, weightsChecksum } from "../models/weights";
import { buildProtocol, isProtocolName, Protocol, protocolExamples, PROTOCOL_NAMES, ProtocolName, writeProtocol } from "../protocols";
import { listMedsegSlices } from "../data/sources";
import { openRun, PredictionRow, readRunManifest, readPredictions as readPredictionsFile, writePredictions } from "../runs";
import { classificationTask, EpochLog, ExampleSource, predictProbabilities, StepLog, trainModel, TrainingTask } from "../training/loop";
import { lesionSegmentation, MultiTaskSource, multiTaskTask, predictMultiTask } from "../training/multitask";
import { channelNormalisation, MapFeatureSource, maskToGrid, MaskedImageSource } from "./multitask-inputs";
import { lesionMasks, LungMaskProvider, lungMasks } from "./masks";
import { CSSL_INPUT_SIZE } from "./cssl-settings";
import { getProfile, MULTITASK_HEADS, MultiTaskHeads, ProfileName, StudyProfile } from "../training/profiles";
import { shortcutCues, shortcutModel } from "../protocols/shortcut";
import { writeJsonAtomic } from "../util/fs";
import { sampleWithoutReplacement } from "../util/random";
import { computeFeatures, Example, FeatureNormalisation, featureNormalisation, FeatureSource, foldNormalisation, ImageSource } from "./inputs";

/** Training-set feature statistics of a frozen-features run (part of its model). */
export const NORMALISATION_FILE = "feature-normalisation.json";

/**
 * Positive training sets per protocol (Table 5's rows).
 *   official: covid-ct-all (191), covid-ct-118 (a seeded 118 of them per run seed), original-ct (50 MedSeg slices)
 *   paper:    covid-ct-349, covid-ct-118, covid-seg (118 COVID-Seg slices of the 12 training volumes)
 */
export const ARMS = {
  official: ["covid-ct-all", "covid-ct-118", "original-ct"],
  paper: ["covid-seg", "covid-ct-349", "covid-ct-118"],
} as const;
export const POSITIVE_ARMS = ARMS.official;
/**
 * Study II's and CSSL's "Combination" (Table 6): COVID-CT-349 + the 118 COVID-Seg slices as
 * positives; paper protocol only.
 */
export const COMBINATION_ARM = "combination" as const;
export type PositiveArm = (typeof ARMS)[ProtocolName][number] | typeof COMBINATION_ARM;
/** The studies that share this run: Table 5, Table 6, Table 7. */
export const STUDY_NAMES = ["study1", "study2", "cssl"] as const;
export type StudyName = (typeof STUDY_NAMES)[number];
/** Arms of a study under a protocol: Study I's Table 5 arms; Studies II and CSSL add Combination (paper protocol only). */
export function armsOf(protocol: ProtocolName, study: StudyName = "study1"): readonly PositiveArm[] {
  if (study === "study1") return ARMS[protocol];
  return protocol === "paper" ? ["covid-ct-349", "covid-seg", "covid-ct-118", COMBINATION_ARM] : [];
}
/** Table 5's models, and the shortcut baseline trained and tested beside them. */
export const STUDY1_MODELS = ["densenet169", "resnet50", "shortcut"] as const;

/** The shortcut baseline "model" (lib/protocols/shortcut): a logistic regression on non-anatomical cues. */
export const SHORTCUT_MODEL = "shortcut" as const;
export type StudyOneModel = ModelName | typeof SHORTCUT_MODEL;

export interface StudyOneConfig {
  /** A backbone (densenet169, resnet50, …) or "shortcut", the non-anatomical cue baseline. */
  model: StudyOneModel;
  positives: PositiveArm;
  profile: ProfileName;
  /** Evaluation protocol (which images are in which split): "official" (default) or "paper". */
  protocol?: ProtocolName;
  seed: number;
  /** Run directory; default runs/study1/<profile>/<model>-<arm>-seed<seed>. */
  out?: string;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
  /** Train again even when a finished run with the same config exists. */
  force?: boolean;
  /** Override the profile's epoch count (ablations, tests). */
  epochs?: number;
  /** Override any knob of the profile (ablations, tests); recorded in the manifest with the rest. */
  profileOverrides?: Partial<Omit<StudyProfile, "name">>;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
  /** Stop after this many epochs in this call, as if interrupted (tests of --resume). */
  stopAfterEpochs?: number;
  /** The study the run belongs to (default study1): names its run directory. */
  study?: StudyName;
  /** Study II, Fig. 4A: the predicted lung mask as an extra input (U-Net masks, lib/lungs). */
  lungMask?: boolean;
  /** Study II, Fig. 4B: an ASPP lesion branch trained on lesion masks (COVID-Seg pseudo labels) beside the classifier. */
  lesionMask?: boolean;
  /**
   * Backbone initialisation: "imagenet" (default when the profile uses ImageNet weights), "random",
   * or "checkpoint:<pretraining run dir>" (CSSL: the MoCo encoder of a `covid-ct pretrain` run).
   */
  init?: string;
}

export interface StudyOneData {
  train: Example[];
  val: Example[];
  test: Example[];
  /** MedSeg test slices: original CTs, all COVID (domain-shift check). */
  medsegTest: Example[];
  /** The protocol the sets come from. */
  protocol: Protocol;
}

/** MedSeg slices as examples (all COVID), carrying their source so they are turned upright like every source. */
function medsegExamples(part: "train" | "test", root: string): Example[] {
  return listMedsegSlices(part, root).map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: "medseg" as const }));
}

/**
 * Refuse a split that cannot give an honest result: a file listed twice (in one list or in two
 * splits), or a split/class with no image (0 training positives; a test set with one class has no
 * AUC; validation with one class cannot select a checkpoint).
 */
function checkSplit(ds: ReturnType<typeof openDataset>): void {
  if (ds.multiListed.length) {
    const lines = ds.multiListed.slice(0, 10).map((m) => `  ${CLASS_DIR[m.cls]}/${m.file}: listed in ${m.splits.join(" and ")}`);
    throw new Error(
      `${ds.multiListed.length} image(s) are listed more than once in ${ds.root}/Data-split:\n${lines.join("\n")}\n` +
        "Each image must be in exactly one split list, once. Fix the lists (\`npx covid-ct audit\` shows every case).",
    );
  }
  for (const split of ["train", "val", "test"] as Split[]) {
    for (const cls of ["covid", "noncovid"] as ImageClass[]) {
      if (ds.bySplit(split, cls).length === 0) {
        throw new Error(
          `${path.join(ds.root, splitListRel(cls, split))} lists no image of ${CLASS_DIR[cls]}: the ${split} set would have no ${cls} example ` +
            `(${split === "train" ? "nothing to learn the class from" : "its AUC and the checkpoint selection are undefined"}). Restore the list (\`npx covid-ct verify-data\`).`,
        );
      }
    }
  }
}

/** Options of studyOneData: data roots, the protocol's seed, and the smoke profile's cap per class and split. */
export interface StudyOneDataOptions {
  protocol?: ProtocolName;
  /** Seed of the paper protocol's draws (default: the protocol's default). */
  protocolSeed?: number;
  dataRoot?: string;
  medsegRoot?: string;
  covidSegRoot?: string;
  lunaRoot?: string;
  limitPerClass?: number;
}

// A grid builds the same paper protocol for every cell: build it once per process (it hashes
// ~2,700 images; cached on disk, still ~1.5 s). Its sources are read-only data.
const protocolMemo = new Map<string, Promise<Protocol>>();

/** The protocol a Study I run is evaluated under (memoised per name, seed and roots). */
export function studyOneProtocol(o: StudyOneDataOptions = {}): Promise<Protocol> {
  const name = o.protocol ?? "official";
  const opts = { seed: o.protocolSeed, dataRoot: resolveDataRoot(o.dataRoot).dir, covidSegRoot: o.covidSegRoot, lunaRoot: o.lunaRoot };
  if (name === "official") return buildProtocol(name, opts); // cheap, and follows edits of the split lists
  const key = JSON.stringify([name, opts]);
  if (!protocolMemo.has(key)) protocolMemo.set(key, buildProtocol(name, opts).catch((e) => { protocolMemo.delete(key); throw e; }));
  return protocolMemo.get(key)!;
}

/**
 * The examples of one arm under a protocol. Negatives, validation and test are the protocol's; the
 * positives are the arm's (official: all 191 / a seeded 118 per run seed / the 50 MedSeg training
 * slices; paper: the protocol's pools covid-ct-349 / covid-ct-118 / covid-seg-118). The MedSeg test
 * slices (original CTs, all COVID) are the domain-shift check of every run.
 * `limitPerClass` (smoke profile) caps every class and split.
 */
export async function studyOneData(arm: PositiveArm, seed: number, o: StudyOneDataOptions = {}): Promise<StudyOneData> {
  const protocol = o.protocol ?? "official";
  if (!armsOf(protocol).includes(arm) && !armsOf(protocol, "study2").includes(arm)) throw new Error(`Arm '${arm}' does not exist under the ${protocol} protocol. Use one of: ${[...new Set([...armsOf(protocol), ...armsOf(protocol, "study2")])].join(", ")}.`);
  if (protocol === "official") checkSplit(openDataset(resolveDataRoot(o.dataRoot).dir));
  const p = await studyOneProtocol(o);
  const medseg = resolveMedsegRoot(o.medsegRoot).dir;
  const ex = (split: Split, cls: ImageClass): Example[] => protocolExamples(p, split, cls);
  for (const split of ["train", "val", "test"] as Split[]) for (const cls of ["covid", "noncovid"] as ImageClass[]) {
    if (ex(split, cls).length === 0) throw new Error(`The ${protocol} protocol has no ${cls} image in ${split}: check its data roots (\`npx covid-ct protocol ${protocol}\`).`);
  }
  const rng = seedrandom(`study1:${arm}:${seed}`);
  const pool = (name: string) => {
    const ids = new Set(p.pools[name] ?? []);
    return ex("train", "covid").filter((e) => ids.has(e.id));
  };
  let positives: Example[];
  if (arm === "covid-ct-all") positives = ex("train", "covid");
  else if (arm === "covid-ct-118" && protocol === "official") positives = sampleWithoutReplacement(ex("train", "covid"), 118, rng);
  else if (arm === "original-ct") positives = medsegExamples("train", medseg);
  else if (arm === COMBINATION_ARM) positives = [...pool("covid-ct-349"), ...pool("covid-seg-118")];
  else positives = pool(arm === "covid-seg" ? "covid-seg-118" : arm);
  if (positives.length === 0) throw new Error(`Arm '${arm}' has no positive training image under the ${protocol} protocol.`);
  const lim = o.limitPerClass;
  const pick = (xs: Example[]) => sampleWithoutReplacement(xs, lim, rng);
  return {
    train: [...pick(positives), ...pick(ex("train", "noncovid"))],
    val: [...pick(ex("val", "covid")), ...pick(ex("val", "noncovid"))],
    test: [...pick(ex("test", "covid")), ...pick(ex("test", "noncovid"))],
    medsegTest: pick(medsegExamples("test", medseg)),
    protocol: p,
  };
}

/** The variant of a run as a name: "" (image only), "lung", "lesion", "lung-lesion". */
export function variantName(c: Pick<StudyOneConfig, "lungMask" | "lesionMask">): string {
  return [c.lungMask ? "lung" : "", c.lesionMask ? "lesion" : ""].filter(Boolean).join("-");
}

/** The init of a run as a file-name-safe word: imagenet, random, or moco-<pretraining run name>. */
export function initName(init: string): string {
  return init.startsWith("checkpoint:") ? path.basename(path.resolve(init.slice("checkpoint:".length))) : init;
}

/**
 * runs/<study>/<protocol>/<profile>/<built model>-<arm>[-<variant>][-init-<init>]-seed<N> (under smoke
 * the tiny model names the run; Study I's directories are unchanged: no variant, no init).
 */
export function defaultRunDir(c: Pick<StudyOneConfig, "model" | "positives" | "profile" | "seed" | "protocol" | "study" | "lungMask" | "lesionMask" | "init">): string {
  const v = variantName(c);
  const parts = [builtModelName(c, getProfile(c.profile)), c.positives, ...(v ? [v] : []), ...(c.init && (c.study ?? "study1") === "cssl" ? [`init-${initName(c.init)}`] : []), `seed${c.seed}`];
  return path.join(PROJECT_ROOT, "runs", c.study ?? "study1", c.protocol ?? "official", c.profile, parts.join("-"));
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
  /**
   * Runs with a lesion branch: Dice/IoU of the predicted lesion masks, pooled and per image, at the
   * lesion output's size — on the MedSeg test slices (radiologists' masks) and on the validation
   * COVID-Seg slices (Inf-Net pseudo labels). Not derivable from predictions.csv.
   */
  lesion?: { medsegTest: SegmentationSummary | null; val: SegmentationSummary | null; size: number };
}

/** A finished (or reused) Study I run. */
export interface StudyOneResult {
  config: StudyOneConfig;
  runDir: string;
  metrics: StudyOneMetrics;
  history: EpochLog[];
  /** The model that was trained: c.model, or its tiny stand-in under the smoke profile. */
  modelBuilt: StudyOneModel;
  /** True when an earlier finished run was reused. */
  reused: boolean;
  interrupted: false;
}

/** A run that stopped early (stopAfterEpochs): checkpoints, no metrics; continue with resume. */
export interface StudyOneInterrupted {
  config: StudyOneConfig;
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

/** The sets a Study I run evaluates (predictions.csv `set` column). */
export const STUDY1_SETS = ["val", "test", "medseg-test"] as const;
export type { PredictionRow };
export { writePredictions };
export const readPredictions = (file: string): PredictionRow[] => readPredictionsFile(file, STUDY1_SETS);

export interface StudyOneHooks {
  log?: (msg: string) => void;
  onStep?: (s: StepLog) => void;
  onEpoch?: (e: EpochLog) => void;
  onFeatures?: (done: number, total: number) => void;
}

/** The config as it is recorded (defaults filled, paths resolved). */
function recordedConfig(c: StudyOneConfig, p: StudyProfile) {
  return {
    study: c.study ?? "study1",
    // Study II and CSSL fields only when set: Study I's recorded configs (and so its reuse) are unchanged.
    ...(c.lungMask ? { lungMask: true } : {}),
    ...(c.lesionMask ? { lesionMask: true } : {}),
    ...(c.init !== undefined ? { init: c.init } : {}),
    // A frozen random backbone is one draw for every run seed (prepareStudyTwo): say which.
    ...((c.lungMask || c.lesionMask) && p.strategy === "frozen-features" && effectiveInit(c, p) === "random" ? { randomBackboneSeed: FROZEN_RANDOM_BACKBONE_SEED } : {}),
    protocol: c.protocol ?? "official",
    model: c.model,
    modelBuilt: builtModelName(c, p),
    positives: c.positives,
    profile: p,
    seed: c.seed,
    epochs: c.epochs ?? p.epochs,
    dataRoot: resolveDataRoot(c.dataRoot).dir,
    medsegRoot: resolveMedsegRoot(c.medsegRoot).dir,
    ...((c.protocol ?? "official") === "paper" ? { covidSegRoot: resolveCovidSegRoot().dir, lunaRoot: resolveLunaRoot().dir } : {}),
  };
}

/** Integer flag check with a message naming the flag and the value. */
export function requireInteger(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in ${min}–${max}`}, got '${String(v)}'.`);
  }
  return v;
}

/** Refuse a config that could only give a meaningless run (before anything is written). */
export function checkStudyOneConfig(c: StudyOneConfig): StudyProfile {
  if (!isModelName(c.model) && c.model !== SHORTCUT_MODEL) throw new Error(`Unknown model '${c.model}'. Use one of: ${[...MODEL_NAMES, SHORTCUT_MODEL].join(", ")}.`);

  // CSSL fine-tunes at the pretraining's input size where the profile's differs (cssl.ts CSSL_INPUT_SIZE).
  const csslSize = (c.study === "cssl" && CSSL_INPUT_SIZE[c.profile]) || undefined;
  const profile: StudyProfile = { ...getProfile(c.profile), ...(csslSize ? { inputSize: csslSize } : {}), ...(c.profileOverrides ?? {}) };
  const protocol = c.protocol ?? "official";
  if (!isProtocolName(protocol)) throw new Error(`Unknown protocol '${protocol}'. Use one of: ${PROTOCOL_NAMES.join(", ")}.`);
  const study = c.study ?? "study1";
  if (!(STUDY_NAMES as readonly string[]).includes(study)) throw new Error(`Unknown study '${study}'. Use one of: ${STUDY_NAMES.join(", ")}.`);
  if (study !== "study1" && protocol !== "paper") throw new Error(`${study} is measured under the paper protocol (its lesion masks are COVID-Seg's): use --protocol paper.`);
  if (study === "study1" && (c.lungMask || c.lesionMask)) throw new Error("Lung-mask input and lesion branch are Study II variants: they need study2 (or cssl), not study1.");
  if (!(armsOf(protocol, study) as readonly string[]).includes(c.positives)) throw new Error(`Unknown arm '${c.positives}' under the ${protocol} protocol${study === "study1" ? "" : ` in ${study}`}. Use one of: ${armsOf(protocol, study).join(", ")}.`);
  if ((c.lungMask || c.lesionMask || c.init) && c.model === SHORTCUT_MODEL) throw new Error("The shortcut baseline takes cue vectors, not images: it has no lung-mask, lesion or init variant.");
  if (c.lesionMask && c.positives !== "covid-seg" && c.positives !== COMBINATION_ARM) {
    throw new Error(`A lesion branch needs lesion masks in training: only covid-seg and combination have them (COVID-Seg's pseudo labels), not '${c.positives}'.`);
  }
  if (c.init !== undefined && !["imagenet", "random"].includes(c.init) && !c.init.startsWith("checkpoint:")) {
    throw new Error(`Unknown init '${c.init}': use imagenet, random or checkpoint:<pretraining run dir>.`);
  }
  if (c.init !== undefined && c.init.startsWith("checkpoint:") && c.init.slice("checkpoint:".length).trim() === "") {
    throw new Error("init checkpoint: names no directory: use checkpoint:<the directory `covid-ct pretrain` wrote>.");
  }
  if (c.init === "imagenet" && !hasImagenetWeights(builtModelName(c, profile))) throw new Error(`init imagenet: no ImageNet weights exist for '${builtModelName(c, profile)}' (profile ${profile.name}); use init random.`);
  requireInteger("--seed", c.seed, 0);
  if (c.epochs !== undefined) requireInteger("--epochs", c.epochs, 1, 100000);
  return profile;
}

/** The model actually built: the smoke profile swaps in a tiny model of the same family. */
export function builtModelName(c: Pick<StudyOneConfig, "model">, profile: StudyProfile): StudyOneModel {
  if (c.model === SHORTCUT_MODEL) return c.model;
  return profile.tinyModels ? (c.model.startsWith("resnet") ? "tiny-resnet" : "tiny-densenet") : c.model;
}

/** Checksums of every input of a run (what reuse and --resume compare besides the config). */
function inputChecksums(c: StudyOneConfig, profile: StudyProfile): Record<string, string> {
  const out: Record<string, string> = { "data/covid-ct.sha256": sha256OfManifest() };
  const name = builtModelName(c, profile);
  const init = effectiveInit(c, profile);
  if (init.startsWith("checkpoint:")) {
    // The MoCo encoder is an input like the data: its hash keys reuse, --resume and the feature cache.
    const dir = path.resolve(init.slice("checkpoint:".length));
    const enc = path.join(dir, "encoder");
    if (!fs.existsSync(path.join(enc, "model.json"))) throw new Error(`--init ${init}: ${enc}/model.json does not exist. Finish the pretraining first (\`covid-ct pretrain … --out ${dir}\`).`);
    out[`pretrained/${path.basename(dir)}`] = weightsChecksum(enc).sha256;
  }
  if (init === "imagenet" && name !== SHORTCUT_MODEL) {
    if (!hasImagenetWeights(name)) throw new Error(`No ImageNet weights exist for '${name}' (profile ${profile.name} needs them): use densenet169 or resnet50.`);
    out[`weights/${name}`] = weightsChecksum(findWeightsDir(name, c.weightsRoot)).sha256;
  }
  return out;
}

/** The backbone initialisation of a run: its `init`, else ImageNet when the profile uses it, else random. */
export function effectiveInit(c: Pick<StudyOneConfig, "init">, profile: StudyProfile): string {
  return c.init ?? (profile.imagenet ? "imagenet" : "random");
}

/**
 * Where the lung masks of Study II runs come from: the residual U-Net of the profile (lib/lungs),
 * trained on the classical extractor's pseudo labels — trained once, then reused by every run.
 */
async function lungMaskProvider(profile: StudyProfile, log: (m: string) => void): Promise<LungMaskProvider> {
  const { studyLungMasks } = await import("./lung-provider");
  return studyLungMasks(profile.name, log);
}

/** Train and evaluate one Study I cell (model × arm × seed), or reuse a finished identical run. */
export async function runStudyOne(c: StudyOneConfig, hooks: StudyOneHooks = {}): Promise<StudyOneResult | StudyOneInterrupted> {
  const log = hooks.log ?? (() => undefined);
  // Everything is validated before the run directory is touched.
  const profile = checkStudyOneConfig(c);
  const data = await studyOneData(c.positives, c.seed, { protocol: c.protocol, dataRoot: c.dataRoot, medsegRoot: c.medsegRoot, limitPerClass: profile.limitPerClass });
  const rec = recordedConfig(c, profile);
  // The protocol's membership hash: a changed protocol never reuses or resumes an old run.
  const checksums: Record<string, string> = { ...inputChecksums(c, profile), [`protocol/${data.protocol.name}`]: data.protocol.hash };
  // Study II: the lung masks are the U-Net's; its weights are an input of the run like the data.
  const lungs = c.lungMask ? await lungMaskProvider(profile, log) : null;
  if (lungs) checksums[`lungs/${profile.name}`] = lungs.id;
  const run = openRun({
    out: c.out,
    defaultDir: defaultRunDir(c),
    kind: rec.study,
    config: rec,
    checksums,
    resume: c.resume,
    force: c.force,
    protect: [rec.dataRoot, rec.medsegRoot, resolveCovidSegRoot().dir, resolveLunaRoot().dir, ...(c.weightsRoot ? [c.weightsRoot] : [])],
  });
  if (run.state === "reused") {
    log(`reusing finished run ${run.dir}`);
    return { config: c, runDir: run.dir, metrics: readRunMetrics(run.dir), history: readHistory(run.dir), modelBuilt: rec.modelBuilt, reused: true, interrupted: false };
  }
  try {
    const r = await trainAndEvaluate(c, profile, data, rec, checksums, lungs, run.workDir, hooks);
    if (r === "interrupted") {
      const history = readHistory(run.workDir);
      run.abandon();
      log(`stopped after ${history.length} epochs; continue with --resume`);
      return { config: c, runDir: run.dir, history, interrupted: true };
    }
    run.finish();
    log(`test AUC ${r.test.auc.toFixed(3)}, accuracy ${r.test.accuracy.toFixed(3)}, F1 ${r.test.f1.toFixed(3)} → ${run.dir}`);
    return { config: c, runDir: run.dir, metrics: r, history: readHistory(run.dir), modelBuilt: rec.modelBuilt, reused: false, interrupted: false };
  } catch (e) {
    const outcome = run.abandon();
    if (outcome === "kept" && e instanceof Error) e.message += `\n(The run in ${run.dir} keeps its last checkpoint: continue it with --resume.)`;
    throw e;
  }
}

/** The result of a run that must have finished (grids, notebooks); an interrupted one is an error. */
export function finished(r: StudyOneResult | StudyOneInterrupted): StudyOneResult {
  if (r.interrupted) throw new Error(`Run ${r.runDir} stopped after ${r.history.length} epochs; continue it with --resume.`);
  return r;
}

function readHistory(dir: string): EpochLog[] {
  const f = path.join(dir, "history.json");
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : [];
}

/** metrics.json of a finished run, typed. */
export function readRunMetrics(dir: string): StudyOneMetrics {
  const f = path.join(dir, "metrics.json");
  try {
    return JSON.parse(fs.readFileSync(f, "utf8")) as StudyOneMetrics;
  } catch (e) {
    throw new Error(`Cannot read ${f}: ${(e as Error).message}. Recompute it with \`npx covid-ct evaluate --run ${dir} --write\`.`);
  }
}

type SetName = "train" | "val" | "test" | "medseg";

/** What a run trains (backbone+head, head on cached features, or the cue regression) and on which sources. */
interface Prepared {
  trainable: tf.LayersModel;
  sources: Record<SetName, ExampleSource>;
  /** Classification (Study I, Fig. 4A) or multi-task (Fig. 4B/4C: the sources are MultiTaskSources). */
  task: TrainingTask<never>;
  /** Side of the lesion output (multi-task runs). */
  lesionSize?: number;
  dispose(): void;
}

/** Frozen features (cached backbone outputs, or the shortcut cues) as sources, z-scored when asked. */
function featureSources(data: StudyOneData, trainF: Float32Array[][], restF: Float32Array[][], standardise: boolean, runDir: string): Record<SetName, ExampleSource> {
  const nv = data.val.length, nt = data.test.length;
  const norm = standardise ? featureNormalisation(trainF) : undefined;
  if (norm) writeJsonAtomic(path.join(runDir, NORMALISATION_FILE), norm);
  return {
    train: new FeatureSource(trainF, data.train, norm),
    val: new FeatureSource(restF.slice(0, nv), data.val, norm),
    test: new FeatureSource(restF.slice(nv, nv + nt), data.test, norm),
    medseg: new FeatureSource(restF.slice(nv + nt), data.medsegTest, norm),
  };
}

/** The shortcut baseline: a logistic regression on non-anatomical cues, z-scored (lib/protocols/shortcut). */
async function prepareShortcut(c: StudyOneConfig, profile: StudyProfile, data: StudyOneData, runDir: string, log: (m: string) => void): Promise<Prepared> {
  const rest = [...data.val, ...data.test, ...data.medsegTest];
  log(`shortcut cues of ${data.train.length + rest.length} images (size, framing, grey levels; no anatomy)`);
  const trainF = (await shortcutCues(data.train, profile.inputSize)).map((v) => [v]);
  const restF = (await shortcutCues(rest, profile.inputSize)).map((v) => [v]);
  const model = shortcutModel(c.seed);
  return { trainable: model, sources: featureSources(data, trainF, restF, true, runDir), task: classificationTask, dispose: () => model.dispose() };
}

async function prepareBackbone(c: StudyOneConfig, profile: StudyProfile, data: StudyOneData, modelName: ModelName, checksums: Record<string, string>, runDir: string, hooks: StudyOneHooks): Promise<Prepared> {
  const log = hooks.log ?? (() => undefined);
  const built = buildModel(modelName, { inputSize: profile.inputSize, seed: c.seed });
  const pre = preprocessFor(profile.imagenet ? (c.model as ModelName) : modelName);
  if (profile.imagenet) {
    const w = await loadImagenetWeights(built.model, modelName, c.weightsRoot);
    log(`ImageNet weights: ${w.loaded} tensors from ${w.dir}${w.verified ? " (checksum verified)" : " (checksum differs from the tested copy)"}`);
  }
  if (profile.strategy === "frozen-features") {
    // One pass gives the pooled vector (this run) and the feature map (cached for Study II's heads).
    const extractor = featureExtractors(built, ["pooled", "map"]);
    const key = { model: modelName, weightsSha256: checksums[`weights/${modelName}`] ?? "random", size: profile.inputSize };
    const keys = [key, { ...key, which: "map" as const }];
    const rest = [...data.val, ...data.test, ...data.medsegTest];
    log(`frozen features: ${data.train.length + rest.length} images at ${profile.inputSize}² (cached after the first run)`);
    const trainF = await computeFeatures(extractor, data.train, keys, pre, { views: profile.trainViews, onProgress: hooks.onFeatures });
    const restF = await computeFeatures(extractor, rest, keys, pre, { views: 1, onProgress: hooks.onFeatures });
    const head = headModel(built, "pooled");
    return { trainable: head, sources: featureSources(data, trainF, restF, profile.standardiseFeatures, runDir), task: classificationTask, dispose: () => { head.dispose(); built.model.dispose(); } };
  }
  const aug = profile.augment;
  return {
    trainable: built.model,
    sources: {
      train: await ImageSource.create(data.train, profile.inputSize, pre, aug),
      val: await ImageSource.create(data.val, profile.inputSize, pre, null),
      test: await ImageSource.create(data.test, profile.inputSize, pre, null),
      medseg: await ImageSource.create(data.medsegTest, profile.inputSize, pre, null),
    },
    task: classificationTask,
    dispose: () => built.model.dispose(),
  };
}

/** Study II's heads of a profile (recorded with runs that have a lesion branch). */
export function headsOf(profile: StudyProfile): MultiTaskHeads {
  return MULTITASK_HEADS[profile.name];
}

/** Seed of the random backbone of every frozen-features run with init random (see prepareStudyTwo). */
export const FROZEN_RANDOM_BACKBONE_SEED = 1;

/** Per-channel standardisation of a frozen-map run's training maps (part of its head model). */
export const CHANNEL_NORMALISATION_FILE = "map-normalisation.json";

/**
 * Study II (and CSSL fine-tuning) inputs and model: the lung mask as input and/or the lesion branch.
 * `quick` (frozen-features): the backbone's cached feature maps + buildFeatureHead; `paper`/`smoke`
 * (finetune): the whole network with a 4-channel input (lung) and the ASPP multi-task heads (lesion).
 */
async function prepareStudyTwo(
  c: StudyOneConfig,
  profile: StudyProfile,
  data: StudyOneData,
  modelName: ModelName,
  init: { weightsKey: string; load: (m: tf.LayersModel) => Promise<void> },
  lungs: LungMaskProvider | null,
  runDir: string,
  hooks: StudyOneHooks,
): Promise<Prepared> {
  const log = hooks.log ?? (() => undefined);
  const heads = headsOf(profile);
  const size = profile.inputSize;
  const pre = preprocessFor(modelName);
  const sets = { train: data.train, val: data.val, test: data.test, medseg: data.medsegTest } as const;
  const setNames = Object.keys(sets) as SetName[];
  const all = setNames.flatMap((k) => sets[k]);
  const split = <T>(xs: T[]): Record<SetName, T[]> => {
    const out = {} as Record<SetName, T[]>;
    let o = 0;
    for (const k of setNames) { out[k] = xs.slice(o, o + sets[k].length); o += sets[k].length; }
    return out;
  };
  if (c.lungMask) log(`lung masks of ${all.length} images (${lungs!.id})`);
  const lung = c.lungMask ? split(await lungMasks(all, size, lungs!)) : null;

  if (profile.strategy === "frozen-features") {
    // A frozen random backbone is drawn once (seed 1) for every run seed, as a MoCo encoder is
    // pretrained once: the run seed varies the head, and its feature maps are computed once.
    const built = buildModel(modelName, { inputSize: size, seed: FROZEN_RANDOM_BACKBONE_SEED, includeHead: false });
    await init.load(built.model);
    const extractor = featureExtractors(built, ["map", "pooled"]);
    const mapShape = (extractor.outputs[0].shape.slice(1) as number[]) as [number, number, number];
    const key = { model: modelName, weightsSha256: init.weightsKey, size };
    log(`frozen feature maps ${mapShape.join("×")}: ${all.length} images at ${size}² (cached after the first run)`);
    const maps = split((await computeFeatures(extractor, all, [{ ...key, which: "map" as const }, key], pre, { views: 1, onProgress: hooks.onFeatures })).map((v) => v[0]));
    built.model.dispose();
    const norm = channelNormalisation(maps.train, mapShape[2]);
    writeJsonAtomic(path.join(runDir, CHANNEL_NORMALISATION_FILE), { mean: Array.from(norm.mean), std: Array.from(norm.std) });
    const side = heads.lesionSize || size;
    const lesion = c.lesionMask ? split(await lesionMasks(all, side)) : null;
    const src = (k: SetName) =>
      new MapFeatureSource(maps[k], mapShape, norm, sets[k], lung ? lung[k].map((m) => maskToGrid(m, size, mapShape[0], mapShape[1])) : null, lesion ? lesion[k] : null, side);
    const head = buildFeatureHead({ mapShape, lung: !!c.lungMask, lesion: !!c.lesionMask, lesionSize: side, seed: c.seed });
    const sources = { train: src("train"), val: src("val"), test: src("test"), medseg: src("medseg") };
    return {
      trainable: head,
      sources,
      task: (c.lesionMask ? multiTaskTask() : classificationTask) as TrainingTask<never>,
      lesionSize: c.lesionMask ? side : undefined,
      dispose: () => head.dispose(),
    };
  }

  const channels = c.lungMask ? 4 : 3;
  let trainable: tf.LayersModel;
  let backbone: tf.LayersModel;
  if (c.lesionMask) {
    const b = buildModel(modelName, { inputSize: size, seed: c.seed, includeHead: false, channels });
    const mt = buildMultiTaskModel(b, { aspp: { filters: heads.asppFilters, outputStride: heads.outputStride }, seed: c.seed });
    trainable = mt.model;
    backbone = b.model;
  } else {
    const b = buildModel(modelName, { inputSize: size, seed: c.seed, channels });
    trainable = backbone = b.model;
  }
  await init.load(backbone);
  const lesion = c.lesionMask ? split(await lesionMasks(all, size)) : null;
  const src = async (k: SetName) => MaskedImageSource.create(sets[k], size, pre, k === "train" ? profile.augment : null, { lung: lung ? lung[k] : null, lesion: lesion ? lesion[k] : null });
  return {
    trainable,
    sources: { train: await src("train"), val: await src("val"), test: await src("test"), medseg: await src("medseg") },
    task: (c.lesionMask ? multiTaskTask() : classificationTask) as TrainingTask<never>,
    lesionSize: c.lesionMask ? size : undefined,
    // The multi-task model holds the backbone's layers: disposing it disposes them.
    dispose: () => trainable.dispose(),
  };
}

async function trainAndEvaluate(
  c: StudyOneConfig,
  profile: StudyProfile,
  data: StudyOneData,
  rec: ReturnType<typeof recordedConfig>,
  checksums: Record<string, string>,
  lungs: LungMaskProvider | null,
  runDir: string,
  hooks: StudyOneHooks,
): Promise<StudyOneMetrics | "interrupted"> {
  const log = hooks.log ?? (() => undefined);
  await initBackend();
  const modelName = rec.modelBuilt;
  if (modelName !== c.model) log(`profile ${profile.name}: ${c.model} is replaced by ${modelName} (run directory and tables name ${modelName})`);
  // The membership beside the run: which image was in which split, as this run saw it.
  writeProtocol(data.protocol, path.join(runDir, "protocol.json"));
  const protocol = { name: data.protocol.name, version: data.protocol.version, seed: data.protocol.seed, hash: data.protocol.hash, file: "protocol.json" };
  writeManifest(runDir, makeManifest(rec.study, rec, checksums, c.seed, { examples: { train: data.train.length, val: data.val.length, test: data.test.length, medsegTest: data.medsegTest.length }, modelBuilt: modelName, protocol }));
  const prepared =
    modelName === SHORTCUT_MODEL
      ? await prepareShortcut(c, profile, data, runDir, log)
      : c.lungMask || c.lesionMask
        ? await prepareStudyTwo(c, profile, data, modelName, backboneInit(c, profile, modelName, checksums, log), lungs, runDir, hooks)
        : await prepareBackbone(c, profile, data, modelName, checksums, runDir, hooks);
  const { trainable, sources } = prepared;
  const opt = tf.train.adam(profile.schedule.lr);
  try {
    const result = await trainModel(trainable, opt, prepared.task as TrainingTask, sources.train, sources.val, {
      epochs: c.epochs ?? profile.epochs,
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
    if (result.interrupted) return "interrupted";
    // Test once, with the checkpoint selected on validation AUC.
    const rows: PredictionRow[] = [];
    const lesion: NonNullable<StudyOneMetrics["lesion"]> = { medsegTest: null, val: null, size: prepared.lesionSize ?? 0 };
    for (const [set, src] of [["val", sources.val], ["test", sources.test], ["medseg-test", sources.medseg]] as const) {
      let probs: number[];
      if (prepared.lesionSize) {
        const mt = await predictMultiTask(trainable, src as MultiTaskSource);
        probs = mt.probs;
        if (set === "val") lesion.val = lesionSegmentation(src as MultiTaskSource, mt.lesion);
        if (set === "medseg-test") {
          lesion.medsegTest = lesionSegmentation(src as MultiTaskSource, mt.lesion);
          writeLesionPredictions(runDir, src.ids, mt.lesion, prepared.lesionSize);
        }
      } else probs = await predictProbabilities(trainable, src);
      probs.forEach((p, i) => rows.push({ set, file: src.ids[i], label: src.labels[i], probability: p }));
    }
    writePredictions(path.join(runDir, "predictions.csv"), rows);
    const metrics: StudyOneMetrics = { ...metricsFromPredictions(rows, result.bestEpoch, c.seed), ...(prepared.lesionSize ? { lesion } : {}) };
    writeJsonAtomic(path.join(runDir, "metrics.json"), metrics);
    return metrics;
  } finally {
    opt.dispose();
    prepared.dispose();
  }
}

/** Predicted lesion probabilities of the MedSeg test slices, 8-bit, in lesion-predictions.json (for the notebook's figures). */
export const LESION_PREDICTIONS_FILE = "lesion-predictions.json";
function writeLesionPredictions(runDir: string, ids: readonly string[], maps: readonly Float32Array[], size: number): void {
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

/**
 * The backbone initialisation of a Study II / CSSL run as a loader, and the key that identifies
 * the weights (feature caches are keyed by it).
 */
function backboneInit(c: StudyOneConfig, profile: StudyProfile, modelName: ModelName, checksums: Record<string, string>, log: (m: string) => void): { weightsKey: string; load: (m: tf.LayersModel) => Promise<void> } {
  const init = effectiveInit(c, profile);
  // A random backbone differs per seed (so do its cached features); frozen, it is drawn once.
  if (init === "random") return { weightsKey: `random-seed${profile.strategy === "frozen-features" ? FROZEN_RANDOM_BACKBONE_SEED : c.seed}`, load: async () => undefined };
  if (init === "imagenet") {
    return {
      weightsKey: checksums[`weights/${modelName}`] ?? "imagenet",
      load: async (m) => {
        const w = await loadImagenetWeights(m, modelName, c.weightsRoot, { adaptChannels: "zeros", missing: "keep-init" });
        log(`ImageNet weights: ${w.loaded} tensors from ${w.dir}${w.verified ? " (checksum verified)" : " (checksum differs from the tested copy)"}`);
      },
    };
  }
  const dir = path.resolve(init.slice("checkpoint:".length));
  return {
    weightsKey: checksums[`pretrained/${path.basename(dir)}`],
    load: async (m) => {
      const { loadPretrainedBackbone } = await import("../ssl/pretrain");
      const r = await loadPretrainedBackbone(m, dir, { adaptChannels: "zeros" });
      if (r.backboneLeftAtInit.length) throw new Error(`${dir}: ${r.backboneLeftAtInit.length} backbone weights were not in its encoder (e.g. ${r.backboneLeftAtInit[0]}).`);
      log(`pretrained encoder: ${r.loaded} tensors from ${dir}`);
    },
  };
}

/** Recompute metrics.json from predictions.csv of a finished run (the `evaluate` command). */
export function evaluateRun(runDir: string): StudyOneMetrics {
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
  let lesion: StudyOneMetrics["lesion"];
  try { lesion = (JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8")) as StudyOneMetrics).lesion; } catch { lesion = undefined; }
  return { ...metricsFromPredictions(rows, best, manifest.seed ?? 0), ...(lesion ? { lesion } : {}) };
}

export interface StudyOneGrid {
  profile: ProfileName;
  protocol?: ProtocolName;
  models?: readonly StudyOneModel[];
  arms?: readonly PositiveArm[];
  /** Default: the profile's seeds. */
  seeds?: readonly number[];
  force?: boolean;
  epochs?: number;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
}

/** Every cell of Table 5 (models × arms × seeds) as run configs: the one list the notebook, the CLI and a cluster see. */
export function studyOneCells(g: StudyOneGrid): StudyOneConfig[] {
  const p = getProfile(g.profile);
  const models = g.models ?? STUDY1_MODELS;
  const arms = g.arms ?? armsOf(g.protocol ?? "official");
  const seeds = g.seeds ?? p.seeds;
  const cells: StudyOneConfig[] = [];
  for (const model of models) for (const positives of arms) for (const seed of seeds) {
    cells.push({ model, positives, profile: g.profile, protocol: g.protocol ?? "official", seed, force: g.force, epochs: g.epochs, dataRoot: g.dataRoot, medsegRoot: g.medsegRoot, weightsRoot: g.weightsRoot });
  }
  return cells;
}

/** Where a cell stands on disk: finished (metrics written), partial (started or interrupted), missing. */
export function runState(c: StudyOneConfig): "finished" | "partial" | "missing" {
  const dir = path.resolve(c.out ?? defaultRunDir(c));
  if (fs.existsSync(path.join(dir, "metrics.json")) && readRunManifest(dir)) return "finished";
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0 ? "partial" : "missing";
}

/** Every cell of Table 5, reusing finished runs. */
export async function runStudyOneGrid(g: StudyOneGrid, hooks: StudyOneHooks & { onRun?: (c: StudyOneConfig, i: number, n: number) => void } = {}): Promise<StudyOneResult[]> {
  const cells = studyOneCells(g);
  const out: StudyOneResult[] = [];
  for (let i = 0; i < cells.length; i++) {
    hooks.onRun?.(cells[i], i, cells.length);
    out.push(finished(await runStudyOne(cells[i], hooks)));
  }
  return out;
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
