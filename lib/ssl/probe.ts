/**
 * Label-free probe of a self-supervised encoder: k-nearest neighbours by cosine similarity on
 * frozen pooled features, training set → validation set (the kNN monitor of Wu et al. 2018 that
 * MoCo-style work reports beside linear probing). No parameter is trained, so it measures the
 * features alone and costs one forward pass per image.
 *
 * The score of a validation image is the similarity-weighted vote of its k neighbours,
 * Σ wᵢ·yᵢ / Σ wᵢ with wᵢ = exp(simᵢ / τ) (τ = Infinity: plain majority fraction); AUC ranks these
 * scores, accuracy thresholds them at 0.5 (lib/evaluation.ts).
 */
import * as tf from "@tensorflow/tfjs";
import { accuracy, auc, confusionMatrix } from "../evaluation";
import { POOL_LAYER } from "../models/common";
import { Preprocessing } from "../models/weights";
import { toModelInput } from "../models/input";

export interface KnnProbeConfig {
  /** Neighbours per query (default 20; clipped to the training-set size). */
  k: number;
  /** Vote weight exp(sim/τ) (default 0.07, as the InstDisc/MoCo kNN monitor); Infinity = unweighted. */
  temperature: number;
}

export const KNN_PROBE_DEFAULTS: KnnProbeConfig = { k: 20, temperature: 0.07 };

export interface LabelledFeatures {
  /** One feature vector per image, all of the same width. */
  features: ArrayLike<number>[];
  /** 1 = positive (COVID), 0 = negative. */
  labels: ArrayLike<number>;
}

export interface KnnProbeResult {
  auc: number;
  accuracy: number;
  /** Per validation image: weighted fraction of positive neighbours. */
  scores: number[];
  k: number;
}

function toMatrix(f: ArrayLike<number>[], what: string): tf.Tensor2D {
  if (f.length === 0) throw new Error(`kNN probe: no ${what} features`);
  const d = f[0].length;
  const bad = f.findIndex((v) => v.length !== d);
  if (bad >= 0) throw new Error(`kNN probe: ${what} feature ${bad} has width ${f[bad].length}, expected ${d}`);
  const buf = new Float32Array(f.length * d);
  f.forEach((v, i) => buf.set(Array.from(v), i * d));
  return tf.tensor2d(buf, [f.length, d]);
}

/** kNN scores (weighted fraction of positive neighbours) of `query` against `train`. */
export function knnScores(train: LabelledFeatures, query: ArrayLike<number>[], config: Partial<KnnProbeConfig> = {}): number[] {
  const cfg = { ...KNN_PROBE_DEFAULTS, ...config };
  if (!Number.isInteger(cfg.k) || cfg.k < 1) throw new Error(`kNN probe: k must be a positive integer, got ${cfg.k}`);
  if (train.labels.length !== train.features.length) {
    throw new Error(`kNN probe: ${train.features.length} training features but ${train.labels.length} labels`);
  }
  const k = Math.min(cfg.k, train.features.length);
  const { values, indices } = tf.tidy(() => {
    const norm = (x: tf.Tensor2D) => tf.div(x, tf.maximum(tf.norm(x, "euclidean", 1, true), 1e-12));
    const sim = tf.matMul(norm(toMatrix(query, "query")), norm(toMatrix(train.features, "training")), false, true);
    return tf.topk(sim, k);
  });
  const sims = values.arraySync() as number[][];
  const idx = indices.arraySync() as number[][];
  tf.dispose([values, indices]);
  return sims.map((row, r) => {
    let num = 0;
    let den = 0;
    row.forEach((s, j) => {
      const w = Number.isFinite(cfg.temperature) ? Math.exp((s - row[0]) / cfg.temperature) : 1; // shifted by the max: no overflow
      num += w * train.labels[idx[r][j]];
      den += w;
    });
    return num / den;
  });
}

/** k-NN probe: fit nothing, score the validation features against the training features. */
export function knnProbe(train: LabelledFeatures, val: LabelledFeatures, config: Partial<KnnProbeConfig> = {}): KnnProbeResult {
  if (val.labels.length !== val.features.length) throw new Error(`kNN probe: ${val.features.length} validation features but ${val.labels.length} labels`);
  const scores = knnScores(train, val.features, config);
  return {
    auc: auc(val.labels, scores),
    accuracy: accuracy(confusionMatrix(val.labels, scores, 0.5)),
    scores,
    k: Math.min(config.k ?? KNN_PROBE_DEFAULTS.k, train.features.length),
  };
}

/** The backbone part of a MoCo encoder (or any model with an `avg_pool` layer): image → pooled features. */
export function pooledBackbone(encoder: tf.LayersModel): tf.LayersModel {
  const layer = encoder.getLayer(POOL_LAYER);
  return tf.model({ inputs: encoder.inputs, outputs: layer.getOutputAt(0) as tf.SymbolicTensor });
}

/**
 * Frozen pooled features of gray images [n, s, s, 1] in [0, 1] (s = the encoder's input size),
 * inference mode (BN moving statistics), in batches of `batchSize`.
 */
export function frozenFeatures(encoder: tf.LayersModel, gray: tf.Tensor4D, preprocessing: Preprocessing, batchSize = 32): Float32Array[] {
  const backbone = pooledBackbone(encoder);
  const out: Float32Array[] = [];
  const n = gray.shape[0];
  for (let s = 0; s < n; s += batchSize) {
    const f = tf.tidy(() => {
      const x = toModelInput(tf.slice(gray, [s, 0, 0, 0], [Math.min(batchSize, n - s), -1, -1, -1]), preprocessing);
      return backbone.predict(x) as tf.Tensor2D;
    });
    const d = f.shape[1];
    const data = f.dataSync() as Float32Array;
    for (let i = 0; i < f.shape[0]; i++) out.push(data.slice(i * d, (i + 1) * d));
    f.dispose();
  }
  return out;
}
