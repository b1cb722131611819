/**
 * Checkpoints on disk without tfjs-node's file:// handler (which is not available on the wasm/cpu
 * backends): model topology + weights via tf.io save/load handlers, optimizer state (Adam's
 * moments and step), and our loop state. A checkpoint folder is written beside its final name and
 * renamed into place, so an interrupted write never leaves a half checkpoint.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { writeJsonAtomic } from "../util/fs";

interface WeightsOnDisk {
  specs: tf.io.WeightsManifestEntry[];
  file: string;
}

function writeWeights(dir: string, name: string, specs: tf.io.WeightsManifestEntry[], data: ArrayBuffer | ArrayBuffer[]): WeightsOnDisk {
  const buf = Array.isArray(data) ? Buffer.concat(data.map((d) => Buffer.from(d))) : Buffer.from(data);
  const file = `${name}.bin`;
  fs.writeFileSync(path.join(dir, file), buf);
  return { specs, file };
}

function readWeights(dir: string, w: WeightsOnDisk): ArrayBuffer {
  const b = fs.readFileSync(path.join(dir, w.file));
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** Save a layers model into dir/model.json + dir/model.bin. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const w = writeWeights(dir, "model", a.weightSpecs ?? [], a.weightData ?? new ArrayBuffer(0));
      fs.writeFileSync(path.join(dir, "model.json"), JSON.stringify({ modelTopology: a.modelTopology, weightSpecs: w.specs, weightsFile: w.file }));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
}

/** Load a model saved by saveModel. */
export async function loadModel(dir: string): Promise<tf.LayersModel> {
  const file = path.join(dir, "model.json");
  if (!fs.existsSync(file)) throw new Error(`No model checkpoint at ${file}. Train first, or pass the run directory that holds checkpoints/.`);
  const j = JSON.parse(fs.readFileSync(file, "utf8"));
  const weightData = readWeights(dir, { specs: j.weightSpecs, file: j.weightsFile });
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: j.modelTopology, weightSpecs: j.weightSpecs, weightData }));
}

/** Copy weights from a saved model into an already-built model of the same architecture. */
export async function loadWeightsInto(model: tf.LayersModel, dir: string): Promise<void> {
  const saved = await loadModel(dir);
  model.setWeights(saved.getWeights());
  saved.dispose();
}

/** Save optimizer state (e.g. Adam's iteration count and moments) positionally. */
export async function saveOptimizer(opt: tf.Optimizer, dir: string): Promise<void> {
  const named = await opt.getWeights();
  const { data, specs } = await tf.io.encodeWeights(named);
  // getWeights() creates a fresh scalar for the iteration count; the rest are the optimizer's own.
  named.filter((w) => w.name === "iter").forEach((w) => w.tensor.dispose());
  const w = writeWeights(dir, "optimizer", specs, data);
  fs.writeFileSync(path.join(dir, "optimizer.json"), JSON.stringify(w));
}

/** Restore optimizer state saved by saveOptimizer (variables are matched by position). */
export async function loadOptimizer(opt: tf.Optimizer, dir: string): Promise<void> {
  const w = JSON.parse(fs.readFileSync(path.join(dir, "optimizer.json"), "utf8")) as WeightsOnDisk;
  const map = tf.io.decodeWeights(readWeights(dir, w), w.specs);
  await opt.setWeights(w.specs.map((s) => ({ name: s.name, tensor: map[s.name] })));
  // Duck-typed: tfjs' `instanceof AdamOptimizer` is true for every optimizer (Symbol.hasInstance).
  const o = opt as unknown as { accBeta1?: tf.Variable; accBeta2?: tf.Variable; beta1?: number };
  if (o.accBeta1 && o.accBeta2 && typeof o.beta1 === "number") replayAdamBetaPowers(opt as tf.AdamOptimizer);
}

/**
 * tfjs' AdamOptimizer.setWeights sets beta^t with pow(), while training reaches it by t float32
 * multiplications; the two differ in the last bit, and a resumed run then drifts away from the
 * uninterrupted one (visible after tens of epochs). Recompute them the way training does.
 */
function replayAdamBetaPowers(opt: tf.AdamOptimizer): void {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const o = opt as any;
  const t: number = o.iterations;
  // A product of two float32 values is exact in a double, so fround(a * b) is the float32 product.
  const replay = (beta: number) => {
    const b = Math.fround(beta);
    let acc = b;
    for (let i = 0; i < t; i++) acc = Math.fround(acc * b);
    return acc;
  };
  tf.tidy(() => {
    o.accBeta1.assign(tf.scalar(replay(o.beta1)));
    o.accBeta2.assign(tf.scalar(replay(o.beta2)));
  });
}

/** Write a checkpoint folder atomically: build it under a temp name, then swap it in. */
export async function writeCheckpoint(
  dir: string,
  model: tf.LayersModel,
  opt: tf.Optimizer | null,
  state: unknown,
): Promise<void> {
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  await saveModel(model, tmp);
  if (opt) await saveOptimizer(opt, tmp);
  writeJsonAtomic(path.join(tmp, "state.json"), state);
  const old = `${dir}.old-${process.pid}`;
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
}

export function readCheckpointState<T>(dir: string): T | undefined {
  const f = path.join(dir, "state.json");
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, "utf8")) as T) : undefined;
}

