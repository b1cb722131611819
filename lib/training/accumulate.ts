/**
 * Micro-batch gradient accumulation: one optimizer step on a batch computed as several smaller
 * forward/backward passes whose gradients are combined with weights m_i / n — the gradient of the
 * batch-mean loss, i.e. the same update as one full-batch step (exactly so for models without
 * batch statistics; BatchNormalization layers see micro-batch statistics, as in PyTorch or Keras
 * with the same trick, and update their moving averages once per micro-batch).
 *
 * `planMicroBatch` picks the largest micro-batch that fits a memory budget (on wasm: its 4 GiB
 * heap) from two short probes, and fails with a clear message where even a micro-batch of 1 does
 * not fit, instead of letting the wasm heap run out mid-step.
 */
import * as tf from "@tensorflow/tfjs";

/** One tensor, or one per model input/output (multi-input or multi-task models). */
export type Tensors = tf.Tensor | tf.Tensor[];

/**
 * Mean loss over the examples of (x, y). Declared method-style so a function written for single
 * tensors ((x: tf.Tensor, y: tf.Tensor) => …) is accepted too.
 */
export type LossFn = { fn(x: Tensors, y: Tensors): tf.Scalar }["fn"];
/** Loss of targets vs model outputs (one tensor each, or lists for multi-output models). */
export type TargetLoss = { fn(yTrue: Tensors, yPred: Tensors): tf.Tensor }["fn"];

/** Examples in a batch (the first dimension, the same for every tensor). */
export function batchSize(t: Tensors): number {
  return Array.isArray(t) ? t[0].shape[0] : t.shape[0];
}

/** Examples [start, start + size) of every tensor. */
export function sliceBatch(t: Tensors, start: number, size: number): Tensors {
  return Array.isArray(t) ? t.map((x) => x.slice(start, size)) : t.slice(start, size);
}

export interface AccumulateOptions {
  /** Variables to train (default: the model's trainable weights, or every trainable variable). */
  vars?: tf.Variable[];
  /**
   * Loss for a LayersModel (default: its compiled loss, else categorical cross-entropy on
   * probabilities). Multi-output models get (and return) lists: write a task loss over them.
   */
  loss?: TargetLoss;
  /**
   * When a pass runs out of (wasm heap) memory: "halve" (default) retries the whole step with half
   * the micro-batch, down to 1, then throws MicroBatchTooLargeError; "throw" rethrows at once.
   * Either way the failed pass's tensors are released first.
   */
  onOutOfMemory?: "halve" | "throw";
}

export interface StepResult {
  /** Batch-mean loss (before the update). */
  loss: number;
  /** Number of forward/backward passes. */
  passes: number;
  /** Micro-batch actually used (smaller than asked for after an out-of-memory retry). */
  microBatch: number;
}

/** True for the errors of an allocation that did not fit (wasm heap guard, emscripten, V8). */
export function isOutOfMemory(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  return e.name === "WasmHeapExhaustedError" || /heap exhausted|out of memory|Cannot allocate|Array buffer allocation failed/i.test(e.message);
}

/**
 * After an exception inside tf.variableGrads/tf.grads the engine keeps the tape of the failed
 * pass (with every tensor saved for the backward pass) until the next gradient call. Release it.
 */
export function releaseFailedTape(): void {
  const state = (tf.engine() as unknown as { state: { activeTape: { saved?: tf.Tensor[] }[] | null; gradientDepth: number } }).state;
  if (state.gradientDepth > 0 || !state.activeTape) return;
  for (const node of state.activeTape) for (const t of node.saved ?? []) if (!t.isDisposed) t.dispose();
  state.activeTape = null;
}

/** Keras-style categorical cross-entropy on probabilities, mean over the batch. */
export function categoricalCrossEntropy(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(yTrue, tf.log(tf.clipByValue(yPred, 1e-7, 1))), -1))) as tf.Scalar);
}

function isLayersModel(m: unknown): m is tf.LayersModel {
  return typeof m === "object" && m !== null && typeof (m as tf.LayersModel).apply === "function" && Array.isArray((m as tf.LayersModel).trainableWeights);
}

function resolve(modelOrLoss: tf.LayersModel | LossFn, opts: AccumulateOptions): { lossFn: LossFn; vars?: tf.Variable[] } {
  if (!isLayersModel(modelOrLoss)) return { lossFn: modelOrLoss, vars: opts.vars };
  const model = modelOrLoss;
  const compiled = (model as unknown as { lossFunctions?: ((a: tf.Tensor, b: tf.Tensor) => tf.Tensor)[] }).lossFunctions?.[0];
  const loss: TargetLoss = opts.loss ?? (compiled as TargetLoss | undefined) ?? categoricalCrossEntropy;
  const lossFn: LossFn = (x, y) => tf.mean(loss(y, model.apply(x, { training: true }) as Tensors)) as tf.Scalar;
  const vars = opts.vars ?? model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
  return { lossFn, vars };
}

