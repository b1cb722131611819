/**
 * The CSSL paper's MoCo augmentation (MoCo v2's `aug_plus`, facebookresearch/moco main_moco.py) as
 * batched tf ops on grayscale CT, seeded per call:
 *
 *   RandomResizedCrop(scale 0.2–1) → ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 → RandomGrayscale(p 0.2)
 *   → GaussianBlur(σ ∈ [0.1, 2]) with p 0.5 → RandomHorizontalFlip
 *
 * On grayscale CT (the same value in every channel) three of these terms are exact no-ops, also in
 * the paper's own torchvision pipeline, so they are not computed here:
 *  - saturation: torchvision blends the image with its own grayscale version, which is the image;
 *  - hue: a gray pixel has no chroma, rotating its hue leaves it unchanged;
 *  - random grayscale: the image already is gray.
 * What remains of colour jitter is brightness and contrast (with torchvision's random order between
 * them). As a CT-specific substitute for the lost strength the config offers `gamma`, a random
 * intensity-curve change (x^γ, like a different CT window); it is OFF by default (paper-faithful)
 * and is a named knob for the ablation. Its draw is part of the jitter's probability p.
 *
 * The flip is folded into the crop box (x1 > x2 mirrors the crop; flipping commutes with the
 * symmetric blur and the per-image intensity changes, so its position in the chain does not matter).
 */
import * as tf from "@tensorflow/tfjs";
import seedrandom from "seedrandom";
import { randomCropBox } from "../training/augment";

export interface MocoAugmentConfig {
  /** RandomResizedCrop: area fraction drawn from [minScale, 1] (MoCo: 0.2), aspect ratio in [3/4, 4/3]. */
  minScale: number;
  /** Horizontal flip with probability 0.5 (MoCo: true). */
  hflip: boolean;
  /** Probability of applying colour jitter to an image (MoCo v2: 0.8). */
  jitterProb: number;
  /** Brightness factor drawn from [1 − f, 1 + f] (MoCo v2: 0.4). 0 disables. */
  brightness: number;
  /** Contrast factor drawn from [1 − f, 1 + f] (MoCo v2: 0.4). 0 disables. */
  contrast: number;
  /** CT substitute for the no-op saturation/hue terms: γ = exp(u), u ∈ [−g, g]. Default 0 (off, paper-faithful). */
  gamma: number;
  /** Probability of a Gaussian blur (MoCo v2: 0.5; MoCo v1 has none: 0). */
  blurProb: number;
  /** Blur σ range in pixels at `blurReferenceSize` (MoCo v2: [0.1, 2.0] at 224). */
  blurSigma: [number, number];
  /** σ is scaled by outputSize / blurReferenceSize so a 32² view is blurred like a 224² one (default 224). */
  blurReferenceSize: number;
}

/** MoCo v2 / the CSSL paper's augmentation, with the grayscale no-ops removed (see the file comment). */
export const MOCO_V2_AUGMENT: MocoAugmentConfig = {
  minScale: 0.2,
  hflip: true,
  jitterProb: 0.8,
  brightness: 0.4,
  contrast: 0.4,
  gamma: 0,
  blurProb: 0.5,
  blurSigma: [0.1, 2.0],
  blurReferenceSize: 224,
};

/** The paper's jitter terms that vanish on grayscale input, with their paper values (for reports). */
export const GRAYSCALE_NOOP_TERMS = { saturation: 0.4, hue: 0.1, grayscaleProb: 0.2 } as const;

/** The random draws of one view of one image. */
export interface ViewParams {
  /** Crop box [y1, x1, y2, x2], normalised; x1 > x2 means flipped. */
  box: [number, number, number, number];
  /** 1 = unchanged. */
  brightness: number;
  contrast: number;
  gamma: number;
  /** torchvision ColorJitter applies its terms in random order: true = contrast before brightness. */
  contrastFirst: boolean;
  /** Blur σ in output pixels; 0 = no blur. */
  blurSigma: number;
}

/** Draw the parameters of one view. The order of draws is fixed, so a seed fixes every view. */
export function drawViewParams(rng: () => number, a: MocoAugmentConfig, outSize: number): ViewParams {
  const box = randomCropBox(rng, { minScale: a.minScale, hflip: a.hflip, brightness: 0, contrast: 0 });
  const jitter = rng() < a.jitterProb;
  const b = 1 + a.brightness * (2 * rng() - 1);
  const c = 1 + a.contrast * (2 * rng() - 1);
  const g = Math.exp(a.gamma * (2 * rng() - 1));
  const contrastFirst = rng() < 0.5;
  const blur = rng() < a.blurProb;
  const sigma = (a.blurSigma[0] + (a.blurSigma[1] - a.blurSigma[0]) * rng()) * (outSize / a.blurReferenceSize);
  return {
    box,
    brightness: jitter ? b : 1,
    contrast: jitter ? c : 1,
    gamma: jitter ? g : 1,
    contrastFirst: jitter && contrastFirst,
    blurSigma: blur ? sigma : 0,
  };
}

