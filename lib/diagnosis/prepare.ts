/**
 * The three ways a diagnosis run prepares what it trains:
 *   shortcut   the cue baseline: a logistic regression on non-anatomical cues;
 *   backbone   Study I: the whole network (paper, smoke) or a head on cached pooled features (quick);
 *   mask run   Study II and CSSL: the lung mask as input and/or the ASPP lesion branch, on cached
 *              feature maps (quick) or the whole network with a 4-channel input (paper, smoke).
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { buildFeatureHead, buildModel, buildMultiTaskModel, featureExtractors, headModel, ModelName } from "../models";
import { loadImagenetWeights, preprocessFor } from "../models/weights";
import { shortcutCues, shortcutModel } from "../protocols/shortcut";
import { classificationTask, ExampleSource, TrainingTask } from "../training/loop";
import { multiTaskTask } from "../training/multitask";
import { StudyProfile } from "../training/profiles";
import { writeJsonAtomic } from "../util/fs";
import { DiagnosisConfig, DiagnosisHooks, effectiveInit, FROZEN_RANDOM_BACKBONE_SEED, headsOf } from "./config";
import { Example } from "../data/examples";
import { Harmoniser } from "../data/harmonise";
import { DiagnosisData } from "./data";
import { computeFeatures, featureNormalisation, FeatureNormalisation, FeatureSource, ImageSource } from "./inputs";
import { channelNormalisation, ChannelNormalisation, MapFeatureSource, maskToGrid, MaskedImageSource } from "./mask-inputs";
import { lungProbeFilter } from "./lung-probe";
import { lesionMasks, LungMaskProvider, lungMasks } from "./masks";
import { CHANNEL_NORMALISATION_FILE, NORMALISATION_FILE } from "./results";

/** The sets of a run: train, val (checkpoint, threshold), test, the MedSeg check, and the external set (predicted only). */
export type SetName = "train" | "val" | "test" | "medseg" | "external";

/**
 * Where a run's statistics of its training inputs (feature z-scores, feature-map channel norms) come
 * from: "fit" on its training set and written into the run directory (training), or "read" back from
 * a finished run's directory (scoring other images: lib/diagnosis/predict.ts), so that every other
 * step of the road is this one.
 */
export type InputStats = "fit" | "read";

function readStats<T>(runDir: string, file: string): T {
  const f = path.join(runDir, file);
  if (!fs.existsSync(f)) throw new Error(`${runDir} has no ${file}: the run is incomplete or older than its inputs' statistics. Train it again (covid-ct train --force).`);
  return JSON.parse(fs.readFileSync(f, "utf8")) as T;
}

/** What a run trains (backbone+head, head on cached features, or the cue regression) and on which sources. */
export interface Prepared {
  trainable: tf.LayersModel;
  sources: Record<SetName, ExampleSource>;
  /** Classification (Study I, Fig. 4A) or multi-task (Fig. 4B/4C: the sources are MultiTaskSources). */
  task: TrainingTask<never>;
  /** Side of the lesion output (multi-task runs). */
  lesionSize?: number;
  dispose(): void;
}

/** Frozen features (cached backbone outputs, or the shortcut cues) as sources, z-scored when asked. */
function featureSources(data: DiagnosisData, trainF: Float32Array[][], restF: Float32Array[][], extF: Float32Array[][], standardise: boolean, runDir: string, stats: InputStats): Record<SetName, ExampleSource> {
  const nv = data.val.length, nt = data.test.length;
  const norm = !standardise ? undefined : stats === "read" ? readStats<FeatureNormalisation>(runDir, NORMALISATION_FILE) : featureNormalisation(trainF);
  if (norm && stats === "fit") writeJsonAtomic(path.join(runDir, NORMALISATION_FILE), norm);
  return {
    train: new FeatureSource(trainF, data.train, norm),
    val: new FeatureSource(restF.slice(0, nv), data.val, norm),
    test: new FeatureSource(restF.slice(nv, nv + nt), data.test, norm),
    medseg: new FeatureSource(restF.slice(nv + nt), data.medsegTest, norm),
    external: new FeatureSource(extF, data.external, norm),
  };
}

/** The shortcut baseline: a logistic regression on non-anatomical cues, z-scored (lib/protocols/shortcut). */
export async function prepareShortcut(c: DiagnosisConfig, profile: StudyProfile, data: DiagnosisData, runDir: string, log: (m: string) => void, harmonise: Harmoniser | null = null, stats: InputStats = "fit"): Promise<Prepared> {
  const rest = [...data.val, ...data.test, ...data.medsegTest];
  log(`shortcut cues of ${data.train.length + rest.length} images (size, framing, grey levels; no anatomy)`);
  const trainF = (await shortcutCues(data.train, profile.inputSize, harmonise)).map((v) => [v]);
  const restF = (await shortcutCues(rest, profile.inputSize, harmonise)).map((v) => [v]);
  // The external set on its own (so the sets above are computed exactly as before it existed).
  const extF = (await shortcutCues(data.external, profile.inputSize, harmonise)).map((v) => [v]);
  const model = shortcutModel(c.seed);
  return { trainable: model, sources: featureSources(data, trainF, restF, extF, true, runDir, stats), task: classificationTask, dispose: () => model.dispose() };
}