/**
 * Gradients of the batch-mean loss of (xs, ys), accumulated over micro-batches of at most
 * `microBatch` examples. The caller owns (and must dispose) the returned gradients.
 */
export function accumulateGradients(
  modelOrLoss: tf.LayersModel | LossFn,
  xs: Tensors,
  ys: Tensors,
  microBatch: number,
  opts: AccumulateOptions = {},
): { loss: number; grads: tf.NamedTensorMap; passes: number } {
  const n = batchSize(xs);
  for (const t of [xs, ys].flat()) if (t.shape[0] !== n) throw new Error(`accumulateGradients: ${n} inputs but a tensor of ${t.shape[0]} examples`);
  if (!Number.isInteger(microBatch) || microBatch < 1) throw new Error(`accumulateGradients: microBatch must be a positive integer, got ${microBatch}`);
  const { lossFn, vars } = resolve(modelOrLoss, opts);
  const m0 = Math.min(microBatch, n);
  let total: tf.NamedTensorMap | null = null;
  let lossSum = 0;
  let passes = 0;
  for (let s = 0; s < n; s += m0) {
    const m = Math.min(m0, n - s);
    const whole = m === n;
    let value: tf.Scalar;
    let grads: tf.NamedTensorMap;
    try {
      ({ value, grads } = tf.variableGrads(() => {
        const x = whole ? xs : sliceBatch(xs, s, m);
        const y = whole ? ys : sliceBatch(ys, s, m);
        return lossFn(x, y);
      }, vars));
    } catch (e) {
      if (total) tf.dispose(total);
      throw e;
    }
    passes++;
    lossSum += value.dataSync()[0] * m;
    value.dispose();
    if (whole) return { loss: lossSum / n, grads, passes };
    const w = m / n;
    const next: tf.NamedTensorMap = tf.tidy(() => {
      const out: tf.NamedTensorMap = {};
      for (const k of Object.keys(grads)) out[k] = total ? tf.add(total[k], tf.mul(grads[k], w)) : tf.mul(grads[k], w);
      return out;
    });
    tf.dispose(grads);
    if (total) tf.dispose(total);
    total = next;
  }
  return { loss: lossSum / n, grads: total!, passes };
}

/**
 * One optimizer step on (xs, ys) — the same update as a full-batch step — computed in
 * micro-batches of at most `microBatch` examples. Returns the batch-mean loss.
 */
export function trainStepAccumulated(
  modelOrLoss: tf.LayersModel | LossFn,
  optimizer: tf.Optimizer,
  xs: Tensors,
  ys: Tensors,
  microBatch: number,
  opts: AccumulateOptions = {},
): StepResult {
  let micro = Math.min(microBatch, batchSize(xs));
  for (;;) {
    let result: { loss: number; grads: tf.NamedTensorMap; passes: number };
    try {
      result = accumulateGradients(modelOrLoss, xs, ys, micro, opts);
    } catch (e) {
      releaseFailedTape();
      if (!isOutOfMemory(e) || (opts.onOutOfMemory ?? "halve") === "throw") throw e;
      if (micro === 1) {
        throw new MicroBatchTooLargeError(
          `A forward+backward pass of one example does not fit in memory on backend '${tf.getBackend()}': ${(e as Error).message}`,
        );
      }
      micro = Math.ceil(micro / 2);
      continue;
    }
    try {
      optimizer.applyGradients(result.grads);
    } finally {
      tf.dispose(result.grads);
    }
    return { loss: result.loss, passes: result.passes, microBatch: micro };
  }
}

export interface MicroBatchPlan {
  /** Micro-batch to use (a divisor of the batch where possible). */
  microBatch: number;
  /** Predicted peak tensor bytes of one pass at that micro-batch. */
  predictedPeakBytes: number;
  /** Bytes per example and fixed bytes of the linear model peak(m) = fixed + perExample·m. */
  perExampleBytes: number;
  fixedBytes: number;
  budgetBytes: number;
}

export class MicroBatchTooLargeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MicroBatchTooLargeError";
  }
}

const GiB = 1024 ** 3;

/**
 * Default memory budget: on wasm 75 % of the 4 GiB heap ceiling (the rest for XNNPACK packed
 * weights, scratch and fragmentation) minus what tensors already hold; elsewhere unlimited.
 */
export function defaultMemoryBudget(): number {
  if (tf.getBackend() !== "wasm") return Number.POSITIVE_INFINITY;
  return 0.75 * 4 * GiB - tf.memory().numBytes;
}

/**
 * Choose the largest micro-batch (preferring divisors of `batch`) whose forward+backward pass fits
 * `budgetBytes`, from the peak tensor memory of probe passes at micro-batches 1 and 2 on zero
 * inputs of the given shapes. Throws MicroBatchTooLargeError with the numbers when even 1 does not fit.
 */
