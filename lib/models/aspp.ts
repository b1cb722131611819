/**
 * Study II multi-task model (the paper's Fig. 4B/4C): backbone feature map → ASPP → a lesion
 * segmentation branch and a classification branch that also sees the predicted lesion mask.
 *
 * ASPP (atrous spatial pyramid pooling, DeepLabv3: Chen et al. 2017, "Rethinking atrous convolution
 * for semantic image segmentation", Section 3.3): five parallel branches on the feature map —
 * one 1×1 conv, three 3×3 convs with dilation rates (6, 12, 18), and image pooling (global average →
 * 1×1 conv → upsampled back) — each conv followed by BN + ReLU, concatenated, then a 1×1 projection
 * + BN + ReLU. DeepLabv3 uses (6, 12, 18) at output stride 16 and doubles them at output stride 8;
 * here rates are scaled the same way: rate = base · 16 / outputStride. The ImageNet backbones
 * here have output stride 32 (DenseNet-169, ResNet-50 without dilation), so the default rates are
 * (3, 6, 9): the same field of view in input pixels as (6, 12, 18) at stride 16. At 224² input the
 * map is 7×7 and rate 9 sees mostly padding — DeepLabv3 notes the same degeneration, which is why it
 * keeps the image-pooling branch; the rates are an option.
 *
 * Where the predicted lesion mask enters the classifier (our choice; the paper does not say): the
 * classification branch gets [GAP(ASPP features), GAP(ASPP features · lesion probability),
 * mean lesion probability]. The mask-weighted pooling is the features of the lesion region, the mean
 * is the lesion burden; the lesion probability is taken at the feature-map resolution (before the
 * upsampling to the input size) so it aligns with the features. Gradients from the classification
 * loss flow into the lesion branch too (no stop-gradient), as the paper trains them jointly.
 *
 * Outputs, in this order (named): `lesion` [n, H, W, 1] sigmoid probabilities at the input size,
 * `class` [n, 2] softmax [NonCOVID, COVID] — the dataset's class order (index 1 = COVID, as
 * Study I's labels: evaluation.ts takes P(COVID) = class[:, 1]).
 */
import * as tf from "@tensorflow/tfjs";
import { BuiltModel, Initialisers } from "./common";
import { SegmentationLossConfig, segmentationLossPerImage } from "./losses";

export interface AsppConfig {
  /** Filters of every ASPP branch and of the projection (DeepLabv3: 256). */
  filters?: number;
  /** Dilation rates of the three 3×3 branches at output stride 16 (DeepLabv3: [6, 12, 18]). */
  baseRates?: [number, number, number];
  /** Output stride of the backbone feature map; rates are scaled by 16 / outputStride. Default 32. */
  outputStride?: number;
  /** BN momentum (Keras convention, as BackboneConfig). Default 0.99. */
  bnMomentum?: number;
  /** Seed for the kernel initialisers (default: the multi-task config's seed). */
  seed?: number;
  /** Layer-name prefix (default "aspp"). */
  name?: string;
}

/** The dilation rates used for an output stride: base · 16 / outputStride, rounded, at least 1. */
export function asppRates(baseRates: readonly number[] = [6, 12, 18], outputStride = 32): number[] {
  return baseRates.map((r) => Math.max(1, Math.round((r * 16) / outputStride)));
}

/** A layer whose output is its input brought to a fixed spatial size (hw), serialised with it. */
abstract class ToSpatialSize extends tf.layers.Layer {
  constructor(protected readonly hw: [number, number], config: { name: string }) {
    super(config);
  }
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShape as tf.Shape;
    return [s[0], this.hw[0], this.hw[1], s[3]];
  }
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), hw: this.hw };
  }
  static override fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: tf.serialization.ConfigDict): T {
    return new (cls as unknown as new (hw: [number, number], c: { name: string }) => T)(config.hw as [number, number], config as unknown as { name: string });
  }
}

/**
 * A 1×1 conv applied to a [n,1,1,C] tensor and tiled back to [n,h,w,C]. tfjs has no UpSampling layer
 * that takes a target size for global pooling, so the image-pooling branch is resized by this layer.
 */
