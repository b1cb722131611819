/**
 * Run profiles: one named set of settings per kind of machine. Every knob has a documented
 * default here; the CLI flags and notebook parameters cells only pick a profile and override a few.
 */
import { CosineSchedule } from "./schedule";

export type ProfileName = "paper" | "quick" | "smoke";
export const PROFILE_NAMES: readonly ProfileName[] = ["paper", "quick", "smoke"];

/** Augmentation of the paper (Section 3), applied to training images only. */
export interface AugmentConfig {
  /** Random resized crop: area fraction drawn from [minScale, 1] (paper: 0.5). 1 disables. */
  minScale: number;
  /** Horizontal flip with probability 0.5. */
  hflip: boolean;
  /** Brightness and contrast factors drawn from [1 − f, 1 + f] (paper: 0.2). 0 disables. */
  brightness: number;
  contrast: number;
}

export const PAPER_AUGMENT: AugmentConfig = { minScale: 0.5, hflip: true, brightness: 0.2, contrast: 0.2 };
export const NO_AUGMENT: AugmentConfig = { minScale: 1, hflip: false, brightness: 0, contrast: 0 };

export interface StudyProfile {
  name: ProfileName;
  /** Square input size in pixels (paper: 480). */
  inputSize: number;
  /**
   * "finetune": the whole network trains on augmented images (the paper's protocol).
   * "frozen-features": the ImageNet backbone runs once per image in inference mode, its pooled
   * features are cached, and only the classification head trains on them (transfer learning by
   * linear probing; feasible on a 2-core CPU).
   */
  strategy: "finetune" | "frozen-features";
  epochs: number;
  batchSize: number;
  /** Examples per forward/backward pass (gradient accumulation up to batchSize). */
  microBatch: number;
  schedule: CosineSchedule;
  augment: AugmentConfig;
  /**
   * frozen-features only: feature views per training image, 1 = the image as is, 2 = plus its
   * horizontal mirror (the only augmentation that can be cached).
   */
  trainViews: 1 | 2;
  /**
   * frozen-features only: z-score the features with training-set statistics before the head (folded
   * into the head's weights afterwards, so the saved model still takes raw images).
   */
  standardiseFeatures: boolean;
  /** Seeds per (model, arm) cell; results report mean ± sd over them. */
  seeds: number[];
  /** Use ImageNet weights (Study I: always). */
  imagenet: boolean;
  /** Replace the model by a tiny one of the same family (smoke tests). */
  tinyModels: boolean;
  /** Cap on images per class and split (smoke tests); undefined = all. */
  limitPerClass?: number;
}

export const PROFILES: Record<ProfileName, StudyProfile> = {
  // The paper's settings, for a GPU with tfjs-node-gpu. 40 epochs = four cosine periods; the paper
  // does not state its epoch count.
  paper: {
    name: "paper",
    inputSize: 480,
    strategy: "finetune",
    epochs: 40,
    batchSize: 16,
    microBatch: 16,
    schedule: { lr: 1e-4, periodEpochs: 10 },
    augment: PAPER_AUGMENT,
    trainViews: 1,
    standardiseFeatures: false,
    seeds: [1, 2, 3],
    imagenet: true,
    tinyModels: false,
  },
  // 2-core CPU on wasm: frozen ImageNet features at 224², head trained with the paper's optimiser
  // and cosine period. lr, epochs and standardisation were chosen on validation AUC (DenseNet-169,
  // covid-ct-all, seed 1): lr 1e-3 > 3e-4, 5e-4; 60 epochs > 30, 40; z-scored > raw features.
  quick: {
    name: "quick",
    inputSize: 224,
    strategy: "frozen-features",
    epochs: 60,
    batchSize: 16,
    microBatch: 16,
    schedule: { lr: 1e-3, periodEpochs: 10 },
    augment: NO_AUGMENT,
    trainViews: 1,
    standardiseFeatures: true,
    seeds: [1, 2],
    imagenet: true,
    tinyModels: false,
  },
  // Tiny models on a handful of images: exercises every code path in seconds.
  smoke: {
    name: "smoke",
    inputSize: 32,
    strategy: "finetune",
    epochs: 3,
    batchSize: 8,
    microBatch: 4,
    schedule: { lr: 1e-3, periodEpochs: 10 },
    augment: PAPER_AUGMENT,
    trainViews: 1,
    standardiseFeatures: false,
    seeds: [1],
    imagenet: false,
    tinyModels: true,
    limitPerClass: 12,
  },
};

export function getProfile(name: string): StudyProfile {
  if (!(PROFILE_NAMES as readonly string[]).includes(name)) {
    throw new Error(`Unknown profile '${name}'. Use one of: ${PROFILE_NAMES.join(", ")} (see README, "Profiles").`);
  }
  return structuredClone(PROFILES[name as ProfileName]);
}

/**
 * Study II's heads per profile (Fig. 4B/4C), recorded in the config of runs with a lesion branch.
 *   paper: ASPP with DeepLabv3's 256 filters on the backbone's stride-32 map; lesion output at the input size.
 *   quick: frozen feature maps (7×7 at 224²): no ASPP (see buildFeatureHead), lesion output 28² (4× the map: the logits are 7×7 anyway; 56² doubled the step time on wasm).
 *   smoke: a tiny ASPP (8 filters; tiny-densenet's map is stride 8) at the 32² input.
 */
export interface MultiTaskHeads {
  /** ASPP filters; 0 = no ASPP (frozen-features heads). */
  asppFilters: number;
  /** Output stride of the backbone map the ASPP rates are scaled for. */
  outputStride: number;
  /** Side of the lesion output and its targets; 0 = the input size. */
  lesionSize: number;
}

export const MULTITASK_HEADS: Record<ProfileName, MultiTaskHeads> = {
  paper: { asppFilters: 256, outputStride: 32, lesionSize: 0 },
  quick: { asppFilters: 0, outputStride: 32, lesionSize: 28 },
  smoke: { asppFilters: 8, outputStride: 8, lesionSize: 0 },
};