/** 1-D Gaussian kernel truncated at 3σ (at least radius 1), normalised to sum 1. */
export function gaussianKernel1d(sigma: number, maxRadius: number): number[] {
  const r = Math.max(1, Math.min(maxRadius, Math.ceil(3 * sigma)));
  const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const s = k.reduce((p, v) => p + v, 0);
  return k.map((v) => v / s);
}

/** Separable Gaussian blur of one image [h, w, c] with reflected borders. */
function blurImage(img: tf.Tensor3D, sigma: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [h, w] = img.shape;
    const k = gaussianKernel1d(sigma, Math.min(h, w) - 1);
    const r = (k.length - 1) / 2;
    // Channels into the batch dimension so one [k,1,1,1] kernel serves every channel.
    let x = tf.transpose(img, [2, 0, 1]).expandDims(-1) as tf.Tensor4D;
    x = tf.mirrorPad(x, [[0, 0], [r, r], [r, r], [0, 0]], "reflect");
    x = tf.conv2d(x, tf.tensor4d(k, [k.length, 1, 1, 1]), 1, "valid");
    x = tf.conv2d(x, tf.tensor4d(k, [1, k.length, 1, 1]), 1, "valid");
    return tf.transpose(tf.squeeze(x, [3]), [1, 2, 0]) as tf.Tensor3D;
  });
}

/** Apply drawn view parameters to a batch [n, H, W, c] in [0, 1] → [n, outH, outW, c] in [0, 1]. */
export function applyViews(x: tf.Tensor4D, params: readonly ViewParams[], outSize: [number, number]): tf.Tensor4D {
  const n = x.shape[0];
  if (params.length !== n) throw new Error(`applyViews: ${n} images but ${params.length} view parameters`);
  return tf.tidy(() => {
    const col = (f: (p: ViewParams) => number) => tf.tensor4d(params.map(f), [n, 1, 1, 1]);
    const idx = tf.tensor1d(Array.from({ length: n }, (_, i) => i), "int32");
    let y = tf.image.cropAndResize(x, tf.tensor2d(params.map((p) => p.box)), idx, outSize, "bilinear");
    // torchvision: brightness = clip(b·x); contrast = clip(c·x + (1 − c)·mean(gray(x))), per image.
    const bright = (t: tf.Tensor4D) => tf.clipByValue(tf.mul(t, col((p) => p.brightness)), 0, 1) as tf.Tensor4D;
    const contrast = (t: tf.Tensor4D) => {
      const c = col((p) => p.contrast);
      return tf.clipByValue(tf.add(tf.mul(t, c), tf.mul(tf.sub(1, c), tf.mean(t, [1, 2, 3], true))), 0, 1) as tf.Tensor4D;
    };
    const bc = contrast(bright(y));
    const cb = bright(contrast(y));
    y = tf.where(tf.broadcastTo(col((p) => (p.contrastFirst ? 1 : 0)).cast("bool"), bc.shape), cb, bc) as tf.Tensor4D;
    if (params.some((p) => p.gamma !== 1)) y = tf.pow(tf.maximum(y, 0), col((p) => p.gamma)) as tf.Tensor4D;
    if (params.some((p) => p.blurSigma > 0)) {
      const imgs = tf.unstack(y) as tf.Tensor3D[];
      y = tf.stack(imgs.map((im, i) => (params[i].blurSigma > 0 ? blurImage(im, params[i].blurSigma) : im))) as tf.Tensor4D;
    }
    return tf.clipByValue(y, 0, 1) as tf.Tensor4D;
  });
}

/** One augmented view per image of a batch [n, H, W, c] in [0, 1], deterministic for a seed string. */
export function mocoAugment(x: tf.Tensor4D, a: MocoAugmentConfig, outSize: number, seed: string): tf.Tensor4D {
  if (x.rank !== 4) throw new Error(`mocoAugment: expected a batch [n, h, w, c], got shape [${x.shape}]`);
  const rng = seedrandom(seed);
  const params = Array.from({ length: x.shape[0] }, () => drawViewParams(rng, a, outSize));
  return applyViews(x, params, [outSize, outSize]);
}

/**
 * MoCo's TwoCropsTransform: a query view and a key view of each image, independently augmented
 * (seeds `${seed}:q` and `${seed}:k`), each [n, outSize, outSize, c].
 */
export function twoViews(x: tf.Tensor4D, a: MocoAugmentConfig, outSize: number, seed: string): [tf.Tensor4D, tf.Tensor4D] {
  return [mocoAugment(x, a, outSize, `${seed}:q`), mocoAugment(x, a, outSize, `${seed}:k`)];
}