class BroadcastToMap extends ToSpatialSize {
  static readonly className = "CovidBroadcastToMap";
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return tf.tile(x, [1, this.hw[0], this.hw[1], 1]);
  }
}
tf.serialization.registerClass(BroadcastToMap);

/** Bilinear resize to a fixed size, as a layer (the lesion logits go back to the input size). */
class ResizeTo extends ToSpatialSize {
  static readonly className = "CovidResizeTo";
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
    return tf.image.resizeBilinear(x, this.hw, false, true);
  }
}
tf.serialization.registerClass(ResizeTo);


/**
 * 3×3 "same" convolution with dilation rate r, computed as DeepLab's atrous algorithm does: the input
 * is split by space-to-batch into r² sub-grids, each convolved with the dense kernel (valid), and
 * reassembled by batch-to-space. Mathematically the dilated convolution; needed because tfjs has no
 * gradient for dilated conv2d ("dilation rates greater than 1 are not yet supported in gradients"),
 * while spaceToBatchND/batchToSpaceND have gradients on every backend. Cost equals a plain conv.
 * Rate 1 is a plain conv2d. No bias (a BN follows).
 */
export class AtrousConv2D extends tf.layers.Layer {
  static readonly className = "CovidAtrousConv2D";
  readonly filters: number;
  readonly kernelSize: number;
  readonly dilationRate: number;
  private readonly initializer: ReturnType<typeof tf.initializers.glorotUniform> | undefined;
  private kernel!: tf.LayerVariable;
  constructor(config: { name: string; filters: number; kernelSize?: number; dilationRate: number; kernelInitializer?: ReturnType<typeof tf.initializers.glorotUniform> }) {
    super({ name: config.name });
    this.filters = config.filters;
    this.kernelSize = config.kernelSize ?? 3;
    this.dilationRate = config.dilationRate;
    this.initializer = config.kernelInitializer;
    if (this.kernelSize % 2 !== 1) throw new Error(`AtrousConv2D ${config.name}: kernelSize must be odd, got ${this.kernelSize}`);
  }
  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const s = inputShape as tf.Shape;
    const k = this.kernelSize;
    this.kernel = this.addWeight("kernel", [k, k, s[3] as number, this.filters], "float32", this.initializer ?? tf.initializers.glorotUniform({}));
    this.built = true;
  }
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = inputShape as tf.Shape;
    return [s[0], s[1], s[2], this.filters];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      const w = this.kernel.read() as tf.Tensor4D;
      const r = this.dilationRate;
      if (r === 1) return tf.conv2d(x, w, 1, "same");
      const [, h, wd] = x.shape;
      const p = (r * (this.kernelSize - 1)) / 2;
      // Pad by the receptive half-width, plus e so that the padded size is a multiple of r.
      const eh = (r - ((h + 2 * p) % r)) % r, ew = (r - ((wd + 2 * p) % r)) % r;
      const sub = tf.spaceToBatchND(x, [r, r], [[p, p + eh], [p, p + ew]]) as tf.Tensor4D;
      const y = tf.conv2d(sub, w, 1, "valid");
      return tf.batchToSpaceND(y, [r, r], [[0, eh], [0, ew]]);
    });
  }
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), filters: this.filters, kernelSize: [this.kernelSize, this.kernelSize], dilationRate: [this.dilationRate, this.dilationRate] };
  }
  static override fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: tf.serialization.ConfigDict): T {
    const c = config as { name: string; filters: number; kernelSize: number[]; dilationRate: number[] };
    return new (cls as unknown as new (c: object) => T)({ name: c.name, filters: c.filters, kernelSize: c.kernelSize[0], dilationRate: c.dilationRate[0] });
  }
}
tf.serialization.registerClass(AtrousConv2D);

function convBnRelu(x: tf.SymbolicTensor, name: string, init: Initialisers, o: { filters: number; kernel: number; rate?: number; momentum: number }): tf.SymbolicTensor {
  const rate = o.rate ?? 1;
  let y = (
    rate > 1
      ? new AtrousConv2D({ name: `${name}_conv`, filters: o.filters, kernelSize: o.kernel, dilationRate: rate, kernelInitializer: init.kernel() })
      : tf.layers.conv2d({ name: `${name}_conv`, filters: o.filters, kernelSize: o.kernel, padding: "same", useBias: false, kernelInitializer: init.kernel() })
  ).apply(x) as tf.SymbolicTensor;
  y = tf.layers.batchNormalization({ name: `${name}_bn`, axis: -1, momentum: o.momentum, epsilon: 1e-5 }).apply(y) as tf.SymbolicTensor;
  return tf.layers.activation({ activation: "relu", name: `${name}_relu` }).apply(y) as tf.SymbolicTensor;
}

