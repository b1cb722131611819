/**
 * Run profiles of the lung segmenter (Study II): one typed config per profile name, every knob
 * documented here. The CLI and ensureLungSegmenter only pick a name.
 */
import { ProfileName } from "../training/profiles";
import { AugmentConfig } from "../training/profiles";
import { CosineSchedule } from "../training/schedule";

export interface LungProfile {
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
   * BatchNormalization momentum (Keras convention). Keras' 0.99 averages over ~100 steps; a quick
   * run has ~57 steps an epoch, so its moving statistics lag the weights and validation (which uses
   * them) swings from epoch to epoch: 0.9 follows within ~10 steps.
   */
  bnMomentum: number;
  /** Applied to image and pseudo mask together (augmentPair). */
  augment: AugmentConfig;
  /** Cap on images per set (train, val, test, MedSeg) for smoke tests; undefined = all. */
  limit?: number;
}

/**
 * Mild augmentation for lung masks: crops of at least 70 % of the area keep both lungs mostly in
 * view (the model must learn the whole-slice framing it sees at inference), flips and grey jitter
 * as the paper's classifiers.
 */
export const LUNG_AUGMENT: AugmentConfig = { minScale: 0.7, hflip: true, brightness: 0.2, contrast: 0.2 };

export const LUNG_PROFILES: Record<ProfileName, LungProfile> = {
  // Zhang et al.'s ResUnet at their patch size 224² and width 64. They trained with SGD on MSE; we
  // use the engine's Adam + cosine with the Dice+BCE loss (the usual choice for binary masks).
  // 50 epochs at batch 16 (~900 images): for a GPU.
  paper: {
    name: "paper",
    inputSize: 224,
    width: 64,
    epochs: 50,
    batchSize: 16,
    microBatch: 16,
    schedule: { lr: 1e-3, periodEpochs: 50 },
    bnMomentum: 0.99,
    augment: LUNG_AUGMENT,
  },
  // 2 shared CPU cores on wasm: 96² and width 8 (lungs are large, smooth shapes: classical masks
  // taken down to 96² and back keep Dice 0.992 with themselves), one cosine period over the run.
  // Measured (seed 1, 2 cores shared with other jobs): ~55 s an epoch; the run took 198 s (13 s
  // inputs with the pseudo masks cached, ~100 s more when not, 165 s training, 20 s evaluation) and
  // writing the masks of all 1,469 protocol + MedSeg images 69 s. Held-out Dice 0.935, MedSeg lesion
  // coverage 0.962. 8 epochs (1,020 s on a busier machine) gave Dice 0.959, coverage 0.965.
  quick: {
    name: "quick",
    inputSize: 96,
    width: 8,
    epochs: 3,
    batchSize: 16,
    microBatch: 16,
    schedule: { lr: 3e-3, periodEpochs: 3 },
    bnMomentum: 0.9,
    augment: LUNG_AUGMENT,
  },
  // Tiny: every code path in seconds (tests).
  smoke: {
    name: "smoke",
    inputSize: 32,
    width: 4,
    epochs: 2,
    batchSize: 4,
    microBatch: 4,
    schedule: { lr: 3e-3, periodEpochs: 2 },
    bnMomentum: 0.9,
    augment: LUNG_AUGMENT,
    limit: 12,
  },
};

export function getLungProfile(name: string): LungProfile {
  const p = (LUNG_PROFILES as Record<string, LungProfile>)[name];
  if (!p) throw new Error(`Unknown lung profile '${name}'. Use one of: ${Object.keys(LUNG_PROFILES).join(", ")}.`);
  return structuredClone(p);
}
