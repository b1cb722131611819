/**
 * MoCo (He et al., 2019, "Momentum Contrast for Unsupervised Visual Representation Learning") for
 * the CSSL part of the paper, after facebookresearch/moco `moco/builder.py`, on a single device.
 *
 * We follow MoCo v2 (Chen et al., 2020), because the paper's augmentation (Gaussian blur, random
 * grayscale) is v2's `aug_plus`: an MLP projection head (`mlp: true`) and temperature 0.2. The
 * paper's own settings replace MoCo's: queue K = 512, SGD lr 0.015 (= v2's 0.03 per 256, scaled
 * to batch 128), momentum 0.9, weight decay 1e-4, batch 128. Key-encoder momentum m = 0.999.
 * `MOCO_V1` gives the v1 settings (linear head, T = 0.07, no blur).
 *
 * The pieces, as in builder.py:
 *  - encoder = backbone (any registered model, up to its pooled features) + projection head; the
 *    key encoder starts as a copy of the query encoder and never receives a gradient
 *    (`momentumUpdate`: k ← m·k + (1 − m)·q over the trainable weights, like `param_k` in PyTorch;
 *    BN moving statistics are buffers there and here: each encoder keeps its own);
 *  - the queue: K L2-normalised keys, FIFO (`enqueue`), initialised with random unit vectors;
 *  - InfoNCE (`infoNce`): logits [q·k₊, q·queue] / T, cross-entropy with the positive at index 0.
 *
 * Shuffle BN on one device. MoCo shuffles the key batch across GPUs so that the batch statistics a
 * query is normalised with come from a different subset of samples than those of its positive key
 * (else the model "cheats" through the BN statistics shared by query and key). Here BN statistics
 * are per micro-batch: queries are encoded in contiguous micro-batches of `microBatch` (one per
 * simulated GPU, also the gradient-accumulation unit), keys in micro-batches of a random
 * permutation of the batch (seeded by the step seed), then un-shuffled. That is MoCo's shuffle BN
 * with batch/microBatch "GPUs" (the same as the SplitBatchNorm of MoCo's single-GPU CIFAR demo),
 * and needs at least two micro-batches; with one, query and key statistics coincide and we refuse
 * unless `shuffleKeys: false` is asked for explicitly.
 *
 * Large batches: the query's forward/backward runs through lib/training/accumulate.ts
 * (accumulateGradients, micro-batches weighted m_i/n — the gradient of the batch-mean loss); the
 * keys and the queue are fixed for all micro-batches of a step, and the queue is updated once per
 * step, after the optimizer step, with the whole batch's keys (builder.py's _dequeue_and_enqueue).
 *
 * Weight decay: coupled, exactly as torch.optim.SGD(weight_decay) in MoCo — wd·w is added to every
 * query gradient (BN γ/β and biases included, as MoCo does) before tf.train.momentum's update
 * (accum ← 0.9·accum + g; w ← w − lr·accum, PyTorch's SGD with dampening 0). The reported loss is
 * InfoNCE alone, without the L2 term.
 *
 * Other differences from builder.py: K need not be a multiple of the batch (the queue wraps row by
 * row); the projection head is Glorot-initialised and seeded (PyTorch: Kaiming-uniform); BN
 * momentum defaults to PyTorch's (`bnMomentum` 0.9 in Keras terms). The learning-rate schedule
 * (MoCo v2: cosine) is the caller's: pass `lr` per step. What to hand on for fine-tuning: MoCo's
 * linear evaluation loads encoder_q; saveMoco writes both encoders in the tfjs layers format.
 *
 * Frozen stem (`frozenUntil`, not in MoCo; for CPU budgets): the layers up to and including that
 * layer form a stem that never trains and runs in inference mode (BN moving statistics, no update),
 * shared by both encoders (their weights would stay equal anyway: k ← m·k + (1 − m)·q with k = q).
 * The encoders are then the layers after it + the head, fed with the stem's feature map. Default ""
 * (the whole backbone trains, as MoCo).
 *
 * Small-scale caveat, measured on the 2-core machine: with a tiny backbone, few images and a fast
 * key encoder (m = 0.9), the step's positive-key accuracy climbs while instance discrimination on a
 * fixed set (mocoEvaluate) does not: the only key computed by the current key encoder is the
 * positive, so a quickly drifting key encoder is itself a shortcut. Keep m high (0.99–0.999) and
 * judge progress with mocoEvaluate or the k-NN probe, not with the step accuracy alone.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import seedrandom from "seedrandom";
import { ModelName, buildModel, isModelName, MODEL_NAMES } from "../models";
import { Preprocessing, loadImagenetWeights, preprocessFor } from "../models/weights";
import { accumulateGradients, releaseFailedTape } from "../training/accumulate";
import { loadOptimizer, saveOptimizer } from "../training/checkpoint";
import { toModelInput } from "../models/input";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { MOCO_V2_AUGMENT, MocoAugmentConfig, twoViews } from "./augment";

export interface MocoConfig {
  /** Backbone (lib/models registry); the encoder is its pooled features + projection. Default "densenet169". */
  backbone: ModelName;
  /** "imagenet": start from ImageNet weights (the paper's CSSL = ImageNet + MoCo); "random": seeded init. Default "imagenet". */
  init: "imagenet" | "random";
  /** Weights root for `init: "imagenet"` (default: the resolved weights root). */
  weightsRoot?: string;
  /** Side of the square views fed to the encoders (MoCo: 224). */
  inputSize: number;
  /** Feature dimension of the projection output, i.e. of keys and queries (MoCo: 128). */
  dim: number;
  /** MoCo v2's MLP head Dense(hidden)-ReLU-Dense(dim) instead of v1's Dense(dim). Default true. */
  mlp: boolean;
  /** Hidden width of the MLP head; 0 = the backbone's pooled width (MoCo v2: dim_mlp). Default 0. */
  mlpHidden: number;
  /** Queue size K, number of negative keys (paper: 512; MoCo: 65536). */
  queueSize: number;
  /** Key-encoder momentum m (MoCo: 0.999). */
  momentum: number;
  /** Softmax temperature T (MoCo v2: 0.2; v1: 0.07). */
  temperature: number;
  /** SGD learning rate (paper: 0.015); a schedule may override it per step. */
  lr: number;
  /** SGD momentum (paper: 0.9). */
  sgdMomentum: number;
  /** Coupled weight decay, as torch SGD (paper: 1e-4). */
  weightDecay: number;
  /** Images per step (paper: 128); mocoStep accepts any batch, the loop should use this one. */
  batchSize: number;
  /** Micro-batch: the BN group of the shuffle (one simulated GPU) and the gradient-accumulation unit (MoCo: 256/8 GPUs = 32). */
  microBatch: number;
  /** Encode keys in shuffled micro-batches (shuffle BN). Default true. */
  shuffleKeys: boolean;
  /** The two views' augmentation (default MOCO_V2_AUGMENT). */
  augment: MocoAugmentConfig;
  /** Seed of the initialisation (backbone, head, queue). Default 0. */
  seed: number;
  /**
   * BatchNormalization momentum in Keras terms. 0.9 = PyTorch's default 0.1, which MoCo trains
   * with (our builders' Keras default 0.99 would leave the moving statistics, used by frozen-feature
   * probes, far behind after a short pretraining).
   */
  bnMomentum: number;
  /**
   * Name of the backbone layer that ends a frozen stem (see the file comment), e.g. "pool4_pool"
   * (DenseNet: only the last dense block and the final norm train). Default "" = no stem.
   */
  frozenUntil: string;
}