/** ASPP on a feature map [n,h,w,C] → [n,h,w,filters]. Layers are named `${name}_…`. */
export function aspp(features: tf.SymbolicTensor, cfg: AsppConfig = {}): tf.SymbolicTensor {
  const name = cfg.name ?? "aspp";
  const filters = cfg.filters ?? 256;
  const momentum = cfg.bnMomentum ?? 0.99;
  const init = new Initialisers(cfg.seed);
  const [, h, w] = features.shape as number[];
  const rates = asppRates(cfg.baseRates ?? [6, 12, 18], cfg.outputStride ?? 32);
  const branches = [convBnRelu(features, `${name}_1x1`, init, { filters, kernel: 1, momentum })];
  rates.forEach((rate, i) => branches.push(convBnRelu(features, `${name}_atrous${i + 1}`, init, { filters, kernel: 3, rate, momentum })));
  let pooled = tf.layers.globalAveragePooling2d({ name: `${name}_pool_gap` }).apply(features) as tf.SymbolicTensor;
  pooled = tf.layers.reshape({ name: `${name}_pool_reshape`, targetShape: [1, 1, features.shape[3] as number] }).apply(pooled) as tf.SymbolicTensor;
  // BN on a 1×1 map normalises over the batch only, as in DeepLabv3; in training a (micro-)batch
  // of 1 therefore makes this branch constant (its output is BN beta): use micro-batches ≥ 2.
  pooled = convBnRelu(pooled, `${name}_pool`, init, { filters, kernel: 1, momentum });
  branches.push(new BroadcastToMap([h, w], { name: `${name}_pool_broadcast` }).apply(pooled) as tf.SymbolicTensor);
  const cat = tf.layers.concatenate({ name: `${name}_concat`, axis: -1 }).apply(branches) as tf.SymbolicTensor;
  return convBnRelu(cat, `${name}_project`, init, { filters, kernel: 1, momentum });
}

/**
 * Features [n,h,w,C] pooled with weights from a map [n,h,w,1] → [n, C]: Σ_cells m·f divided by the
 * cell count ("cells": GAP(f · m), the lesion-weighted features) or by Σ m ("mask": the mean of f
 * inside the mask, the lung-masked features). Computed as a batched matMul [n,1,hw]×[n,hw,C]: the
 * same numbers as mul + mean, and on wasm 6× faster backwards (the broadcast multiply's gradient
 * reduces over channels slowly there).
 */
class WeightedMean extends tf.layers.Layer {
  static readonly className = "CovidWeightedMean";
  readonly divideBy: "cells" | "mask";
  constructor(config: { name: string; divideBy: "cells" | "mask" }) {
    super({ name: config.name });
    this.divideBy = config.divideBy;
  }
  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = (inputShape as tf.Shape[])[0];
    return [s[0], s[3]];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const [f, m] = inputs as tf.Tensor4D[];
      const [n, h, w, c] = f.shape;
      const sum = tf.reshape(tf.matMul(tf.reshape(m, [n, h * w, 1]), tf.reshape(f, [n, h * w, c]), true, false), [n, c]);
      return this.divideBy === "cells" ? tf.div(sum, h * w) : tf.div(sum, tf.maximum(tf.sum(m, [1, 2]), 1e-3));
    });
  }
  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), divideBy: this.divideBy };
  }
}
tf.serialization.registerClass(WeightedMean);

export interface MultiTaskConfig {
  aspp?: AsppConfig;
  /** Dropout before the classification Dense (default 0: none). */
  dropout?: number;
  /** Seed for the new layers' initialisers (default: none). */
  seed?: number;
}

/** Output names of the multi-task model, in output order. */
export const LESION_OUTPUT = "lesion";
export const CLASS_OUTPUT = "class";

