/**
 * DenseNet (Huang et al., 2017) with the layer names of `keras.applications.DenseNet121/169`, so that
 * the Keras ImageNet weights load by name (lib/models/weights.ts).
 *
 * Topology as Keras: ZeroPadding(3) → conv1/conv 7×7/2 → conv1/bn → conv1/relu → ZeroPadding(1) →
 * pool1 max 3×3/2, then dense blocks `conv{2..5}_block{i}` (BN-ReLU-1×1 conv 4·k-BN-ReLU-3×3 conv k,
 * concatenated) with transitions `pool{2..4}` (BN-ReLU-1×1 conv with compression 0.5 - avg 2×2/2),
 * and a final `bn` + `relu`. BN epsilon is 1.001e-5 as in Keras.
 *
 * The final `relu` is included by default. The keras-2.1.4 topology shipped with the shared weights
 * omits it: a Keras bug (keras-team/keras-applications#31, fixed Aug 2018, which raised ImageNet
 * top-5 accuracy with the same weights); the original DenseNet, torchvision and later Keras apply it.
 * `finalRelu: false` reproduces the 2.1.4 graph exactly.
 */
import * as tf from "@tensorflow/tfjs";
import { BuiltModel, Initialisers, ModelConfig, addHead, bn, conv, inputHW, relu, zeroPad, POOL_LAYER } from "./common";

export interface DenseNetArch {
  /** Layers per dense block. DenseNet-121: [6,12,24,16]; 169: [6,12,32,32]. */
  blocks: number[];
  /** Growth rate k (channels added per layer). Keras: 32. */
  growthRate: number;
  /** Filters of the stem convolution. Keras: 64. */
  stemFilters: number;
  /** Transition compression. Keras: 0.5. */
  reduction: number;
}

export const DENSENET_ARCHS = {
  densenet121: { blocks: [6, 12, 24, 16], growthRate: 32, stemFilters: 64, reduction: 0.5 },
  densenet169: { blocks: [6, 12, 32, 32], growthRate: 32, stemFilters: 64, reduction: 0.5 },
  // For tests: two blocks of one layer, growth 4 (a few thousand parameters).
  "tiny-densenet": { blocks: [1, 1], growthRate: 4, stemFilters: 8, reduction: 0.5 },
} satisfies Record<string, DenseNetArch>;

export interface DenseNetConfig extends ModelConfig {
  /** Apply ReLU after the final BN (default true; see the file comment). */
  finalRelu?: boolean;
}

const EPS = 1.001e-5;

export function buildDenseNet(arch: DenseNetArch, cfg: DenseNetConfig = {}): BuiltModel {
  const [h, w] = inputHW(cfg);
  const mom = cfg.bnMomentum ?? 0.99;
  const init = new Initialisers(cfg.seed);
  const input = tf.input({ shape: [h, w, cfg.channels ?? 3], name: "input_1" });

  let x = zeroPad(input, "conv1_pad", 3);
  x = conv(x, "conv1/conv", init, { filters: arch.stemFilters, kernel: 7, strides: 2 });
  x = bn(x, "conv1/bn", EPS, mom);
  x = relu(x, "conv1/relu");
  x = zeroPad(x, "pool1_pad", 1);
  x = tf.layers.maxPooling2d({ name: "pool1", poolSize: 3, strides: 2 }).apply(x) as tf.SymbolicTensor;

  let channels = arch.stemFilters;
  arch.blocks.forEach((n, b) => {
    const stage = b + 2;
    for (let i = 1; i <= n; i++) {
      const p = `conv${stage}_block${i}`;
      let y = bn(x, `${p}_0_bn`, EPS, mom);
      y = relu(y, `${p}_0_relu`);
      y = conv(y, `${p}_1_conv`, init, { filters: 4 * arch.growthRate, kernel: 1 });
      y = bn(y, `${p}_1_bn`, EPS, mom);
      y = relu(y, `${p}_1_relu`);
      y = conv(y, `${p}_2_conv`, init, { filters: arch.growthRate, kernel: 3, padding: "same" });
      x = tf.layers.concatenate({ axis: -1, name: `${p}_concat` }).apply([x, y]) as tf.SymbolicTensor;
      channels += arch.growthRate;
    }
    if (b < arch.blocks.length - 1) {
      const p = `pool${stage}`;
      x = bn(x, `${p}_bn`, EPS, mom);
      x = relu(x, `${p}_relu`);
      channels = Math.floor(channels * arch.reduction);
      x = conv(x, `${p}_conv`, init, { filters: channels, kernel: 1 });
      x = tf.layers.averagePooling2d({ name: `${p}_pool`, poolSize: 2, strides: 2 }).apply(x) as tf.SymbolicTensor;
    }
  });

  x = bn(x, "bn", EPS, mom);
  let featureLayer = "bn";
  if (cfg.finalRelu !== false) {
    x = relu(x, "relu");
    featureLayer = "relu";
  }
  const out = addHead(x, cfg);
  return { model: tf.model({ inputs: input, outputs: out }), featureLayer, poolLayer: POOL_LAYER };
}
