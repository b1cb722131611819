/**
 * CSSL pretraining as a run (paper Section 4: MoCo on CT images, then fine-tuning): MoCo
 * (lib/ssl/moco.ts) over the protocol's TRAINING images of every source and both classes, labels
 * unused; no validation or test image is ever seen by the pretraining. The validation images serve
 * only the label-free k-NN probe that monitors the features (lib/ssl/probe.ts).
 *
 * A run directory (lib/runs openRun: reuse, --resume, --force, lock), default
 * runs/cssl/<protocol>/<profile>/moco-<built model>-<init>-seed<N>:
 *   manifest.json    config, checksums (data, weights, protocol hash), git; `pretraining`: method,
 *                    variant, images (protocol ids used), queueSize, momentum, temperature, …
 *   protocol.json    the protocol membership as this run saw it
 *   history.json     [{epoch 0: probe of the init weights}, {epoch e: loss, accuracy, lr, steps, probe?}]
 *   checkpoints/last saveMoco: both encoders, queue + pointer, SGD state, step (→ epoch); the
 *                    permutation and augmentation of a step depend only on (seed, epoch, step), so a
 *                    resumed run repeats the uninterrupted one exactly
 *   encoder/         the query BACKBONE (stem included) as a tfjs layers model whose layer names are
 *                    buildModel(model)'s (includeHead false): what fine-tuning loads
 *   metrics.json     probe.initial / probe.final, last epoch's loss and accuracy (written last: the run is finished)
 *
 * Schedule: MoCo v2's cosine, lr·½(1 + cos(π·e/E)) set once per epoch e = 0…E−1 (main_moco.py
 * adjust_learning_rate, --cos), over the run's E epochs. Batches: a seeded permutation per epoch,
 * drop_last as MoCo's loader.
 *
 * Colour jitter on grayscale CT: saturation (0.4), hue (0.1) and random grayscale (p 0.2) are exact
 * no-ops on a gray image (lib/ssl/augment.ts GRAYSCALE_NOOP_TERMS) and are not computed; brightness
 * and contrast (0.4, in random order, p 0.8), the crop (area 0.2–1), flip and blur are. Nothing
 * replaces the lost terms by default (paper-faithful); MocoAugmentConfig.gamma (a random CT-window-
 * like intensity curve) is the named knob for an ablation.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot } from "../config";
import { makeManifest, sha256OfManifest, writeManifest } from "../manifest";
import { buildModel, isModelName, ModelName, MODEL_NAMES } from "../models";
import { findWeightsDir, hasImagenetWeights, weightsChecksum } from "../models/weights";
import { isProtocolName, Protocol, protocolExamples, PROTOCOL_NAMES, ProtocolName, selectProtocol, writeProtocol } from "../protocols";
import { METRICS_FILE, openRun } from "../runs";
import { Example, loadGrayImages } from "../data/examples";
import { grayBatch, toModelInput } from "../models/input";
import { requireInteger } from "../util/checks";
import { cosineLr } from "../training/schedule";
import { PROFILE_NAMES, ProfileName } from "../training/profiles";
import { writeJsonAtomic } from "../util/fs";
import { permutationOf, rngFor, sampleWithoutReplacement } from "../util/random";
import { MOCO_V2_AUGMENT, GRAYSCALE_NOOP_TERMS } from "./augment";
import { createMoco, disposeMoco, loadMoco, MOCO_V1, MocoConfig, MocoState, mocoStep, pooledEncoder, resolveMocoConfig, saveLayersModel, saveMoco, stemApply } from "./moco";
import { knnProbe, KnnProbeConfig } from "./probe";

export const PRETRAIN_METHODS = ["moco"] as const;
export type PretrainMethod = (typeof PRETRAIN_METHODS)[number];
export const PRETRAIN_INITS = ["imagenet", "random"] as const;
export type PretrainInit = (typeof PRETRAIN_INITS)[number];
import { ENCODER_DIR, PRETRAIN_KIND } from "../models/pretrained";
export { ENCODER_DIR, loadPretrainedBackbone, PRETRAIN_KIND } from "../models/pretrained";

/** The k-NN probe's knobs within a profile. */
export interface ProbeSettings {
  /** Probe at epoch 0 (init weights), every `every` epochs and after the last. 0 = only at 0 and the end. */
  every: number;
  /** k-NN neighbours and vote temperature (lib/ssl/probe.ts). */
  knn: KnnProbeConfig;
  /** Seeded subset of the training images as the probe's labelled memory; undefined = all. */
  maxTrain?: number;
  /** Seeded subset of the validation images probed; undefined = all. */
  maxVal?: number;
}

