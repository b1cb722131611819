/**
 * One reader per image source of the paper's evaluation protocol. Every reader returns
 * SourceImages with the same fields, so protocols, audits and input pipelines treat them alike:
 *
 *   covid-ct        the COVID-CT release (figures from papers): id `covid-ct/<covid|noncovid>/<file>`,
 *                   patient = source paper + Patient ID (`patientMap`, as the audit's leaks)
 *   covid19-ct-seg  the paper's COVID-Seg, 1,600 Inf-Net slices of the 20 COVID-19-CT-Seg volumes:
 *                   id `covid19-ct-seg/<file>`, patient = the volume (`coronacases_org_001`, …)
 *   luna16          250 LUNA16 slices, 2 per series: id `luna16/<file>`, patient = the series UID
 *                   (LUNA16 holds one series per patient)
 *   medseg          the 98 MedSeg slices (Inf-Net): id `medseg/<train|test>/<file>` (as Study I);
 *                   the slices carry no patient identity, so patient = the id (one slice each)
 *   sars-cov-2-ct-scan  the external test set: 157 COVID + 154 non-COVID slices of one hospital in
 *                   São Paulo (Soares et al. 2020): id `sars-cov-2-ct-scan/<COVID|non-COVID>/<file>`
 *                   (file names hold spaces and parentheses: `Covid (1).png`). The dataset has NO
 *                   patient ids, so patient = the id (one slice each): any per-patient statistic
 *                   over it is really per slice. It is never trained on (lib/protocols: `external`).
 *   covid19-ct-seg-lungs  162 COVID-19-CT-Seg slices with radiologists' lung and infection masks
 *                   (CLAHE-enhanced, 256²): id `covid19-ct-seg-lungs/images/<NNNN>.png`, patient =
 *                   its volume block (`block<k>` of slices.csv: whole volumes, never split). Only
 *                   the lung segmenter uses it (training on blocks, Dice against the experts).
 *
 * Ids are the ones runs write to predictions.csv. A missing folder is an error naming it and the
 * environment variable that points elsewhere.
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, ResolvedRoot, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot, resolveSarsRoot, resolveSegLungsRoot } from "../config";
import { ImageClass, Split, isImageFile, openDataset } from "./dataset";
import { patientMap } from "./metadata";
import { Orientation } from "./orientation";
import { PreprocessOptions } from "./preprocess";

import { SourceName } from "./source-names";
export { isSourceName, SOURCES, SourceName } from "./source-names";

export interface SourceImage {
  /** Stable id, as in predictions.csv. */
  id: string;
  source: SourceName;
  /**
   * Patient identity: volume (COVID-Seg), series UID (LUNA), source paper + patient (COVID-CT).
   * MedSeg and sars-cov-2-ct-scan have none: there it is the slice's own id.
   */
  patient: string;
  /** Absolute path of the image file. */
  path: string;
  cls: ImageClass;
  /** Position along the volume (COVID-Seg slice number k, LUNA z); null where unknown. */
  slice: number | null;
  /** COVID-CT: the official split (null: unlisted). MedSeg: its folder (train/test). Others: null. */
  officialSplit: Split | null;
}

/** Folder name of each source under data/ or ../shared/datasets/. */
export const SOURCE_FOLDERS: Record<SourceName, string> = {
  "covid-ct": "covid-ct", "covid19-ct-seg": "covid19-ct-seg-slices", luna16: "luna16-slices", medseg: "medseg-covid19", "sars-cov-2-ct-scan": "sars-cov-2-ct-scan",
  "covid19-ct-seg-lungs": "covid19-ct-seg-lungs",
};

/** Environment variable of each source's root (lib/config.ts). */
export const SOURCE_ENV: Record<SourceName, string> = {
  "covid-ct": "COVIDCT_DATA", "covid19-ct-seg": "COVIDCT_COVIDSEG", luna16: "COVIDCT_LUNA", medseg: "COVIDCT_MEDSEG", "sars-cov-2-ct-scan": "COVIDCT_SARS", "covid19-ct-seg-lungs": "COVIDCT_SEGLUNGS",
};

/** A source folder that is absent or lacks its layout. */
export class SourceRootError extends Error {
  constructor(readonly source: SourceName, readonly dir: string, what: string, envName: string) {
    super(
      `${source} data not found: ${dir} ${what}. Set ${envName} to the folder (see README, "Data and weights"), ` +
        `or place it at data/${SOURCE_FOLDERS[source]} or ../shared/datasets/${SOURCE_FOLDERS[source]}.`,
    );
    this.name = "SourceRootError";
  }
}

