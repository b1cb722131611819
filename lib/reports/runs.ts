/**
 * What every table of Tables 5–7 computes from finished diagnosis runs: a set's predictions, the
 * bootstrap interval of a seed-mean, and seed-averaged ROC curves.
 */
import * as path from "path";
import seedrandom from "seedrandom";
import { DiagnosisResult, PredictionRow, readPredictions } from "../diagnosis/results";
import { metricFn, rocAuc, rocCurve } from "../evaluation";
import { Figure } from "../plots";

/** One set's rows of a run's predictions.csv. */
export function predictionsOf(r: DiagnosisResult, set: PredictionRow["set"]): PredictionRow[] {
  return readPredictions(path.join(r.runDir, "predictions.csv")).filter((p) => p.set === set);
}

/**
 * 95 % bootstrap interval of the seed-mean of a test metric: resample test images, recompute the
 * metric for every seed's predictions on the resample, average over seeds.
 */
export function seedMeanBootstrap(runs: readonly DiagnosisResult[], metric: "accuracy" | "f1" | "auc", n = 1000, seed = 0): [number, number] {
  const preds = runs.map((r) => predictionsOf(r, "test"));
  const labels = preds[0].map((p) => p.label);
  const f = metricFn(metric, 0.5);
  const rng = seedrandom(`seedmean:${metric}:${seed}`);
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

/** One ROC curve per group of runs (the seeds of one cell; probabilities averaged over them), on the test set. */
export function rocFigureOf(title: string, curves: readonly { name: string; runs: readonly DiagnosisResult[] }[]): Figure {
  const data: Record<string, unknown>[] = [];
  for (const { name, runs } of curves) {
    const preds = runs.map((r) => predictionsOf(r, "test"));
    const labels = preds[0].map((p) => p.label);
    const mean = preds[0].map((_, i) => preds.reduce((a, ps) => a + ps[i].probability, 0) / preds.length);
    const pts = rocCurve(labels, mean);
    data.push({ type: "scatter", mode: "lines", name: `${name} (AUC ${rocAuc(labels, mean).auc.toFixed(3)})`, x: pts.map((p) => p.fpr), y: pts.map((p) => p.tpr) });
  }
  data.push({ type: "scatter", mode: "lines", name: "chance", x: [0, 1], y: [0, 1], line: { dash: "dot", color: "#999" } });
  return {
    data,
    layout: {
      title: { text: `ROC on the test set — ${title} (probabilities averaged over seeds)` },
      xaxis: { title: { text: "false positive rate" }, range: [0, 1] },
      yaxis: { title: { text: "true positive rate (COVID)" }, range: [0, 1] },
      height: 420,
    },
  };
}