/** MoCo v2 with the CSSL paper's settings (see the file comment). */
export const MOCO_V2_PAPER: MocoConfig = {
  backbone: "densenet169",
  init: "imagenet",
  inputSize: 224,
  dim: 128,
  mlp: true,
  mlpHidden: 0,
  queueSize: 512,
  momentum: 0.999,
  temperature: 0.2,
  lr: 0.015,
  sgdMomentum: 0.9,
  weightDecay: 1e-4,
  batchSize: 128,
  microBatch: 32,
  shuffleKeys: true,
  augment: MOCO_V2_AUGMENT,
  seed: 0,
  bnMomentum: 0.9,
  frozenUntil: "",
};

/** MoCo v1's choices on top of the paper's settings: linear head, T = 0.07, no blur. */
export const MOCO_V1: Partial<MocoConfig> = {
  mlp: false,
  temperature: 0.07,
  augment: { ...MOCO_V2_AUGMENT, blurProb: 0 },
};

/** Layer names of the projection head (never a Keras name). */
export const MOCO_FC_HIDDEN = "moco_fc_hidden";
export const MOCO_FC = "moco_fc";

/** Everything a MoCo run needs to continue exactly: save with saveMoco, restore with loadMoco. */
export interface MocoState {
  config: MocoConfig;
  /** encoder_q: backbone + projection head, trained by SGD. */
  query: tf.LayersModel;
  /** encoder_k: same topology, momentum-updated, never trained. */
  key: tf.LayersModel;
  /** The dictionary: [K, dim], one L2-normalised key per row. */
  queue: tf.Variable;
  /** Row where the next key is written. */
  queuePtr: number;
  /** Completed steps. */
  step: number;
  optimizer: tf.MomentumOptimizer;
  /** Input normalisation of the backbone (gray [0,1] → 3-channel model input). */
  preprocessing: Preprocessing;
  /** Frozen stem shared by both encoders, run in inference mode (config.frozenUntil), or null. */
  stem: tf.LayersModel | null;
}

