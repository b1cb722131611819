/**
 * predictions.csv of a run: one row per evaluated image, `set,file,label,probability`
 * (label 1 = COVID, probability = P(COVID)). Every metric of a run is recomputed from this file
 * (`covid-ct evaluate`), so reading it validates every row and names the line of a bad one.
 */
import * as fs from "fs";
import { writeFileAtomic } from "../util/fs";

export interface PredictionRow {
  /** Evaluated set, e.g. "val", "test", "medseg-test". */
  set: string;
  /** Image id (the protocol's id). */
  file: string;
  label: number;
  probability: number;
}

export const PREDICTIONS_HEADER = "set,file,label,probability";

export function writePredictions(file: string, rows: readonly PredictionRow[]): void {
  const q = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  writeFileAtomic(file, [PREDICTIONS_HEADER, ...rows.map((r) => `${r.set},${q(r.file)},${r.label},${r.probability}`)].join("\n") + "\n");
}

/**
 * Read predictions.csv; `sets` lists the set names this kind of run writes (others are refused).
 * Probabilities must be numbers in [0, 1] and labels 0 or 1.
 */
export function readPredictions(file: string, sets?: readonly string[]): PredictionRow[] {
  if (!fs.existsSync(file)) throw new Error(`No predictions at ${file}: is this a finished run directory? (train writes it when a run finishes)`);
  const lines = fs.readFileSync(file, "utf8").replace(/\r\n/g, "\n").trimEnd().split("\n");
  if (lines[0] !== PREDICTIONS_HEADER) throw new Error(`${file}: expected header '${PREDICTIONS_HEADER}', got '${lines[0]}'. Re-create the file with \`covid-ct train\`.`);
  const bad = (i: number, why: string) => new Error(`${file}:${i + 2}: ${why}. Fix or remove the line, or re-create the run with \`covid-ct train --force\`.`);
  return lines.slice(1).map((line, i) => {
    const m = line.match(/^([^,]+),("(?:[^"]|"")*"|[^,]*),([^,]*),([^,]*)$/);
    if (!m) throw bad(i, `cannot parse '${line}' (expected set,file,label,probability)`);
    const set = m[1];
    if (sets && !sets.includes(set)) throw bad(i, `unknown set '${set}' (expected one of ${sets.join(", ")})`);
    if (m[3] !== "0" && m[3] !== "1") throw bad(i, `label '${m[3]}' is not 0 or 1`);
    const probability = m[4].trim() === "" ? NaN : Number(m[4]);
    if (!Number.isFinite(probability) || probability < 0 || probability > 1) throw bad(i, `probability '${m[4]}' is not a number in [0, 1]`);
    const f = m[2].startsWith('"') ? m[2].slice(1, -1).replace(/""/g, '"') : m[2];
    return { set, file: f, label: Number(m[3]), probability };
  });
}