function requireDir(source: SourceName, dir: string, envName: string, root: string): void {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new SourceRootError(source, dir, "does not exist", envName);
  if (fs.readdirSync(dir).filter(isImageFile).length === 0) throw new SourceRootError(source, dir, `holds no images (root ${root})`, envName);
}

/** `Data-1_<volume>_<k>.jpg` → volume and slice number. */
export function parseCovidSegName(file: string): { volume: string; slice: number } | null {
  const m = file.match(/^Data-\d+_(.+)_(\d+)\.(jpe?g|png)$/i);
  return m ? { volume: m[1], slice: parseInt(m[2], 10) } : null;
}

/** `<series UID>.mhd_<z>.png` → series and z. */
export function parseLunaName(file: string): { series: string; z: number } | null {
  const m = file.match(/^([0-9.]+)\.mhd_(\d+)\.(png|jpe?g)$/i);
  return m ? { series: m[1], z: parseInt(m[2], 10) } : null;
}

const bySourceOrder = (a: SourceImage, b: SourceImage) =>
  a.patient < b.patient ? -1 : a.patient > b.patient ? 1 : (a.slice ?? 0) - (b.slice ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** COVID-Seg slices (images/ under the root), sorted by volume then slice number. */
export function listCovidSeg(root: string = resolveCovidSegRoot().dir): SourceImage[] {
  const dir = path.join(path.resolve(root), "images");
  requireDir("covid19-ct-seg", dir, "COVIDCT_COVIDSEG", root);
  const out: SourceImage[] = [];
  for (const f of fs.readdirSync(dir).filter(isImageFile)) {
    const p = parseCovidSegName(f);
    if (!p) throw new Error(`COVID-Seg: cannot read volume and slice from ${path.join(dir, f)} (expected Data-1_<volume>_<k>.jpg); remove or rename it.`);
    out.push({ id: `covid19-ct-seg/${f}`, source: "covid19-ct-seg", patient: p.volume, path: path.join(dir, f), cls: "covid", slice: p.slice, officialSplit: null });
  }
  return out.sort(bySourceOrder);
}

/** LUNA16 slices, sorted by series then z. */
export function listLuna(root: string = resolveLunaRoot().dir): SourceImage[] {
  const dir = path.resolve(root);
  requireDir("luna16", dir, "COVIDCT_LUNA", root);
  const out: SourceImage[] = [];
  for (const f of fs.readdirSync(dir).filter(isImageFile)) {
    const p = parseLunaName(f);
    if (!p) throw new Error(`LUNA16: cannot read the series UID from ${path.join(dir, f)} (expected <series UID>.mhd_<z>.png); remove or rename it.`);
    out.push({ id: `luna16/${f}`, source: "luna16", patient: p.series, path: path.join(dir, f), cls: "noncovid", slice: p.z, officialSplit: null });
  }
  return out.sort(bySourceOrder);
}

/** MedSeg slices of one part, sorted numerically (ids as Study I). */
export function listMedsegSlices(part: "train" | "test", root: string = resolveMedsegRoot().dir): SourceImage[] {
  const dir = path.join(path.resolve(root), part, "images");
  requireDir("medseg", dir, "COVIDCT_MEDSEG", root);
  const files = fs.readdirSync(dir).filter(isImageFile);
  files.sort((a, b) => parseInt(a, 10) - parseInt(b, 10) || a.localeCompare(b));
  return files.map((f) => ({
    id: `medseg/${part}/${f}`, source: "medseg" as const, patient: `medseg/${part}/${f}`, path: path.join(dir, f), cls: "covid" as const,
    slice: null, officialSplit: part === "train" ? ("train" as const) : ("test" as const),
  }));
}

/** The external set's class folders under its root, and the class each holds. */
export const SARS_CLASS_DIRS: readonly { dir: "COVID" | "non-COVID"; cls: ImageClass }[] = [{ dir: "COVID", cls: "covid" }, { dir: "non-COVID", cls: "noncovid" }];

/** The upstream file number of `Covid (17).png` / `Non-Covid (17).png` (null for other names). */
export function parseSarsName(file: string): number | null {
  const m = file.match(/\((\d+)\)\.[A-Za-z]+$/);
  return m ? parseInt(m[1], 10) : null;
}

/**
 * The São Paulo external test set (sars-cov-2-ct-scan): COVID/ then non-COVID/, each sorted by the
 * upstream file number. Ids keep the file name as it is, spaces and parentheses included
 * (`sars-cov-2-ct-scan/COVID/Covid (1).png`). There are no patient ids in this dataset (consecutive
 * numbers are mostly one patient's slices, but nothing says where a patient ends), so patient = the
 * id and slice = null: it must never be split into train/test, only evaluated, and its intervals
 * are per slice (optimistic).
 */
export function listSarsCov2(root: string = resolveSarsRoot().dir): SourceImage[] {
  const out: SourceImage[] = [];
  for (const { dir: sub, cls } of SARS_CLASS_DIRS) {
    const dir = path.join(path.resolve(root), sub);
    requireDir("sars-cov-2-ct-scan", dir, "COVIDCT_SARS", root);
    const files = fs.readdirSync(dir).filter(isImageFile);
    files.sort((a, b) => (parseSarsName(a) ?? Infinity) - (parseSarsName(b) ?? Infinity) || (a < b ? -1 : a > b ? 1 : 0));
    for (const f of files) {
      const id = `sars-cov-2-ct-scan/${sub}/${f}`;
      out.push({ id, source: "sars-cov-2-ct-scan", patient: id, path: path.join(dir, f), cls, slice: null, officialSplit: null });
    }
  }
  return out;
}

/** One slice of covid19-ct-seg-lungs as slices.csv lists it. */
export interface SegLungsSlice {
  file: string;
  /** Position in the upstream volume order. */
  sequenceIndex: number;
  /** Volume block (whole volumes; blocks 10–14 are the Radiopaedia cases). */
  block: number;
}

/** slices.csv of covid19-ct-seg-lungs (`file, sequence_index, block`), in its order. */
export function readSegLungsSlices(root: string = resolveSegLungsRoot().dir): SegLungsSlice[] {
  const f = path.join(path.resolve(root), "slices.csv");
  if (!fs.existsSync(f)) throw new SourceRootError("covid19-ct-seg-lungs", f, "does not exist", "COVIDCT_SEGLUNGS");
  const lines = fs.readFileSync(f, "utf8").split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines[0]?.replace(/\s/g, "") !== "file,sequence_index,block") throw new Error(`${f}: expected the header 'file,sequence_index,block', found '${lines[0] ?? ""}'. Restore the file (\`npx covid-ct verify-data --source covid19-ct-seg-lungs\`).`);
  return lines.slice(1).map((l, i) => {
    const [file, seq, block] = l.split(",").map((x) => x.trim());
    const s = Number(seq), b = Number(block);
    if (!file || !Number.isInteger(s) || !Number.isInteger(b)) throw new Error(`${f} line ${i + 2}: '${l}' is not 'file,sequence_index,block'.`);
    return { file, sequenceIndex: s, block: b };
  });
}

