/**
 * Scoring images from outside a run's protocol with a finished diagnosis run. Nothing here is a
 * second pipeline: the run's recorded config gives its RunContext (runContext), the images become
 * the context's only set, `prepare` builds their inputs exactly as training built the external set
 * (decode, gray, upright, chest crop, size, harmonisation, lung masks, frozen features, normalisation),
 * with the input statistics read back from the run ("read"), the selected checkpoint is loaded, and
 * predictSets predicts. So a run's own external files score what its predictions.csv says.
 */
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { Example } from "../data/examples";
import { loadWeightsInto } from "../training/checkpoint";
import { StudyProfile } from "../training/profiles";
import { STUDY_NAMES, StudyName } from "./arms";
import { DiagnosisConfig } from "./config";
import { CHANNEL_NORMALISATION_FILE, DiagnosisMetrics, NORMALISATION_FILE } from "./results";
import { prepare, predictSets, runContext } from "./run";

/** What a run directory holds, in words, for refusals ("a lung segmenter run (covid-ct lungs)"). */
const OTHER_KINDS: Record<string, string> = {
  lungs: "a lung segmenter run (covid-ct lungs); it writes masks, it does not diagnose",
  lesions: "a lesion segmenter run (covid-ct lesions); score with its lesion burden instead: --score lesion-burden",
  "lesion-score": "a lesion score run; score with it through --score lesion-burden (or lesion-logistic) instead of --run",
  "cssl-pretrain": "a MoCo pretraining run (covid-ct pretrain): an encoder without a classifier; fine-tune it with covid-ct train --init checkpoint:<dir>",
  "source-probe": "a source probe result, not a classifier",
};

/** A finished diagnosis run, checked and read: its config, profile and validation threshold. */
export interface FinishedRun {
  runDir: string;
  config: DiagnosisConfig;
  profile: StudyProfile;
  /** Youden's threshold on the run's validation set (metrics.json testAtValThreshold). */
  threshold: number;
  /** The backbone or "shortcut" (manifest config.modelBuilt). */
  modelBuilt: string;
  /** The run's own label: study, protocol, profile and directory name. */
  label: string;
}

/**
 * Read a run directory as a finished diagnosis run, or refuse it, saying what it is instead (a
 * segmenter run, a pretraining run, an unfinished run, not a run at all).
 */
export function readFinishedRun(raw: string): FinishedRun {
  if (raw.trim() === "") throw new Error("--run is empty: give a finished diagnosis run directory (e.g. runs/study1/paper/quick/densenet169-covid-seg-seed1).");
  const runDir = path.resolve(raw);
  if (!fs.existsSync(runDir)) throw new Error(`--run ${raw}: no such directory. Give a finished diagnosis run (covid-ct train writes them under runs/).`);
  if (!fs.statSync(runDir).isDirectory()) throw new Error(`--run ${raw} is a file, not a run directory.`);
  const manifestFile = path.join(runDir, "manifest.json");
  if (!fs.existsSync(manifestFile)) throw new Error(`--run ${raw} is not a run directory (no manifest.json). Give a finished diagnosis run (covid-ct train writes them under runs/).`);
  let manifest: { kind?: string; config?: Record<string, unknown> };
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
  } catch {
    throw new Error(`--run ${raw}: manifest.json is not valid JSON; the run directory is damaged.`);
  }
  const kind = String(manifest.kind ?? "");
  if (!(STUDY_NAMES as readonly string[]).includes(kind)) {
    throw new Error(`--run ${raw} is ${OTHER_KINDS[kind] ?? `a '${kind}' run`}, not a diagnosis run (${STUDY_NAMES.join(", ")}).`);
  }
  const rec = manifest.config as Record<string, any> | undefined;
  if (!rec || typeof rec !== "object" || !rec.profile || typeof rec.profile !== "object" || typeof rec.profile.name !== "string") {
    throw new Error(`--run ${raw}: manifest.json records no config.profile; the run directory is damaged or not one this version can read.`);
  }
  // What scoring reads, checked now (not after the inputs are read): the selected checkpoint and
  // the input statistics fitted in training.
  const frozen = rec.profile.strategy === "frozen-features";
  const needs = ["metrics.json", "predictions.csv", "checkpoints/best/model.json", "checkpoints/best/model.bin",
    ...(frozen && rec.modelBuilt !== "shortcut" && !rec.lungMask && !rec.lesionMask && rec.profile.standardiseFeatures ? [NORMALISATION_FILE] : []),
    ...(rec.modelBuilt === "shortcut" ? [NORMALISATION_FILE] : []),
    ...(frozen && (rec.lungMask || rec.lesionMask) ? [CHANNEL_NORMALISATION_FILE] : [])];
  const missing = needs.filter((f) => !fs.existsSync(path.join(runDir, f)));
  if (missing.length) throw new Error(`--run ${raw} is an unfinished ${kind} run (no ${missing.join(", ")}): finish it first (covid-ct train … --resume), or train it again (--force).`);
  let metrics: DiagnosisMetrics;
  try {
    metrics = JSON.parse(fs.readFileSync(path.join(runDir, "metrics.json"), "utf8")) as DiagnosisMetrics;
  } catch {
    throw new Error(`--run ${raw}: metrics.json is not valid JSON; the run directory is damaged (covid-ct evaluate --run ${raw} --write rewrites it from predictions.csv).`);
  }
  if (!Number.isFinite(metrics.testAtValThreshold?.threshold)) throw new Error(`--run ${raw}: metrics.json has no validation threshold (testAtValThreshold.threshold); rewrite it with covid-ct evaluate --run ${raw} --write.`);
  const { name, ...overrides } = rec.profile as StudyProfile;
  const config: DiagnosisConfig = {
    study: kind as StudyName,
    model: rec.model,
    positives: rec.positives,
    profile: name,
    protocol: rec.protocol,
    seed: rec.seed,
    epochs: rec.epochs,
    // The profile exactly as the run recorded it (a later change of the named profile does not move it).
    profileOverrides: overrides,
    dataRoot: rec.dataRoot,
    medsegRoot: rec.medsegRoot,
    ...(rec.lungMask ? { lungMask: true } : {}),
    ...(rec.lesionMask ? { lesionMask: true } : {}),
    ...(rec.lungProbe ? { lungProbe: rec.lungProbe } : {}),
    ...(rec.init !== undefined ? { init: rec.init } : {}),
    ...(rec.harmonise ? { harmonise: rec.harmonise } : {}),
  };
  const rel = path.relative(process.cwd(), runDir);
  return { runDir, config, profile: rec.profile, threshold: metrics.testAtValThreshold.threshold, modelBuilt: rec.modelBuilt, label: rel.startsWith("..") ? runDir : rel };
}

/**
 * The run's probability of COVID for each example, through the run's own road (see the top of
 * this file). Writes nothing into the run directory.
 */
export async function predictWithRun(run: FinishedRun, examples: readonly Example[], log: (m: string) => void = () => undefined): Promise<number[]> {
  if (examples.length === 0) return [];
  await initBackend();
  const ctx = await runContext(run.config, log);
  // The images are the context's only set, in the external set's place (predicted, never fitted).
  ctx.data = { ...ctx.data, train: [], val: [], test: [], medsegTest: [], external: [...examples] };
  const prepared = await prepare(ctx, run.runDir, { log }, "read");
  try {
    await loadWeightsInto(prepared.trainable, path.join(run.runDir, "checkpoints", "best"));
    const rows = await predictSets(prepared, ["external"], run.runDir, null);
    return rows.map((r) => r.probability);
  } finally {
    prepared.dispose();
  }
}