/** Everything a pretraining profile fixes; every field is recorded in the manifest. */
export interface PretrainProfile {
  name: ProfileName;
  /** MoCo v1 (linear head, T 0.07, no blur) or v2 (MLP head, T 0.2, blur: the paper's augmentation). */
  variant: "v1" | "v2";
  /** MoCo settings over MOCO_V2_PAPER (the variant's head/temperature are applied first, these win). */
  moco: Partial<Omit<MocoConfig, "backbone" | "init" | "seed" | "weightsRoot">>;
  /** Side at which the gray chest crops are loaded; the views are random resized crops of it. */
  loadSize: number;
  epochs: number;
  /** Seeded subset of the protocol's training images pretrained on; undefined = all. */
  maxImages?: number;
  /** Replace the model by its tiny stand-in (tests); its init is then random (no ImageNet weights). */
  tinyModels: boolean;
  probe: ProbeSettings;
}

/**
 * Profiles. All use MoCo v2 (MLP head, T = 0.2): the paper's augmentation (blur, grayscale) is
 * v2's aug_plus, so v2 is what the paper ran; `variant: "v1"` (T = 0.07, linear head) is an override.
 */
export const PRETRAIN_PROFILES: Record<ProfileName, PretrainProfile> = {
  // The paper's settings, meant for a GPU: queue 512, SGD 0.015/0.9/1e-4, batch 128, m 0.999, T 0.2,
  // views 224² cropped from 256² chest crops (MoCo's ImageNet pipeline), whole backbone trains.
  // Epochs: the paper does not say; MoCo v2's 200.
  paper: {
    name: "paper",
    variant: "v2",
    moco: { inputSize: 224, queueSize: 512, momentum: 0.999, temperature: 0.2, lr: 0.015, batchSize: 128, microBatch: 32, frozenUntil: "" },
    loadSize: 256,
    epochs: 200,
    tinyModels: false,
    probe: { every: 10, knn: { k: 20, temperature: 0.07 } },
  },
  // 2 CPU cores, ≤ 6 min: DenseNet-169 from ImageNet at 112²; the stem up to pool4 is frozen and
  // runs in inference mode, only the last dense block + final BN + MLP head train. A seeded 256 of
  // the training images (all sources, both classes), batch 64 in 2 BN groups of 32, queue 192
  // (< images − batch: an image's previous key has left the queue when it comes again), key
  // momentum 0.99 (with ~20 steps 0.999 would leave the key encoder at its init). Probe memory: a
  // seeded 256 training images; all validation images.
  // Measured (seed 1, 2 shared cores at load 7–9, so not alone): 9:06 wall, 343 s CPU (paper
  // protocol); loss 4.32 / 5.25 / 5.21 / 5.02 (chance with K = 256: ln 257 = 5.55), top-1 0.35 /
  // 0.13 / 0.15 / 0.17; k-NN AUC 1.000 → 1.000 (paper val = COVID-Seg vs LUNA: at ceiling from
  // ImageNet already); official protocol 0.669 → 0.675. A short run: it shows the pipeline, not a gain.
  quick: {
    name: "quick",
    variant: "v2",
    moco: { inputSize: 112, queueSize: 192, momentum: 0.99, temperature: 0.2, lr: 0.015, batchSize: 64, microBatch: 32, frozenUntil: "pool4_pool" },
    loadSize: 128,
    epochs: 4,
    // 256 images (queue 192 = images − batch): notebook 04 pretrains twice (from ImageNet, from
    // random) within its 20-minute budget; the measurement above was with 320 images, queue 256.
    maxImages: 256,
    tinyModels: false,
    probe: { every: 0, knn: { k: 20, temperature: 0.07 }, maxTrain: 256 },
  },
  // Tests: tiny-densenet at 32², a dozen images, 2 epochs, 3 steps of 4 per epoch, tiny probe.
  smoke: {
    name: "smoke",
    variant: "v2",
    moco: { inputSize: 32, dim: 16, queueSize: 8, momentum: 0.99, temperature: 0.2, lr: 0.05, batchSize: 4, microBatch: 2, frozenUntil: "" },
    loadSize: 40,
    epochs: 2,
    maxImages: 12,
    tinyModels: true,
    probe: { every: 1, knn: { k: 5, temperature: 0.07 }, maxTrain: 12, maxVal: 8 },
  },
};

