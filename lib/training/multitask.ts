/**
 * Study II's multi-task training task (Fig. 4B/4C) for the engine: classification + lesion
 * segmentation, loss = 1 · CE + 1 · lesion loss (the paper's weights), the lesion term averaged over
 * the images that carry a true lesion label (lib/diagnosis/masks.ts lesionTargetOf), checkpoint
 * selected on validation AUC as Study I's.
 */
import * as tf from "@tensorflow/tfjs";
import { auc, maskOverlap, MaskOverlap, summariseSegmentation } from "../evaluation";
import { MultiTaskLossConfig, multiTaskLoss, packMultiTaskTargets, unpackMultiTaskTargets } from "../models/aspp";
import { Tensors } from "./accumulate";
import { BatchContext, classOutput, ExampleSource, oneHot, TrainingTask } from "./loop";

/** A source whose examples also carry lesion targets. */
export interface MultiTaskSource extends ExampleSource {
  /** Size [H, W] of the lesion targets (= the model's lesion output). */
  readonly lesionSize: [number, number];
  /** Model inputs and lesion targets [n,H,W,1] + hasMask [n] of these examples, augmented together when ctx.train. */
  multiTaskBatch(indices: readonly number[], ctx: BatchContext): { x: Tensors; lesion: tf.Tensor; hasMask: tf.Tensor };
  /** The lesion LABEL of example i (a mask file: COVID-Seg pseudo, MedSeg expert) at lesionSize, or null: what Dice is measured on. */
  lesionLabel(i: number): Uint8Array | null;
}

/** P(COVID) and lesion probability maps of every example, in order. */
export async function predictMultiTask(model: tf.LayersModel, src: MultiTaskSource, batchSize = 16): Promise<{ probs: number[]; lesion: Float32Array[] }> {
  const probs: number[] = [];
  const lesion: Float32Array[] = [];
  const li = model.outputNames.findIndex((n) => n === "lesion");
  if (li < 0) throw new Error(`model ${model.name} has no 'lesion' output`);
  const [h, w] = src.lesionSize;
  for (let i = 0; i < src.size; i += batchSize) {
    const idx = Array.from({ length: Math.min(batchSize, src.size - i) }, (_, k) => i + k);
    const [p, l] = tf.tidy(() => {
      const y = model.predict(src.inputs(idx, { train: false, seed: "eval" })) as tf.Tensor[];
      return [classOutput(model, y).slice([0, 1], [-1, 1]).reshape([-1]), y[li]];
    });
    probs.push(...(await p.data()));
    const ld = await l.data();
    idx.forEach((_, k) => lesion.push(Float32Array.from(ld.subarray(k * h * w, (k + 1) * h * w))));
    tf.dispose([p, l]);
  }
  return { probs, lesion };
}

/** Lesion Dice/IoU (pooled and per image) of predicted maps against the labelled examples of src. */
export function lesionSegmentation(src: MultiTaskSource, lesion: readonly Float32Array[]) {
  const overlaps: MaskOverlap[] = [];
  lesion.forEach((p, i) => {
    const ref = src.lesionLabel(i);
    if (ref) overlaps.push(maskOverlap(p, ref));
  });
  return overlaps.length ? summariseSegmentation(overlaps) : null;
}

export function multiTaskTask(cfg: MultiTaskLossConfig = {}): TrainingTask<MultiTaskSource> {
  return {
    name: "multi-task",
    batch(src, idx, ctx) {
      const b = src.multiTaskBatch(idx, ctx);
      const label = oneHot(idx.map((i) => src.labels[i]));
      const y = packMultiTaskTargets({ label, lesion: b.lesion, hasMask: b.hasMask });
      tf.dispose([label, b.lesion, b.hasMask]);
      return { x: b.x, y };
    },
    loss(yTrue: Tensors, yPred: Tensors) {
      const [lesion, cls] = yPred as tf.Tensor[];
      const [, h, w] = lesion.shape;
      return multiTaskLoss({ lesion, class: cls }, unpackMultiTaskTargets(yTrue as tf.Tensor, [h!, w!]), cfg).total;
    },
    async evaluate(model, src) {
      const { probs, lesion } = await predictMultiTask(model, src);
      let loss = 0, correct = 0;
      probs.forEach((p, i) => {
        const y = src.labels[i];
        loss -= Math.log(Math.min(1, Math.max(1e-7, y === 1 ? p : 1 - p)));
        if ((p >= 0.5 ? 1 : 0) === y) correct++;
      });
      const seg = lesionSegmentation(src, lesion);
      return { loss: loss / Math.max(1, probs.length), auc: auc(src.labels, probs), accuracy: correct / Math.max(1, probs.length), lesionDice: seg ? seg.pooled.dice : NaN };
    },
    selectOn: "auc",
  };
}