export interface MocoStepResult {
  /** Batch-mean InfoNCE loss (before the update). */
  loss: number;
  /** Top-1 positive-key accuracy: fraction of queries whose positive logit is the argmax of 1 + K. */
  accuracy: number;
  /** Forward/backward passes of the query encoder. */
  passes: number;
  /** state.step after this step. */
  step: number;
}

/** Fill defaults and check values; errors name the field and the fix. */
export function resolveMocoConfig(c: Partial<MocoConfig> = {}): MocoConfig {
  const cfg: MocoConfig = { ...MOCO_V2_PAPER, ...c, augment: { ...MOCO_V2_AUGMENT, ...(c.augment ?? {}) } };
  if (!isModelName(cfg.backbone)) throw new Error(`MoCo: unknown backbone '${cfg.backbone}'; expected one of ${MODEL_NAMES.join(", ")}`);
  const positiveInt = (k: keyof MocoConfig) => {
    const v = cfg[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new Error(`MoCo: ${k} must be a positive integer, got ${v}`);
  };
  (["inputSize", "dim", "queueSize", "batchSize", "microBatch"] as const).forEach(positiveInt);
  if (!(cfg.momentum >= 0 && cfg.momentum <= 1)) throw new Error(`MoCo: momentum must be in [0, 1] (MoCo: 0.999), got ${cfg.momentum}`);
  if (!(cfg.bnMomentum >= 0 && cfg.bnMomentum < 1)) throw new Error(`MoCo: bnMomentum must be in [0, 1) (PyTorch default = 0.9 here), got ${cfg.bnMomentum}`);
  if (!Number.isInteger(cfg.mlpHidden) || cfg.mlpHidden < 0) throw new Error(`MoCo: mlpHidden must be an integer ≥ 0 (0 = pooled width), got ${cfg.mlpHidden}`);
  if (!(cfg.temperature > 0)) throw new Error(`MoCo: temperature must be > 0 (v2: 0.2, v1: 0.07), got ${cfg.temperature}`);
  if (!(cfg.lr > 0) || !(cfg.weightDecay >= 0) || !(cfg.sgdMomentum >= 0)) {
    throw new Error(`MoCo: lr must be > 0, weightDecay and sgdMomentum ≥ 0; got lr ${cfg.lr}, weightDecay ${cfg.weightDecay}, sgdMomentum ${cfg.sgdMomentum}`);
  }
  return cfg;
}

/**
 * Re-apply the layers of `model` that come after `from` to `input` (same layer objects, so the
 * weights are shared and keep their names); returns the image of `model`'s output.
 */
function reapplyAfter(model: tf.LayersModel, from: tf.SymbolicTensor, input: tf.SymbolicTensor): tf.SymbolicTensor {
  const mapped = new Map<number, tf.SymbolicTensor>([[from.id, input]]);
  type Node = { inputTensors: tf.SymbolicTensor[]; outputTensors: tf.SymbolicTensor[] };
  for (const layer of model.layers) {
    const node = (layer as unknown as { inboundNodes: Node[] }).inboundNodes[0];
    if (!node || node.inputTensors.length === 0) continue;
    const ins = node.inputTensors.map((t) => mapped.get(t.id));
    if (ins.every((t) => t === undefined)) continue;
    if (ins.some((t) => t === undefined)) throw new Error(`MoCo frozenUntil: layer '${layer.name}' takes inputs from both sides of the cut; choose a layer that separates the graph (e.g. a transition's pool)`);
    const out = layer.apply(ins.length === 1 ? ins[0]! : (ins as tf.SymbolicTensor[])) as tf.SymbolicTensor;
    mapped.set(node.outputTensors[0].id, out);
  }
  const out = mapped.get(model.outputs[0].id);
  if (!out) throw new Error(`MoCo frozenUntil: the model's output does not depend on the cut`);
  return out;
}

/**
 * Backbone (pooled features) + projection head as one layers model; the head is seeded. With
 * `frozenUntil`, the backbone up to that layer is returned apart as the frozen stem and the encoder
 * starts from its feature map.
 */
async function buildEncoder(cfg: MocoConfig): Promise<{ encoder: tf.LayersModel; stem: tf.LayersModel | null }> {
  const built = buildModel(cfg.backbone, { includeHead: false, inputSize: cfg.inputSize, channels: 3, seed: cfg.seed, bnMomentum: cfg.bnMomentum });
  if (cfg.init === "imagenet") await loadImagenetWeights(built.model, cfg.backbone, cfg.weightsRoot);
  let input = built.model.inputs[0];
  let pooled = built.model.outputs[0];
  let stem: tf.LayersModel | null = null;
  if (cfg.frozenUntil) {
    const cut = built.model.layers.find((l) => l.name === cfg.frozenUntil);
    if (!cut) throw new Error(`MoCo: frozenUntil '${cfg.frozenUntil}' is no layer of ${cfg.backbone} (e.g. DenseNet: pool4_pool, pool3_pool)`);
    const stemOut = cut.getOutputAt(0) as tf.SymbolicTensor;
    stem = tf.model({ inputs: built.model.inputs, outputs: stemOut, name: "moco_stem" });
    stem.trainable = false;
    input = tf.input({ shape: stemOut.shape.slice(1) as number[], name: "moco_stem_features" });
    pooled = reapplyAfter(built.model, stemOut, input);
  }
  const width = pooled.shape[pooled.shape.length - 1] as number;
  const init = (k: number) => tf.initializers.glorotUniform({ seed: cfg.seed + 200003 + k });
  let x: tf.SymbolicTensor = pooled;
  if (cfg.mlp) {
    x = tf.layers.dense({ units: cfg.mlpHidden || width, activation: "relu", kernelInitializer: init(0), name: MOCO_FC_HIDDEN }).apply(x) as tf.SymbolicTensor;
  }
  x = tf.layers.dense({ units: cfg.dim, kernelInitializer: init(1), name: MOCO_FC }).apply(x) as tf.SymbolicTensor;
  return { encoder: tf.model({ inputs: input, outputs: x, name: "moco_encoder" }), stem };
}

/** An encoder cut at its pooled backbone features (the input of the projection head). */
export function pooledEncoder(encoder: tf.LayersModel): tf.LayersModel {
  const head = encoder.layers.find((l) => l.name === MOCO_FC_HIDDEN) ?? encoder.getLayer(MOCO_FC);
  return tf.model({ inputs: encoder.inputs, outputs: head.getInputAt(0) as tf.SymbolicTensor });
}

/** Model input → what the encoders take: the stem's feature map (inference mode), or the input itself. */
export function stemApply(state: Pick<MocoState, "stem">, x: tf.Tensor4D): tf.Tensor4D {
  return state.stem ? (state.stem.apply(x, { training: false }) as tf.Tensor4D) : x.clone();
}

/** A model's (trainable or all) weights as tf.Variables, keyed by layer-scoped name ("conv1/conv/kernel"). */
function namedVariables(model: tf.LayersModel, which: "trainable" | "all"): Map<string, tf.Variable> {
  const ws = which === "trainable" ? model.trainableWeights : model.weights;
  return new Map(ws.map((w) => [w.originalName, (w as unknown as { read(): tf.Variable }).read()]));
}

/** The weights momentumUpdate moves: the query's trainable ones paired with the key's by name. */
function encoderPairs(state: MocoState): [tf.Variable, tf.Variable][] {
  const keys = namedVariables(state.key, "all");
  return [...namedVariables(state.query, "trainable")].map(([name, q]) => {
    const k = keys.get(name);
    if (!k) throw new Error(`MoCo: key encoder has no weight '${name}' (query and key topologies differ)`);
    return [q, k];
  });
}

/** K random unit vectors (builder.py: randn(dim, K) normalised), seeded. */
function initialQueue(cfg: MocoConfig): tf.Tensor2D {
  return tf.tidy(() => l2Normalize(tf.randomNormal([cfg.queueSize, cfg.dim], 0, 1, "float32", cfg.seed + 300007)) as tf.Tensor2D);
}

/** Row-wise L2 normalisation (torch.nn.functional.normalize, eps 1e-12). */
export function l2Normalize(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, "euclidean", -1, true), 1e-12)));
}

