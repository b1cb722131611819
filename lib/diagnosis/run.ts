/**
 * The diagnosis run every study shares (Tables 5, 6 and 7): one model × one positive training set ×
 * one seed, validated, trained by the engine, tested once with the checkpoint chosen on validation
 * AUC, and written into a run directory — or a finished identical run reused.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { resolveCovidSegRoot, resolveLunaRoot, resolveSarsRoot } from "../config";
import { makeManifest, writeManifest } from "../manifest";
import { Harmoniser } from "../data/harmonise";
import { protocolHarmoniser, writeProtocol } from "../protocols";
import { acquireRunLock, openRun, PredictionRow, RunDirError, RunLock, writePredictions } from "../runs";
import { loadWeightsInto } from "../training/checkpoint";
import { predictProbabilities, trainModel, TrainingTask } from "../training/loop";
import { lesionSegmentation, MultiTaskSource, predictMultiTask } from "../training/multitask";
import { StudyProfile } from "../training/profiles";
import { writeJsonAtomic } from "../util/fs";
import { checkDiagnosisConfig, defaultRunDir, DiagnosisConfig, DiagnosisHooks, inputChecksums, recordedConfig, SHORTCUT_MODEL } from "./config";
import { DiagnosisData, diagnosisData } from "./data";
import { LungMaskProvider } from "./masks";
import { probeUsesLungs } from "./lung-probe";
import { backboneInit, InputStats, Prepared, prepareBackbone, prepareMaskRun, prepareShortcut, SetName } from "./prepare";
import { DiagnosisInterrupted, DiagnosisMetrics, DiagnosisResult, finished, metricsFromPredictions, PREDICTION_SETS, PredictionSet, readHistory, readPredictions, readRunMetrics, writeLesionPredictions } from "./results";

/** Everything a run is made of, validated and resolved before its directory is opened. */
export interface RunContext {
  c: DiagnosisConfig;
  profile: StudyProfile;
  data: DiagnosisData;
  /** The config as recorded in the manifest (keys reuse and --resume). */
  rec: ReturnType<typeof recordedConfig>;
  checksums: Record<string, string>;
  lungs: LungMaskProvider | null;
  /** The run's harmonisation, fitted on the protocol's training images (null: none). */
  harmoniser: Harmoniser | null;
}

/**
 * Where the lung masks of Study II runs come from: the residual U-Net of the profile (lib/lungs),
 * trained on the radiologists' lung masks — trained once, then reused by every run.
 */
async function lungMaskProvider(profile: StudyProfile, log: (m: string) => void): Promise<LungMaskProvider> {
  const { studyLungMasks } = await import("./lung-provider");
  return studyLungMasks(profile.name, log);
}

/**
 * Everything a run is made of, from its config: validated, data and protocol listed, lung masks and
 * harmoniser resolved. Training (runDiagnosis) and scoring other images with a finished run
 * (lib/diagnosis/predict.ts) both start here.
 */
export async function runContext(c: DiagnosisConfig, log: (m: string) => void): Promise<RunContext> {
  const profile = checkDiagnosisConfig(c);
  const data = await diagnosisData(c.positives, c.seed, { protocol: c.protocol, dataRoot: c.dataRoot, medsegRoot: c.medsegRoot, limitPerClass: profile.limitPerClass });
  const rec = recordedConfig(c, profile);
  // The protocol's membership hash: a changed protocol never reuses or resumes an old run.
  const checksums: Record<string, string> = { ...inputChecksums(c, profile), [`protocol/${data.protocol.name}`]: data.protocol.hash };
  // Study II: the lung masks are the U-Net's; its weights are an input of the run like the data.
  const lungs = c.lungMask || (c.lungProbe && probeUsesLungs(c.lungProbe)) ? await lungMaskProvider(profile, log) : null;
  if (lungs) checksums[`lungs/${profile.name}`] = lungs.id;
  // Harmonisation's reference is an input too (a function of the training images): recorded when on.
  const harmoniser = await protocolHarmoniser(data.protocol, c.harmonise ?? "none", profile.inputSize);
  if (harmoniser) checksums[`harmonise/${harmoniser.name}`] = harmoniser.key;
  return { c, profile, data, rec, checksums, lungs, harmoniser };
}

