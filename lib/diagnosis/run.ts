/**
 * The diagnosis run every study shares (Tables 5, 6 and 7): one model × one positive training set ×
 * one seed, validated, trained by the engine, tested once with the checkpoint chosen on validation
 * AUC, and written into a run directory — or a finished identical run reused.
 */
import * as tf from "@tensorflow/tfjs";
import * as path from "path";
import { initBackend } from "../backend";
import { resolveCovidSegRoot, resolveLunaRoot } from "../config";
import { makeManifest, writeManifest } from "../manifest";
import { writeProtocol } from "../protocols";
import { openRun, PredictionRow, writePredictions } from "../runs";
import { predictProbabilities, trainModel, TrainingTask } from "../training/loop";
import { lesionSegmentation, MultiTaskSource, predictMultiTask } from "../training/multitask";
import { StudyProfile } from "../training/profiles";
import { writeJsonAtomic } from "../util/fs";
import { checkDiagnosisConfig, defaultRunDir, DiagnosisConfig, DiagnosisHooks, inputChecksums, recordedConfig, SHORTCUT_MODEL } from "./config";
import { DiagnosisData, diagnosisData } from "./data";
import { LungMaskProvider } from "./masks";
import { backboneInit, prepareBackbone, prepareMaskRun, prepareShortcut } from "./prepare";
import { DiagnosisInterrupted, DiagnosisMetrics, DiagnosisResult, metricsFromPredictions, readHistory, readRunMetrics, writeLesionPredictions } from "./results";

/**
 * Where the lung masks of Study II runs come from: the residual U-Net of the profile (lib/lungs),
 * trained on the classical extractor's pseudo labels — trained once, then reused by every run.
 */
async function lungMaskProvider(profile: StudyProfile, log: (m: string) => void): Promise<LungMaskProvider> {
  const { studyLungMasks } = await import("./lung-provider");
  return studyLungMasks(profile.name, log);
}

/** Train and evaluate one Study I cell (model × arm × seed), or reuse a finished identical run. */
export async function runDiagnosis(c: DiagnosisConfig, hooks: DiagnosisHooks = {}): Promise<DiagnosisResult | DiagnosisInterrupted> {
  const log = hooks.log ?? (() => undefined);
  // Everything is validated before the run directory is touched.
  const profile = checkDiagnosisConfig(c);
  const data = await diagnosisData(c.positives, c.seed, { protocol: c.protocol, dataRoot: c.dataRoot, medsegRoot: c.medsegRoot, limitPerClass: profile.limitPerClass });
  const rec = recordedConfig(c, profile);
  // The protocol's membership hash: a changed protocol never reuses or resumes an old run.
  const checksums: Record<string, string> = { ...inputChecksums(c, profile), [`protocol/${data.protocol.name}`]: data.protocol.hash };
  // Study II: the lung masks are the U-Net's; its weights are an input of the run like the data.
  const lungs = c.lungMask ? await lungMaskProvider(profile, log) : null;
  if (lungs) checksums[`lungs/${profile.name}`] = lungs.id;
  const run = openRun({
    out: c.out,
    defaultDir: defaultRunDir(c),
    kind: rec.study,
    config: rec,
    checksums,
    resume: c.resume,
    force: c.force,
    protect: [rec.dataRoot, rec.medsegRoot, resolveCovidSegRoot().dir, resolveLunaRoot().dir, ...(c.weightsRoot ? [c.weightsRoot] : [])],
  });
  if (run.state === "reused") {
    log(`reusing finished run ${run.dir}`);
    return { config: c, runDir: run.dir, metrics: readRunMetrics(run.dir), history: readHistory(run.dir), modelBuilt: rec.modelBuilt, reused: true, interrupted: false };
  }
  try {
    const r = await trainAndEvaluate(c, profile, data, rec, checksums, lungs, run.workDir, hooks);
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

async function trainAndEvaluate(
  c: DiagnosisConfig,
  profile: StudyProfile,
  data: DiagnosisData,
  rec: ReturnType<typeof recordedConfig>,
  checksums: Record<string, string>,
  lungs: LungMaskProvider | null,
  runDir: string,
  hooks: DiagnosisHooks,
): Promise<DiagnosisMetrics | "interrupted"> {
  const log = hooks.log ?? (() => undefined);
  await initBackend();
  const modelName = rec.modelBuilt;
  if (modelName !== c.model) log(`profile ${profile.name}: ${c.model} is replaced by ${modelName} (run directory and tables name ${modelName})`);
  // The membership beside the run: which image was in which split, as this run saw it.
  writeProtocol(data.protocol, path.join(runDir, "protocol.json"));
  const protocol = { name: data.protocol.name, version: data.protocol.version, seed: data.protocol.seed, hash: data.protocol.hash, file: "protocol.json" };
  writeManifest(runDir, makeManifest(rec.study, rec, checksums, c.seed, { examples: { train: data.train.length, val: data.val.length, test: data.test.length, medsegTest: data.medsegTest.length }, modelBuilt: modelName, protocol }));
  const prepared =
    modelName === SHORTCUT_MODEL
      ? await prepareShortcut(c, profile, data, runDir, log)
      : c.lungMask || c.lesionMask
        ? await prepareMaskRun(c, profile, data, modelName, backboneInit(c, profile, modelName, checksums, log), lungs, runDir, hooks)
        : await prepareBackbone(c, profile, data, modelName, checksums, runDir, hooks);
  const { trainable, sources } = prepared;
  const opt = tf.train.adam(profile.schedule.lr);
  try {
    const result = await trainModel(trainable, opt, prepared.task as TrainingTask, sources.train, sources.val, {
      epochs: c.epochs ?? profile.epochs,
      batchSize: profile.batchSize,
      microBatch: profile.microBatch,
      schedule: profile.schedule,
      seed: c.seed,
      runDir,
      resume: c.resume,
      stopAfterEpochs: c.stopAfterEpochs,
      onStep: hooks.onStep,
      onEpoch: hooks.onEpoch,
    });
    if (result.interrupted) return "interrupted";
    // Test once, with the checkpoint selected on validation AUC.
    const rows: PredictionRow[] = [];
    const lesion: NonNullable<DiagnosisMetrics["lesion"]> = { medsegTest: null, val: null, size: prepared.lesionSize ?? 0 };
    for (const [set, src] of [["val", sources.val], ["test", sources.test], ["medseg-test", sources.medseg]] as const) {
      let probs: number[];
      if (prepared.lesionSize) {
        const mt = await predictMultiTask(trainable, src as MultiTaskSource);
        probs = mt.probs;
        if (set === "val") lesion.val = lesionSegmentation(src as MultiTaskSource, mt.lesion);
        if (set === "medseg-test") {
          lesion.medsegTest = lesionSegmentation(src as MultiTaskSource, mt.lesion);
          writeLesionPredictions(runDir, src.ids, mt.lesion, prepared.lesionSize);
        }
      } else probs = await predictProbabilities(trainable, src);
      probs.forEach((p, i) => rows.push({ set, file: src.ids[i], label: src.labels[i], probability: p }));
    }
    writePredictions(path.join(runDir, "predictions.csv"), rows);
    const metrics: DiagnosisMetrics = { ...metricsFromPredictions(rows, result.bestEpoch, c.seed), ...(prepared.lesionSize ? { lesion } : {}) };
    writeJsonAtomic(path.join(runDir, "metrics.json"), metrics);
    return metrics;
  } finally {
    opt.dispose();
    prepared.dispose();
  }
}