/**
 * The expert-mask slices (images/ under the root), in slices.csv's order; patient = `block<k>` so
 * that every split by patient is a split by volume block.
 */
export function listSegLungs(root: string = resolveSegLungsRoot().dir): SourceImage[] {
  const dir = path.join(path.resolve(root), "images");
  requireDir("covid19-ct-seg-lungs", dir, "COVIDCT_SEGLUNGS", root);
  return readSegLungsSlices(root).map((s) => {
    const p = path.join(dir, s.file);
    if (!fs.existsSync(p)) throw new Error(`covid19-ct-seg-lungs: ${p} is listed in slices.csv but missing; restore the folder (\`npx covid-ct verify-data --source covid19-ct-seg-lungs\`).`);
    return { id: `covid19-ct-seg-lungs/images/${s.file}`, source: "covid19-ct-seg-lungs" as const, patient: `block${s.block}`, path: p, cls: "covid" as const, slice: s.sequenceIndex, officialSplit: null };
  });
}

/**
 * The first upstream slice number (file name NNNN) of the Radiopaedia volumes in
 * covid19-ct-seg-lungs (blocks 10–14, stored upside down: spine at the top). Checked on every slice
 * with uprightMeasure in test/sources.test.ts.
 */
export const SEG_LUNGS_RADIOPAEDIA_FROM = 1250;

/**
 * COVID-CT images of both classes, in the release's file order. Images without a patient identity
 * (no metadata row) get `<class>#<file>`: a patient of their own.
 */
export async function listCovidCt(root: string = resolveDataRoot().dir): Promise<SourceImage[]> {
  const ds = openDataset(root);
  const patients = await patientMap(ds.root);
  return ds.images.map((r) => ({
    id: `covid-ct/${r.cls}/${r.file}`, source: "covid-ct" as const, patient: patients.map.get(`${r.cls}/${r.file}`) ?? `${r.cls}#${r.file}`,
    path: r.path, cls: r.cls, slice: null, officialSplit: r.split,
  }));
}

