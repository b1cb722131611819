/**
 * What every table of Tables 5–7 computes from finished diagnosis runs: a set's predictions, the
 * bootstrap interval of a seed-mean, and seed-averaged ROC curves.
 */
import * as path from "path";
import seedrandom from "seedrandom";
import { DiagnosisResult, PredictionRow, readPredictions } from "../diagnosis/results";
import { metricFn, rocAuc, rocCurve } from "../evaluation";
import type { SourceProbeResult } from "../diagnosis/source-probe";
import { Figure, tableBundle } from "../plots";
import { escapeHtml } from "../util/html";

/** What these cells read of a run: its directory (predictions.csv) and metrics — a diagnosis run or a lesion score run. */
export type ScoredRun = Pick<DiagnosisResult, "runDir" | "metrics">;

/** One set's rows of a run's predictions.csv. */
export function predictionsOf(r: ScoredRun, set: PredictionRow["set"]): PredictionRow[] {
  return readPredictions(path.join(r.runDir, "predictions.csv")).filter((p) => p.set === set);
}

/**
 * 95 % bootstrap interval of the seed-mean of a test metric: resample test images, recompute the
 * metric for every seed's predictions on the resample, average over seeds.
 */
export function seedMeanBootstrap(runs: readonly ScoredRun[], metric: "accuracy" | "f1" | "auc", n = 1000, seed = 0, set: "test" | "external" = "test"): [number, number] {
  const preds = runs.map((r) => predictionsOf(r, set));
  const labels = preds[0].map((p) => p.label);
  const f = metricFn(metric, 0.5);
  const rng = seedrandom(set === "test" ? `seedmean:${metric}:${seed}` : `seedmean:${set}:${metric}:${seed}`);
  const vals: number[] = [];
  for (let b = 0; b < n; b++) {
    const idx = labels.map(() => Math.floor(rng() * labels.length));
    const per = preds.map((ps) => f(idx.map((i) => ps[i].label), idx.map((i) => ps[i].probability)));
    const v = per.reduce((a, x) => a + x, 0) / per.length;
    if (Number.isFinite(v)) vals.push(v);
  }
  vals.sort((a, b) => a - b);
  const q = (p: number) => vals[Math.min(vals.length - 1, Math.max(0, Math.floor(p * (vals.length - 1))))];
  return [q(0.025), q(0.975)];
}

/** One ROC curve per group of runs (the seeds of one cell; probabilities averaged over them), on the test or the external set. */
export function rocFigureOf(title: string, curves: readonly { name: string; runs: readonly ScoredRun[] }[], set: "test" | "external" = "test"): Figure {
  const data: Record<string, unknown>[] = [];
  for (const { name, runs } of curves) {
    if (set === "external" && !hasExternal(runs)) continue;
    const preds = runs.map((r) => predictionsOf(r, set));
    const labels = preds[0].map((p) => p.label);
    const mean = preds[0].map((_, i) => preds.reduce((a, ps) => a + ps[i].probability, 0) / preds.length);
    const pts = rocCurve(labels, mean);
    data.push({ type: "scatter", mode: "lines", name: `${name} (AUC ${rocAuc(labels, mean).auc.toFixed(3)})`, x: pts.map((p) => p.fpr), y: pts.map((p) => p.tpr) });
  }
  data.push({ type: "scatter", mode: "lines", name: "chance", x: [0, 1], y: [0, 1], line: { dash: "dot", color: "#999" } });
  return {
    data,
    layout: {
      title: { text: `ROC on the ${set === "test" ? "test set" : "external set (São Paulo, one hospital)"} — ${title} (probabilities averaged over seeds)` },
      xaxis: { title: { text: "false positive rate" }, range: [0, 1] },
      yaxis: { title: { text: "true positive rate (COVID)" }, range: [0, 1] },
      height: 420,
    },
  };
}

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");

/** Every run of the group predicted the external set. */
export function hasExternal(runs: readonly ScoredRun[]): boolean {
  return runs.length > 0 && runs.every((r) => !!r.metrics.external);
}

