/**
 * The training engine shared by every study: one loop for classification, segmentation and
 * multi-task models. A TrainingTask says how a batch is made (named inputs and targets), what the
 * loss is and which validation metric selects the checkpoint; the loop does the rest: the
 * optimiser with the cosine schedule stepped per iteration, seeded shuffling, micro-batching,
 * a checkpoint every epoch, exact resume, selection of the best epoch, progress callbacks.
 *
 * Determinism: the permutation of epoch e and the augmentation of step s depend only on
 * (seed, e, s), never on how many epochs ran in this process, so a resumed run replays the same
 * batches as an uninterrupted one.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { loadOptimizer, readCheckpointState, writeCheckpoint, loadWeightsInto } from "./checkpoint";
import { CosineSchedule, cosineLr } from "./schedule";
import { writeJsonAtomic } from "../util/fs";
import { permutationOf } from "../util/random";
import { auc } from "../evaluation";
import { categoricalCrossEntropy, TargetLoss, Tensors, trainStepAccumulated } from "./accumulate";

/** A source of labelled examples (images or cached features). */
export interface ExampleSource {
  /** Number of examples. */
  readonly size: number;
  /** Label per example: 1 = COVID (positive), 0 = NonCOVID. */
  readonly labels: readonly number[];
  /** Stable id per example (file name), used in predictions.csv. */
  readonly ids: readonly string[];
  /**
   * Inputs for these examples; augmented when ctx.train. The caller disposes the tensor.
   * ctx.seed is derived from (run seed, epoch, step) so augmentation is reproducible.
   */
  inputs(indices: readonly number[], ctx: { train: boolean; seed: string }): Tensors;
  /** Release tensors the source holds (sources that keep their data on the backend). */
  dispose?(): void;
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  schedule: CosineSchedule;
  seed: number;
  /**
   * Examples per forward/backward pass. Smaller than batchSize → gradients of the micro-batches
   * are averaged (weighted by size) before one optimizer step: the same update as the full batch
   * for layers without batch statistics (BatchNorm sees micro-batch statistics).
   */
  microBatch?: number;
  /** Where checkpoints and history go; nothing is written when absent. */
  runDir?: string;
  /** Continue from runDir/checkpoints/last when it exists. */
  resume?: boolean;
  /** Stop after this many epochs in this call (tests simulate an interruption with it). */
  stopAfterEpochs?: number;
  /**
   * The selection metric's ceiling (1 for AUC): once the selected epoch reaches it, training stops.
   * With the earliest epoch winning ties no later epoch could be selected, so the selected
   * weights, and everything predicted from them, are those of the full run. Default: none (every
   * epoch runs; history.json then holds the whole curve).
   */
  stopAtCeiling?: number;
  onStep?: (s: StepLog) => void;
  onEpoch?: (e: EpochLog) => void;
}

export interface BatchContext {
  /** Training batch (augmentation on) or evaluation. */
  train: boolean;
  /** Derived from (run seed, epoch, step): the same batch gets the same augmentation on resume. */
  seed: string;
}

/** What the engine trains: how a batch is made, the loss, and how validation selects a checkpoint. */
export interface TrainingTask<S extends ExampleSource = ExampleSource> {
  readonly name: string;
  /** Model inputs and training targets of these examples (one tensor or one per model input/output); the caller disposes them. */
  batch(src: S, indices: readonly number[], ctx: BatchContext): { x: Tensors; y: Tensors };
  /** Mean loss of targets vs model outputs, differentiated for every step. */
  readonly loss: TargetLoss;
  /** Validation metrics by name: at least `loss` and the selection metric. */
  evaluate(model: tf.LayersModel, src: S): Promise<Record<string, number>>;
  /** The evaluate() metric that selects the checkpoint (higher is better; NaN never selects). */
  readonly selectOn: string;
}

export interface StepLog {
  epoch: number;
  step: number;
  steps: number;
  loss: number;
  lr: number;
}

/**
 * One epoch in history.json: the task's validation metrics appear prefixed with `val`
 * (classification: valLoss, valAuc, valAccuracy; segmentation: valLoss, valDice, …).
 */
export type EpochLog = {
  epoch: number;
  lr: number;
  trainLoss: number;
  seconds: number;
  /** tf.memory().numTensors after the epoch: flat across epochs means no leak. */
  numTensors: number;
} & { [metric: `val${string}`]: number };

