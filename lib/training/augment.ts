/**
 * The paper's augmentation as batched tf ops, seeded per call: random resized crop (area in
 * [minScale, 1], aspect ratio in [3/4, 4/3] as torchvision's RandomResizedCrop), horizontal flip,
 * brightness and contrast jitter (torchvision ColorJitter factors in [1 − f, 1 + f]).
 */
import * as tf from "@tensorflow/tfjs";
import seedrandom from "seedrandom";
import { AugmentConfig } from "./profiles";

/** Crop box [y1, x1, y2, x2] in normalised coordinates; x1 > x2 mirrors the crop. */
export function randomCropBox(rng: () => number, a: AugmentConfig): [number, number, number, number] {
  let h = 1;
  let w = 1;
  if (a.minScale < 1) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const area = a.minScale + (1 - a.minScale) * rng();
      const logR = Math.log(3 / 4) + (Math.log(4 / 3) - Math.log(3 / 4)) * rng();
      const r = Math.exp(logR);
      const cw = Math.sqrt(area * r);
      const ch = Math.sqrt(area / r);
      if (cw <= 1 && ch <= 1) {
        w = cw;
        h = ch;
        break;
      }
    }
  }
  const y1 = (1 - h) * rng();
  const x1 = (1 - w) * rng();
  const flip = a.hflip && rng() < 0.5;
  return flip ? [y1, x1 + w, y1 + h, x1] : [y1, x1, y1 + h, x1 + w];
}

/** The random draws of one augmented batch: per example a crop box, a brightness and a contrast factor. */
export interface AugmentDraws {
  boxes: [number, number, number, number][];
  bright: number[];
  contrast: number[];
}

/** Draw the augmentation of n examples from the seed (the order of draws is part of the contract: same seed, same batch). */
export function drawAugmentation(n: number, a: AugmentConfig, seed: string): AugmentDraws {
  const rng = seedrandom(seed);
  const d: AugmentDraws = { boxes: [], bright: [], contrast: [] };
  for (let i = 0; i < n; i++) {
    d.boxes.push(randomCropBox(rng, a));
    d.bright.push(1 + a.brightness * (2 * rng() - 1));
    d.contrast.push(1 + a.contrast * (2 * rng() - 1));
  }
  return d;
}

/** Crop-resize-flip of a batch with the drawn boxes (bilinear), then brightness and contrast when asked. */
function applyDraws(x: tf.Tensor4D, a: AugmentConfig, d: AugmentDraws, photometric: boolean): tf.Tensor4D {
  const [n, h, w] = x.shape;
  return tf.tidy(() => {
    const idx = tf.tensor1d(Array.from({ length: n }, (_, i) => i), "int32");
    let y = tf.image.cropAndResize(x, tf.tensor2d(d.boxes), idx, [h, w], "bilinear");
    if (!photometric) return y as tf.Tensor4D;
    if (a.brightness > 0) y = tf.mul(y, tf.tensor4d(d.bright, [n, 1, 1, 1]));
    if (a.contrast > 0) {
      const mean = tf.mean(y, [1, 2, 3], true);
      y = tf.add(tf.mul(tf.sub(y, mean), tf.tensor4d(d.contrast, [n, 1, 1, 1])), mean);
    }
    return tf.clipByValue(y, 0, 1) as tf.Tensor4D;
  });
}

/**
 * Augment a batch [n, h, w, c] of images in [0, 1]; output has the same shape.
 * Deterministic for a given seed string.
 */
export function augmentBatch(x: tf.Tensor4D, a: AugmentConfig, seed: string): tf.Tensor4D {
  return applyDraws(x, a, drawAugmentation(x.shape[0], a, seed), true);
}

/**
 * Augment images [n, h, w, c] and their masks [n, h, w, k] together: the same crop, resize and
 * flip for both (so a mask stays on its image), brightness and contrast on the image only (a mask
 * is a label, not an intensity). The images come out exactly as augmentBatch(images, a, seed);
 * masks are resampled bilinearly and thresholded at 0.5, so they stay 0/1.
 */
export function augmentPair(images: tf.Tensor4D, masks: tf.Tensor4D, a: AugmentConfig, seed: string): [tf.Tensor4D, tf.Tensor4D] {
  const [n, h, w] = images.shape;
  if (masks.shape[0] !== n || masks.shape[1] !== h || masks.shape[2] !== w) {
    throw new Error(`augmentPair: masks ${JSON.stringify(masks.shape)} do not match images ${JSON.stringify(images.shape)} (same n, height, width needed)`);
  }
  const d = drawAugmentation(n, a, seed);
  const img = applyDraws(images, a, d, true);
  const m = tf.tidy(() => tf.cast(tf.greaterEqual(applyDraws(masks, a, d, false), 0.5), "float32") as tf.Tensor4D);
  return [img, m];
}
