/**
 * Segmentation losses shared by the residual U-Net (lung masks) and the multi-task model (lesions).
 * Per image, so callers can mask out images without a label and average the rest.
 */
import * as tf from "@tensorflow/tfjs";

export interface SegmentationLossConfig {
  /**
   * "dice+bce" (default) = soft Dice + pixel-mean BCE; "bce" or "dice" alone. BCE alone is dominated
   * by the background on small lesions; soft Dice alone is unstable on empty masks. The sum is the
   * usual medical-segmentation choice.
   */
  kind?: "dice+bce" | "bce" | "dice";
  /** Soft Dice smoothing s in 1 − (2·Σpg + s)/(Σp + Σg + s): an empty mask predicted empty costs 0 (default 1). */
  smooth?: number;
}

/** [n] loss per image of probabilities `pred` against {0,1} `target`, both [n, H, W, 1]. */
export function segmentationLossPerImage(pred: tf.Tensor, target: tf.Tensor, cfg: SegmentationLossConfig = {}): tf.Tensor1D {
  if (JSON.stringify(pred.shape) !== JSON.stringify(target.shape)) {
    throw new Error(`segmentation loss: prediction ${JSON.stringify(pred.shape)} vs target ${JSON.stringify(target.shape)}; resize the masks to the model's input size`);
  }
  const kind = cfg.kind ?? "dice+bce";
  const smooth = cfg.smooth ?? 1;
  return tf.tidy(() => {
    const eps = 1e-7;
    const axes = pred.shape.slice(1).map((_, i) => i + 1);
    const parts: tf.Tensor[] = [];
    if (kind !== "dice") {
      const q = tf.clipByValue(pred, eps, 1 - eps);
      parts.push(tf.mean(tf.neg(tf.add(tf.mul(target, tf.log(q)), tf.mul(tf.sub(1, target), tf.log(tf.sub(1, q))))), axes));
    }
    if (kind !== "bce") {
      const inter = tf.sum(tf.mul(pred, target), axes);
      const sums = tf.add(tf.sum(pred, axes), tf.sum(target, axes));
      parts.push(tf.sub(1, tf.div(tf.add(tf.mul(inter, 2), smooth), tf.add(sums, smooth))));
    }
    return (parts.length === 1 ? parts[0] : tf.add(parts[0], parts[1])) as tf.Tensor1D;
  });
}
