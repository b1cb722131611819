/**
 * Residual U-Net for lung segmentation (Study II; Zhang, Liu & Wang 2018, "Road extraction by deep
 * residual U-Net", IEEE GRSL — "ResUnet"), as the paper uses it to segment the lungs.
 *
 * Zhang et al.'s network, Fig. 2 / Table I: residual units with full pre-activation
 * (BN → ReLU → 3×3 conv → BN → ReLU → 3×3 conv, plus a shortcut), three encoder levels, a bridge and
 * three decoder levels, then a 1×1 conv and a sigmoid:
 *   encoder 1: conv 3×3 (w) → BN → ReLU → conv 3×3 (w), shortcut 1×1 conv  (their first unit has no
 *              pre-activation on the raw input)
 *   encoder 2, 3: residual unit (2w, 4w), first conv stride 2 (downsampling by stride, not pooling)
 *   bridge:       residual unit (8w), stride 2
 *   decoder 3…1:  upsample ×2 → concat with the encoder level of that size → residual unit (4w, 2w, w)
 * with w = 64 (paper width: 64/128/256/512). Shortcuts are a 1×1 conv (with the unit's stride) + BN
 * wherever the shape changes (every unit here), as common ResUnet implementations do; the paper does
 * not say. Measured at 224², 3 channels: 8.22 M trainable parameters, of which 0.43 M are these
 * projections — without them 7.79 M, the paper's "7.8 M" (Table II), so the paper's count likely
 * leaves the projections out. Input sides must be multiples of 8.
 *
 * `width` scales every level (w = width); tests use 4–8. Output: [n, H, W, 1] lung probability.
 */
import * as tf from "@tensorflow/tfjs";
import { Initialisers, inputHW } from "./common";

export interface ResUNetConfig {
  /** Input height and width (a number means square); multiples of 8. Default 224 (Zhang et al.'s patch size). */
  inputSize?: number | [number, number];
  /** Input channels: 1 = grey CT (default), 3 = RGB-replicated. */
  channels?: number;
  /** Filters of the first level; levels use w, 2w, 4w and the bridge 8w. Default 64 (the paper's). */
  width?: number;
  /** BatchNormalization momentum (Keras convention). Default 0.99. */
  bnMomentum?: number;
  /** Seed for the kernel initialisers. */
  seed?: number;
}

/** Name of the output layer (the sigmoid). */
export const UNET_OUTPUT = "unet_mask";

function conv(x: tf.SymbolicTensor, name: string, init: Initialisers, filters: number, kernel: number, strides = 1): tf.SymbolicTensor {
  return tf.layers.conv2d({ name, filters, kernelSize: kernel, strides, padding: "same", useBias: true, kernelInitializer: init.kernel() }).apply(x) as tf.SymbolicTensor;
}
function bnRelu(x: tf.SymbolicTensor, name: string, momentum: number): tf.SymbolicTensor {
  const y = tf.layers.batchNormalization({ name: `${name}_bn`, axis: -1, momentum }).apply(x) as tf.SymbolicTensor;
  return tf.layers.activation({ name: `${name}_relu`, activation: "relu" }).apply(y) as tf.SymbolicTensor;
}

/** Pre-activation residual unit: BN-ReLU-conv(stride) → BN-ReLU-conv, + 1×1 conv/BN shortcut when the shape changes. */
function residualUnit(x: tf.SymbolicTensor, name: string, init: Initialisers, filters: number, strides: number, momentum: number, preActivate = true): tf.SymbolicTensor {
  let y = preActivate ? bnRelu(x, `${name}_pre1`, momentum) : x;
  y = conv(y, `${name}_conv1`, init, filters, 3, strides);
  y = bnRelu(y, `${name}_pre2`, momentum);
  y = conv(y, `${name}_conv2`, init, filters, 3);
  let s = x;
  if (strides !== 1 || (x.shape[3] as number) !== filters) {
    s = conv(x, `${name}_short_conv`, init, filters, 1, strides);
    s = tf.layers.batchNormalization({ name: `${name}_short_bn`, axis: -1, momentum }).apply(s) as tf.SymbolicTensor;
  }
  return tf.layers.add({ name: `${name}_add` }).apply([y, s]) as tf.SymbolicTensor;
}

/** Build the residual U-Net; the model maps [n, H, W, channels] to [n, H, W, 1] probabilities. */
export function buildResUNet(cfg: ResUNetConfig = {}): tf.LayersModel {
  const [h, w] = inputHW({ inputSize: cfg.inputSize ?? 224 });
  if (h % 8 !== 0 || w % 8 !== 0) throw new Error(`buildResUNet: input ${h}×${w} must be a multiple of 8 on both sides (three stride-2 levels)`);
  const width = cfg.width ?? 64;
  if (!Number.isInteger(width) || width < 1) throw new Error(`buildResUNet: width must be a positive integer, got ${width}`);
  const m = cfg.bnMomentum ?? 0.99;
  const init = new Initialisers(cfg.seed);
  const input = tf.input({ shape: [h, w, cfg.channels ?? 1], name: "unet_input" });

  const e1 = residualUnit(input, "unet_enc1", init, width, 1, m, false);
  const e2 = residualUnit(e1, "unet_enc2", init, 2 * width, 2, m);
  const e3 = residualUnit(e2, "unet_enc3", init, 4 * width, 2, m);
  let x = residualUnit(e3, "unet_bridge", init, 8 * width, 2, m);
  const skips: [tf.SymbolicTensor, number, string][] = [[e3, 4 * width, "unet_dec3"], [e2, 2 * width, "unet_dec2"], [e1, width, "unet_dec1"]];
  for (const [skip, filters, name] of skips) {
    x = tf.layers.upSampling2d({ name: `${name}_up`, size: [2, 2] }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.concatenate({ name: `${name}_concat`, axis: -1 }).apply([x, skip]) as tf.SymbolicTensor;
    x = residualUnit(x, name, init, filters, 1, m);
  }
  const out = tf.layers.conv2d({ name: UNET_OUTPUT, filters: 1, kernelSize: 1, activation: "sigmoid", kernelInitializer: init.kernel() }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out, name: "resunet" });
}
