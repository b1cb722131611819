/**
 * Integrity audit of a COVID-CT release and its official split:
 *  - split entries without a file, and files no split names;
 *  - patient leaks: one patient's images in more than one split (the split is by image, and the
 *    COVID images are several figures/slices per patient, so a model can meet a test patient in
 *    training);
 *  - near-duplicate images by 64-bit perceptual hash (sharp-phash: 32×32 gray DCT, 8×8 low band).
 * Hashes are cached on disk keyed by the file's SHA-256, so a second audit costs a few seconds.
 */
import phash from "sharp-phash";
import { resolveDataRoot } from "./config";
import { DiskCache, cacheKey, contentHash, mapLimit } from "./data/cache";
import { ImageClass, ImageRecord, MatchKind, Split, openDataset } from "./data/dataset";
import { decodeRaw } from "./data/decode";
import { patientMap } from "./data/metadata";

/**
 * Default Hamming-distance threshold (of 64 bits) for "near duplicate", set from the release
 * itself: every pair at ≤ 5 is either a copy (two COVID figures of kjr-21-e24 reappear, rescaled and
 * re-encoded, as NonCOVID 71%0.jpg / 71%1.jpg at distances 1 and 3; a 90 % JPEG re-encode of one
 * image lands at 0–1) or neighbouring slices of one scan, while from 6 on pairs of different
 * patients and papers appear (checked by eye).
 */
export const DEFAULT_PHASH_THRESHOLD = 5;
const PHASH_VERSION = 2;

export type DuplicateKind = "within-split" | "cross-split" | "cross-class";

export interface DuplicateFinding {
  a: string;
  b: string;
  distance: number;
  aSplit: Split | null;
  bSplit: Split | null;
  aClass: ImageClass;
  bClass: ImageClass;
  kind: DuplicateKind;
  /** Same bytes (SHA-256), not just similar. */
  identical: boolean;
}

export interface LeakFinding {
  /** Patient identity: `<paper>#<Patient ID>` (COVID) or `noncovid#<patient id>`. */
  patient: string;
  cls: ImageClass;
  splits: Split[];
  files: string[];
  bySplit: Partial<Record<Split, string[]>>;
}

export interface AuditReport {
  root: string;
  threshold: number;
  images: number;
  missing: { class: ImageClass; split: Split; entry: string }[];
  unlisted: { class: ImageClass; file: string }[];
  /** Files named by more than one split list, or twice by one (each image must be in one split, once). */
  multiListed: { class: ImageClass; file: string; splits: Split[] }[];
  leaks: LeakFinding[];
  duplicates: DuplicateFinding[];
  /** Split entries matched only by case or extension. */
  tolerant: { class: ImageClass; split: Split; entry: string; file: string; match: MatchKind }[];
  /** Images that could not be hashed (corrupt): they are in no duplicate pair. */
  unreadable: { class: ImageClass; file: string; error: string }[];
  patientSource: { covid: "metadata"; noncovid: "csv" | "filename" };
  /** Images with no patient identity (no metadata row): not part of any leak. */
  withoutPatient: { class: ImageClass; file: string }[];
  summary: {
    leakedPatients: number;
    leakedImages: number;
    duplicatePairs: number;
    byKind: Record<DuplicateKind, number>;
    identicalPairs: number;
  };
  /** 16-hex pHash per `class/file` (for notebooks: distance histograms). */
  hashes: Record<string, string>;
}