export async function prepareBackbone(c: DiagnosisConfig, profile: StudyProfile, data: DiagnosisData, modelName: ModelName, checksums: Record<string, string>, runDir: string, hooks: DiagnosisHooks, harmonise: Harmoniser | null = null, lungs: LungMaskProvider | null = null, stats: InputStats = "fit"): Promise<Prepared> {
  const log = hooks.log ?? (() => undefined);
  // A lung probe blanks part of every image, in training and at test time (lib/diagnosis/lung-probe).
  const filter = c.lungProbe ? lungProbeFilter(c.lungProbe, lungs, profile.inputSize) : undefined;
  if (filter) log(`lung probe '${c.lungProbe}': images blanked with the lung masks of ${lungs!.id}`);
  else if (c.lungProbe) log(`lung probe '${c.lungProbe}': the probes' reference, nothing blanked, at ${profile.inputSize}²`);
  const built = buildModel(modelName, { inputSize: profile.inputSize, seed: c.seed });
  const pre = preprocessFor(profile.imagenet ? (c.model as ModelName) : modelName);
  if (profile.imagenet) {
    const w = await loadImagenetWeights(built.model, modelName, c.weightsRoot);
    log(`ImageNet weights: ${w.loaded} tensors from ${w.dir}${w.verified ? " (checksum verified)" : " (checksum differs from the tested copy)"}`);
  }
  if (profile.strategy === "frozen-features") {
    // One pass gives the pooled vector (this run) and the feature map (cached for Study II's heads;
    // blanked images have no later use for it: a probe keeps the pooled vector only).
    const extractor = featureExtractors(built, filter ? ["pooled"] : ["pooled", "map"]);
    const key = { model: modelName, weightsSha256: checksums[`weights/${modelName}`] ?? "random", size: profile.inputSize };
    const keys = filter ? [key] : [key, { ...key, which: "map" as const }];
    const rest = [...data.val, ...data.test, ...data.medsegTest];
    log(`frozen features: ${data.train.length + rest.length + data.external.length} images at ${profile.inputSize}² (cached after the first run)`);
    const trainF = await computeFeatures(extractor, data.train, keys, pre, { views: profile.trainViews, onProgress: hooks.onFeatures, harmonise, filter });
    const restF = await computeFeatures(extractor, rest, keys, pre, { views: 1, onProgress: hooks.onFeatures, harmonise, filter });
    const extF = await computeFeatures(extractor, data.external, keys, pre, { views: 1, onProgress: hooks.onFeatures, harmonise, filter });
    const head = headModel(built, "pooled");
    return { trainable: head, sources: featureSources(data, trainF, restF, extF, profile.standardiseFeatures, runDir, stats), task: classificationTask, dispose: () => { head.dispose(); built.model.dispose(); } };
  }
  const aug = profile.augment;
  return {
    trainable: built.model,
    sources: {
      train: await ImageSource.create(data.train, profile.inputSize, pre, aug, harmonise, filter),
      val: await ImageSource.create(data.val, profile.inputSize, pre, null, harmonise, filter),
      test: await ImageSource.create(data.test, profile.inputSize, pre, null, harmonise, filter),
      medseg: await ImageSource.create(data.medsegTest, profile.inputSize, pre, null, harmonise, filter),
      external: await ImageSource.create(data.external, profile.inputSize, pre, null, harmonise, filter),
    },
    task: classificationTask,
    dispose: () => built.model.dispose(),
  };
}

/**
 * The backbone initialisation of a Study II / CSSL run as a loader, and the key that identifies
 * the weights (feature caches are keyed by it).
 */
export function backboneInit(c: DiagnosisConfig, profile: StudyProfile, modelName: ModelName, checksums: Record<string, string>, log: (m: string) => void): { weightsKey: string; load: (m: tf.LayersModel) => Promise<void> } {
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
      const { loadPretrainedBackbone } = await import("../models/pretrained");
      const r = await loadPretrainedBackbone(m, dir, { adaptChannels: "zeros" });
      if (r.backboneLeftAtInit.length) throw new Error(`${dir}: ${r.backboneLeftAtInit.length} backbone weights were not in its encoder (e.g. ${r.backboneLeftAtInit[0]}).`);
      log(`pretrained encoder: ${r.loaded} tensors from ${dir}`);
    },
  };
}