/** Train and evaluate one run (model × arm × seed, with its variant and init), or reuse a finished identical run. */
export async function runDiagnosis(c: DiagnosisConfig, hooks: DiagnosisHooks = {}): Promise<DiagnosisResult | DiagnosisInterrupted> {
  const log = hooks.log ?? (() => undefined);
  // Everything is validated before the run directory is touched.
  const ctx = await runContext(c, log);
  const { rec, checksums } = ctx;
  const run = openRun({
    out: c.out,
    defaultDir: defaultRunDir(c),
    kind: rec.study,
    config: rec,
    checksums,
    resume: c.resume,
    force: c.force,
    protect: [rec.dataRoot, rec.medsegRoot, resolveCovidSegRoot().dir, resolveLunaRoot().dir, resolveSarsRoot().dir, ...(c.weightsRoot ? [c.weightsRoot] : [])],
  });
  if (run.state === "reused") {
    log(`reusing finished run ${run.dir}`);
    // A run finished before the external set existed gains its predictions from its checkpoint.
    await addExternalPredictions(ctx, run.dir, hooks);
    return { config: c, runDir: run.dir, metrics: readRunMetrics(run.dir), history: readHistory(run.dir), modelBuilt: rec.modelBuilt, reused: true, interrupted: false };
  }
  try {
    const r = await trainAndEvaluate(ctx, run.workDir, hooks);
    if (r === "interrupted") {
      const history = readHistory(run.workDir);
      run.abandon();
      log(`stopped after ${history.length} epochs; continue with --resume`);
      return { config: c, runDir: run.dir, history, interrupted: true };
    }
    run.finish();
    log(`test AUC ${r.test.auc.toFixed(3)}, accuracy ${r.test.accuracy.toFixed(3)}, F1 ${r.test.f1.toFixed(3)} → ${run.dir}`);
    return { config: c, runDir: run.dir, metrics: r, history: readHistory(run.dir), modelBuilt: rec.modelBuilt, reused: false, interrupted: false };
  } catch (e) {
    const outcome = run.abandon();
    if (outcome === "kept" && e instanceof Error) e.message += `\n(The run in ${run.dir} keeps its last checkpoint: continue it with --resume.)`;
    throw e;
  }
}

/** Progress callbacks of a list of runs: the run's own hooks, plus one call before each run. */
export type CellHooks = DiagnosisHooks & { onRun?: (c: DiagnosisConfig, i: number, n: number) => void };

/** Run (or reuse) every cell in order; an interrupted run is an error (tables need finished runs). */
export async function runCells(cells: readonly DiagnosisConfig[], hooks: CellHooks = {}): Promise<DiagnosisResult[]> {
  const out: DiagnosisResult[] = [];
  for (let i = 0; i < cells.length; i++) {
    hooks.onRun?.(cells[i], i, cells.length);
    out.push(finished(await runDiagnosis(cells[i], hooks)));
  }
  return out;
}

/** What the run trains and on which sources, by its model and variant (lib/diagnosis/prepare.ts); `stats` "read" takes the input statistics from a finished runDir. */
export async function prepare(ctx: RunContext, runDir: string, hooks: DiagnosisHooks, stats: InputStats = "fit"): Promise<Prepared> {
  const { c, profile, data, rec, checksums, lungs, harmoniser } = ctx;
  const log = hooks.log ?? (() => undefined);
  const modelName = rec.modelBuilt;
  return modelName === SHORTCUT_MODEL
    ? prepareShortcut(c, profile, data, runDir, log, harmoniser, stats)
    : c.lungMask || c.lesionMask
      ? prepareMaskRun(c, profile, data, modelName, backboneInit(c, profile, modelName, checksums, log), lungs, runDir, hooks, stats)
      : prepareBackbone(c, profile, data, modelName, checksums, runDir, hooks, harmoniser, lungs, stats);
}

