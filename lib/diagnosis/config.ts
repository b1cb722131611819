/**
 * A diagnosis run's configuration: what the user asks for (DiagnosisConfig), how it is checked
 * before anything is written, what is recorded in the manifest (and so keys reuse and --resume),
 * and the run directory it names.
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot } from "../config";
import { sha256OfManifest } from "../manifest";
import { isModelName, MODEL_NAMES, ModelName } from "../models";
import { findWeightsDir, hasImagenetWeights, weightsChecksum } from "../models/weights";
import { HarmoniseName, HARMONISE_NAMES, isHarmoniseName } from "../data/harmonise";
import { isProtocolName, PROTOCOL_NAMES, ProtocolName } from "../protocols";
import { getProfile, MULTITASK_HEADS, MultiTaskHeads, ProfileName, StudyProfile } from "../training/profiles";
import { EpochLog, StepLog } from "../training/loop";
import { requireInteger } from "../util/checks";
import { isLungProbe, LUNG_PROBE_INPUT_SIZE, LUNG_PROBES, LungProbe } from "./lung-probe";
import { armsOf, COMBINATION_ARM, PositiveArm, StudyName, STUDY_NAMES } from "./arms";

/**
 * Input size per study and profile, where it differs from the profile's: the `quick` MoCo
 * pretrains at 112² (lib/ssl/pretrain.ts PRETRAIN_PROFILES.quick), so Table 7's quick heads read
 * frozen maps of the same size (3×3 at 112²; Table 6's quick rows use 224²). Applied to every
 * config of that study (recorded in its profile).
 */
export const STUDY_INPUT_SIZE: Partial<Record<StudyName, Partial<Record<ProfileName, number>>>> = { cssl: { quick: 112 } };

/** The shortcut baseline "model" (lib/protocols/shortcut): a logistic regression on non-anatomical cues. */
export const SHORTCUT_MODEL = "shortcut" as const;
export type DiagnosisModel = ModelName | typeof SHORTCUT_MODEL;

export interface DiagnosisConfig {
  /** A backbone (densenet169, resnet50, …) or "shortcut", the non-anatomical cue baseline. */
  model: DiagnosisModel;
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
   * Lung probe (beyond the paper, Study II): the image-only classifier on images with everything
   * outside the lungs ("lungs-only") or the lungs ("lungs-removed") blanked (lib/diagnosis/lung-probe).
   */
  lungProbe?: LungProbe;
  /**
   * Backbone initialisation: "imagenet" (default when the profile uses ImageNet weights), "random",
   * or "checkpoint:<pretraining run dir>" (CSSL: the MoCo encoder of a `covid-ct pretrain` run).
   */
  init?: string;
  /**
   * Make the sources look alike before the model sees them (lib/data/harmonise.ts): "none"
   * (default; measured in README "Harmonisation, measured") or "body-histogram". Recorded, and
   * names the run directory, only when not "none".
   */
  harmonise?: HarmoniseName;
}

/** The harmonisation of a run as a directory-name part: none → no part (directories unchanged). */
export function harmoniseName(c: Pick<DiagnosisConfig, "harmonise">): string {
  return c.harmonise && c.harmonise !== "none" ? `harmonise-${c.harmonise}` : "";
}

/** The variant of a run as a name: "" (image only), "lung", "lesion", "lung-lesion". */
export function variantName(c: Pick<DiagnosisConfig, "lungMask" | "lesionMask">): string {
  return [c.lungMask ? "lung" : "", c.lesionMask ? "lesion" : ""].filter(Boolean).join("-");
}

/** The init of a run as a file-name-safe word: imagenet, random, or moco-<pretraining run name>. */
export function initName(init: string): string {
  return init.startsWith("checkpoint:") ? path.basename(path.resolve(init.slice("checkpoint:".length))) : init;
}

/**
 * runs/<study>/<protocol>/<profile>/<built model>-<arm>[-<variant>][-init-<init>][-harmonise-<h>]-seed<N>
 * (under smoke the tiny model names the run; Study I's directories are unchanged: no variant, no
 * init, no harmonisation).
 */
export function defaultRunDir(c: Pick<DiagnosisConfig, "model" | "positives" | "profile" | "seed" | "protocol" | "study" | "lungMask" | "lesionMask" | "init" | "harmonise" | "lungProbe">): string {
  const v = variantName(c);
  const h = harmoniseName(c);
  const parts = [builtModelName(c, getProfile(c.profile)), c.positives, ...(v ? [v] : []), ...(c.lungProbe ? [c.lungProbe] : []), ...(c.init && (c.study ?? "study1") === "cssl" ? [`init-${initName(c.init)}`] : []), ...(h ? [h] : []), `seed${c.seed}`];
  return path.join(PROJECT_ROOT, "runs", c.study ?? "study1", c.protocol ?? "official", c.profile, parts.join("-"));
}