/**
 * A fresh MoCo state: query encoder (seeded or ImageNet), key encoder = copy of it, random queue,
 * SGD with momentum.
 */
export async function createMoco(config: Partial<MocoConfig> = {}): Promise<MocoState> {
  const cfg = resolveMocoConfig(config);
  const { encoder: query, stem } = await buildEncoder(cfg);
  // Key init = query init, as builder.py's param_k.data.copy_(param_q.data) (BN statistics included).
  const { encoder: key, stem: keyStem } = await buildEncoder({ ...cfg, init: "random" });
  keyStem?.dispose(); // the stem is shared: the query's serves both
  key.setWeights(query.getWeights());
  key.trainable = false;
  const q0 = initialQueue(cfg);
  const queue = tf.variable(q0, false);
  q0.dispose();
  return {
    config: cfg,
    query,
    key,
    queue,
    queuePtr: 0,
    step: 0,
    optimizer: tf.train.momentum(cfg.lr, cfg.sgdMomentum, false),
    preprocessing: preprocessFor(cfg.backbone),
    stem,
  };
}

/** Release every tensor of a state. */
export function disposeMoco(state: MocoState): void {
  state.query.dispose();
  state.key.dispose();
  state.queue.dispose();
  state.optimizer.dispose();
  state.stem?.dispose();
}