/** predictions.csv's set names and the sources behind them, in the file's order. */
const PREDICTED: readonly [PredictionSet, SetName][] = [["val", "val"], ["test", "test"], ["medseg-test", "medseg"], ["external", "external"]];

/**
 * Predictions of the model as it is (the selected checkpoint) on the named sets; for multi-task
 * runs also the lesion masks' quality on val and MedSeg test, and the MedSeg lesion predictions file.
 */
export async function predictSets(prepared: Prepared, sets: readonly PredictionSet[], runDir: string, lesion: NonNullable<DiagnosisMetrics["lesion"]> | null): Promise<PredictionRow[]> {
  const rows: PredictionRow[] = [];
  for (const [set, name] of PREDICTED) {
    const src = prepared.sources[name];
    if (!sets.includes(set) || src.size === 0) continue;
    let probs: number[];
    if (prepared.lesionSize) {
      const mt = await predictMultiTask(prepared.trainable, src as MultiTaskSource);
      probs = mt.probs;
      if (lesion && set === "val") lesion.val = lesionSegmentation(src as MultiTaskSource, mt.lesion);
      if (lesion && set === "medseg-test") {
        lesion.medsegTest = lesionSegmentation(src as MultiTaskSource, mt.lesion);
        writeLesionPredictions(runDir, src.ids, mt.lesion, prepared.lesionSize);
      }
    } else probs = await predictProbabilities(prepared.trainable, src);
    probs.forEach((p, i) => rows.push({ set, file: src.ids[i], label: src.labels[i], probability: p }));
  }
  return rows;
}

/** The external set as the run records it in its manifest (extra.external). */
function externalRecord(data: DiagnosisData): { source: string; hash: string; n: number } | undefined {
  return data.external.length ? { source: data.protocol.external.source, hash: data.protocol.external.hash, n: data.external.length } : undefined;
}

/**
 * Frozen-feature heads stop once validation AUC reaches 1.0: the earliest best epoch is selected,
 * so no later epoch could replace it, and the run's predictions and metrics are those of all the
 * profile's epochs (measured on notebook 03's quick grid: most of its Study II heads reach 1.0 in
 * their first three epochs, and the remaining epochs were ~7 of its 12 minutes of head training).
 * Their history.json ends at that epoch. Fine-tuned runs keep every epoch and their curves.
 */
export const STOP_AT_VALIDATION_AUC = 1;

async function trainAndEvaluate(ctx: RunContext, runDir: string, hooks: DiagnosisHooks): Promise<DiagnosisMetrics | "interrupted"> {
  const { c, profile, data, rec, checksums } = ctx;
  const log = hooks.log ?? (() => undefined);
  await initBackend();
  const modelName = rec.modelBuilt;
  if (modelName !== c.model) log(`profile ${profile.name}: ${c.model} is replaced by ${modelName} (run directory and tables name ${modelName})`);
  // The membership beside the run: which image was in which split, as this run saw it.
  writeProtocol(data.protocol, path.join(runDir, "protocol.json"));
  const protocol = { name: data.protocol.name, version: data.protocol.version, seed: data.protocol.seed, hash: data.protocol.hash, file: "protocol.json" };
  const external = externalRecord(data);
  writeManifest(runDir, makeManifest(rec.study, rec, checksums, c.seed, { examples: { train: data.train.length, val: data.val.length, test: data.test.length, medsegTest: data.medsegTest.length }, modelBuilt: modelName, protocol, ...(external ? { external } : {}) }));
  const prepared = await prepare(ctx, runDir, hooks);
  const opt = tf.train.adam(profile.schedule.lr);
  try {
    const result = await trainModel(prepared.trainable, opt, prepared.task as TrainingTask, prepared.sources.train, prepared.sources.val, {
      epochs: c.epochs ?? profile.epochs,
      batchSize: profile.batchSize,
      microBatch: profile.microBatch,
      schedule: profile.schedule,
      seed: c.seed,
      runDir,
      resume: c.resume,
      stopAfterEpochs: c.stopAfterEpochs,
      ...(profile.strategy === "frozen-features" ? { stopAtCeiling: STOP_AT_VALIDATION_AUC } : {}),
      onStep: hooks.onStep,
      onEpoch: hooks.onEpoch,
    });
    if (result.interrupted) return "interrupted";
    // Test once, with the checkpoint selected on validation AUC; the external set is only predicted.
    const lesion: NonNullable<DiagnosisMetrics["lesion"]> = { medsegTest: null, val: null, size: prepared.lesionSize ?? 0 };
    const rows = await predictSets(prepared, PREDICTION_SETS, runDir, lesion);
    writePredictions(path.join(runDir, "predictions.csv"), rows);
    const metrics: DiagnosisMetrics = { ...metricsFromPredictions(rows, result.bestEpoch, c.seed), ...(prepared.lesionSize ? { lesion } : {}) };
    writeJsonAtomic(path.join(runDir, "metrics.json"), metrics);
    return metrics;
  } finally {
    opt.dispose();
    prepared.dispose();
  }
}

