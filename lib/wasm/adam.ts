/**
 * Adam in one fused SIMD pass per variable on wasm (kernel CovidAdam of ./simd).
 *
 * tfjs' AdamOptimizer.applyGradients runs ~10 tensor ops per variable (≈5,000 kernel calls and
 * ~10 passes over every parameter per DenseNet-169 step). The patched method keeps the optimizer's
 * state variables, names, serialisation and arithmetic (same formula, float32) and only replaces
 * the per-variable update by one kernel call; off wasm it defers to the original.
 */
import * as tf from "@tensorflow/tfjs";
import { simdKernelsAvailable } from "./simd";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let original: ((g: Any) => void) | undefined;

export const fusedAdamOptions = { enabled: true };

export function installFusedAdam(): boolean {
  if (original) return true;
  const proto = (tf.AdamOptimizer as Any).prototype;
  original = proto.applyGradients;
  const orig = original!;
  proto.applyGradients = function (this: Any, variableGradients: Any) {
    if (!fusedAdamOptions.enabled || !simdKernelsAvailable()) return orig.call(this, variableGradients);
    const varNames: string[] = Array.isArray(variableGradients) ? variableGradients.map((v: Any) => v.name) : Object.keys(variableGradients);
    tf.tidy(() => {
      const c1 = 1 - this.accBeta1.dataSync()[0];
      const c2 = 1 - this.accBeta2.dataSync()[0];
      const lr = typeof this.learningRate === "number" ? this.learningRate : Number(this.learningRate);
      varNames.forEach((name, i) => {
        const value: tf.Variable = (tf.engine() as Any).registeredVariables[name];
        if (this.accumulatedFirstMoment[i] == null) {
          this.accumulatedFirstMoment[i] = { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        if (this.accumulatedSecondMoment[i] == null) {
          this.accumulatedSecondMoment[i] = { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        const gradient: tf.Tensor | undefined = Array.isArray(variableGradients) ? variableGradients[i].tensor : variableGradients[name];
        if (gradient == null) return;
        const m: tf.Variable = this.accumulatedFirstMoment[i].variable;
        const v: tf.Variable = this.accumulatedSecondMoment[i].variable;
        if (value.dtype !== "float32" || gradient.dtype !== "float32") {
          throw new Error(`fused Adam: variable ${name} is ${value.dtype}; only float32 is supported`);
        }
        const [p2, m2, v2] = tf.engine().runKernel("CovidAdam", { p: value, m, v, g: gradient } as never, { beta1: this.beta1, beta2: this.beta2, lr, epsilon: this.epsilon, c1, c2 } as never) as tf.Tensor[];
        m.assign(m2);
        v.assign(v2);
        value.assign(p2);
      });
      this.accBeta1.assign(tf.mul(this.accBeta1, this.beta1));
      this.accBeta2.assign(tf.mul(this.accBeta2, this.beta2));
    });
    this.incrementIterations();
  };
  return true;
}

export function uninstallFusedAdam(): void {
  if (!original) return;
  (tf.AdamOptimizer as Any).prototype.applyGradients = original;
  original = undefined;
}