export interface TrainResult {
  history: EpochLog[];
  bestEpoch: number;
  /** The selection metric at bestEpoch. */
  bestValue: number;
  /** True when the loop stopped early because of stopAfterEpochs. */
  interrupted: boolean;
}

interface LoopState {
  epoch: number; // last completed epoch
  history: EpochLog[];
  bestEpoch: number;
  bestValue: number;
}

function valKey(metric: string): `val${string}` {
  return `val${metric[0].toUpperCase()}${metric.slice(1)}`;
}

export function oneHot(labels: readonly number[]): tf.Tensor2D {
  return tf.tidy(() => tf.oneHot(tf.tensor1d(labels as number[], "int32"), 2).toFloat() as tf.Tensor2D);
}

/** Deterministic permutation of n for (seed, epoch). */
export function permutation(n: number, seed: number, epoch: number): number[] {
  return permutationOf(n, seedrandom(`${seed}:perm:${epoch}`));
}

/**
 * The classification output of a model: its only output, or the one named `class` (the Study II
 * multi-task models also output `lesion`).
 */
export function classOutput(model: tf.LayersModel, y: tf.Tensor | tf.Tensor[]): tf.Tensor {
  if (!Array.isArray(y)) return y;
  const i = model.outputNames.findIndex((n) => n === "class" || n.startsWith("class/"));
  if (i < 0) throw new Error(`model ${model.name} has ${y.length} outputs and none is named 'class'`);
  return y[i];
}

/** P(COVID) for every example of src, batched, in order. */
export async function predictProbabilities(model: tf.LayersModel, src: ExampleSource, batchSize = 32): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < src.size; i += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, src.size - i) }, (_, k) => i + k);
    const p = tf.tidy(() => {
      const x = src.inputs(idx, { train: false, seed: "eval" });
      const y = classOutput(model, model.predict(x) as tf.Tensor | tf.Tensor[]);
      return y.slice([0, 1], [-1, 1]).reshape([-1]);
    });
    out.push(...(await p.data()));
    p.dispose();
  }
  return out;
}

/** Cross-entropy, AUC and accuracy (threshold 0.5) of P(COVID) against the labels. */
export async function evaluateClassifier(model: tf.LayersModel, src: ExampleSource): Promise<{ loss: number; auc: number; accuracy: number }> {
  const probs = await predictProbabilities(model, src);
  let loss = 0, correct = 0;
  probs.forEach((p, i) => {
    const y = src.labels[i];
    loss -= Math.log(Math.min(1, Math.max(1e-7, y === 1 ? p : 1 - p)));
    if ((p >= 0.5 ? 1 : 0) === y) correct++;
  });
  return { loss: loss / Math.max(1, probs.length), auc: auc(src.labels, probs), accuracy: correct / Math.max(1, probs.length) };
}

/**
 * Study I's task: softmax over [NonCOVID, COVID] with categorical cross-entropy on one-hot labels,
 * the checkpoint selected on validation AUC.
 */
export const classificationTask: TrainingTask = {
  name: "classification",
  batch: (src, idx, ctx) => ({ x: src.inputs(idx, ctx), y: oneHot(idx.map((i) => src.labels[i])) }),
  loss: categoricalCrossEntropy,
  evaluate: evaluateClassifier,
  selectOn: "auc",
};

function setLearningRate(opt: tf.Optimizer, lr: number): void {
  // Adam reads this.learningRate on every applyGradients call.
  (opt as unknown as { learningRate: number }).learningRate = lr;
}

/** Train a classifier (classificationTask): Study I's call. */
export function trainClassifier(model: tf.LayersModel, opt: tf.Optimizer, train: ExampleSource, val: ExampleSource, o: TrainOptions): Promise<TrainResult> {
  return trainModel(model, opt, classificationTask, train, val, o);
}

/**
 * Train `model` on `train` for the task, select the epoch with the best validation value of
 * task.selectOn (earliest on ties), and leave the model holding the selected weights.
 */