/**
 * A finished run without external predictions (it finished before the external set existed)
 * gains them from its selected checkpoint, without retraining: the model is prepared as in
 * training, the best checkpoint loaded, the external set predicted and appended to
 * predictions.csv, metrics.json recomputed (its lesion block kept) and the manifest told. Nothing
 * else of the run changes; its config and checksums stay as they were, so it is still reused.
 */
export async function addExternalPredictions(ctx: RunContext, runDir: string, hooks: DiagnosisHooks = {}): Promise<boolean> {
  const { c, data } = ctx;
  const file = path.join(runDir, "predictions.csv");
  if (data.external.length === 0 || !fs.existsSync(file)) return false;
  const before = readPredictions(file);
  if (before.some((r) => r.set === "external")) return false;
  const best = path.join(runDir, "checkpoints", "best");
  if (!fs.existsSync(path.join(best, "model.json"))) throw new Error(`${runDir} has no checkpoints/best/model.json: its external predictions cannot be added without retraining. Re-create the run with \`covid-ct train --force\`.`);
  const log = hooks.log ?? (() => undefined);
  let lock: RunLock;
  try {
    lock = acquireRunLock(runDir);
  } catch (e) {
    // Another process holds the run (it may be adding the same predictions): leave it to that one.
    if (e instanceof RunDirError) { log(`external predictions not added to ${runDir} now: ${e.message}`); return false; }
    throw e;
  }
  try {
    // Checked again under the lock: another process may have added them meanwhile.
    if (readPredictions(file).some((r) => r.set === "external")) return false;
    log(`adding predictions on the external set (${data.external.length} images) to ${runDir} from its selected checkpoint`);
    await initBackend();
    const prepared = await prepare(ctx, runDir, hooks);
    try {
      await loadWeightsInto(prepared.trainable, best);
      const rows = [...readPredictions(file), ...(await predictSets(prepared, ["external"], runDir, null))];
      const old = readRunMetrics(runDir);
      writePredictions(file, rows);
      const metrics: DiagnosisMetrics = { ...metricsFromPredictions(rows, old.bestEpoch, c.seed), ...(old.lesion ? { lesion: old.lesion } : {}) };
      writeJsonAtomic(path.join(runDir, "metrics.json"), metrics);
      const manifest = JSON.parse(fs.readFileSync(path.join(runDir, "manifest.json"), "utf8"));
      manifest.extra = { ...(manifest.extra ?? {}), external: { ...externalRecord(data), addedAt: new Date().toISOString(), from: "checkpoints/best (added after training)" } };
      writeJsonAtomic(path.join(runDir, "manifest.json"), manifest);
    } finally {
      prepared.dispose();
    }
  } finally {
    lock.release();
  }
  return true;
}
