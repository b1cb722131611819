/**
 * The COVID-CT release on disk: which images exist, which split list names them, and what did not
 * line up. Everything else in lib/data builds on `openDataset`, so the tolerance rules for the
 * split lists live here once.
 */
import * as fs from "fs";
import * as path from "path";
import { resolveDataRoot } from "../config";

export type ImageClass = "covid" | "noncovid";
export type Split = "train" | "val" | "test";
export const CLASSES: readonly ImageClass[] = ["covid", "noncovid"];
export const SPLITS: readonly Split[] = ["train", "val", "test"];

/** Folder names of the upstream layout (UCSD-AI4H/COVID-CT after unzipping Images-processed/*.zip). */
export const CLASS_DIR: Record<ImageClass, string> = { covid: "CT_COVID", noncovid: "CT_NonCOVID" };
const SPLIT_DIR: Record<ImageClass, string> = { covid: "COVID", noncovid: "NonCOVID" };
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg"];
/** Upstream per-image metadata of the COVID images (read by metadata.ts, checksummed by checksums.ts). */
export const COVID_META_XLSX = "COVID-CT-MetaInfo.xlsx";

/** Release-relative path of an image folder, e.g. `Images-processed/CT_COVID`. */
export function imageDirRel(cls: ImageClass): string {
  return `Images-processed/${CLASS_DIR[cls]}`;
}
/** Release-relative path of a split list, e.g. `Data-split/COVID/trainCT_COVID.txt`. */
export function splitListRel(cls: ImageClass, split: Split): string {
  return `Data-split/${SPLIT_DIR[cls]}/${split}${CLASS_DIR[cls]}.txt`;
}

/** How a split-list entry found its file. Anything but "exact" is a tolerated upstream inconsistency. */
export type MatchKind = "exact" | "case" | "extension" | "missing";

export interface ImageRecord {
  cls: ImageClass;
  /** File name inside the class folder (the identity used everywhere: stats, audit, caches). */
  file: string;
  /** Absolute path. */
  path: string;
  /** Release-relative path, e.g. `Images-processed/CT_COVID/x.png` (the manifest's key). */
  rel: string;
  /** First split that lists the file (train, val, test order); null when no list names it. */
  split: Split | null;
  /** Every split that lists it (more than one is an upstream inconsistency, see `CovidCtDataset.multiListed`). */
  splits: Split[];
}

export interface SplitEntry {
  cls: ImageClass;
  split: Split;
  /** The entry as cleaned (BOM, whitespace, CR and any folder prefix removed). */
  entry: string;
  /** 1-based line in the list file. */
  line: number;
  /** Matched file name in the class folder, or null (→ `missing`). */
  file: string | null;
  match: MatchKind;
}

export interface CovidCtDataset {
  root: string;
  images: ImageRecord[];
  entries: SplitEntry[];
  /** Split entries with no file. */
  missing: SplitEntry[];
  /** Entries matched only by case or by another image extension (upstream has .png vs .jpg mix-ups). */
  tolerant: SplitEntry[];
  /** Image files that no split list names. */
  unlisted: ImageRecord[];
  /** Files named by more than one split list (or twice by one). */
  multiListed: { cls: ImageClass; file: string; splits: Split[] }[];
  byClass(cls: ImageClass): ImageRecord[];
  bySplit(split: Split, cls?: ImageClass): ImageRecord[];
  /** Lookup by class and file name. */
  get(cls: ImageClass, file: string): ImageRecord | undefined;
}

/** A data root that is absent or lacks the upstream layout. `missing` lists release-relative paths. */
export class DataRootError extends Error {
  constructor(
    readonly root: string,
    readonly missing: string[],
    hint = "",
  ) {
    super(
      `COVID-CT data not found at ${root}: missing ${missing.join(", ")}.${hint} ` +
        "Run `npx covid-ct fetch-data` to download it, or pass `--data DIR` / set COVIDCT_DATA to a folder " +
        "with the upstream layout (Images-processed/CT_COVID, Images-processed/CT_NonCOVID, Data-split/).",
    );
    this.name = "DataRootError";
  }
}

/** Paths openDataset needs; metadata is optional here (metadata.ts reports it when asked). */
export function requiredPaths(): string[] {
  const out: string[] = [];
  for (const cls of CLASSES) out.push(imageDirRel(cls));
  for (const cls of CLASSES) for (const split of SPLITS) out.push(splitListRel(cls, split));
  return out;
}

/** Throw a DataRootError unless root has the layout; returns the absolute root. */
export function validateRoot(root: string): string {
  const abs = path.resolve(root);
  if (!fs.existsSync(abs) || !fs.statSync(abs).isDirectory()) {
    throw new DataRootError(abs, ["the folder itself"]);
  }
  const missing = requiredPaths().filter((rel) => !fs.existsSync(path.join(abs, rel)));
  if (missing.length > 0) {
    // A common half-way state: the repository was cloned but the image zips were not extracted.
    const zips = CLASSES.map((c) => `${imageDirRel(c)}.zip`).filter((z) => fs.existsSync(path.join(abs, z)));
    const hint = zips.length > 0 ? ` Found ${zips.join(", ")}: extract them in Images-processed/ (or run fetch-data, which does).` : "";
    throw new DataRootError(abs, missing, hint);
  }
  return abs;
}