/** builder.py `_momentum_update_key_encoder`: k ← m·k + (1 − m)·q for every trainable weight. */
export function momentumUpdate(state: MocoState): void {
  const m = state.config.momentum;
  tf.tidy(() => {
    for (const [q, k] of encoderPairs(state)) k.assign(tf.add(tf.mul(k, m), tf.mul(q, 1 - m)));
  });
}

/**
 * builder.py `_dequeue_and_enqueue`: write the keys [n, dim] into the queue at the pointer, FIFO,
 * wrapping around (MoCo asserts K % n == 0; we need not: row (ptr + i) mod K, later keys win).
 */
export function enqueue(state: MocoState, keys: tf.Tensor2D): void {
  const K = state.config.queueSize;
  const n = keys.shape[0];
  if (keys.shape[1] !== state.config.dim) throw new Error(`enqueue: keys have width ${keys.shape[1]}, the queue holds ${state.config.dim}`);
  // New queue = gather(concat(queue, keys), idx): row j keeps j or takes key i (index K + i).
  const idx = Array.from({ length: K }, (_, j) => j);
  for (let i = 0; i < n; i++) idx[(state.queuePtr + i) % K] = K + i;
  tf.tidy(() => {
    state.queue.assign(tf.gather(tf.concat([state.queue, keys], 0), tf.tensor1d(idx, "int32")));
  });
  state.queuePtr = (state.queuePtr + n) % K;
}

/** Logits [n, 1 + K]: column 0 = q·k₊ (positive), then q·queueᵀ (negatives), all / T. */
export function mocoLogits(q: tf.Tensor2D, k: tf.Tensor2D, queue: tf.Tensor2D, temperature: number): tf.Tensor2D {
  return tf.tidy(() => {
    const pos = tf.sum(tf.mul(q, k), 1, true);
    const neg = tf.matMul(q, queue, false, true);
    return tf.div(tf.concat([pos, neg], 1), temperature) as tf.Tensor2D;
  });
}

/**
 * InfoNCE: mean over queries of −log softmax(logits)[0], with logits from mocoLogits (q and k must
 * already be L2-normalised). Returns the loss and the number of queries whose positive is the argmax.
 */
export function infoNce(q: tf.Tensor2D, k: tf.Tensor2D, queue: tf.Tensor2D, temperature: number): { loss: tf.Scalar; correct: tf.Scalar } {
  return tf.tidy(() => {
    const logits = mocoLogits(q, k, queue, temperature);
    const loss = tf.neg(tf.mean(tf.slice(tf.logSoftmax(logits, 1), [0, 0], [-1, 1]))) as tf.Scalar;
    // argMax returns the first maximum, so a tie with a negative counts as correct (index 0).
    const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), 0), "float32")) as tf.Scalar;
    return { loss, correct };
  });
}