export function getPretrainProfile(name: string): PretrainProfile {
  if (!(PROFILE_NAMES as readonly string[]).includes(name)) throw new Error(`Unknown profile '${name}'. Use one of: ${PROFILE_NAMES.join(", ")}.`);
  return structuredClone(PRETRAIN_PROFILES[name as ProfileName]);
}

export interface PretrainConfig {
  method: PretrainMethod;
  /** Backbone (paper: densenet169); the smoke profile builds its tiny stand-in. */
  model: ModelName;
  /** "imagenet" (the paper's CSSL: ImageNet + MoCo) or "random". */
  init: PretrainInit;
  /** Whose training images (default "paper": COVID-CT + COVID-Seg + LUNA training images). */
  protocol?: ProtocolName;
  profile: ProfileName;
  seed: number;
  /** Run directory; default runs/cssl/<protocol>/<profile>/moco-<built>-<init>-seed<N>. */
  out?: string;
  resume?: boolean;
  force?: boolean;
  /** Override the profile's epochs (the cosine schedule spans the run's epochs). */
  epochs?: number;
  /** Override profile knobs (ablations, tests); recorded with the rest. */
  profileOverrides?: Partial<Omit<PretrainProfile, "name">>;
  dataRoot?: string;
  weightsRoot?: string;
  /** Stop after this many epochs in this call, as if interrupted (tests of --resume). */
  stopAfterEpochs?: number;
}

export interface ProbeRecord {
  auc: number;
  accuracy: number;
  k: number;
  nTrain: number;
  nVal: number;
}

export interface PretrainEpoch {
  /** 0 = before any step (only `probe`); 1…E after that epoch. */
  epoch: number;
  loss?: number;
  /** Top-1 positive-key accuracy among the 1 + K logits, mean over the epoch's steps. */
  accuracy?: number;
  lr?: number;
  steps?: number;
  seconds?: number;
  probe?: ProbeRecord;
}

export interface PretrainMetrics {
  probe: { initial: ProbeRecord; final: ProbeRecord };
  final: { epoch: number; loss: number; accuracy: number };
}

export interface PretrainHooks {
  log?: (msg: string) => void;
  onStep?: (s: { epoch: number; step: number; steps: number; loss: number; accuracy: number }) => void;
  onEpoch?: (e: PretrainEpoch) => void;
}

export type PretrainResult =
  | { runDir: string; history: PretrainEpoch[]; metrics: PretrainMetrics; reused: boolean; interrupted: false; modelBuilt: ModelName }
  | { runDir: string; history: PretrainEpoch[]; interrupted: true; modelBuilt: ModelName };

/** The model and init actually built (smoke: tiny model, random init). */
export function builtPretrainModel(c: Pick<PretrainConfig, "model" | "init">, p: PretrainProfile): { model: ModelName; init: PretrainInit } {
  if (!p.tinyModels) return { model: c.model, init: c.init };
  return { model: c.model.startsWith("resnet") || c.model === "tiny-resnet" ? "tiny-resnet" : "tiny-densenet", init: "random" };
}

