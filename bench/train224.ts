/**
 * Acceptance check: DenseNet-169 (and ResNet-50) train at 224² on wasm with an effective batch of
 * 16 through micro-batch gradient accumulation, without stalling; and a step that cannot fit
 * fails with a clear message instead of exhausting the wasm heap.
 *
 * Usage: node dist/bench/train224.js [--models densenet169,resnet50] [--batch 16] [--steps 2] [--size 224]
 */
import * as tf from "@tensorflow/tfjs";
import * as os from "os";
import { describeWasm, prepareWasm, wasmHeapBytes } from "../lib/wasm";
import { MicroBatchTooLargeError, planMicroBatch, trainStepAccumulated } from "../lib/training/accumulate";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

async function main(): Promise<void> {
  const models = arg("models", "densenet169,resnet50").split(",");
  const batch = Number(arg("batch", "16"));
  const steps = Number(arg("steps", "2"));
  const size = Number(arg("size", "224"));
  await prepareWasm();
  await tf.setBackend("wasm");
  const w = describeWasm();
  console.log(`# ${new Date().toISOString()} wasm ${w.loader} ${w.threads} threads; load average ${os.loadavg().map((v) => v.toFixed(2)).join(" ")}`);
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { buildModel } = require("../lib/models") as { buildModel(n: string, c: object): { model: tf.LayersModel } };
  for (const name of models) {
    const model = buildModel(name, { inputSize: size, numClasses: 2, seed: 1 }).model;
    const opt = tf.train.adam(1e-4);
    const x = tf.randomNormal([batch, size, size, 3]);
    const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 2), "int32"), 2).toFloat();
    const t0 = Date.now();
    const plan = planMicroBatch(model, [size, size, 3], [2], batch);
    const planMs = Date.now() - t0;
    console.log(
      `${name} ${size}² batch ${batch}: micro-batch ${plan.microBatch} (predicted peak ${(plan.predictedPeakBytes / 2 ** 30).toFixed(2)} GiB, ` +
        `${(plan.perExampleBytes / 2 ** 20).toFixed(0)} MiB/example, budget ${(plan.budgetBytes / 2 ** 30).toFixed(2)} GiB; planned in ${planMs} ms)`,
    );
    for (let s = 0; s < steps; s++) {
      const t = Date.now();
      const r = trainStepAccumulated(model, opt, x, y, plan.microBatch);
      console.log(`  step ${s + 1}: ${((Date.now() - t) / 1000).toFixed(1)} s, ${r.passes} passes, loss ${r.loss.toFixed(4)}, wasm heap ${(wasmHeapBytes() / 2 ** 30).toFixed(2)} GiB`);
      if (!Number.isFinite(r.loss)) throw new Error("non-finite loss");
    }
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
  }
  // A step that cannot fit: the planner refuses with the numbers instead of running out of heap.
  const big = Number(arg("too-big", "1024"));
  const model = buildModel("densenet169", { inputSize: big, numClasses: 2, seed: 1 }).model;
  try {
    planMicroBatch(model, [big, big, 3], [2], batch);
    console.log(`densenet169 ${big}²: unexpectedly fits`);
  } catch (e) {
    if (!(e instanceof MicroBatchTooLargeError)) throw e;
    console.log(`densenet169 ${big}²: refused as expected: ${e.message}`);
  } finally {
    model.dispose();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