/** The key shuffle of a step: a permutation of 0..n−1 from the step seed (Fisher–Yates). */
export function keyShufflePermutation(n: number, seed: string): number[] {
  const rng = seedrandom(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * Keys of the key views: the key encoder in training mode (BN batch statistics, as MoCo's key
 * encoder), in micro-batches of a seeded permutation when shuffling (shuffle BN), un-shuffled,
 * L2-normalised. No gradient tape is open here.
 */
export function encodeKeys(state: MocoState, xk: tf.Tensor4D, seed: string): tf.Tensor2D {
  const n = xk.shape[0];
  const m = Math.min(state.config.microBatch, n);
  const perm = state.config.shuffleKeys ? keyShufflePermutation(n, `${seed}:shuffle`) : Array.from({ length: n }, (_, i) => i);
  const inverse = new Array<number>(n);
  perm.forEach((p, i) => (inverse[p] = i));
  return tf.tidy(() => {
    const shuffled = tf.gather(xk, tf.tensor1d(perm, "int32"));
    const parts: tf.Tensor[] = [];
    for (let s = 0; s < n; s += m) {
      const size = Math.min(m, n - s);
      parts.push(state.key.apply(tf.slice(shuffled, [s, 0, 0, 0], [size, -1, -1, -1]), { training: true }) as tf.Tensor);
    }
    const k = l2Normalize(tf.concat(parts, 0));
    return tf.gather(k, tf.tensor1d(inverse, "int32")) as tf.Tensor2D;
  });
}

/**
 * One MoCo pretraining step on a batch of gray images [n, H, W, 1] in [0, 1] (any H, W: the views
 * are cropped and resized to config.inputSize). Deterministic for (state, images, seed).
 *
 * Order as builder.py's forward + the optimizer step of main_moco.py: two views → momentum update
 * of the key encoder → keys (shuffle BN) → InfoNCE against the current queue, gradient over query
 * micro-batches → SGD step → enqueue the keys. Hence after a step, key = m·key + (1 − m)·query
 * with the weights from before the step.
 */
export function mocoStep(state: MocoState, batchImages: tf.Tensor4D, seed: string | number, opts: { lr?: number } = {}): MocoStepResult {
  const cfg = state.config;
  if (batchImages.rank !== 4 || batchImages.shape[3] !== 1) {
    throw new Error(`mocoStep: expected gray images [n, h, w, 1] in [0, 1], got shape [${batchImages.shape}]`);
  }
  const n = batchImages.shape[0];
  const micro = Math.min(cfg.microBatch, n);
  if (cfg.shuffleKeys && Math.ceil(n / micro) < 2) {
    throw new Error(
      `mocoStep: shuffle BN needs at least two micro-batches, but batch ${n} with microBatch ${cfg.microBatch} gives one. ` +
        `Use microBatch ≤ ${Math.floor(n / 2)} (MoCo: batch/8), or set shuffleKeys: false to accept the BN leak.`,
    );
  }
  const s = String(seed);
  const [vq, vk] = twoViews(batchImages, cfg.augment, cfg.inputSize, s);
  const xq = tf.tidy(() => stemApply(state, toModelInput(vq, state.preprocessing)));
  const xk = tf.tidy(() => stemApply(state, toModelInput(vk, state.preprocessing)));
  tf.dispose([vq, vk]);
  let keys: tf.Tensor2D | undefined;
  const correct: tf.Scalar[] = [];
  try {
    momentumUpdate(state);
    keys = encodeKeys(state, xk, s);
    const vars = namedVariables(state.query, "trainable");
    const queue = state.queue as tf.Tensor as tf.Tensor2D;
    const lossFn = (x: tf.Tensor, k: tf.Tensor): tf.Scalar => {
      const q = l2Normalize(state.query.apply(x, { training: true }) as tf.Tensor) as tf.Tensor2D;
      const r = infoNce(q, k as tf.Tensor2D, queue, cfg.temperature);
      correct.push(tf.keep(r.correct));
      return r.loss;
    };
    let result: ReturnType<typeof accumulateGradients>;
    try {
      result = accumulateGradients(lossFn, xq, keys, micro, { vars: [...vars.values()] });
    } catch (e) {
      releaseFailedTape();
      throw e;
    }
    const grads = tf.tidy(() => {
      const g: tf.NamedTensorMap = {};
      // Same key order as `vars` on every step and after loadMoco: the optimizer's accumulators are positional.
      for (const v of vars.values()) {
        const gv = result.grads[v.name];
        if (gv) g[v.name] = cfg.weightDecay > 0 ? tf.add(gv, tf.mul(v, cfg.weightDecay)) : gv.clone();
      }
      return g;
    });
    tf.dispose(result.grads);
    (state.optimizer as unknown as { learningRate: number }).learningRate = opts.lr ?? cfg.lr;
    (state.optimizer as tf.Optimizer).applyGradients(grads);
    tf.dispose(grads);
    enqueue(state, keys);
    state.step++;
    const hits = correct.reduce((a, c) => a + c.dataSync()[0], 0);
    return { loss: result.loss, accuracy: hits / n, passes: result.passes, step: state.step };
  } finally {
    tf.dispose([xq, xk, ...correct]);
    if (keys) keys.dispose();
  }
}

export interface MocoEvaluation {
  /** Mean InfoNCE of each query against the keys of all images (its own = positive), no queue. */
  loss: number;
  /** Fraction of queries whose own key is the most similar of all n keys (instance retrieval top-1). */
  accuracy: number;
}

/**
 * Instance discrimination on a fixed image set, without changing the state: one query view and
 * one key view per image (seeded), both encoders in inference mode (BN moving statistics, so no
 * BN leak and no side effect), logits q·kᵀ / T over all n keys. Comparable across steps, unlike
 * the step loss, whose queue changes as it trains.
 */
export function mocoEvaluate(state: MocoState, images: tf.Tensor4D, seed: string | number, batchSize = 64): MocoEvaluation {
  const cfg = state.config;
  const [vq, vk] = twoViews(images, cfg.augment, cfg.inputSize, String(seed));
  const encode = (model: tf.LayersModel, v: tf.Tensor4D): tf.Tensor2D =>
    tf.tidy(() => {
      const parts: tf.Tensor[] = [];
      for (let s = 0; s < v.shape[0]; s += batchSize) {
        const x = toModelInput(tf.slice(v, [s, 0, 0, 0], [Math.min(batchSize, v.shape[0] - s), -1, -1, -1]), state.preprocessing);
        parts.push(model.apply(stemApply(state, x), { training: false }) as tf.Tensor);
      }
      return l2Normalize(tf.concat(parts, 0)) as tf.Tensor2D;
    });
  const q = encode(state.query, vq);
  const k = encode(state.key, vk);
  const [loss, acc] = tf.tidy(() => {
    const logits = tf.div(tf.matMul(q, k, false, true), cfg.temperature);
    const diag = tf.range(0, q.shape[0], 1, "int32");
    const logp = tf.logSoftmax(logits, 1);
    const pos = tf.sum(tf.mul(logp, tf.oneHot(diag, q.shape[0])), 1);
    return [tf.neg(tf.mean(pos)), tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), diag), "float32"))];
  });
  const r = { loss: loss.dataSync()[0], accuracy: acc.dataSync()[0] };
  tf.dispose([vq, vk, q, k, loss, acc]);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