export function isImageFile(name: string): boolean {
  return !name.startsWith(".") && IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** Lowercased name without an image extension: the key for tolerant matching. */
function stemKey(name: string): string {
  const ext = path.extname(name).toLowerCase();
  return (IMAGE_EXTENSIONS.includes(ext) ? name.slice(0, -ext.length) : name).toLowerCase();
}

/** Strip what upstream text files and spreadsheets carry around a file name. */
export function cleanEntry(raw: string): string {
  let s = raw.replace(/^\uFEFF/, "").replace(/[\r\u00A0]/g, " ").trim();
  // Tolerate "CT_COVID/x.png" or Windows separators: the lists are meant to hold bare names.
  s = s.split(/[\\/]/).pop() ?? s;
  return s.trim();
}

/**
 * Matches names against one folder's files: exact, then case-insensitive, then the same stem with
 * another image extension (or no extension at all, as in parts of the metadata sheet).
 */
export class FileMatcher {
  private readonly exact = new Set<string>();
  private readonly lower = new Map<string, string>();
  private readonly stems = new Map<string, string[]>();

  constructor(files: Iterable<string>) {
    for (const f of files) {
      this.exact.add(f);
      if (!this.lower.has(f.toLowerCase())) this.lower.set(f.toLowerCase(), f);
      const k = stemKey(f);
      const list = this.stems.get(k) ?? [];
      list.push(f);
      this.stems.set(k, list);
    }
  }

  match(name: string): { file: string | null; match: MatchKind } {
    const n = cleanEntry(name);
    if (this.exact.has(n)) return { file: n, match: "exact" };
    const ci = this.lower.get(n.toLowerCase());
    if (ci) return { file: ci, match: "case" };
    const cands = this.stems.get(stemKey(n));
    if (cands && cands.length > 0) return { file: [...cands].sort()[0], match: "extension" };
    return { file: null, match: "missing" };
  }
}

/** Read one split list: one file name a line; blank lines and `#` comments skipped. */
export function readSplitList(file: string): { entry: string; line: number }[] {
  const text = fs.readFileSync(file, "utf8");
  const out: { entry: string; line: number }[] = [];
  text.split(/\r\n|\n|\r/).forEach((raw, i) => {
    const entry = cleanEntry(raw);
    if (entry && !entry.startsWith("#")) out.push({ entry, line: i + 1 });
  });
  return out;
}

/** Image files in a class folder, sorted (hidden files and non-images such as Thumbs.db skipped). */
export function listImages(root: string, cls: ImageClass): string[] {
  return fs
    .readdirSync(path.join(root, imageDirRel(cls)), { withFileTypes: true })
    .filter((d) => (d.isFile() || d.isSymbolicLink()) && isImageFile(d.name))
    .map((d) => d.name)
    .sort();
}

/**
 * Open and index a release. `root` defaults to resolveDataRoot() (flag → COVIDCT_DATA → data/covid-ct
 * → ../shared/datasets/covid-ct). Throws DataRootError naming what is missing.
 */
export function openDataset(root?: string): CovidCtDataset {
  const abs = validateRoot(root ?? resolveDataRoot().dir);
  const images: ImageRecord[] = [];
  const entries: SplitEntry[] = [];
  const index = new Map<string, ImageRecord>();
  const key = (cls: ImageClass, file: string) => `${cls}/${file}`;

  for (const cls of CLASSES) {
    const files = listImages(abs, cls);
    for (const file of files) {
      const rel = `${imageDirRel(cls)}/${file}`;
      const rec: ImageRecord = { cls, file, path: path.join(abs, rel), rel, split: null, splits: [] };
      images.push(rec);
      index.set(key(cls, file), rec);
    }
    const matcher = new FileMatcher(files);
    for (const split of SPLITS) {
      for (const { entry, line } of readSplitList(path.join(abs, splitListRel(cls, split)))) {
        const m = matcher.match(entry);
        entries.push({ cls, split, entry, line, file: m.file, match: m.match });
        if (m.file) index.get(key(cls, m.file))!.splits.push(split);
      }
    }
  }
  for (const rec of images) rec.split = rec.splits[0] ?? null;

  const byClass = new Map<ImageClass, ImageRecord[]>(CLASSES.map((c) => [c, images.filter((r) => r.cls === c)]));
  return {
    root: abs,
    images,
    entries,
    missing: entries.filter((e) => e.match === "missing"),
    tolerant: entries.filter((e) => e.match === "case" || e.match === "extension"),
    unlisted: images.filter((r) => r.splits.length === 0),
    multiListed: images.filter((r) => r.splits.length > 1).map((r) => ({ cls: r.cls, file: r.file, splits: [...r.splits] })),
    byClass: (cls) => byClass.get(cls) ?? [],
    bySplit: (split, cls) => images.filter((r) => r.split === split && (cls === undefined || r.cls === cls)),
    get: (cls, file) => index.get(key(cls, file)),
  };
}
