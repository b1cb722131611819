/**
 * Fused batch normalisation for training on the wasm backend.
 *
 * tfjs-layers' BatchNormalization in training mode runs tf.moments and tf.batchNorm, whose
 * composed gradients take ~15 full passes over the activation (sub, square, tile, mul, sum, …)
 * and keep several activation-sized intermediates alive for the backward pass. Profiling a
 * DenseNet-169 step showed these elementwise ops costing more than all convolutions together,
 * and ~0.36 GiB of tensors per example at 112².
 *
 * The replacement is one custom-gradient op per layer: forward = moments (2 reductions) +
 * y = x·k + shift (2 passes); backward uses the closed form
 *   dβ = Σdy,  dγ = Σdy·x̂ = rstd·(Σdy·x − μ·Σdy),
 *   dx = k·dy + a·x + c,  k = γ·rstd,  a = −k·rstd·dγ/M,  c = −k·Σdy/M − a·μ
 * (2 reductions + 4 elementwise passes) and saves only x and per-channel vectors. The kernels it
 * runs are ordinary tfjs ops, so it is correct on any backend; it is installed only for 'wasm'.
 * Moving statistics are updated exactly as tfjs-layers does (biased batch variance).
 */
import * as tf from "@tensorflow/tfjs";
import { simdKernelsAvailable } from "./simd";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let installed = false;
let originalCall: ((inputs: Any, kwargs: Any) => Any) | undefined;

/** When false, the patched layer defers to the original implementation (A/B comparisons). */
export const fusedBatchNormOptions = { enabled: true, backends: ["wasm"] as string[], simd: true };

const run = (name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> = {}) => tf.engine().runKernel(name, inputs as never, attrs as never);

/**
 * y = γ·(x−μ)/√(σ²+ε) + β over `axes` with batch statistics; returns y and the (kept) batch mean
 * and biased variance, which the caller must dispose.
 */
export function fusedBatchNormTraining(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number, axes: number[]): { y: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor } {
  let mean: tf.Tensor | undefined;
  let variance: tf.Tensor | undefined;
  const m = axes.reduce((p, a) => p * x.shape[a], 1);
  // SIMD kernels (lib/wasm/simd) need channels on the last axis, reduced over all others.
  const simd = fusedBatchNormOptions.simd && x.dtype === "float32" && axes.length === x.rank - 1 && axes.every((a, i) => a === i) && simdKernelsAvailable();
  const op = tf.customGrad((...args: Any[]) => {
    const [xx, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, (ts: tf.Tensor[]) => void];
    let mu: tf.Tensor, va: tf.Tensor;
    if (simd) [mu, va] = run("CovidBnStats", { x: xx }) as tf.Tensor[];
    else ({ mean: mu, variance: va } = tf.moments(xx, axes));
    const rstd = tf.rsqrt(tf.add(va, epsilon));
    const k = tf.mul(g, rstd);
    const shift = tf.sub(b, tf.mul(mu, k));
    const y = simd ? (run("CovidChannelAffine", { x: xx, k, b: shift }) as tf.Tensor) : tf.add(tf.mul(xx, k), shift);
    mean = tf.keep(mu);
    variance = tf.keep(va);
    save([xx, mu, rstd, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, mu2, rs, gm] = saved;
        let sumDy: tf.Tensor, sumDyXc: tf.Tensor;
        if (simd) [sumDy, sumDyXc] = run("CovidBnBwdSums", { dy, x: xs, mean: mu2 }) as tf.Tensor[];
        else {
          sumDy = tf.sum(dy, axes);
          sumDyXc = tf.sub(tf.sum(tf.mul(dy, xs), axes), tf.mul(mu2, sumDy));
        }
        const dGamma = tf.mul(rs, sumDyXc);
        const kk = tf.mul(gm, rs);
        const a = tf.mul(tf.mul(kk, rs), tf.mul(dGamma, -1 / m));
        const c = tf.sub(tf.mul(kk, tf.mul(sumDy, -1 / m)), tf.mul(a, mu2));
        const dx = simd ? (run("CovidChannelAffine2", { dy, x: xs, k: kk, a, b: c }) as tf.Tensor) : tf.add(tf.add(tf.mul(dy, kk), tf.mul(xs, a)), c);
        return [dx, tf.reshape(dGamma, gm.shape), tf.reshape(sumDy, gm.shape)];
      },
    };
  });
  const y = op(x, gamma, beta) as tf.Tensor;
  return { y, mean: mean!, variance: variance! };
}

function batchNormalizationClass(): Any {
  const map = (tf.serialization.SerializationMap.getMap() as Any).classNameMap;
  const entry = map?.BatchNormalization;
  return entry ? entry[0] : undefined;
}

/** Patch tfjs-layers' BatchNormalization so that training-mode calls use the fused op (idempotent). */
export function installFusedBatchNorm(): boolean {
  if (installed) return true;
  const cls = batchNormalizationClass();
  if (!cls) return false;
  originalCall = cls.prototype.call;
  const orig = originalCall!;
  cls.prototype.call = function (this: Any, inputs: Any, kwargs: Any) {
    const training = kwargs?.training ?? false;
    if (!training || !fusedBatchNormOptions.enabled || !fusedBatchNormOptions.backends.includes(tf.getBackend()) || !this.scale || !this.center) {
      return orig.call(this, inputs, kwargs);
    }
    return tf.tidy(() => {
      const input: tf.Tensor = Array.isArray(inputs) ? inputs[0] : inputs;
      const ndim = input.shape.length;
      const axis = this.axis >= 0 ? this.axis : this.axis + ndim;
      if (axis !== ndim - 1) return orig.call(this, inputs, kwargs);
      const axes = Array.from({ length: ndim - 1 }, (_, i) => i);
      const { y, mean, variance } = fusedBatchNormTraining(input, this.gamma.read(), this.beta.read(), this.epsilon, axes);
      const update = (v: Any, value: tf.Tensor) =>
        tf.tidy(() => {
          const orig0 = v.read();
          v.write(tf.sub(orig0, tf.mul(tf.sub(orig0, value), 1 - this.momentum)));
        });
      update(this.movingMean, mean);
      update(this.movingVariance, variance);
      tf.dispose([mean, variance]);
      return y;
    });
  };
  installed = true;
  return true;
}

export function uninstallFusedBatchNorm(): void {
  if (!installed) return;
  const cls = batchNormalizationClass();
  if (cls && originalCall) cls.prototype.call = originalCall;
  installed = false;
}