/** The JSON part of a checkpoint. */
interface MocoCheckpointState {
  format: "covid-ct-moco";
  version: 1;
  config: MocoConfig;
  step: number;
  queuePtr: number;
  /** The query variables in the optimizer's accumulator order (positional restore). */
  optimizerVariables: string[];
}

/**
 * Save a layers model in the standard tfjs layers format (model.json with weightsManifest + one
 * weights file), so `tf.loadLayersModel` of any tfjs program (file://, http://) can read it and
 * lib/models readWeights can load it by layer name. Written atomically file by file.
 */
export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      const data = a.weightData ?? new ArrayBuffer(0);
      const bytes = Array.isArray(data) ? Buffer.concat(data.map((d) => Buffer.from(d))) : Buffer.from(data);
      writeFileAtomic(path.join(dir, "weights.bin"), bytes);
      writeJsonAtomic(path.join(dir, "model.json"), {
        format: "layers-model",
        generatedBy: a.generatedBy,
        convertedBy: a.convertedBy ?? null,
        modelTopology: a.modelTopology,
        weightsManifest: [{ paths: ["weights.bin"], weights: a.weightSpecs ?? [] }],
      });
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
}

/** Load a folder written by saveLayersModel (or any single-group tfjs layers folder) without file://. */
export async function loadLayersModel(dir: string): Promise<tf.LayersModel> {
  const file = path.join(dir, "model.json");
  if (!fs.existsSync(file)) throw new Error(`No tfjs layers model at ${file}: expected a folder written by saveLayersModel / saveMoco.`);
  const j = JSON.parse(fs.readFileSync(file, "utf8"));
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const g of j.weightsManifest as { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[]) {
    weightSpecs.push(...g.weights);
    for (const p of g.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: j.modelTopology, weightSpecs, weightData }));
}