export interface AuditOptions {
  /** Max Hamming distance (0–64) for a duplicate pair; default DEFAULT_PHASH_THRESHOLD. */
  threshold?: number;
  /** Use the on-disk hash cache (default true). */
  cache?: boolean;
  /** Cache root (default cacheDir()). */
  cacheDir?: string;
  /** Images hashed at once (default 4). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * 64-bit pHash as 16 hex digits, of the fully decoded gray image. Handing sharp-phash the file
 * itself lets libjpeg shrink-on-load pick a size-dependent DCT scale, which moved a 90 % rescaled
 * JPEG copy 6 bits away; from the decoded pixels the same copies stay within 0–1 bits.
 */
export async function imagePhash(file: string): Promise<string> {
  const { data, width, height } = await decodeRaw(file, 1);
  const bits = await phash(data, { raw: { width, height, channels: 1 } });
  let hex = "";
  for (let i = 0; i < 64; i += 4) hex += parseInt(bits.slice(i, i + 4), 2).toString(16);
  return hex;
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Hamming distance of two 16-hex pHashes. */
export function hammingHex(a: string, b: string): number {
  return popcount32((parseInt(a.slice(0, 8), 16) ^ parseInt(b.slice(0, 8), 16)) >>> 0) + popcount32((parseInt(a.slice(8), 16) ^ parseInt(b.slice(8), 16)) >>> 0);
}

export function duplicateKind(a: { cls: ImageClass; split: Split | null }, b: { cls: ImageClass; split: Split | null }): DuplicateKind {
  if (a.cls !== b.cls) return "cross-class";
  return a.split === b.split ? "within-split" : "cross-split";
}

/** Audit the release at root (default resolveDataRoot()). Full dataset: ~10 s cold on 2 cores, ~1 s cached. */
export async function auditDataset(root?: string, opts: AuditOptions = {}): Promise<AuditReport> {
  const threshold = opts.threshold ?? DEFAULT_PHASH_THRESHOLD;
  const ds = openDataset(root ?? resolveDataRoot().dir);
  const store = opts.cache === false ? null : new DiskCache(opts.cacheDir);

  // ---- hashes
  const unreadable: AuditReport["unreadable"] = [];
  let done = 0;
  const hashed = await mapLimit(ds.images, opts.concurrency ?? 4, async (r) => {
    try {
      const sha = contentHash(r.path);
      const key = cacheKey("phash", PHASH_VERSION, sha);
      let h = store?.get("phash", key)?.toString("utf8") ?? null;
      if (!h || !/^[0-9a-f]{16}$/.test(h)) {
        h = await imagePhash(r.path);
        store?.put("phash", key, h);
      }
      return { rec: r, sha, h };
    } catch (e) {
      unreadable.push({ class: r.cls, file: r.file, error: e instanceof Error ? e.message : String(e) });
      return null;
    } finally {
      opts.onProgress?.(++done, ds.images.length);
    }
  });
  const ok = hashed.filter((x): x is { rec: ImageRecord; sha: string; h: string } => x !== null);

  // ---- duplicates: all pairs (n ≈ 750 → 280k XOR+popcounts, milliseconds)
  const hi = new Uint32Array(ok.length), lo = new Uint32Array(ok.length);
  ok.forEach((x, i) => { hi[i] = parseInt(x.h.slice(0, 8), 16) >>> 0; lo[i] = parseInt(x.h.slice(8), 16) >>> 0; });
  const duplicates: DuplicateFinding[] = [];
  for (let i = 0; i < ok.length; i++) {
    for (let j = i + 1; j < ok.length; j++) {
      const d = popcount32((hi[i] ^ hi[j]) >>> 0) + popcount32((lo[i] ^ lo[j]) >>> 0);
      if (d > threshold) continue;
      const [a, b] = [ok[i], ok[j]];
      duplicates.push({
        a: a.rec.file, b: b.rec.file, distance: d, aSplit: a.rec.split, bSplit: b.rec.split, aClass: a.rec.cls, bClass: b.rec.cls,
        kind: duplicateKind(a.rec, b.rec), identical: a.sha === b.sha,
      });
    }
  }
  duplicates.sort((x, y) => x.distance - y.distance || (x.a < y.a ? -1 : x.a > y.a ? 1 : x.b < y.b ? -1 : 1));

  // ---- leaks by patient identity
  const patients = await patientMap(ds.root);
  const groups = new Map<string, ImageRecord[]>();
  const withoutPatient: AuditReport["withoutPatient"] = [];
  for (const r of ds.images) {
    const p = patients.map.get(`${r.cls}/${r.file}`);
    if (!p) { withoutPatient.push({ class: r.cls, file: r.file }); continue; }
    groups.set(p, [...(groups.get(p) ?? []), r]);
  }
  const leaks: LeakFinding[] = [];
  for (const [patient, recs] of groups) {
    const listed = recs.filter((r) => r.split !== null);
    const splits = (["train", "val", "test"] as Split[]).filter((s) => listed.some((r) => r.split === s));
    if (splits.length < 2) continue;
    const bySplit: LeakFinding["bySplit"] = {};
    for (const s of splits) bySplit[s] = listed.filter((r) => r.split === s).map((r) => r.file);
    leaks.push({ patient, cls: recs[0].cls, splits, files: listed.map((r) => r.file), bySplit });
  }
  leaks.sort((a, b) => (a.cls < b.cls ? -1 : a.cls > b.cls ? 1 : a.patient < b.patient ? -1 : 1));

  const byKind: Record<DuplicateKind, number> = { "within-split": 0, "cross-split": 0, "cross-class": 0 };
  for (const d of duplicates) byKind[d.kind]++;
  return {
    root: ds.root,
    threshold,
    images: ds.images.length,
    missing: ds.missing.map((e) => ({ class: e.cls, split: e.split, entry: e.entry })),
    unlisted: ds.unlisted.map((r) => ({ class: r.cls, file: r.file })),
    multiListed: ds.multiListed.map((m) => ({ class: m.cls, file: m.file, splits: m.splits })),
    leaks,
    duplicates,
    tolerant: ds.tolerant.map((e) => ({ class: e.cls, split: e.split, entry: e.entry, file: e.file!, match: e.match })),
    unreadable,
    patientSource: { covid: "metadata", noncovid: patients.noncovidSource },
    withoutPatient,
    summary: {
      leakedPatients: leaks.length,
      leakedImages: leaks.reduce((n, l) => n + l.files.length, 0),
      duplicatePairs: duplicates.length,
      byKind,
      identicalPairs: duplicates.filter((d) => d.identical).length,
    },
    hashes: Object.fromEntries(ok.map((x) => [`${x.rec.cls}/${x.rec.file}`, x.h])),
  };
}
