/**
 * Segmentation as a task of the training engine (lib/training/loop.ts): images and binary masks
 * held in memory at the model's input size, loss = soft Dice + BCE per image (lib/models/losses),
 * the checkpoint selected on the pooled validation Dice at 0.5. Augmentation moves image and mask
 * together (augmentPair): a crop or flip applied to one only would teach the model wrong outlines.
 */
import * as tf from "@tensorflow/tfjs";
import { segmentationLossPerImage, SegmentationLossConfig } from "../models/losses";
import { augmentPair } from "./augment";
import { ExampleSource, TrainingTask } from "./loop";
import { AugmentConfig, NO_AUGMENT } from "./profiles";
import { Tensors } from "./accumulate";

/** Square gray images with one binary mask each, size × size, row-major bytes. */
export class SegmentationSource implements ExampleSource {
  readonly size: number;
  /** Segmentation has no class label: 0 for every example (the engine's interface asks for one). */
  readonly labels: readonly number[];
  constructor(
    /** Example ids (file ids), in order. */
    readonly ids: readonly string[],
    /** Gray pixels 0–255, side × side each. */
    readonly images: readonly Uint8Array[],
    /** 0/1 per pixel, side × side each (aligned with images). */
    readonly masks: readonly Uint8Array[],
    readonly side: number,
  ) {
    if (images.length !== ids.length || masks.length !== ids.length) throw new Error(`SegmentationSource: ${ids.length} ids, ${images.length} images, ${masks.length} masks`);
    for (const [i, a] of [...images, ...masks].entries()) {
      if (a.length !== side * side) throw new Error(`SegmentationSource: array ${i} holds ${a.length} pixels, expected ${side}×${side}`);
    }
    this.size = ids.length;
    this.labels = ids.map(() => 0);
  }
  /** Images [n, side, side, 1] in [0, 1], not augmented (augmentation needs the masks: see segmentationTask). */
  inputs(indices: readonly number[]): tf.Tensor4D {
    return stack(indices.map((i) => this.images[i]), this.side, 1 / 255);
  }
  /** Masks [n, side, side, 1] as 0/1 floats. */
  targets(indices: readonly number[]): tf.Tensor4D {
    return stack(indices.map((i) => this.masks[i]), this.side, 1);
  }
}

function stack(arrays: readonly Uint8Array[], side: number, scale: number): tf.Tensor4D {
  const out = new Float32Array(arrays.length * side * side);
  arrays.forEach((a, k) => {
    for (let j = 0; j < a.length; j++) out[k * a.length + j] = a[j] * scale;
  });
  return tf.tensor4d(out, [arrays.length, side, side, 1]);
}

export interface SegmentationTaskOptions {
  /** Training augmentation, applied to image and mask together (default NO_AUGMENT). */
  augment?: AugmentConfig;
  /** Loss (default soft Dice + BCE, lib/models/losses). */
  loss?: SegmentationLossConfig;
  /** Examples per forward pass in evaluate() (default 16). */
  evalBatch?: number;
}

/** Pooled overlap counts of thresholded probabilities against 0/1 masks. */
export interface PooledOverlap {
  intersection: number;
  predArea: number;
  refArea: number;
}

/** How predictMasks turns one or more models into probabilities. */
export interface PredictOptions {
  /**
   * Test-time flip: also predict each image mirrored left–right, mirror that prediction back and
   * average it with the plain one. The models were trained with flips, so both views are equally
   * valid; their average is smoother at the edges where one view hesitates.
   */
  flip?: boolean;
}

/**
 * Probabilities [n, side, side] for every example of src, in order (batched): the mean over the
 * models (an ensemble; one model is the usual case) and, with o.flip, over both mirror views.
 */
export async function predictMasks(models: tf.LayersModel | readonly tf.LayersModel[], src: SegmentationSource, batch = 16, each?: (i: number, prob: Float32Array) => void, o: PredictOptions = {}): Promise<void> {
  const members = Array.isArray(models) ? models : [models as tf.LayersModel];
  if (members.length === 0) throw new Error("predictMasks: no model given");
  for (let i = 0; i < src.size; i += batch) {
    const idx = Array.from({ length: Math.min(batch, src.size - i) }, (_, k) => i + k);
    const p = tf.tidy(() => {
      const x = src.inputs(idx);
      const views: tf.Tensor[] = [];
      for (const m of members) {
        views.push(m.predict(x) as tf.Tensor);
        if (o.flip) views.push(tf.reverse(m.predict(tf.reverse(x, 2)) as tf.Tensor, 2));
      }
      return views.length === 1 ? views[0] : tf.div(tf.addN(views), views.length);
    });
    const data = (await p.data()) as Float32Array;
    p.dispose();
    const n = src.side * src.side;
    idx.forEach((ex, k) => each?.(ex, data.subarray(k * n, (k + 1) * n)));
  }
}

/** Validation loss (mean per image) and pooled Dice at 0.5 of a segmentation model on src. */
export async function evaluateSegmenter(model: tf.LayersModel, src: SegmentationSource, o: SegmentationTaskOptions = {}): Promise<{ loss: number; dice: number }> {
  const batch = o.evalBatch ?? 16;
  let loss = 0;
  const pooled: PooledOverlap = { intersection: 0, predArea: 0, refArea: 0 };
  for (let i = 0; i < src.size; i += batch) {
    const idx = Array.from({ length: Math.min(batch, src.size - i) }, (_, k) => i + k);
    const [l, counts] = tf.tidy(() => {
      const x = src.inputs(idx);
      const y = src.targets(idx);
      const p = model.predict(x) as tf.Tensor;
      const bin = tf.cast(tf.greaterEqual(p, 0.5), "float32");
      return [tf.sum(segmentationLossPerImage(p, y, o.loss)), tf.stack([tf.sum(tf.mul(bin, y)), tf.sum(bin), tf.sum(y)])];
    });
    loss += (await l.data())[0];
    const c = await counts.data();
    tf.dispose([l, counts]);
    pooled.intersection += c[0];
    pooled.predArea += c[1];
    pooled.refArea += c[2];
  }
  const denom = pooled.predArea + pooled.refArea;
  return { loss: loss / Math.max(1, src.size), dice: denom === 0 ? 1 : (2 * pooled.intersection) / denom };
}

/**
 * The engine task for binary segmentation: x = images, y = masks (augmented together when
 * training), loss = mean over the batch of segmentationLossPerImage, selection on pooled val Dice.
 */
export function segmentationTask(o: SegmentationTaskOptions = {}): TrainingTask<SegmentationSource> {
  const augment = o.augment ?? NO_AUGMENT;
  return {
    name: "segmentation",
    batch(src, idx, ctx) {
      const x = src.inputs(idx);
      const y = src.targets(idx);
      if (!ctx.train) return { x, y };
      const [xa, ya] = augmentPair(x, y, augment, ctx.seed);
      tf.dispose([x, y]);
      return { x: xa, y: ya };
    },
    loss: (yTrue: Tensors, yPred: Tensors) => tf.tidy(() => tf.mean(segmentationLossPerImage(yPred as tf.Tensor, yTrue as tf.Tensor, o.loss))),
    evaluate: (model, src) => evaluateSegmenter(model, src, o),
    selectOn: "dice",
  };
}
