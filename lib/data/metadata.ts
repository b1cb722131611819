/**
 * Per-image metadata: COVID-CT-MetaInfo.xlsx (upstream) and NonCOVID-CT-MetaInfo.csv (present in our
 * shared copy only). Read with danfojs-node so notebooks get a DataFrame, and also as typed rows.
 *
 * Patient identity: `Patient ID` strings are only meaningful within one source paper, so a patient
 * is (paper, Patient ID). The paper is the DOI column, normalised (upstream has trailing spaces and
 * "10.1016/ S0140-…"); where the DOI cell is empty the file name carries the medRxiv/bioRxiv id
 * (`2020.02.10.20021584-p6-52.png` → 10.1101/2020.02.10.20021584), which is the same DOI.
 */
import * as fs from "fs";
import * as path from "path";
import { DataFrame, readCSV } from "danfojs-node";
import { resolveDataRoot } from "../config";
import { COVID_META_XLSX, DataRootError, FileMatcher, MatchKind, imageDirRel, isImageFile } from "./dataset";

/** CSV export of the same sheet (our shared copy only); used when the xlsx is absent. */
export const COVID_META_CSV = "COVID-CT-MetaInfo.csv";
export const NONCOVID_META_CSV = "NonCOVID-CT-MetaInfo.csv";

export type Gender = "M" | "F";

export interface ParsedAge {
  /** Years, or null when the text holds no number ("Young Child"). */
  value: number | null;
  /** The cell as written (trimmed), null when empty. */
  raw: string | null;
  /** True for "40+", ranges ("30-40", midpoint), decades ("40s") and month ages converted to years. */
  approx: boolean;
}

export interface CovidMetaRow {
  /** `File name` as written in the sheet (sometimes without extension). */
  file: string;
  /** Matching file in Images-processed/CT_COVID, null when none. */
  image: string | null;
  match: MatchKind;
  patientId: string | null;
  doi: string | null;
  /** Normalised source paper (DOI, or the DOI derived from the file name). */
  paper: string;
  /** Patient identity `paper#Patient ID`; null when the sheet has no patient id. */
  patient: string | null;
  age: number | null;
  ageRaw: string | null;
  ageApprox: boolean;
  gender: Gender | null;
  genderRaw: string | null;
  location: string | null;
  medicalHistory: string | null;
  time: string | null;
  severity: string | null;
  otherDiseases: string | null;
  caption: string | null;
}

export interface NonCovidMetaRow {
  file: string;
  image: string | null;
  match: MatchKind;
  patientId: string;
  /** Identity `noncovid#<patient id>`. */
  patient: string;
}

export interface CovidMetadata {
  source: string;
  /** The sheet as danfojs read it, blank rows dropped. */
  frame: DataFrame;
  rows: CovidMetaRow[];
}

export interface NonCovidMetadata {
  source: string;
  frame: DataFrame;
  rows: NonCovidMetaRow[];
}

/** Trimmed text of a cell, null for empty/NaN. */
function cellText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === "number" && Number.isNaN(v)) return null;
  const s = String(v).replace(/\u00A0/g, " ").trim();
  return s.length > 0 && s.toLowerCase() !== "nan" ? s : null;
}

