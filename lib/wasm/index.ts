/**
 * wasm backend setup for Node (see issue "Fast CNN training on CPU-only machines").
 * Placeholder until the tuned training kernels land: loads the stock backend single-threaded.
 */
import * as tf from "@tensorflow/tfjs";

export interface WasmSetup {
  threads: number;
  simd: boolean;
  /** Names of the replacement training kernels registered for 'wasm'. */
  kernels: string[];
}

/** Register the wasm backend (idempotent) and report how it is configured. */
export async function prepareWasm(): Promise<WasmSetup> {
  require("@tensorflow/tfjs-backend-wasm");
  const simd = Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"));
  return { threads: 1, simd, kernels: [] };
}
