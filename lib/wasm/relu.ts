/**
 * ReLU gradient in one SIMD pass on wasm. tfjs registers the Relu gradient as
 * mul(dy, cast(step(x))) — three kernels and two activation-sized temporaries per ReLU. This
 * re-registers the gradient (gradients are global in tfjs) with the same composition on every
 * backend except wasm with the SIMD kernels, where it runs CovidReluGrad (x > 0 ? dy : 0).
 * Differs from the composition only for NaN inputs (gradient 0 instead of NaN).
 */
import * as tf from "@tensorflow/tfjs";
import { simdKernelsAvailable } from "./simd";

let installed = false;

export function installFusedReluGrad(): boolean {
  if (installed) return true;
  const orig = tf.getGradient("Relu");
  if (!orig) return false;
  tf.registerGradient({
    kernelName: "Relu",
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const d = dy as tf.Tensor;
      const [x] = saved;
      if (d.dtype === "float32" && x.dtype === "float32" && simdKernelsAvailable()) {
        return { x: () => tf.engine().runKernel("CovidReluGrad", { dy: d, x } as never) as tf.Tensor };
      }
      return orig.gradFunc(dy, saved, attrs);
    },
  });
  installed = true;
  return true;
}
