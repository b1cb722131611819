/**
 * The rows `covid-ct predict` writes (predictions.csv) and the series rule, apart from the scoring
 * so that the gallery and the tests read them without the models.
 */
import type { SeriesInput, InputError } from "../data/inputs";

/** A series' score: the mean of its SERIES_TOP_K highest slice probabilities (all of them when it has fewer); a few involved slices are enough to call a scan. */
export const SERIES_TOP_K = 3;

export interface SliceRow {
  input: string;
  /** The scored PNG inside --out for DICOM slices ("" for images). */
  scored: string;
  series: string;
  index: number | null;
  probability: number;
  covid: boolean;
  lungShare: number;
  lesionBurden: number | null;
}

export interface SeriesRow {
  series: string;
  folder: string;
  slices: number;
  probability: number;
  covid: boolean;
  /** The slice with the highest probability, its 1-based position in the sorted series, and its file. */
  drivenBy: { index: number; input: string };
  order: SeriesInput["order"];
}

function csvCell(v: string | number | boolean | null): string {
  if (v === null) return "";
  const s = typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(9)) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const PREDICTIONS_COLUMNS = ["kind", "file", "series", "index", "probability", "covid", "threshold", "lung_share", "lesion_burden", "driven_by", "scored_png", "error"] as const;

/** predictions.csv: one row per slice, one per series, one per input that failed. */
export function predictionsCsv(r: { slices: readonly SliceRow[]; series: readonly SeriesRow[]; errors: readonly InputError[]; threshold: number }): string {
  const rows: (string | number | boolean | null)[][] = [];
  for (const s of r.slices) rows.push(["slice", s.input, s.series, s.index === null ? null : s.index + 1, s.probability, s.covid ? 1 : 0, r.threshold, s.lungShare, s.lesionBurden, null, s.scored, null]);
  for (const s of r.series) rows.push(["series", s.folder, s.series, null, s.probability, s.covid ? 1 : 0, r.threshold, null, null, `${s.drivenBy.index}: ${s.drivenBy.input}`, null, null]);
  for (const e of r.errors) rows.push(["error", e.file, null, null, null, null, null, null, null, null, null, e.message]);
  return [PREDICTIONS_COLUMNS.join(","), ...rows.map((row) => row.map(csvCell).join(","))].join("\n") + "\n";
}

/** The series rule (SERIES_TOP_K) over a series' slice probabilities, in series order. */
export function seriesScore(probs: readonly number[]): { probability: number; driver: number } {
  const order = probs.map((p, i) => ({ p, i })).sort((a, b) => b.p - a.p || a.i - b.i);
  const top = order.slice(0, Math.min(SERIES_TOP_K, probs.length));
  return { probability: top.reduce((s, x) => s + x.p, 0) / top.length, driver: order[0].i };
}

