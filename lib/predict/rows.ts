/**
 * The rows `covid-ct predict` writes (predictions.csv), apart from the scoring so that the gallery
 * and the tests read them without the models. A series (or volume) is scored as a scan
 * (lib/lesions/scan.ts): its volumetric lesion burden, six zones graded 0–5, and the call at the
 * series threshold. The slice rows keep the model's slice probability.
 */
import type { SeriesInput, InputError } from "../data/inputs";
import type { ZoneScore } from "../lesions/scan";

export interface SliceRow {
  input: string;
  /** The scored PNG inside --out for DICOM slices ("" for images). */
  scored: string;
  series: string;
  index: number | null;
  /** The model's (or the lesion score's) probability; null for a flagged slice under a lesion score. */
  probability: number | null;
  covid: boolean;
  lungShare: number;
  lesionBurden: number | null;
  /** Why the slice has no lesion burden ("" when it has one or no lesion model ran). */
  flag: string;
}

export interface SeriesRow {
  series: string;
  folder: string;
  slices: number;
  /** Volumetric lesion burden: Σ lesion ∩ lung / Σ lung over the scan. */
  burden: number;
  /** The call: burden ≥ threshold (the series threshold, lib/lesions/scan.ts). */
  covid: boolean;
  threshold: number;
  /** Lung and lesion volume in millilitres (null when the files give no spacing). */
  lungMl: number | null;
  lesionMl: number | null;
  zones: ZoneScore[];
  /** Σ zone grades (0–30). */
  severity: number;
  /** Zone sides are the patient's (orientation known) or the image's. */
  patientSides: boolean;
  /** Slices that kept lung pixels after the 3D clean-up, and slices that lost all of theirs to it. */
  lungSlices: number;
  lungRemovedSlices: number;
  /** The slice with the most lesion voxels, its 1-based position in the sorted series, and its file. */
  drivenBy: { index: number; input: string };
  order: SeriesInput["order"];
}

function csvCell(v: string | number | boolean | null): string {
  if (v === null) return "";
  const s = typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(9)) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export const PREDICTIONS_COLUMNS = ["kind", "file", "series", "index", "probability", "covid", "threshold", "lung_share", "lesion_burden", "lung_ml", "lesion_ml", "severity", "zones", "flag", "driven_by", "scored_png", "error"] as const;

/** Zones as one cell: `RU 2 (12.3%); RM 0 (0.0%); …` (R/L = the patient's sides, or image left/right as IL/IR). */
export function zonesCell(r: Pick<SeriesRow, "zones" | "patientSides">): string {
  return r.zones
    .map((z) => {
      const [side, level] = z.zone.split(" ");
      const s = r.patientSides ? (side === "right" ? "R" : "L") : side === "right" ? "IL" : "IR";
      return `${s}${level[0].toUpperCase()} ${z.grade} (${(100 * z.share).toFixed(1)}%)`;
    })
    .join("; ");
}

/** predictions.csv: one row per slice, one per series, one per input that failed. */
export function predictionsCsv(r: { slices: readonly SliceRow[]; series: readonly SeriesRow[]; errors: readonly InputError[]; threshold: number }): string {
  const rows: (string | number | boolean | null)[][] = [];
  for (const s of r.slices) rows.push(["slice", s.input, s.series, s.index === null ? null : s.index + 1, s.probability, s.covid ? 1 : 0, r.threshold, s.lungShare, s.lesionBurden, null, null, null, null, s.flag || null, null, s.scored, null]);
  for (const s of r.series) rows.push(["series", s.folder, s.series, null, null, s.covid ? 1 : 0, s.threshold, null, s.burden, s.lungMl, s.lesionMl, s.severity, zonesCell(s), null, `${s.drivenBy.index}: ${s.drivenBy.input}`, null, null]);
  for (const e of r.errors) rows.push(["error", e.file, null, null, null, null, null, null, null, null, null, null, null, null, null, null, e.message]);
  return [PREDICTIONS_COLUMNS.join(","), ...rows.map((row) => row.map(csvCell).join(","))].join("\n") + "\n";
}
