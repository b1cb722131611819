/**
 * The knobs every segmenter profile has (lib/lungs/profiles.ts, lib/lesions/profiles.ts add their
 * own and give the values). Types and the tiny smoke knobs only: no tfjs here.
 */
import type { SegmentationLossConfig } from "../models/losses";
import type { AugmentConfig, ProfileName } from "../training/profiles";
import type { CosineSchedule } from "../training/schedule";
import type { LungInputNormalisation } from "./slices";

export interface SegmenterProfile {
  name: ProfileName;
  /** U-Net input side S: the whole slice (upright) is resized to S×S gray. Multiple of 8. */
  inputSize: number;
  /** First-level filters of the residual U-Net (Zhang et al.: 64). */
  width: number;
  epochs: number;
  batchSize: number;
  /** Examples per forward/backward pass (gradients accumulated up to batchSize). */
  microBatch: number;
  /** Adam with the cosine schedule of the engine. */
  schedule: CosineSchedule;
  /**
   * BatchNormalization momentum (Keras convention). Keras' 0.99 averages over ~100 steps; a quick lung
   * run has ~57 steps an epoch, so its moving statistics lag the weights and validation (which uses
   * them) swings from epoch to epoch: the CPU profiles use 0.9, which follows within ~10 steps.
   */
  bnMomentum: number;
  /** Applied to image and mask together (augmentPair). */
  augment: AugmentConfig;
  /** Training loss (default soft Dice + BCE; undefined keeps runs made before the knob). */
  loss?: SegmentationLossConfig;
  /** Test-time flip (predictMasks): mean of the slice's and its mirror image's prediction. Undefined = off. */
  testTimeFlip?: boolean;
  /** Average the selected epoch's probabilities with the last epoch's (model/ + model-last/). Undefined = off. */
  ensembleLastEpoch?: boolean;
  /** The input normalisation (segmenterInput); undefined = the lungs' CLAHE (every lung run, and lesion runs unless a profile says otherwise). */
  input?: LungInputNormalisation;
  /** Cap on images per set for smoke tests; undefined = all. */
  limit?: number;
}

/** The `smoke` knobs of every target: every code path in seconds (tests). */
export const TINY_SEGMENTER = {
  inputSize: 32,
  width: 4,
  epochs: 2,
  batchSize: 4,
  microBatch: 4,
  schedule: { lr: 3e-3, periodEpochs: 2 },
  bnMomentum: 0.9,
  testTimeFlip: true,
  ensembleLastEpoch: true,
  limit: 12,
} as const satisfies Partial<SegmenterProfile>;

/** The `quick` knobs every target shares (2 CPU cores; each target adds its input size and its own knobs). */
export const QUICK_SEGMENTER = {
  width: 8,
  epochs: 40,
  batchSize: 8,
  microBatch: 8,
  schedule: { lr: 3e-3, periodEpochs: 40 },
  bnMomentum: 0.9,
} as const satisfies Partial<SegmenterProfile>;