/**
 * The fixed orientation transform of a source (see lib/data/orientation.ts), checked by eye on a
 * sample of each source and by test/sources.test.ts with `uprightMeasure`. COVID-Seg holds two
 * families of volumes stored differently by Inf-Net: Zenodo's `coronacases` volumes (spine on the
 * left) and its Radiopaedia volumes (spine on the right, heart on the left, like MedSeg).
 * `file` is the image's path or id (only COVID-Seg needs it).
 */
export function sourceOrientation(source: SourceName, file = ""): Orientation {
  switch (source) {
    case "covid-ct":
    case "luna16":
    case "sars-cov-2-ct-scan": // upright as stored (spine at the bottom), checked in test/sources.test.ts
      return "identity";
    case "medseg":
      return "transpose";
    case "covid19-ct-seg-lungs": {
      const n = parseInt(path.basename(file), 10);
      if (!Number.isInteger(n)) throw new Error(`sourceOrientation: ${file} is not a covid19-ct-seg-lungs slice name (NNNN.png)`);
      return n >= SEG_LUNGS_RADIOPAEDIA_FROM ? "rotate180" : "identity";
    }
    case "covid19-ct-seg": {
      const p = parseCovidSegName(path.basename(file));
      if (!p) throw new Error(`sourceOrientation: ${file} is not a COVID-Seg slice name (Data-1_<volume>_<k>.jpg)`);
      return p.volume.startsWith("coronacases") ? "rotate90ccw" : "transpose";
    }
  }
}

/** The lesion-mask folder of a source that has one (radiologists' `infection/`, COVID-Seg's `pseudo-infection/`), else null. */
export function lesionMaskFolder(source: SourceName): "infection" | "pseudo-infection" | null {
  return source === "medseg" || source === "covid19-ct-seg-lungs" ? "infection" : source === "covid19-ct-seg" ? "pseudo-infection" : null;
}

/**
 * A mask file beside an image (`<root>/<folder>/<stem>.png` for `<root>/images/<stem>.*`): the one
 * place that knows where the sources keep their lesion and lung masks. Throws, naming the file and
 * how to restore it, when it is missing.
 */
export function maskFileBeside(image: string, folder: string, source: SourceName, what = `${folder} mask`): string {
  const f = path.resolve(path.dirname(image), "..", folder, `${path.basename(image, path.extname(image))}.png`);
  if (!fs.existsSync(f)) throw new Error(`${what[0].toUpperCase()}${what.slice(1)} ${f} of ${image} is missing: restore the ${source} folder (\`npx covid-ct verify-data --source ${source}\`).`);
  return f;
}

/** Root of a source's files (flag → env → data/… → ../shared/datasets/…), as lib/config.ts resolves it. */
export function resolveSourceRoot(source: SourceName, flag?: string): ResolvedRoot {
  switch (source) {
    case "covid-ct": return resolveDataRoot(flag);
    case "covid19-ct-seg": return resolveCovidSegRoot(flag);
    case "luna16": return resolveLunaRoot(flag);
    case "medseg": return resolveMedsegRoot(flag);
    case "sars-cov-2-ct-scan": return resolveSarsRoot(flag);
    case "covid19-ct-seg-lungs": return resolveSegLungsRoot(flag);
  }
}

/** The committed SHA-256 manifest of a source (sha256sum format, paths relative to its root). */
export function sourceManifestFile(source: SourceName): string {
  return path.join(PROJECT_ROOT, "data", `${source}.sha256`);
}

/**
 * The per-source part of preprocessing: the orientation transform, and for LUNA a 2-pixel opening
 * of the body mask before the chest crop (it detaches the scanner table's arcs under the back, so
 * LUNA slices come out framed like the tightly cropped Inf-Net slices: the body filling the frame).
 * Measured on 30 slices per source, the body's box covers 100 % of the preprocessed frame for
 * COVID-Seg and 99–100 % for LUNA, MedSeg and COVID-CT (uncropped LUNA: about 70 %); the opening
 * adds little on average (LUNA 99.5 → 99.8 %) but removes the table arcs where they touch the body.
 * COVID-CT gets nothing: its preprocessing (and cache keys) are as before. sars-cov-2-ct-scan gets
 * nothing either (upright lung-window crops of the thorax): the same chest crop as every source.
 */
export function sourcePreprocessing(source: SourceName, file = ""): Pick<PreprocessOptions, "orientation" | "cropOptions"> {
  const orientation = sourceOrientation(source, file);
  const out: Pick<PreprocessOptions, "orientation" | "cropOptions"> = {};
  if (orientation !== "identity") out.orientation = orientation;
  if (source === "luna16") out.cropOptions = { openRadius: 2 };
  return out;
}
