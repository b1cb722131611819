/**
 * Resume is exact across processes: the Adam state restored from a checkpoint equals the state of
 * the optimizer that wrote it, bit for bit (tfjs' setWeights recomputes beta^t with pow(), which
 * differs in the last bit from the t float32 products of training; over 40 epochs that drift
 * changed a smoke run's predictions — found by the Slurm requeue test).
 */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as tf from "@tensorflow/tfjs";
import { loadOptimizer, saveOptimizer } from "../lib/training/checkpoint";

describe("checkpoint: Adam state survives save/load bit for bit", () => {
  it("beta powers after 300 steps equal the trained optimizer's", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "covid-ct-adam-"));
    try {
      const w = tf.variable(tf.tensor1d([0.3, -1.2, 2.5]));
      const opt = tf.train.adam(1e-3);
      for (let i = 0; i < 300; i++) opt.minimize(() => tf.sum(tf.square(tf.sub(w, tf.tensor1d([1, 2, 3])))) as tf.Scalar);
      await saveOptimizer(opt, dir);
      const fresh = tf.train.adam(1e-3);
      await loadOptimizer(fresh, dir);
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const a = opt as any, b = fresh as any;
      assert.equal(b.iterations, 300);
      assert.equal(b.accBeta1.dataSync()[0], a.accBeta1.dataSync()[0], "beta1^t");
      assert.equal(b.accBeta2.dataSync()[0], a.accBeta2.dataSync()[0], "beta2^t");
      // And the next update is the same.
      const w2 = tf.variable(w.clone());
      const step = (o: tf.Optimizer, v: tf.Variable) => o.minimize(() => tf.sum(tf.square(tf.sub(v, tf.tensor1d([1, 2, 3])))) as tf.Scalar, false, [v]);
      step(opt, w);
      step(fresh, w2);
      assert.deepEqual(Array.from(w2.dataSync()), Array.from(w.dataSync()));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
