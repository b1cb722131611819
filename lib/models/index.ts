/**
 * Model registry: one entry point for every architecture the study uses, plus accessors for the
 * parts later stages need (frozen-feature extraction, Grad-CAM, freezing the backbone).
 */
import * as tf from "@tensorflow/tfjs";
import { BuiltModel, HEAD_LAYERS, ModelConfig, isHeadLayer, ModelName, MODEL_NAMES } from "./common";
import { DENSENET_ARCHS, DenseNetConfig, buildDenseNet } from "./densenet";
import { RESNET_ARCHS, buildResNet } from "./resnet";

export * from "./common";
export { DENSENET_ARCHS, DenseNetArch, DenseNetConfig, buildDenseNet } from "./densenet";
export { RESNET_ARCHS, ResNetArch, ResNetConfig, buildResNet } from "./resnet";
export * from "./weights";


/**
 * Parameter counts of the backbones without top at 3 input channels, as Keras `count_params()`
 * reports them (BN moving statistics included; tfjs `countParams()` counts the same way).
 * Keras values for densenet121/169 and resnet50; resnet18 and the tiny models are ours.
 */
export const BACKBONE_PARAMS: Record<ModelName, number> = {
  densenet121: 7_037_504,
  densenet169: 12_642_880,
  resnet50: 23_587_712,
  // torchvision's 11,176,512 trainable parameters + 9,600 BN moving statistics.
  resnet18: 11_186_112,
  "tiny-densenet": 2_928,
  "tiny-resnet": 79_032,
};

/** Options of buildModel: every ModelConfig field; `finalRelu` applies to DenseNets only. */
export type BuildConfig = ModelConfig & Pick<DenseNetConfig, "finalRelu">;

/** Build a model by name. The result's `model` ends in the softmax head unless `includeHead: false`. */
export function buildModel(name: ModelName, cfg: BuildConfig = {}): BuiltModel {
  switch (name) {
    case "densenet121":
    case "densenet169":
    case "tiny-densenet":
      return buildDenseNet(DENSENET_ARCHS[name], cfg);
    case "resnet18":
    case "resnet50":
    case "tiny-resnet":
      return buildResNet(RESNET_ARCHS[name], cfg);
    default: {
      const never: never = name;
      throw new Error(`unknown model '${String(never)}'; expected one of ${MODEL_NAMES.join(", ")}`);
    }
  }
}

/**
 * A model sharing the weights of `built.model` that outputs the backbone features: `"pooled"` (the
 * `avg_pool` vector, for caching frozen features) or `"map"` (the last conv feature map, for Grad-CAM).
 */
export function featureExtractor(built: BuiltModel, which: "pooled" | "map" = "pooled"): tf.LayersModel {
  const layer = built.model.getLayer(which === "pooled" ? built.poolLayer : built.featureLayer);
  // Node 0 is the layer's call inside built.model (headModel adds further nodes to head layers).
  return tf.model({ inputs: built.model.inputs, outputs: layer.getOutputAt(0) as tf.SymbolicTensor });
}

/** One model with several feature outputs of `built` (e.g. ["pooled", "map"]): one forward pass for all. */
export function featureExtractors(built: BuiltModel, which: readonly ("pooled" | "map")[]): tf.LayersModel {
  const outputs = which.map((w) => built.model.getLayer(w === "pooled" ? built.poolLayer : built.featureLayer).getOutputAt(0) as tf.SymbolicTensor);
  return tf.model({ inputs: built.model.inputs, outputs });
}

/**
 * The layers after the backbone as a model of their own, sharing weights with `built.model`:
 * from the feature map (`"map"`: avg_pool → dropout → covid_head; Grad-CAM takes gradients of its
 * output with respect to its input) or from the pooled vector (`"pooled"`: train the head on cached
 * frozen features; the full model then carries the trained head).
 */
export function headModel(built: BuiltModel, from: "map" | "pooled" = "pooled"): tf.LayersModel {
  const start = built.model.getLayer(from === "map" ? built.featureLayer : built.poolLayer);
  const shape = (start.getOutputAt(0) as tf.SymbolicTensor).shape.slice(1) as number[];
  const input = tf.input({ shape, name: `covid_head_input_${from}` });
  const names = [...(from === "map" ? [built.poolLayer] : []), ...HEAD_LAYERS];
  let x: tf.SymbolicTensor = input;
  for (const n of names) {
    const layer = built.model.layers.find((l) => l.name === n);
    if (layer) x = layer.apply(x) as tf.SymbolicTensor;
  }
  return tf.model({ inputs: input, outputs: x });
}

/**
 * Freeze (or unfreeze) every backbone layer, leaving the head trainable. Call before `compile`.
 *
 * Caveat (tfjs differs from tf.keras in TF 2): a frozen BatchNormalization layer in tfjs still normalises with
 * batch statistics and updates its moving averages whenever it runs with `training: true` (as in
 * `model.fit`). For a truly frozen backbone, extract features with `featureExtractor` in inference
 * mode and train the head on them, or run the backbone with `training: false` in a custom loop.
 */
export function setBackboneTrainable(model: tf.LayersModel, trainable: boolean): void {
  for (const layer of model.layers) {
    if (!isHeadLayer(layer.name)) layer.trainable = trainable;
  }
}
export * from "./aspp";
export * from "./losses";
export * from "./unet";
export * from "./fold";