/** The config as it is recorded (defaults filled, paths resolved). */
export function recordedConfig(c: DiagnosisConfig, p: StudyProfile) {
  return {
    study: c.study ?? "study1",
    // Study II and CSSL fields only when set: Study I's recorded configs (and so its reuse) are unchanged.
    ...(c.lungMask ? { lungMask: true } : {}),
    ...(c.lesionMask ? { lesionMask: true } : {}),
    ...(c.lungProbe ? { lungProbe: c.lungProbe } : {}),
    ...(c.init !== undefined ? { init: c.init } : {}),
    // Only when on: every run recorded before the option existed is still reused.
    ...(c.harmonise && c.harmonise !== "none" ? { harmonise: c.harmonise } : {}),
    // A frozen random backbone is one draw for every run seed (prepareMaskRun): say which.
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

/**
 * The profile a run trains with: the named one, at its study's input size where that differs
 * (CSSL fine-tunes at the pretraining's size, STUDY_INPUT_SIZE; the lung probes at theirs,
 * LUNG_PROBE_INPUT_SIZE), with the config's overrides.
 */
export function runProfile(c: Pick<DiagnosisConfig, "profile" | "study" | "lungProbe" | "profileOverrides">): StudyProfile {
  const studySize = (c.lungProbe !== undefined ? LUNG_PROBE_INPUT_SIZE[c.profile] : STUDY_INPUT_SIZE[c.study ?? "study1"]?.[c.profile]) || undefined;
  return { ...getProfile(c.profile), ...(studySize ? { inputSize: studySize } : {}), ...(c.profileOverrides ?? {}) };
}

/** Refuse a config that could only give a meaningless run (before anything is written). */
export function checkDiagnosisConfig(c: DiagnosisConfig): StudyProfile {
  if (!isModelName(c.model) && c.model !== SHORTCUT_MODEL) throw new Error(`Unknown model '${c.model}'. Use one of: ${[...MODEL_NAMES, SHORTCUT_MODEL].join(", ")}.`);
  const profile = runProfile(c);
  const protocol = c.protocol ?? "official";
  if (!isProtocolName(protocol)) throw new Error(`Unknown protocol '${protocol}'. Use one of: ${PROTOCOL_NAMES.join(", ")}.`);
  const study = c.study ?? "study1";
  if (!(STUDY_NAMES as readonly string[]).includes(study)) throw new Error(`Unknown study '${study}'. Use one of: ${STUDY_NAMES.join(", ")}.`);
  if (study !== "study1" && protocol !== "paper") throw new Error(`${study} is measured under the paper protocol (its lesion masks are COVID-Seg's): use --protocol paper.`);
  if (study === "study1" && (c.lungMask || c.lesionMask)) throw new Error("Lung-mask input and lesion branch are Study II variants: they need study2 (or cssl), not study1.");
  if (!(armsOf(protocol, study) as readonly string[]).includes(c.positives)) throw new Error(`Unknown arm '${c.positives}' under the ${protocol} protocol${study === "study1" ? "" : ` in ${study}`}. Use one of: ${armsOf(protocol, study).join(", ")}.`);
  if ((c.lungMask || c.lesionMask || c.init) && c.model === SHORTCUT_MODEL) throw new Error("The shortcut baseline takes cue vectors, not images: it has no lung-mask, lesion or init variant.");
  if (c.lungProbe !== undefined) {
    if (!isLungProbe(c.lungProbe)) throw new Error(`Unknown lung probe '${c.lungProbe}'. Use one of: ${LUNG_PROBES.join(", ")}.`);
    if (study !== "study2") throw new Error("A lung probe is a Study II measurement (it needs the lung U-Net): use study2 with the paper protocol.");
    if (c.lungMask || c.lesionMask) throw new Error("A lung probe blanks part of the image for the image-only classifier: it takes no --lung-mask or --lesion-mask.");
    if (c.model === SHORTCUT_MODEL) throw new Error("The shortcut baseline takes cue vectors, not images: it has no lung probe.");
  }
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
  if (c.harmonise !== undefined && !isHarmoniseName(c.harmonise)) throw new Error(`Unknown harmonisation '${c.harmonise}'. Use one of: ${HARMONISE_NAMES.join(", ")}.`);
  // Measured for Study I and the cue baseline only: lung masks and MoCo encoders see unharmonised images.
  if (c.harmonise && c.harmonise !== "none" && (c.lungMask || c.lesionMask || (c.init ?? "").startsWith("checkpoint:"))) {
    throw new Error(`--harmonise ${c.harmonise} is measured for Study I (image-only runs) and the shortcut baseline; lung masks, lesion masks and MoCo encoders are computed on unharmonised images.`);
  }
  requireInteger("--seed", c.seed, 0);
  if (c.epochs !== undefined) requireInteger("--epochs", c.epochs, 1, 100000);
  return profile;
}

/** The model actually built: the smoke profile swaps in a tiny model of the same family. */
export function builtModelName(c: Pick<DiagnosisConfig, "model">, profile: StudyProfile): DiagnosisModel {
  if (c.model === SHORTCUT_MODEL) return c.model;
  return profile.tinyModels ? (c.model.startsWith("resnet") ? "tiny-resnet" : "tiny-densenet") : c.model;
}

/** Checksums of every input of a run (what reuse and --resume compare besides the config). */
export function inputChecksums(c: DiagnosisConfig, profile: StudyProfile): Record<string, string> {
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
export function effectiveInit(c: Pick<DiagnosisConfig, "init">, profile: StudyProfile): string {
  return c.init ?? (profile.imagenet ? "imagenet" : "random");
}

/** Study II's heads of a profile (recorded with runs that have a lesion branch). */
export function headsOf(profile: StudyProfile): MultiTaskHeads {
  return MULTITASK_HEADS[profile.name];
}

/** Seed of the random backbone of every frozen-features run with init random (see prepareMaskRun). */
export const FROZEN_RANDOM_BACKBONE_SEED = 1;

/** Progress callbacks of a run (CLI bars, notebook progress). */
export interface DiagnosisHooks {
  log?: (msg: string) => void;
  onStep?: (s: StepLog) => void;
  onEpoch?: (e: EpochLog) => void;
  onFeatures?: (done: number, total: number) => void;
}