export function defaultPretrainDir(c: Pick<PretrainConfig, "model" | "init" | "profile" | "seed" | "protocol">): string {
  const b = builtPretrainModel(c, getPretrainProfile(c.profile));
  return path.join(PROJECT_ROOT, "runs", "cssl", c.protocol ?? "paper", c.profile, `moco-${b.model}-${b.init}-seed${c.seed}`);
}

/** Validate every field before anything is read or written; returns the effective profile. */
export function checkPretrainConfig(c: PretrainConfig): PretrainProfile {
  if (!(PRETRAIN_METHODS as readonly string[]).includes(c.method)) throw new Error(`Unknown method '${c.method}'. Use one of: ${PRETRAIN_METHODS.join(", ")}.`);
  if (!isModelName(c.model)) throw new Error(`Unknown model '${c.model}'. Use one of: ${MODEL_NAMES.join(", ")}.`);
  if (!(PRETRAIN_INITS as readonly string[]).includes(c.init)) throw new Error(`Unknown init '${c.init}'. Use one of: ${PRETRAIN_INITS.join(", ")}.`);
  const protocol = c.protocol ?? "paper";
  if (!isProtocolName(protocol)) throw new Error(`Unknown protocol '${protocol}'. Use one of: ${PROTOCOL_NAMES.join(", ")}.`);
  const base = getPretrainProfile(c.profile);
  const p: PretrainProfile = { ...base, ...(c.profileOverrides ?? {}), name: base.name };
  requireInteger("--seed", c.seed, 0);
  if (c.epochs !== undefined) requireInteger("--epochs", c.epochs, 1, 100000);
  if (c.resume && c.force) throw new Error("--resume and --force contradict each other: --resume continues the stored run, --force replaces it. Use one.");
  const b = builtPretrainModel(c, p);
  if (b.init === "imagenet" && !hasImagenetWeights(b.model)) throw new Error(`No ImageNet weights exist for '${b.model}': use --init random, or densenet169 / resnet50.`);
  resolveMocoConfig(mocoConfigOf(c, p)); // MoCo's own checks (sizes, momentum, temperature, …)
  return p;
}

/** The MoCo config of a run: paper v2 defaults ← variant ← profile; backbone/init/seed from the run. */
function mocoConfigOf(c: PretrainConfig, p: PretrainProfile): Partial<MocoConfig> {
  const b = builtPretrainModel(c, p);
  const variant = p.variant === "v1" ? MOCO_V1 : {};
  return { ...variant, ...p.moco, augment: { ...MOCO_V2_AUGMENT, ...(variant.augment ?? {}), ...(p.moco.augment ?? {}) }, backbone: b.model, init: b.init, seed: c.seed, weightsRoot: c.weightsRoot };
}

/** The images a run pretrains on and probes with (protocol training set; validation only for the probe). */
export async function pretrainData(c: PretrainConfig, p: PretrainProfile): Promise<{ protocol: Protocol; train: Example[]; probeTrain: Example[]; probeVal: Example[] }> {
  const protocol = await selectProtocol({ protocol: c.protocol ?? "paper", dataRoot: c.dataRoot });
  const all = protocolExamples(protocol, "train");
  if (all.length === 0) throw new Error(`The ${protocol.name} protocol has no training image: check its data roots (\`npx covid-ct protocol ${protocol.name}\`).`);
  const train = sampleWithoutReplacement(all, p.maxImages, rngFor("cssl", c.seed, "images"));
  const probeTrain = sampleWithoutReplacement(all, p.probe.maxTrain, rngFor("cssl", c.seed, "probe-train"));
  const probeVal = sampleWithoutReplacement(protocolExamples(protocol, "val"), p.probe.maxVal, rngFor("cssl", c.seed, "probe-val"));
  for (const [name, xs] of [["probe memory", probeTrain], ["probed validation set", probeVal]] as const) {
    if (new Set(xs.map((e) => e.label)).size < 2) throw new Error(`The k-NN ${name} (${xs.length} images) holds one class only: raise the profile's probe sizes.`);
  }
  return { protocol, train, probeTrain, probeVal };
}

