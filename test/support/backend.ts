/** Test helper: run a describe block on the backend initBackend() chooses (wasm here), restoring the previous one after. */
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../lib/backend";

export function useChosenBackend(): void {
  let previous = "";
  before(async () => {
    previous = tf.getBackend();
    await tf.setBackend((await initBackend()).tfBackend);
    await tf.ready();
  });
  after(async () => {
    if (previous) await tf.setBackend(previous);
  });
}