/**
 * What every table says under its external columns: what the set is and how to read it.
 * (Kept short; notebooks 02–04 and the README say more.)
 */
export const EXTERNAL_NOTE =
  "External = 311 São Paulo slices (SARS-CoV-2 CT-scan dataset; 157 COVID, 154 non-COVID, some with other lung disease), both classes scanned and " +
  "exported in one hospital, so the file's source cannot give the label away: the only column here that source cannot explain. Never trained on, never " +
  "used for a checkpoint, a threshold or pretraining. No patient ids: its intervals are per slice (optimistic). Its slices are lung-window crops " +
  "(soft tissue near white), unlike the training sources: a model also meets a new look there, so an AUC near 50 says its features did not " +
  "carry COVID-19 findings to this hospital — not by itself why.";

/** External AUC of a group: mean ± sd over seeds [95 % bootstrap CI of the seed mean], in %. */
export function externalAucCell(runs: readonly ScoredRun[]): string {
  if (!hasExternal(runs)) return "– (run predates the external set)";
  const aucs = runs.map((r) => r.metrics.external!.atHalf.auc);
  const mean = aucs.reduce((a, x) => a + x, 0) / aucs.length;
  const sd = aucs.length > 1 ? Math.sqrt(aucs.reduce((a, x) => a + (x - mean) ** 2, 0) / (aucs.length - 1)) : NaN;
  const [lo, hi] = seedMeanBootstrap(runs, "auc", 1000, 0, "external");
  return `${pct(mean)} ± ${runs.length > 1 ? pct(sd) : "–"} [${pct(lo)}, ${pct(hi)}]`;
}

/** External accuracy / F1 at each run's validation threshold (seed means), in %. */
export function externalAtValCell(runs: readonly ScoredRun[]): string {
  if (!hasExternal(runs)) return "–";
  const m = (f: (r: ScoredRun) => number) => runs.reduce((a, r) => a + f(r), 0) / runs.length;
  return `${pct(m((r) => r.metrics.external!.atValThreshold.accuracy))} / ${pct(m((r) => r.metrics.external!.atValThreshold.f1))}`;
}

/** Share of external slices called COVID at the validation threshold (seed mean), beside the true share. */
export function externalCallRateCell(runs: readonly ScoredRun[]): string {
  if (!hasExternal(runs)) return "–";
  const called = runs.reduce((a, r) => a + r.metrics.external!.covidCallRate, 0) / runs.length;
  return `${pct(called)} (true ${pct(runs[0].metrics.external!.trueCovidRate)})`;
}

/** The source probes (lib/diagnosis/source-probe.ts) as a table: how visible is the source to the frozen network? */
export function sourceProbeTable(results: readonly SourceProbeResult[], model: string) {
  const rows = results.map((r) => [r.label, `${r.nA} (${r.patientsA} patients)`, `${r.nB} (${r.patientsB} patients)`, `${pct(r.auc)} [${pct(r.ci95[0])}, ${pct(r.ci95[1])}]`]);
  return tableBundle(["sources told apart (paper protocol, training images)", "side A", "side B", "AUC on held-out patients [95 % CI]"], rows, {
    caption: `Source probe: ${model}'s frozen features and Study I's head, trained to tell sources apart within one class (5 patient folds)`,
    note:
      "50 = the network cannot see the source; 100 = it sees it perfectly. Where it sees the source within one class, a classifier trained on " +
      "positives and negatives from different sources can separate them by source alone — which is what the protocol's test set would reward.",
  });
}

/** One sentence for notebooks 03 and 04: what the source probe of notebook 02 found. */
export function sourceProbeSummary(results: readonly SourceProbeResult[], model: string) {
  const line = `Source probe (notebook 02, ${model}'s frozen features): ${results.map((r) => `${r.label} AUC ${pct(r.auc)}`).join("; ")}. ` +
    "Values near 100 mean the network sees where a slice comes from; read the protocol's test AUCs below with that in mind, and the external AUCs as the disease signal.";
  return { "text/plain": line, "text/html": `<p>${escapeHtml(line)}</p>` };
}