/**
 * The k-NN probe's inputs: what the (frozen) stem makes of the probe images, computed once (the
 * stem never changes); without a stem, the model inputs themselves.
 */
class ProbeInputs {
  private constructor(readonly train: tf.Tensor4D, readonly val: tf.Tensor4D, readonly trainLabels: number[], readonly valLabels: number[]) {}
  static async create(state: MocoState, train: Example[], val: Example[], batch = 32): Promise<ProbeInputs> {
    const s = state.config.inputSize;
    const enc = async (xs: Example[]) => {
      const imgs = await loadGrayImages(xs, s);
      const parts: tf.Tensor4D[] = [];
      for (let i = 0; i < xs.length; i += batch) {
        const idx = Array.from({ length: Math.min(batch, xs.length - i) }, (_, j) => i + j);
        parts.push(tf.tidy(() => stemApply(state, toModelInput(grayBatch(imgs, idx, s), state.preprocessing))));
      }
      const out = tf.concat(parts, 0) as tf.Tensor4D;
      tf.dispose(parts);
      return out;
    };
    return new ProbeInputs(await enc(train), await enc(val), train.map((e) => e.label), val.map((e) => e.label));
  }
  dispose(): void {
    tf.dispose([this.train, this.val]);
  }
}

/** k-NN probe of the query backbone's pooled features (inference mode), train memory → validation. */
function runProbe(state: MocoState, inputs: ProbeInputs, knn: KnnProbeConfig, batch = 32): ProbeRecord {
  const pooled = pooledEncoder(state.query);
  const feats = (x: tf.Tensor4D): Float32Array[] => {
    const out: Float32Array[] = [];
    for (let i = 0; i < x.shape[0]; i += batch) {
      const f = tf.tidy(() => pooled.apply(tf.slice(x, [i, 0, 0, 0], [Math.min(batch, x.shape[0] - i), -1, -1, -1]), { training: false }) as tf.Tensor2D);
      const d = f.shape[1];
      const data = f.dataSync() as Float32Array;
      for (let j = 0; j < f.shape[0]; j++) out.push(data.slice(j * d, (j + 1) * d));
      f.dispose();
    }
    return out;
  };
  const r = knnProbe({ features: feats(inputs.train), labels: inputs.trainLabels }, { features: feats(inputs.val), labels: inputs.valLabels }, knn);
  return { auc: r.auc, accuracy: r.accuracy, k: r.k, nTrain: inputs.trainLabels.length, nVal: inputs.valLabels.length };
}

/**
 * The query backbone as buildModel(model) names it (includeHead false, 3 channels): stem and
 * encoder weights copied by name. Every backbone weight must be found (else the export would carry
 * a random weight silently).
 */
export function queryBackbone(state: MocoState): tf.LayersModel {
  const cfg = state.config;
  const built = buildModel(cfg.backbone, { includeHead: false, inputSize: cfg.inputSize, channels: 3, seed: cfg.seed, bnMomentum: cfg.bnMomentum });
  const src = new Map<string, tf.Tensor>();
  for (const m of [state.stem, state.query]) if (m) for (const w of m.weights) src.set(w.originalName, w.read());
  const missing: string[] = [];
  for (const w of built.model.weights) {
    const t = src.get(w.originalName);
    if (!t) missing.push(w.originalName);
    else w.write(t);
  }
  if (missing.length) {
    built.model.dispose();
    throw new Error(`MoCo backbone export: ${missing.length} weights of ${cfg.backbone} not found in the encoders, e.g. ${missing.slice(0, 3).join(", ")}`);
  }
  return built.model;
}

function readHistory(dir: string): PretrainEpoch[] {
  const f = path.join(dir, "history.json");
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, "utf8")) as PretrainEpoch[]) : [];
}

function readMetrics(dir: string): PretrainMetrics {
  return JSON.parse(fs.readFileSync(path.join(dir, METRICS_FILE), "utf8")) as PretrainMetrics;
}