export interface MultiTaskModel {
  /** inputs: the backbone's input; outputs: [lesion, class] (see the file comment). */
  model: tf.LayersModel;
  /** The backbone it was built on (shares its weights; load ImageNet weights into either). */
  backbone: BuiltModel;
  /** ASPP dilation rates actually used. */
  rates: number[];
}

export interface DiagnosisHeadConfig {
  /** ASPP on the feature map before both branches (Fig. 4B); null: the branches read the map itself. */
  aspp: AsppConfig | null;
  /** A lesion branch (Fig. 4B/4C); false: the classification branch alone. */
  lesion: boolean;
  /** Size [H, W] the lesion output is resized to (the model input's, or the targets' size). */
  lesionSize: [number, number];
  /** A lung map [n,h,w,1] at the feature resolution: the classifier also gets the lung-masked mean of the features. */
  lungMap?: tf.SymbolicTensor;
  dropout?: number;
  seed?: number;
}

/**
 * The heads of every Study II model on a feature map f [n,h,w,C]: optional ASPP, the lesion branch
 * (1×1 conv to one logit per cell → sigmoid at the feature resolution for the classifier, and
 * resized to lesionSize → sigmoid as the `lesion` output) and the classification branch on
 * [GAP(f), GAP(f · lesion prob), mean lesion prob (with a lesion branch), lung-masked mean of f
 * (with a lung map)] → Dense softmax `class`.
 */
export function diagnosisHeads(map: tf.SymbolicTensor, cfg: DiagnosisHeadConfig): { lesion: tf.SymbolicTensor | null; cls: tf.SymbolicTensor; rates: number[] } {
  const seed = cfg.seed;
  let rates: number[] = [];
  let f = map;
  if (cfg.aspp) {
    const asppCfg: AsppConfig = { seed, ...cfg.aspp };
    f = aspp(map, asppCfg);
    rates = asppRates(asppCfg.baseRates ?? [6, 12, 18], asppCfg.outputStride ?? 32);
  }
  const init = new Initialisers(seed === undefined ? undefined : seed + 7919);
  const parts: tf.SymbolicTensor[] = [tf.layers.globalAveragePooling2d({ name: "cls_gap" }).apply(f) as tf.SymbolicTensor];
  let lesion: tf.SymbolicTensor | null = null;
  if (cfg.lesion) {
    // The lesion logit may also read the lung map (lesions lie inside the lungs).
    const segIn = cfg.lungMap ? (tf.layers.concatenate({ name: "lesion_input", axis: -1 }).apply([f, cfg.lungMap]) as tf.SymbolicTensor) : f;
    const logits = tf.layers.conv2d({ name: "lesion_logits", filters: 1, kernelSize: 1, useBias: true, kernelInitializer: init.kernel() }).apply(segIn) as tf.SymbolicTensor;
    const probSmall = tf.layers.activation({ name: "lesion_prob_map", activation: "sigmoid" }).apply(logits) as tf.SymbolicTensor;
    const logitsUp = new ResizeTo(cfg.lesionSize, { name: "lesion_upsample" }).apply(logits) as tf.SymbolicTensor;
    lesion = tf.layers.activation({ name: LESION_OUTPUT, activation: "sigmoid" }).apply(logitsUp) as tf.SymbolicTensor;
    parts.push(new WeightedMean({ name: "cls_lesion_gap", divideBy: "cells" }).apply([f, probSmall]) as tf.SymbolicTensor);
    parts.push(tf.layers.globalAveragePooling2d({ name: "cls_lesion_burden" }).apply(probSmall) as tf.SymbolicTensor);
  }
  if (cfg.lungMap) parts.push(new WeightedMean({ name: "cls_lung_mean", divideBy: "mask" }).apply([f, cfg.lungMap]) as tf.SymbolicTensor);
  let z = parts.length > 1 ? (tf.layers.concatenate({ name: "cls_concat", axis: -1 }).apply(parts) as tf.SymbolicTensor) : parts[0];
  if (cfg.dropout && cfg.dropout > 0) z = tf.layers.dropout({ name: "cls_dropout", rate: cfg.dropout }).apply(z) as tf.SymbolicTensor;
  const cls = tf.layers
    .dense({ name: CLASS_OUTPUT, units: 2, activation: "softmax", kernelInitializer: seed === undefined ? "glorotUniform" : tf.initializers.glorotUniform({ seed: seed + 100003 }) })
    .apply(z) as tf.SymbolicTensor;
  return { lesion, cls, rates };
}