/**
 * Study II (and CSSL fine-tuning) inputs and model: the lung mask as input and/or the lesion branch.
 * `quick` (frozen-features): the backbone's cached feature maps + buildFeatureHead; `paper`/`smoke`
 * (finetune): the whole network with a 4-channel input (lung) and the ASPP multi-task heads (lesion).
 */
export async function prepareMaskRun(
  c: DiagnosisConfig,
  profile: StudyProfile,
  data: DiagnosisData,
  modelName: ModelName,
  init: { weightsKey: string; load: (m: tf.LayersModel) => Promise<void> },
  lungs: LungMaskProvider | null,
  runDir: string,
  hooks: DiagnosisHooks,
  stats: InputStats = "fit",
): Promise<Prepared> {
  const log = hooks.log ?? (() => undefined);
  const heads = headsOf(profile);
  const size = profile.inputSize;
  const pre = preprocessFor(modelName);
  const sets: Record<SetName, Example[]> = { train: data.train, val: data.val, test: data.test, medseg: data.medsegTest, external: data.external };
  // The external set is computed on its own, after the others: they are computed exactly as before it existed.
  const setNames: SetName[] = ["train", "val", "test", "medseg"];
  const all = setNames.flatMap((k) => sets[k]);
  const ext = data.external;
  const split = <T>(xs: T[], extra: T[]): Record<SetName, T[]> => {
    const out = { external: extra } as Record<SetName, T[]>;
    let o = 0;
    for (const k of setNames) { out[k] = xs.slice(o, o + sets[k].length); o += sets[k].length; }
    return out;
  };
  if (c.lungMask) log(`lung masks of ${all.length + ext.length} images (${lungs!.id})`);
  const lung = c.lungMask ? split(await lungMasks(all, size, lungs!), ext.length ? await lungMasks(ext, size, lungs!) : []) : null;

  if (profile.strategy === "frozen-features") {
    // A frozen random backbone is drawn once (seed 1) for every run seed, as a MoCo encoder is
    // pretrained once: the run seed varies the head, and its feature maps are computed once.
    const built = buildModel(modelName, { inputSize: size, seed: FROZEN_RANDOM_BACKBONE_SEED, includeHead: false });
    await init.load(built.model);
    const extractor = featureExtractors(built, ["map", "pooled"]);
    const mapShape = (extractor.outputs[0].shape.slice(1) as number[]) as [number, number, number];
    const key = { model: modelName, weightsSha256: init.weightsKey, size };
    log(`frozen feature maps ${mapShape.join("×")}: ${all.length + ext.length} images at ${size}² (cached after the first run)`);
    const mapsOf = async (xs: Example[]) => (await computeFeatures(extractor, xs, [{ ...key, which: "map" as const }, key], pre, { views: 1, onProgress: hooks.onFeatures })).map((v) => v[0]);
    const maps = split(await mapsOf(all), ext.length ? await mapsOf(ext) : []);
    built.model.dispose();
    let norm: ChannelNormalisation;
    if (stats === "read") {
      const r = readStats<{ mean: number[]; std: number[] }>(runDir, CHANNEL_NORMALISATION_FILE);
      norm = { mean: Float32Array.from(r.mean), std: Float32Array.from(r.std) };
    } else {
      norm = channelNormalisation(maps.train, mapShape[2]);
      writeJsonAtomic(path.join(runDir, CHANNEL_NORMALISATION_FILE), { mean: Array.from(norm.mean), std: Array.from(norm.std) });
    }
    const side = heads.lesionSize || size;
    const lesion = c.lesionMask ? split(await lesionMasks(all, side), await lesionMasks(ext, side)) : null;
    const src = (k: SetName) =>
      new MapFeatureSource(maps[k], mapShape, norm, sets[k], lung ? lung[k].map((m) => maskToGrid(m, size, mapShape[0], mapShape[1])) : null, lesion ? lesion[k] : null, side);
    const head = buildFeatureHead({ mapShape, lung: !!c.lungMask, lesion: !!c.lesionMask, lesionSize: side, seed: c.seed });
    const sources = { train: src("train"), val: src("val"), test: src("test"), medseg: src("medseg"), external: src("external") };
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
  const lesion = c.lesionMask ? split(await lesionMasks(all, size), await lesionMasks(ext, size)) : null;
  const src = async (k: SetName) => MaskedImageSource.create(sets[k], size, pre, k === "train" ? profile.augment : null, { lung: lung ? lung[k] : null, lesion: lesion ? lesion[k] : null });
  return {
    trainable,
    sources: { train: await src("train"), val: await src("val"), test: await src("test"), medseg: await src("medseg"), external: await src("external") },
    task: (c.lesionMask ? multiTaskTask() : classificationTask) as TrainingTask<never>,
    lesionSize: c.lesionMask ? size : undefined,
    // The multi-task model holds the backbone's layers: disposing it disposes them.
    dispose: () => trainable.dispose(),
  };
}
