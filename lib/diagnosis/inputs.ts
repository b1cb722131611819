/**
 * Input pipelines of the diagnosis run: examples (file + label) → tensors the model expects.
 *
 * ImageSource: chest crop + resize (cached on disk), the paper's augmentation for training, gray
 * replicated to 3 channels, the normalisation of the weight set.
 * FeatureSource: cached frozen-backbone features (the `quick` profile).
 */
import * as tf from "@tensorflow/tfjs";
import { DiskCache, cacheKey, contentHash, PREPROCESS_VERSION } from "../data/cache";
import { Example, LabelledExamples, loadGrayImages } from "../data/examples";
import { Harmoniser, harmoniseKey } from "../data/harmonise";
import { sourcePreprocessing } from "../data/sources";
import { grayBatch, toModelInput } from "../models/input";
import { Preprocessing } from "../models/weights";
import { augmentBatch } from "../training/augment";
import { ExampleSource } from "../training/loop";
import { AugmentConfig } from "../training/profiles";

/**
 * A change to the gray images before the model sees them (the lung probes, lib/diagnosis/lung-probe):
 * applied in training and at test time alike; its id joins every cache key of features made from them.
 */
export interface ImageFilter {
  id: string;
  apply(images: Uint8Array[], examples: readonly Example[]): Promise<Uint8Array[]>;
}

/** The examples' gray images at `side`, filtered when a filter is given. */
async function grayImages(examples: readonly Example[], side: number, harmonise: Harmoniser | null | undefined, filter?: ImageFilter): Promise<Uint8Array[]> {
  const imgs = await loadGrayImages(examples, side, harmonise);
  return filter ? filter.apply(imgs, examples) : imgs;
}

export class ImageSource extends LabelledExamples implements ExampleSource {
  private constructor(
    private readonly images: Uint8Array[],
    private readonly side: number,
    private readonly pre: Preprocessing,
    private readonly augment: AugmentConfig | null,
    examples: readonly Example[],
  ) {
    super(examples);
  }

  static async create(examples: readonly Example[], side: number, pre: Preprocessing, augment: AugmentConfig | null, harmonise: Harmoniser | null = null, filter?: ImageFilter): Promise<ImageSource> {
    return new ImageSource(await grayImages(examples, side, harmonise, filter), side, pre, augment, examples);
  }

  inputs(indices: readonly number[], ctx: { train: boolean; seed: string }): tf.Tensor {
    return tf.tidy(() => {
      let g = grayBatch(this.images, indices, this.side);
      if (ctx.train && this.augment) g = augmentBatch(g, this.augment, ctx.seed);
      return toModelInput(g, this.pre);
    });
  }
}

/** Everything that identifies a feature vector besides the image content. */
export interface FeatureKey {
  model: string;
  weightsSha256: string;
  size: number;
  /** 0 = the image, 1 = its horizontal mirror. */
  view: 0 | 1;
  /** The backbone's last feature map [h,w,C] instead of the pooled vector (Study II `quick`); absent = pooled. */
  which?: "map";
  /** The ImageFilter's id, when the images were filtered (lung probes); absent = the images as they are. */
  filter?: string;
}

/**
 * Features of a frozen backbone for each example, computed once and cached on disk by
 * (image content, model, weights, size, view, pooled/map). An extractor with several outputs
 * (featureExtractors) computes them in one pass: the first is returned, and every output is cached
 * under its own key from `keys` (so Study I's pooled pass also leaves Study II the maps).
 */