/**
 * Multi-task model on a backbone built with `buildModel(name, { includeHead: false, … })` (any
 * input size / channel count): featureExtractor(backbone, "map") → ASPP → lesion branch
 * (1×1 conv → logits at the feature resolution → bilinear to the input size → sigmoid) and
 * classification branch (see the file comment for how the predicted mask enters it).
 */
export function buildMultiTaskModel(backbone: BuiltModel, cfg: MultiTaskConfig = {}): MultiTaskModel {
  // The backbone's last feature map (node 0: its call inside backbone.model), as featureExtractor(…, "map").
  const map = backbone.model.getLayer(backbone.featureLayer).getOutputAt(0) as tf.SymbolicTensor;
  const input = backbone.model.inputs[0];
  const [, H, W] = input.shape as number[];
  const h = diagnosisHeads(map, { aspp: cfg.aspp ?? {}, lesion: true, lesionSize: [H, W], dropout: cfg.dropout, seed: cfg.seed });
  const model = tf.model({ inputs: input, outputs: [h.lesion!, h.cls], name: "covid_multitask" });
  return { model, backbone, rates: h.rates };
}

export interface FeatureHeadConfig {
  /** Shape [h, w, C] of the frozen feature map. */
  mapShape: [number, number, number];
  /** A second input [h, w, 1]: the lung mask at the feature resolution (Fig. 4A under frozen features). */
  lung: boolean;
  /** A lesion branch with output [lesionSize, lesionSize, 1] (Fig. 4B). */
  lesion: boolean;
  lesionSize: number;
  seed?: number;
}

/**
 * The Study II heads trained on a FROZEN backbone's cached feature maps (the `quick` profile): no
 * ASPP (on a 7×7 map at 224² its 3×3 atrous branches would read mostly padding, and it would be
 * most of the cost), the lung mask as a second input at the map's resolution, outputs as the full
 * model's: `class`, plus `lesion` first when there is a lesion branch.
 */
export function buildFeatureHead(cfg: FeatureHeadConfig): tf.LayersModel {
  const map = tf.input({ shape: cfg.mapShape, name: "feature_map" });
  const lung = cfg.lung ? tf.input({ shape: [cfg.mapShape[0], cfg.mapShape[1], 1], name: "lung_map" }) : undefined;
  const h = diagnosisHeads(map, { aspp: null, lesion: cfg.lesion, lesionSize: [cfg.lesionSize, cfg.lesionSize], lungMap: lung, seed: cfg.seed });
  return tf.model({ inputs: lung ? [map, lung] : map, outputs: h.lesion ? [h.lesion, h.cls] : h.cls, name: "covid_feature_head" });
}

// ---------------------------------------------------------------------------------------------
// Loss

export interface MultiTaskLossConfig {
  /** Weight of the classification cross-entropy (paper: 1). */
  classWeight?: number;
  /** Weight of the lesion segmentation loss (paper: 1). */
  lesionWeight?: number;
  /** Lesion loss, see SegmentationLossConfig.kind (default "dice+bce"). */
  lesionLoss?: SegmentationLossConfig["kind"];
  /** Soft Dice smoothing, see SegmentationLossConfig.smooth (default 1). */
  diceSmooth?: number;
}

export interface MultiTaskTargets {
  /** [n, 2] one-hot [NonCOVID, COVID]. */
  label: tf.Tensor;
  /** [n, H, W, 1] lesion mask in {0,1}; any value for images without one (see `hasMask`). */
  lesion: tf.Tensor;
  /**
   * [n] 1 where the lesion mask is a true label (lesion-annotated positives, and negatives whose
   * all-zero mask is true), 0 where none exists (COVID-CT positives): their lesion loss is masked out.
   */
  hasMask: tf.Tensor;
}

export interface MultiTaskLossParts {
  total: tf.Scalar;
  classification: tf.Scalar;
  /** Mean lesion loss over the images with a mask; 0 when the batch has none. */
  lesion: tf.Scalar;
}