/** Pretrain one encoder (method × model × init × seed) as a run directory, or reuse a finished identical run. */
export async function runPretraining(c: PretrainConfig, hooks: PretrainHooks = {}): Promise<PretrainResult> {
  const log = hooks.log ?? (() => undefined);
  const p = checkPretrainConfig(c);
  const built = builtPretrainModel(c, p);
  const epochs = c.epochs ?? p.epochs;
  const data = await pretrainData(c, p);
  const moco = resolveMocoConfig(mocoConfigOf(c, p));
  const { weightsRoot: _w, ...mocoRecorded } = moco;
  const protocolName = c.protocol ?? "paper";
  const rec = {
    study: "cssl",
    method: c.method,
    model: c.model,
    modelBuilt: built.model,
    init: c.init,
    initBuilt: built.init,
    protocol: protocolName,
    profile: p,
    seed: c.seed,
    epochs,
    moco: mocoRecorded,
    dataRoot: resolveDataRoot(c.dataRoot).dir,
    ...(protocolName === "paper" ? { covidSegRoot: resolveCovidSegRoot().dir, lunaRoot: resolveLunaRoot().dir } : {}),
  };
  const checksums: Record<string, string> = { "data/covid-ct.sha256": sha256OfManifest(), [`protocol/${data.protocol.name}`]: data.protocol.hash };
  if (built.init === "imagenet") checksums[`weights/${built.model}`] = weightsChecksum(findWeightsDir(built.model as "densenet169", c.weightsRoot)).sha256;
  const run = openRun({
    out: c.out,
    defaultDir: defaultPretrainDir(c),
    kind: PRETRAIN_KIND,
    config: rec,
    checksums,
    resume: c.resume,
    force: c.force,
    protect: [rec.dataRoot, resolveCovidSegRoot().dir, resolveLunaRoot().dir, ...(c.weightsRoot ? [c.weightsRoot] : [])],
  });
  if (run.state === "reused") {
    log(`reusing finished run ${run.dir}`);
    return { runDir: run.dir, history: readHistory(run.dir), metrics: readMetrics(run.dir), reused: true, interrupted: false, modelBuilt: built.model };
  }
  await initBackend();
  const dir = run.workDir;
  const ckpt = path.join(dir, "checkpoints", "last");
  let state: MocoState | undefined;
  let probeInputs: ProbeInputs | undefined;
  try {
    if (run.state !== "resumed" || !fs.existsSync(path.join(ckpt, "state.json"))) {
      writeProtocol(data.protocol, path.join(dir, "protocol.json"));
      const pretraining = {
        method: c.method,
        variant: p.variant,
        images: data.train.map((e) => e.id),
        queueSize: moco.queueSize,
        momentum: moco.momentum,
        temperature: moco.temperature,
        mlpHead: moco.mlp,
        batchSize: moco.batchSize,
        inputSize: moco.inputSize,
        frozenUntil: moco.frozenUntil,
        grayscaleNoOps: GRAYSCALE_NOOP_TERMS,
        probe: { train: data.probeTrain.map((e) => e.id), val: data.probeVal.map((e) => e.id) },
      };
      const protocol = { name: data.protocol.name, version: data.protocol.version, seed: data.protocol.seed, hash: data.protocol.hash, file: "protocol.json" };
      writeManifest(dir, { ...makeManifest(PRETRAIN_KIND, rec, checksums, c.seed, { modelBuilt: built.model, protocol }), pretraining } as never);
    }
    const images = await loadGrayImages(data.train, p.loadSize);
    const n = images.length;
    if (n < moco.batchSize) throw new Error(`${n} training images are fewer than one batch of ${moco.batchSize}: lower the batch size or use more images.`);
    const stepsPerEpoch = Math.floor(n / moco.batchSize);
    let history: PretrainEpoch[];
    if (fs.existsSync(path.join(ckpt, "state.json"))) {
      state = await loadMoco(ckpt);
      const done = state.step / stepsPerEpoch;
      if (!Number.isInteger(done)) throw new Error(`${ckpt}: step ${state.step} is not a whole number of epochs of ${stepsPerEpoch} steps; start again with --force.`);
      history = readHistory(dir).filter((h) => h.epoch <= done);
      if (history.length !== done + 1) throw new Error(`${dir}/history.json lacks epochs before the checkpoint (epoch ${done}); start again with --force.`);
      log(`resuming ${run.dir} after epoch ${done}`);
    } else {
      state = await createMoco({ ...moco });
      history = [];
    }
    probeInputs = await ProbeInputs.create(state, data.probeTrain, data.probeVal);
    if (history.length === 0) {
      const probe = runProbe(state, probeInputs, p.probe.knn);
      history.push({ epoch: 0, probe });
      hooks.onEpoch?.(history[0]);
    }
    let ran = 0;
    for (let e = history.length; e <= epochs; e++) {
      if (c.stopAfterEpochs !== undefined && ran >= c.stopAfterEpochs) {
        log(`stopped after epoch ${e - 1}; continue with --resume`);
        return { runDir: run.dir, history, interrupted: true, modelBuilt: built.model };
      }
      const t0 = Date.now();
      // MoCo v2 --cos: one lr per epoch, from the 0-based epoch index over the run's epochs.
      const lr = cosineLr({ lr: moco.lr, periodEpochs: epochs }, e - 1);
      const perm = permutationOf(n, rngFor("cssl", c.seed, "epoch", e));
      let loss = 0;
      let acc = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const x = grayBatch(images, perm.slice(s * moco.batchSize, (s + 1) * moco.batchSize), p.loadSize);
        try {
          const r = mocoStep(state, x, `cssl:${c.seed}:${e}:${s}`, { lr });
          loss += r.loss;
          acc += r.accuracy;
          hooks.onStep?.({ epoch: e, step: s, steps: stepsPerEpoch, loss: r.loss, accuracy: r.accuracy });
        } finally {
          x.dispose();
        }
        // Let the event loop run (SIGINT/SIGTERM handlers of the CLI) between steps.
        await new Promise((resolve) => setImmediate(resolve));
      }
      const entry: PretrainEpoch = { epoch: e, loss: loss / stepsPerEpoch, accuracy: acc / stepsPerEpoch, lr, steps: stepsPerEpoch };
      if (e === epochs || (p.probe.every > 0 && e % p.probe.every === 0)) entry.probe = runProbe(state, probeInputs, p.probe.knn);
      entry.seconds = (Date.now() - t0) / 1000;
      history.push(entry);
      // History first, then the checkpoint: on resume the history is cut back to the checkpoint's epoch.
      writeJsonAtomic(path.join(dir, "history.json"), history);
      await saveMoco(state, ckpt);
      ran++;
      hooks.onEpoch?.(entry);
    }
    const backbone = queryBackbone(state);
    await saveLayersModel(backbone, path.join(dir, ENCODER_DIR));
    backbone.dispose();
    const last = history[history.length - 1];
    const metrics: PretrainMetrics = {
      probe: { initial: history[0].probe!, final: last.probe! },
      final: { epoch: last.epoch, loss: last.loss!, accuracy: last.accuracy! },
    };
    writeJsonAtomic(path.join(dir, METRICS_FILE), metrics);
    run.finish();
    log(`k-NN probe AUC ${metrics.probe.initial.auc.toFixed(3)} → ${metrics.probe.final.auc.toFixed(3)} → ${run.dir}`);
    return { runDir: run.dir, history: readHistory(run.dir), metrics, reused: false, interrupted: false, modelBuilt: built.model };
  } catch (e) {
    const outcome = run.abandon();
    if (outcome === "kept" && e instanceof Error) e.message += `\n(The run in ${run.dir} keeps its last checkpoint: continue it with --resume.)`;
    throw e;
  } finally {
    // An early return (stopAfterEpochs) leaves the run resumable: release it like an interruption
    // (a no-op after finish or the abandon above).
    run.abandon();
    probeInputs?.dispose();
    if (state) disposeMoco(state);
  }
}