export async function trainModel<S extends ExampleSource>(model: tf.LayersModel, opt: tf.Optimizer, task: TrainingTask<S>, train: S, val: S, o: TrainOptions): Promise<TrainResult> {
  const ckptLast = o.runDir ? path.join(o.runDir, "checkpoints", "last") : undefined;
  const ckptBest = o.runDir ? path.join(o.runDir, "checkpoints", "best") : undefined;
  let state: LoopState = { epoch: -1, history: [], bestEpoch: -1, bestValue: -Infinity };
  if (o.resume && ckptLast && fs.existsSync(path.join(ckptLast, "state.json"))) {
    try {
      const stored = readCheckpointState<LoopState & { bestValAuc?: number }>(ckptLast)!;
      // Checkpoints written before the engine took tasks called the selection value bestValAuc.
      state = { ...stored, bestValue: stored.bestValue ?? stored.bestValAuc ?? -Infinity };
      await loadWeightsInto(model, ckptLast);
      await loadOptimizer(opt, ckptLast);
    } catch (e) {
      throw new Error(
        `Cannot resume from the checkpoint ${ckptLast}: ${(e as Error).message}. ` +
          "The checkpoint is damaged or from another model; start the run again with --force.",
        { cause: e },
      );
    }
  }
  const micro = Math.max(1, Math.min(o.microBatch ?? o.batchSize, o.batchSize));
  // Without a run directory the selected weights are kept in memory instead of checkpoints/best.
  let bestInMemory: tf.Tensor[] | null = null;
  const steps = Math.ceil(train.size / o.batchSize);
  let ranThisCall = 0;
  for (let epoch = state.epoch + 1; epoch < o.epochs; epoch++) {
    if (o.stopAtCeiling !== undefined && state.bestValue >= o.stopAtCeiling) break;
    if (o.stopAfterEpochs !== undefined && ranThisCall >= o.stopAfterEpochs) {
      return { history: state.history, bestEpoch: state.bestEpoch, bestValue: state.bestValue, interrupted: true };
    }
    const t0 = Date.now();
    const perm = permutation(train.size, o.seed, epoch);
    let lossSum = 0;
    let lr = o.schedule.lr;
    for (let s = 0; s < steps; s++) {
      const idx = perm.slice(s * o.batchSize, (s + 1) * o.batchSize);
      lr = cosineLr(o.schedule, epoch, s, steps);
      setLearningRate(opt, lr);
      const { x, y } = task.batch(train, idx, { train: true, seed: `${o.seed}:aug:${epoch}:${s}` });
      const { loss } = trainStepAccumulated(model, opt, x, y, micro, { loss: task.loss });
      tf.dispose([x, y].flat());
      lossSum += loss * idx.length;
      o.onStep?.({ epoch, step: s, steps, loss, lr });
      await tf.nextFrame?.().catch(() => undefined);
    }
    const v = await task.evaluate(model, val);
    const selected = v[task.selectOn];
    if (selected === undefined) throw new Error(`task ${task.name}: evaluate() returned no '${task.selectOn}' (its selection metric)`);
    const log = {
      epoch,
      lr,
      trainLoss: lossSum / train.size,
      ...Object.fromEntries(Object.entries(v).map(([k, x]) => [valKey(k), x])),
      seconds: (Date.now() - t0) / 1000,
      numTensors: tf.memory().numTensors,
    } as EpochLog;
    state.history.push(log);
    state.epoch = epoch;
    const improved = !(selected <= state.bestValue) && !Number.isNaN(selected);
    if (improved || state.bestEpoch < 0) {
      state.bestEpoch = epoch;
      state.bestValue = selected;
      if (ckptBest) await writeCheckpoint(ckptBest, model, null, { epoch, [valKey(task.selectOn)]: selected });
      else {
        if (bestInMemory) tf.dispose(bestInMemory);
        bestInMemory = model.getWeights().map((w) => w.clone());
      }
    }
    if (ckptLast) await writeCheckpoint(ckptLast, model, opt, state);
    if (o.runDir) writeJsonAtomic(path.join(o.runDir, "history.json"), state.history);
    o.onEpoch?.(log);
    ranThisCall++;
  }
  if (ckptBest && fs.existsSync(path.join(ckptBest, "model.json"))) await loadWeightsInto(model, ckptBest);
  else if (bestInMemory) {
    model.setWeights(bestInMemory);
    tf.dispose(bestInMemory);
  }
  return { history: state.history, bestEpoch: state.bestEpoch, bestValue: state.bestValue, interrupted: false };
}