/**
 * loss = classWeight · CE(class) + lesionWeight · lesion loss (paper: weights 1 and 1). The lesion
 * loss is computed per image and averaged over the images with `hasMask` = 1 only, so a batch
 * mixing COVID-CT positives (no mask) with masked images gives those images no segmentation
 * gradient; a batch without any mask contributes 0. Caller disposes the returned scalars (or runs
 * inside tf.tidy / variableGrads).
 */
export function multiTaskLoss(
  pred: { lesion: tf.Tensor; class: tf.Tensor },
  target: MultiTaskTargets,
  cfg: MultiTaskLossConfig = {},
): MultiTaskLossParts {
  const wc = cfg.classWeight ?? 1;
  const ws = cfg.lesionWeight ?? 1;
  const kind = cfg.lesionLoss ?? "dice+bce";
  const smooth = cfg.diceSmooth ?? 1;
  const n = pred.class.shape[0];
  if (target.label.shape[0] !== n || target.lesion.shape[0] !== n || target.hasMask.shape[0] !== n) {
    throw new Error(`multiTaskLoss: batch sizes differ (prediction ${n}, label ${target.label.shape[0]}, lesion ${target.lesion.shape[0]}, hasMask ${target.hasMask.shape[0]})`);
  }
  return tf.tidy(() => {
    const p = tf.clipByValue(pred.class, 1e-7, 1);
    const classification = tf.neg(tf.mean(tf.sum(tf.mul(target.label, tf.log(p)), -1))) as tf.Scalar;
    const seg = segmentationLossPerImage(pred.lesion, target.lesion, { kind, smooth });
    const m = tf.cast(target.hasMask, "float32");
    const lesion = tf.div(tf.sum(tf.mul(seg, m)), tf.maximum(tf.sum(m), 1)) as tf.Scalar;
    const total = tf.add(tf.mul(classification, wc), tf.mul(lesion, ws)) as tf.Scalar;
    return { total, classification, lesion };
  });
}

/**
 * Targets packed into one [n, 3 + H·W] tensor — columns 0–1 the one-hot label, 2 hasMask, then the
 * lesion mask row-major — so that a multi-task batch goes through code that slices (xs, ys) by
 * example, such as trainStepAccumulated's micro-batches. Caller disposes.
 */
export function packMultiTaskTargets(t: MultiTaskTargets): tf.Tensor2D {
  return tf.tidy(() => {
    const n = t.label.shape[0];
    return tf.concat([tf.cast(t.label, "float32"), tf.reshape(tf.cast(t.hasMask, "float32"), [n, 1]), tf.reshape(tf.cast(t.lesion, "float32"), [n, -1])], 1) as tf.Tensor2D;
  });
}

/** Inverse of packMultiTaskTargets for masks of size H×W. */
export function unpackMultiTaskTargets(ys: tf.Tensor, hw: [number, number]): MultiTaskTargets {
  const n = ys.shape[0];
  const [h, w] = hw;
  if (ys.shape[1] !== 3 + h * w) throw new Error(`unpackMultiTaskTargets: ${ys.shape[1]} columns, expected 3 + ${h}·${w} = ${3 + h * w}`);
  return tf.tidy(() => ({
    label: tf.slice(ys, [0, 0], [n, 2]),
    hasMask: tf.reshape(tf.slice(ys, [0, 2], [n, 1]), [n]),
    lesion: tf.reshape(tf.slice(ys, [0, 3], [n, h * w]), [n, h, w, 1]),
  }));
}

/**
 * A LossFn (lib/training/accumulate.ts) for the multi-task model: ys packed by packMultiTaskTargets,
 * forward pass in training mode, total loss of multiTaskLoss.
 */
export function multiTaskLossFn(mt: MultiTaskModel, cfg: MultiTaskLossConfig = {}): (x: tf.Tensor, ys: tf.Tensor) => tf.Scalar {
  const [, H, W] = mt.model.inputs[0].shape as number[];
  return (x, ys) => {
    const [lesion, cls] = mt.model.apply(x, { training: true }) as tf.Tensor[];
    const parts = multiTaskLoss({ lesion, class: cls }, unpackMultiTaskTargets(ys, [H, W]), cfg);
    return parts.total;
  };
}
