/**
 * Shared pieces of the model builders: typed configs, seeded initialisers and the classification
 * head that replaces the ImageNet `fc1000` layer.
 *
 * Layer names of the backbones follow the Keras applications that produced the pretrained weights
 * (see densenet.ts / resnet.ts), because weights are loaded by layer name. The head's layers carry
 * a `covid_` prefix so that they can never collide with a Keras name.
 */
import * as tf from "@tensorflow/tfjs";

/** Every architecture the studies build (the tiny ones stand in under the smoke profile). */
export const MODEL_NAMES = ["densenet121", "densenet169", "resnet18", "resnet50", "tiny-densenet", "tiny-resnet"] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export function isModelName(s: string): s is ModelName {
  return (MODEL_NAMES as readonly string[]).includes(s);
}

/** Options common to every backbone. */
export interface BackboneConfig {
  /** Input height and width in pixels (a number means square). Default 224. */
  inputSize?: number | [number, number];
  /** Input channels. ImageNet weights need 3 unless `loadImagenetWeights({adaptChannels})`. Default 3. */
  channels?: number;
  /**
   * BatchNormalization momentum in Keras terms (moving = m·moving + (1−m)·batch). Keras default 0.99;
   * PyTorch's default momentum 0.1 corresponds to 0.9 here.
   */
  bnMomentum?: number;
  /** Seed for the kernel initialisers, so that a from-scratch model is reproducible. */
  seed?: number;
}

/** Options of the classification head (global average pooling → dropout → Dense softmax). */
export interface HeadConfig {
  /** Number of classes. Default 2 (class order is the dataset's; evaluation.ts takes P(COVID)). */
  numClasses?: number;
  /** Dropout rate before the Dense layer; 0 (default) adds no dropout layer. */
  dropout?: number;
  /** false → model ends at the pooled features (`avg_pool`). Default true. */
  includeHead?: boolean;
}

export type ModelConfig = BackboneConfig & HeadConfig;

/** Names of the head layers; everything else in a built model is backbone. */
export const HEAD_DROPOUT = "covid_dropout";
export const HEAD_DENSE = "covid_head";
export const HEAD_LAYERS: readonly string[] = [HEAD_DROPOUT, HEAD_DENSE];
/** True for the layers we add on top of the backbone. */
export function isHeadLayer(layerName: string): boolean {
  return HEAD_LAYERS.includes(layerName);
}

/** Every builder names its global-average-pooling layer like Keras does. */
export const POOL_LAYER = "avg_pool";

export function inputHW(cfg: BackboneConfig): [number, number] {
  const s = cfg.inputSize ?? 224;
  return typeof s === "number" ? [s, s] : s;
}

/**
 * Glorot-uniform initialisers (the Keras default for these applications). With a seed, each call
 * gets seed+k so that layers differ but the whole model is reproducible.
 */
export class Initialisers {
  private k = 0;
  constructor(private readonly seed?: number) {}
  kernel(): ReturnType<typeof tf.initializers.glorotUniform> {
    return tf.initializers.glorotUniform(this.seed === undefined ? {} : { seed: this.seed + this.k++ });
  }
}

/**
 * Append the head: GAP (`avg_pool`) → optional dropout → Dense(numClasses, softmax) `covid_head`.
 * The Dense is seeded separately (seed+100003) so that changing the backbone depth does not change
 * the head's initial weights for a given seed.
 */
export function addHead(features: tf.SymbolicTensor, cfg: ModelConfig): tf.SymbolicTensor {
  const x = tf.layers.globalAveragePooling2d({ name: POOL_LAYER }).apply(features) as tf.SymbolicTensor;
  if (cfg.includeHead === false) return x;
  return headOnPooled(x, cfg);
}

/**
 * The head alone, on pooled features of `dim` channels: the same layers and initialisation as
 * buildModel's head (probes train it on cached features without building a backbone).
 */
export function pooledHeadModel(dim: number, cfg: ModelConfig): tf.LayersModel {
  const input = tf.input({ shape: [dim], name: "covid_head_input_pooled" });
  return tf.model({ inputs: input, outputs: headOnPooled(input, cfg) });
}

function headOnPooled(pooled: tf.SymbolicTensor, cfg: ModelConfig): tf.SymbolicTensor {
  let x = pooled;
  if (cfg.dropout && cfg.dropout > 0) {
    x = tf.layers.dropout({ rate: cfg.dropout, name: HEAD_DROPOUT }).apply(x) as tf.SymbolicTensor;
  }
  const init = tf.initializers.glorotUniform(cfg.seed === undefined ? {} : { seed: cfg.seed + 100003 });
  return tf.layers
    .dense({ units: cfg.numClasses ?? 2, activation: "softmax", kernelInitializer: init, name: HEAD_DENSE })
    .apply(x) as tf.SymbolicTensor;
}

/** Shorthands that keep the builders readable; all names are explicit. */
export function conv(
  x: tf.SymbolicTensor,
  name: string,
  init: Initialisers,
  o: { filters: number; kernel: number; strides?: number; padding?: "valid" | "same"; useBias?: boolean },
): tf.SymbolicTensor {
  return tf.layers
    .conv2d({
      name,
      filters: o.filters,
      kernelSize: o.kernel,
      strides: o.strides ?? 1,
      padding: o.padding ?? "valid",
      useBias: o.useBias ?? false,
      kernelInitializer: init.kernel(),
    })
    .apply(x) as tf.SymbolicTensor;
}

export function bn(x: tf.SymbolicTensor, name: string, epsilon: number, momentum: number): tf.SymbolicTensor {
  return tf.layers.batchNormalization({ name, axis: -1, epsilon, momentum }).apply(x) as tf.SymbolicTensor;
}

export function relu(x: tf.SymbolicTensor, name: string): tf.SymbolicTensor {
  return tf.layers.activation({ activation: "relu", name }).apply(x) as tf.SymbolicTensor;
}

export function zeroPad(x: tf.SymbolicTensor, name: string, p: number): tf.SymbolicTensor {
  return tf.layers.zeroPadding2d({ name, padding: [[p, p], [p, p]] }).apply(x) as tf.SymbolicTensor;
}

/** Result of every builder: the model plus the names later stages need. */
export interface BuiltModel {
  model: tf.LayersModel;
  /** Layer whose output is the last convolutional feature map (Grad-CAM target). */
  featureLayer: string;
  /** Layer whose output is the pooled feature vector (frozen-feature caching). */
  poolLayer: string;
}
