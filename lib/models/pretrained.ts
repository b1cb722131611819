/**
 * The backbone of a self-supervised pretraining run (CSSL, lib/ssl/pretrain.ts) loaded into a model:
 * the weight loader that pretraining's own checks and fine-tuning (lib/diagnosis) share.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { METRICS_FILE, readRunManifest } from "../runs/dir";
import { isHeadLayer, isModelName, ModelName } from "./common";
import { buildModel } from "./index";
import { assignWeightsByName, readWeights } from "./weights";

/** Manifest kind of a pretraining run (loadPretrainedBackbone checks it). */
export const PRETRAIN_KIND = "cssl-pretrain";
/** The pretraining run's folder holding the trained encoder (a tfjs layers model). */
export const ENCODER_DIR = "encoder";

/**
 * Initialise a model for fine-tuning from a finished pretraining run (`--init checkpoint:DIR`):
 * every backbone weight of the run's encoder/ is copied into `model` (built by buildModel(same
 * name, {includeHead: false or true, channels 3 or more})) by layer name. A first convolution
 * with more input channels (lung mask) takes the pretrained filters for channels 0–2 and zeros for
 * the rest (`adaptChannels: "zeros"`, as loadImagenetWeights). The classification head (covid_*)
 * is skipped and keeps its init; other weights of `model` absent from the file (ASPP, lesion
 * layers, …) keep their init and are listed in `notInFile`;
 * `backboneLeftAtInit` lists backbone weights of the pretrained model that were not written (empty
 * for a proper run). Refuses an unfinished run and a model of another architecture.
 */
export async function loadPretrainedBackbone(
  model: tf.LayersModel,
  runDir: string,
  opts: { adaptChannels?: "zeros" } = {},
): Promise<{ loaded: number; notInFile: string[]; backboneLeftAtInit: string[] }> {
  const dir = path.resolve(runDir);
  const m = readRunManifest(dir);
  if (!m || m.kind !== PRETRAIN_KIND) throw new Error(`${dir} is not a pretraining run (no manifest of kind ${PRETRAIN_KIND}): pass the directory \`covid-ct pretrain\` wrote.`);
  const encoderDir = path.join(dir, ENCODER_DIR);
  if (!fs.existsSync(path.join(dir, METRICS_FILE)) || !fs.existsSync(path.join(encoderDir, "model.json"))) {
    throw new Error(`The pretraining run ${dir} is not finished (no metrics.json / encoder/): finish it with \`covid-ct pretrain … --resume\` first.`);
  }
  const pretrained = (m.extra as { modelBuilt?: string } | undefined)?.modelBuilt ?? (m.config as { modelBuilt?: string }).modelBuilt;
  const { tensors } = readWeights(encoderDir);
  const fileNames = Object.keys(tensors);
  const r = assignWeightsByName(model, tensors, { adaptChannels: opts.adaptChannels ?? "error", missing: "keep-init" });
  if (r.problems.length) {
    throw new Error(
      `The encoder of ${dir} (pretrained ${pretrained}) does not fit this model (${r.problems.length} problems):\n  ${r.problems.slice(0, 6).join("\n  ")}\n` +
        `Build the model with buildModel('${pretrained}', …)` + (r.problems.some((p) => p.startsWith("shape")) ? "; a 4-channel input needs adaptChannels: 'zeros'." : "."),
    );
  }
  // Backbone weights of the pretrained architecture the target has but did not get (a corrupt encoder).
  const file = new Set(fileNames);
  const ref = isModelName(pretrained ?? "") ? buildModel(pretrained as ModelName, { includeHead: false, inputSize: 64 }) : null;
  const refNames = new Set(ref ? ref.model.weights.map((w) => w.originalName) : fileNames);
  ref?.model.dispose();
  const backboneLeftAtInit = model.layers
    .filter((l) => !isHeadLayer(l.name))
    .flatMap((l) => l.weights.map((w) => w.originalName))
    .filter((name) => refNames.has(name) && !file.has(name));
  return { loaded: r.loaded, notInFile: r.notInFile, backboneLeftAtInit };
}