export function planMicroBatch(
  modelOrLoss: tf.LayersModel | LossFn,
  exampleShape: number[],
  targetShape: number[],
  batch: number,
  opts: AccumulateOptions & { budgetBytes?: number } = {},
): MicroBatchPlan {
  const budget = opts.budgetBytes ?? defaultMemoryBudget();
  const { lossFn, vars } = resolve(modelOrLoss, opts);
  const probe = (m: number): number => {
    const before = tf.memory().numBytes;
    let peak = 0;
    const x = tf.zeros([m, ...exampleShape]);
    const y = tf.zeros([m, ...targetShape]);
    try {
      // Engine bookkeeping of bytes: peakBytes of a profile is the high-water mark of tensor bytes.
      const info = profileSync(() => {
        const { value, grads } = tf.variableGrads(() => lossFn(x, y), vars);
        tf.dispose(value);
        tf.dispose(Object.values(grads));
      });
      peak = info - before;
    } catch (e) {
      releaseFailedTape();
      if (isOutOfMemory(e)) {
        throw new MicroBatchTooLargeError(
          `A forward+backward pass of ${m} example(s) of shape [${exampleShape}] does not fit in memory (${(e as Error).message}). ` +
            `Use a smaller input size or a smaller model on this backend.`,
        );
      }
      throw e;
    } finally {
      tf.dispose([x, y]);
    }
    return peak;
  };
  // Lower bound without running anything: the layer outputs of one example, which a training pass
  // keeps for the backward pass. Refuse before a probe could exhaust the heap.
  if (isLayersModel(modelOrLoss)) {
    const floor = activationBytesPerExample(modelOrLoss);
    if (floor > budget) throw tooLarge(floor, budget, exampleShape);
  }
  const p1 = probe(1);
  if (p1 > budget) throw tooLarge(p1, budget, exampleShape);
  let p2 = p1;
  if (batch >= 2) {
    try {
      p2 = probe(2);
    } catch (e) {
      if (!(e instanceof MicroBatchTooLargeError)) throw e;
      return { microBatch: 1, predictedPeakBytes: p1, perExampleBytes: p1, fixedBytes: 0, budgetBytes: budget };
    }
  }
  const perExample = Math.max(p2 - p1, 1);
  const fixed = Math.max(p1 - perExample, 0);
  const fits = (m: number) => fixed + perExample * m <= budget;
  let best = 1;
  for (let m = batch; m >= 1; m--) {
    if (batch % m === 0 && fits(m)) {
      best = m;
      break;
    }
  }
  if (!fits(1)) throw tooLarge(fixed + perExample, budget, exampleShape);
  return { microBatch: best, predictedPeakBytes: fixed + perExample * best, perExampleBytes: perExample, fixedBytes: fixed, budgetBytes: budget };
}

/** Bytes of all layer outputs for one example (float32): a lower bound of a training pass's memory. */
export function activationBytesPerExample(model: tf.LayersModel): number {
  let elems = 0;
  for (const l of model.layers) {
    const shapes = (Array.isArray(l.outputShape[0]) ? l.outputShape : [l.outputShape]) as (number | null)[][];
    for (const sh of shapes) elems += sh.slice(1).reduce((p: number, d) => p * (d ?? 1), 1);
  }
  return 4 * elems;
}

function tooLarge(need: number, budget: number, shape: number[]): MicroBatchTooLargeError {
  return new MicroBatchTooLargeError(
    `A forward+backward pass of one example of shape [${shape}] needs at least ${(need / GiB).toFixed(2)} GiB of tensor memory, ` +
      `more than the ${(budget / GiB).toFixed(2)} GiB available on backend '${tf.getBackend()}'` +
      (tf.getBackend() === "wasm" ? " (wasm heap: at most 4 GiB)" : "") +
      `. Use a smaller input size, a smaller model, or a backend without this limit (tfjs-node).`,
  );
}

/**
 * Run f and return the engine's high-water mark of tensor bytes during it: the largest
 * after-kernel snapshot of a profile (what tf.profile reports as peakBytes), read synchronously.
 */
function profileSync(f: () => void): number {
  type Profile = { peakBytes: number; newBytes: number; newTensors: number; kernels: { totalBytesSnapshot: number }[]; result: unknown };
  const engine = tf.engine() as unknown as { state: { numBytes: number; profiling: boolean; activeProfile: Profile } };
  const st = engine.state;
  const wasProfiling = st.profiling;
  const saved = st.activeProfile;
  const start = st.numBytes;
  st.profiling = true;
  st.activeProfile = { peakBytes: 0, newBytes: 0, newTensors: 0, kernels: [], result: null };
  try {
    f();
    return st.activeProfile.kernels.reduce((m, k) => Math.max(m, k.totalBytesSnapshot), start);
  } finally {
    st.profiling = wasProfiling;
    st.activeProfile = saved;
  }
}