export async function computeFeatures(
  extractor: tf.LayersModel,
  examples: readonly Example[],
  key: Omit<FeatureKey, "view"> | Omit<FeatureKey, "view">[],
  pre: Preprocessing,
  opts: { views?: 1 | 2; batch?: number; onProgress?: (done: number, total: number) => void; harmonise?: Harmoniser | null; filter?: ImageFilter } = {},
): Promise<Float32Array[][]> {
  const keys = (Array.isArray(key) ? key : [key]).map((k) => (opts.filter ? { ...k, filter: opts.filter.id } : k));
  if (keys.length !== extractor.outputs.length) throw new Error(`computeFeatures: ${keys.length} cache keys for ${extractor.outputs.length} extractor outputs`);
  const views = opts.views ?? 1;
  const batch = opts.batch ?? 8;
  const cache = new DiskCache();
  // The source's preprocessing and the harmonisation join the key only when they are not the
  // default (COVID-CT keys, and every key written before harmonisation existed, unchanged).
  const k = (e: Example, view: 0 | 1, which = 0) => {
    const sp = sourcePreprocessing(e.source ?? "covid-ct", e.path);
    const kk = { ...keys[which], ...harmoniseKey(opts.harmonise) };
    return cacheKey("features", PREPROCESS_VERSION, contentHash(e.path), Object.keys(sp).length ? { ...kk, view, source: sp } : { ...kk, view });
  };
  const out: Float32Array[][] = examples.map(() => []);
  const todo: { i: number; view: 0 | 1 }[] = [];
  examples.forEach((e, i) => {
    for (let v = 0; v < views; v++) {
      const hit = cache.get("features", k(e, v as 0 | 1));
      if (hit) out[i][v] = new Float32Array(hit.buffer.slice(hit.byteOffset, hit.byteOffset + hit.byteLength));
      else todo.push({ i, view: v as 0 | 1 });
    }
  });
  let done = examples.length * views - todo.length;
  opts.onProgress?.(done, examples.length * views);
  for (let s = 0; s < todo.length; s += batch) {
    const chunk = todo.slice(s, s + batch);
    const imgs = await grayImages(chunk.map((c) => examples[c.i]), keys[0].size, opts.harmonise, opts.filter);
    const outs = tf.tidy(() => {
      let g = grayBatch(imgs, imgs.map((_, j) => j), keys[0].size);
      const flip = chunk.map((c) => c.view === 1);
      if (flip.some(Boolean)) {
        const mirrored = tf.image.flipLeftRight(g);
        const mask = tf.tensor4d(flip.map((b) => (b ? 1 : 0)), [chunk.length, 1, 1, 1]);
        g = tf.add(tf.mul(mirrored, mask), tf.mul(g, tf.sub(1, mask))) as tf.Tensor4D;
      }
      const y = extractor.predict(toModelInput(g, pre)) as tf.Tensor | tf.Tensor[];
      return Array.isArray(y) ? y : [y];
    });
    for (let o = 0; o < outs.length; o++) {
      const data = await outs[o].data();
      const dim = outs[o].size / outs[o].shape[0];
      chunk.forEach((c, j) => {
        const v = new Float32Array(data.subarray(j * dim, (j + 1) * dim));
        if (o === 0) out[c.i][c.view] = v;
        cache.put("features", k(examples[c.i], c.view, o), Buffer.from(v.buffer));
      });
    }
    tf.dispose(outs);
    done += chunk.length;
    opts.onProgress?.(done, examples.length * views);
  }
  return out;
}

/** Per-dimension mean and standard deviation of features, estimated on the training set. */
export interface FeatureNormalisation {
  mean: number[];
  std: number[];
}

/**
 * Standardise features with training-set statistics: a linear head on z-scored ImageNet features
 * trains faster and generalises better (chosen on validation AUC, see PROFILES.quick).
 */
export function featureNormalisation(features: readonly Float32Array[][]): FeatureNormalisation {
  const dim = features[0][0].length;
  const mean = new Float64Array(dim);
  const sq = new Float64Array(dim);
  let n = 0;
  for (const views of features) for (const v of views) {
    n++;
    for (let k = 0; k < dim; k++) { mean[k] += v[k]; sq[k] += v[k] * v[k]; }
  }
  const m = Array.from(mean, (x) => x / n);
  const s = Array.from(sq, (x, k) => Math.sqrt(Math.max(0, x / n - m[k] * m[k])) + 1e-6);
  return { mean: m, std: s };
}

/**
 * Fold a standardisation into the Dense layer that follows it, so the head takes raw features:
 * W' = W / std (per input row), b' = b − Σ_k mean_k · W'_k.
 */
export function foldNormalisation(kernel: tf.Tensor2D, bias: tf.Tensor1D, norm: FeatureNormalisation): [tf.Tensor2D, tf.Tensor1D] {
  return tf.tidy(() => {
    const w = tf.div(kernel, tf.tensor2d(norm.std, [norm.std.length, 1])) as tf.Tensor2D;
    const b = tf.sub(bias, tf.matMul(tf.tensor2d(norm.mean, [1, norm.mean.length]), w).reshape([-1])) as tf.Tensor1D;
    return [w, b];
  });
}

/** Cached features as an ExampleSource; training draws one of the views per example and epoch. */
export class FeatureSource extends LabelledExamples implements ExampleSource {
  constructor(
    private readonly features: Float32Array[][],
    examples: readonly Example[],
    private readonly norm?: FeatureNormalisation,
  ) {
    super(examples);
  }

  inputs(indices: readonly number[], ctx: { train: boolean; seed: string }): tf.Tensor {
    const dim = this.features[0][0].length;
    const buf = new Float32Array(indices.length * dim);
    // Training with 2 cached views uses the mirror for odd (seeded) draws; evaluation uses view 0.
    let h = 0;
    for (const ch of ctx.seed) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    indices.forEach((i, k) => {
      const views = this.features[i];
      const v = ctx.train && views.length > 1 ? ((h >>> (k % 24)) ^ i) & 1 : 0;
      buf.set(views[v], k * dim);
    });
    if (this.norm) {
      const { mean, std } = this.norm;
      for (let i = 0; i < buf.length; i++) buf[i] = (buf[i] - mean[i % dim]) / std[i % dim];
    }
    return tf.tensor2d(buf, [indices.length, dim]);
  }
}