/** Parse a free-text age cell: 41, "41", "40+", "30-40", "40s", "6 months", "Young Child". */
export function parseAge(cell: unknown): ParsedAge {
  if (typeof cell === "number" && Number.isFinite(cell)) return { value: cell, raw: String(cell), approx: false };
  const raw = cellText(cell);
  if (raw === null) return { value: null, raw: null, approx: false };
  const s = raw.toLowerCase();
  let m: RegExpMatchArray | null;
  if ((m = s.match(/^(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|years?)?(?:\s*old)?$/))) return { value: Number(m[1]), raw, approx: false };
  if ((m = s.match(/^(\d+(?:\.\d+)?)\s*\+$/)) || (m = s.match(/^(?:>|over|above)\s*(\d+(?:\.\d+)?)$/))) return { value: Number(m[1]), raw, approx: true };
  if ((m = s.match(/^(\d+(?:\.\d+)?)\s*(?:-|–|—|~|to)\s*(\d+(?:\.\d+)?)/))) return { value: (Number(m[1]) + Number(m[2])) / 2, raw, approx: true };
  if ((m = s.match(/^(\d+)'?s$/))) return { value: Number(m[1]) + 5, raw, approx: true };
  if ((m = s.match(/^(\d+(?:\.\d+)?)\s*(?:months?|mos?|m)(?:\s*old)?$/))) return { value: Number(m[1]) / 12, raw, approx: true };
  if ((m = s.match(/^(\d+(?:\.\d+)?)\s*(?:days?|d)(?:\s*old)?$/))) return { value: Number(m[1]) / 365, raw, approx: true };
  return { value: null, raw, approx: false };
}

/** "M", "M ", "male", "Man" → M; "F", "female", "woman" → F; anything else → null. */
export function normaliseGender(cell: unknown): Gender | null {
  const s = cellText(cell)?.toLowerCase();
  if (!s) return null;
  if (s === "m" || s === "male" || s === "man" || s === "boy") return "M";
  if (s === "f" || s === "female" || s === "woman" || s === "girl") return "F";
  return null;
}

/** DOI as an identity: no spaces, no resolver prefix, lower case. */
export function normaliseDoi(cell: unknown): string | null {
  const s = cellText(cell);
  if (!s) return null;
  return s.replace(/\s+/g, "").replace(/^https?:\/\/(dx\.)?doi\.org\//i, "").replace(/^doi:/i, "").toLowerCase();
}

/** Source paper of an image: the DOI when given, else derived from the file name. */
export function paperKey(doi: string | null, file: string): string {
  if (doi) return doi;
  const pre = file.match(/^(\d{4}\.\d{2}\.\d{2}\.\d{5,})/);
  if (pre) return `10.1101/${pre[1]}`; // medRxiv/bioRxiv file names start with the preprint id
  // Other sources: file name without the page/figure suffix (`…-p3-89%0.png` → `…`).
  return "file:" + file.replace(/\.[a-z]+$/i, "").replace(/-p\d+-.*$/, "").replace(/[_%].*$/, "");
}

function imageMatcher(root: string, cls: "covid" | "noncovid"): FileMatcher {
  const dir = path.join(root, imageDirRel(cls));
  return new FileMatcher(fs.existsSync(dir) ? fs.readdirSync(dir).filter(isImageFile) : []);
}

/** Values of the frame as plain rows (danfojs exposes them as an any[][]). */
function frameRows(frame: DataFrame): { columns: string[]; values: unknown[][] } {
  return { columns: frame.columns.map(String), values: frame.values as unknown[][] };
}

/** Drop rows whose key column is empty (the xlsx ends with a blank row). */
function dropBlank(frame: DataFrame, keyColumn: string): DataFrame {
  const { columns, values } = frameRows(frame);
  const k = columns.indexOf(keyColumn);
  const keep = values.map((r) => cellText(r[k]) !== null);
  return keep.every(Boolean) ? frame : (frame.query(keep) as DataFrame);
}

/**
 * The first sheet of an xlsx file as a DataFrame. danfojs' readExcel parses inside an fs callback,
 * so a damaged file threw outside every handler (a raw stack trace naming no file); here the same
 * SheetJS build that danfojs uses parses synchronously and errors name the file.
 */
export function readExcelFile(file: string): DataFrame {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const XLSX = require(require.resolve("xlsx", { paths: [path.dirname(require.resolve("danfojs-node/package.json"))] }));
  const fail = (why: string) =>
    new Error(`${file} cannot be read as a spreadsheet: ${why}. The file is damaged or truncated: run \`npx covid-ct verify-data\`, and \`npx covid-ct fetch-data --force\` to restore it.`);
  let wb: { SheetNames: string[]; Sheets: Record<string, unknown> };
  try {
    wb = XLSX.read(fs.readFileSync(file), { type: "buffer" });
  } catch (e) {
    throw fail((e as Error).message);
  }
  const ws = wb.SheetNames.length ? wb.Sheets[wb.SheetNames[0]] : undefined;
  if (!ws) throw fail("it has no sheet");
  const rows = XLSX.utils.sheet_to_json(ws, { defval: null }) as Record<string, unknown>[];
  if (rows.length === 0) throw fail("its first sheet has no rows");
  return new DataFrame(rows);
}

/**
 * Read the COVID metadata sheet (xlsx, or its CSV export if only that exists) as a DataFrame plus
 * typed rows matched to the images of CT_COVID.
 */
export async function loadCovidMetadata(root?: string): Promise<CovidMetadata> {
  const abs = path.resolve(root ?? resolveDataRoot().dir);
  const xlsx = path.join(abs, COVID_META_XLSX);
  const csv = path.join(abs, COVID_META_CSV);
  let raw: DataFrame;
  let source: string;
  if (fs.existsSync(xlsx)) {
    source = xlsx;
    raw = readExcelFile(xlsx);
  } else if (fs.existsSync(csv)) {
    source = csv;
    raw = (await readCSV(csv)) as DataFrame;
  } else {
    throw new DataRootError(abs, [COVID_META_XLSX]);
  }
  const frame = dropBlank(raw, "File name");
  const { columns, values } = frameRows(frame);
  const col = (name: string) => {
    const i = columns.findIndex((c) => c.trim().toLowerCase() === name.toLowerCase());
    if (i < 0 && (name === "File name" || name === "Patient ID")) {
      throw new Error(`${source}: no column "${name}" (columns: ${columns.join(", ")}). Re-run \`npx covid-ct verify-data\`.`);
    }
    return i;
  };
  const c = {
    file: col("File name"), patient: col("Patient ID"), age: col("Age"), gender: col("Gender"), location: col("Location"),
    history: col("Medical history"), time: col("Time"), severity: col("Severity"), other: col("Other diseases"),
    doi: col("DOI"), caption: col("Captions"),
  };
  const get = (r: unknown[], i: number) => (i >= 0 ? cellText(r[i]) : null);
  const matcher = imageMatcher(abs, "covid");
  const rows = values.map((r): CovidMetaRow => {
    const file = get(r, c.file)!;
    const m = matcher.match(file);
    const doi = normaliseDoi(c.doi >= 0 ? r[c.doi] : null);
    const paper = paperKey(doi, file);
    const patientId = get(r, c.patient);
    const age = parseAge(c.age >= 0 ? r[c.age] : null);
    return {
      file, image: m.file, match: m.match, patientId, doi, paper,
      patient: patientId ? `${paper}#${patientId}` : null,
      age: age.value, ageRaw: age.raw, ageApprox: age.approx,
      gender: normaliseGender(c.gender >= 0 ? r[c.gender] : null), genderRaw: get(r, c.gender),
      location: get(r, c.location), medicalHistory: get(r, c.history), time: get(r, c.time),
      severity: get(r, c.severity), otherDiseases: get(r, c.other), caption: get(r, c.caption),
    };
  });
  return { source, frame, rows };
}

/**
 * Patient of a non-COVID image when NonCOVID-CT-MetaInfo.csv is absent: crawled images are named
 * `<n>%<k>.jpg` for the k-th image of patient n; the MedPix PNGs carry no patient in their name, so
 * each counts as its own patient (leaks among them are then invisible — documented, not guessed).
 */
export function noncovidPatientFromFile(file: string): string {
  const stem = file.replace(/\.[a-z]+$/i, "");
  return `noncovid#${/%\d+$/.test(stem) ? `crawled_patient_${stem.replace(/%\d+$/, "")}` : `file_${stem}`}`;
}

/** NonCOVID-CT-MetaInfo.csv (image name → patient id), or null when the file is absent. */
export async function loadNonCovidMetadata(root?: string): Promise<NonCovidMetadata | null> {
  const abs = path.resolve(root ?? resolveDataRoot().dir);
  const source = path.join(abs, NONCOVID_META_CSV);
  if (!fs.existsSync(source)) return null;
  const frame = dropBlank((await readCSV(source)) as DataFrame, "image name");
  const { columns, values } = frameRows(frame);
  const fi = columns.findIndex((c) => c.trim().toLowerCase() === "image name");
  const pi = columns.findIndex((c) => c.trim().toLowerCase() === "patient id");
  if (fi < 0 || pi < 0) throw new Error(`${source}: expected columns "image name" and "patient id", found ${columns.join(", ")}`);
  const matcher = imageMatcher(abs, "noncovid");
  const rows = values.map((r): NonCovidMetaRow => {
    const file = cellText(r[fi])!;
    const m = matcher.match(file);
    const patientId = cellText(r[pi]) ?? `file_${file}`;
    return { file, image: m.file, match: m.match, patientId, patient: `noncovid#${patientId}` };
  });
  return { source, frame, rows };
}

export interface MetadataCounts {
  rows: number;
  /** Image-level counts: what the paper calls "patients". An age cell with any text counts. */
  imagesWithAge: number;
  imagesWithNumericAge: number;
  imagesWithGender: number;
  male: number;
  female: number;
  /** Patient-level counts over (paper, Patient ID). */
  patients: number;
  patientsWithAge: number;
  patientsWithGender: number;
  malePatients: number;
  femalePatients: number;
  /** Patients whose rows disagree on gender (counted by their first stated gender). */
  genderConflicts: string[];
}

export function metadataCounts(rows: readonly CovidMetaRow[]): MetadataCounts {
  const byPatient = new Map<string, CovidMetaRow[]>();
  for (const r of rows) {
    const k = r.patient ?? `image#${r.file}`; // a row without patient id is its own patient
    byPatient.set(k, [...(byPatient.get(k) ?? []), r]);
  }
  let patientsWithAge = 0, patientsWithGender = 0, malePatients = 0, femalePatients = 0;
  const genderConflicts: string[] = [];
  for (const [k, rs] of byPatient) {
    if (rs.some((r) => r.ageRaw !== null)) patientsWithAge++;
    const genders = [...new Set(rs.map((r) => r.gender).filter((g): g is Gender => g !== null))];
    if (genders.length > 0) {
      patientsWithGender++;
      if (genders[0] === "M") malePatients++;
      else femalePatients++;
      if (genders.length > 1) genderConflicts.push(k);
    }
  }
  return {
    rows: rows.length,
    imagesWithAge: rows.filter((r) => r.ageRaw !== null).length,
    imagesWithNumericAge: rows.filter((r) => r.age !== null).length,
    imagesWithGender: rows.filter((r) => r.gender !== null).length,
    male: rows.filter((r) => r.gender === "M").length,
    female: rows.filter((r) => r.gender === "F").length,
    patients: byPatient.size,
    patientsWithAge, patientsWithGender, malePatients, femalePatients, genderConflicts,
  };
}

/** Map `covid/<file>` or `noncovid/<file>` → patient identity, for the images that have one. */
export async function patientMap(root?: string): Promise<{ map: Map<string, string>; noncovidSource: "csv" | "filename" }> {
  const abs = path.resolve(root ?? resolveDataRoot().dir);
  const map = new Map<string, string>();
  const covid = await loadCovidMetadata(abs);
  for (const r of covid.rows) if (r.image && r.patient) map.set(`covid/${r.image}`, r.patient);
  const non = await loadNonCovidMetadata(abs);
  if (non) for (const r of non.rows) if (r.image) map.set(`noncovid/${r.image}`, r.patient);
  // Fill non-COVID images the CSV does not cover (or all of them without the CSV) from the name rule.
  const dir = path.join(abs, imageDirRel("noncovid"));
  if (fs.existsSync(dir)) {
    for (const f of fs.readdirSync(dir).filter(isImageFile)) {
      if (!map.has(`noncovid/${f}`)) map.set(`noncovid/${f}`, noncovidPatientFromFile(f));
    }
  }
  return { map, noncovidSource: non ? "csv" : "filename" };
}