/**
 * Checkpoint a MoCo state into `dir` (built beside it and renamed into place, so an interrupted
 * write never leaves half a checkpoint):
 *   query/, key/   both encoders in the tfjs layers format (BN moving statistics included);
 *                  key/ is what MoCo hands on (MoCo's lincls reads encoder_q; both are here)
 *   queue.bin      the queue, float32 [K, dim] row-major
 *   optimizer.*    SGD momentum accumulators (lib/training/checkpoint.ts saveOptimizer)
 *   state.json     config, step, queue pointer
 */
export async function saveMoco(state: MocoState, dir: string): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  await saveLayersModel(state.query, path.join(tmp, "query"));
  await saveLayersModel(state.key, path.join(tmp, "key"));
  const q = await state.queue.data();
  writeFileAtomic(path.join(tmp, "queue.bin"), Buffer.from(q.buffer, q.byteOffset, q.byteLength));
  await saveOptimizer(state.optimizer, tmp);
  const st: MocoCheckpointState = {
    format: "covid-ct-moco",
    version: 1,
    config: state.config,
    step: state.step,
    queuePtr: state.queuePtr,
    optimizerVariables: [...namedVariables(state.query, "trainable").keys()],
  };
  writeJsonAtomic(path.join(tmp, "state.json"), st);
  const old = `${dir}.old-${process.pid}`;
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
}

/** Restore a state written by saveMoco; the next mocoStep continues exactly where it left off. */
export async function loadMoco(dir: string): Promise<MocoState> {
  const stFile = path.join(dir, "state.json");
  if (!fs.existsSync(stFile)) throw new Error(`No MoCo checkpoint at ${dir} (state.json missing): pass a folder written by saveMoco.`);
  const st = JSON.parse(fs.readFileSync(stFile, "utf8")) as MocoCheckpointState;
  if (st.format !== "covid-ct-moco" || st.version !== 1) {
    throw new Error(`${stFile} is not a version-1 MoCo checkpoint (format ${st.format}, version ${st.version})`);
  }
  // Rebuild from the config (random init: every weight is overwritten below), then load by position.
  // A frozen stem is not in the checkpoint (it never changes): it is rebuilt with the stored init.
  const state = await createMoco({ ...st.config, init: st.config.frozenUntil ? st.config.init : "random" });
  state.config = st.config;
  for (const [which, model] of [["query", state.query], ["key", state.key]] as const) {
    const saved = await loadLayersModel(path.join(dir, which));
    // By name: weight order depends on trainability (the key encoder's weights are all non-trainable).
    const src = namedVariables(saved, "all");
    for (const [name, v] of namedVariables(model, "all")) {
      const t = src.get(name);
      if (!t || t.shape.join() !== v.shape.join()) throw new Error(`${path.join(dir, which)}: weight '${name}' is missing or has another shape`);
      v.assign(t);
    }
    saved.dispose();
  }
  const buf = fs.readFileSync(path.join(dir, "queue.bin"));
  const K = st.config.queueSize;
  const dim = st.config.dim;
  if (buf.byteLength !== 4 * K * dim) throw new Error(`${path.join(dir, "queue.bin")}: ${buf.byteLength} bytes, expected ${4 * K * dim} (K ${K} × dim ${dim} float32)`);
  const q = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  tf.tidy(() => state.queue.assign(tf.tensor2d(q, [K, dim])));
  state.queuePtr = st.queuePtr;
  state.step = st.step;
  if (fs.existsSync(path.join(dir, "optimizer.json"))) await loadOptimizer(state.optimizer, dir);
  return state;
}
