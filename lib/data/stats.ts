/**
 * Dataset statistics as the paper's Table 1 / Section 3 report them, from the files themselves.
 * The JSON shape of the first six fields is a contract with the CLI and tests; later fields are
 * extras. Every image is decoded in full once (a truncated file has a valid header), and the
 * result is cached by content hash, so later runs take well under a second.
 */
import { resolveDataRoot } from "../config";
import { cacheKey, contentHash, DiskCache, mapLimit } from "./cache";
import { CLASSES, ImageClass, MatchKind, SPLITS, Split, openDataset } from "./dataset";
import { decodeRaw, ImageSize, imageSize } from "./decode";
import { CovidMetaRow, loadCovidMetadata, metadataCounts, patientMap } from "./metadata";

export interface RangeStat {
  min: number;
  /** Unrounded; the paper reports rounded means. */
  mean: number;
  max: number;
}

export interface SizeStats {
  height: RangeStat;
  width: RangeStat;
}

export interface DatasetStats {
  covid: { images: number; patients: number };
  noncovid: { images: number; patients: number };
  /** Images per split, as matched to files (tolerantly); images no list names are not counted. */
  split: Record<Split, { covid: number; noncovid: number }>;
  /**
   * COVID metadata over the rows whose image is present. Image-level counts (imagesWith…, male,
   * female) are what the paper reports as "patients"; the *Patients counts are per (paper, Patient ID).
   */
  metadata: {
    imagesWithAge: number;
    imagesWithGender: number;
    male: number;
    female: number;
    patientsWithAge: number;
    patientsWithGender: number;
    malePatients: number;
    femalePatients: number;
  };
  sizes: { covid: SizeStats; noncovid: SizeStats };

  // ---- extras
  root: string;
  /** Numeric ages (years) for histograms: one per image with an age, and one per patient. */
  ages: { images: number[]; patients: number[]; unparsed: string[] };
  /** How split lists met the files. */
  splitNotes: {
    missing: { cls: ImageClass; split: Split; entry: string }[];
    tolerant: { cls: ImageClass; split: Split; entry: string; file: string; match: MatchKind }[];
    unlisted: { cls: ImageClass; file: string }[];
    multiListed: { cls: ImageClass; file: string; splits: Split[] }[];
  };
  /** Where patient identities come from (non-COVID: the shared CSV, else the file-name rule). */
  patientSource: { covid: "metadata"; noncovid: "csv" | "filename" };
  /** COVID images with no metadata row. */
  covidWithoutMetadata: string[];
  genderConflicts: string[];
  /** Images that cannot be decoded (corrupt, truncated, empty, too large): not in `sizes`. */
  unreadable: { cls: ImageClass; file: string; error: string }[];
  imagesWithNumericAge: number;
}

function range(xs: number[]): RangeStat {
  if (xs.length === 0) return { min: NaN, mean: NaN, max: NaN };
  let min = Infinity, max = -Infinity, sum = 0;
  for (const x of xs) { min = Math.min(min, x); max = Math.max(max, x); sum += x; }
  return { min, mean: sum / xs.length, max };
}

/**
 * Size of an image after decoding every pixel (header-only reads accept truncated files). The
 * outcome is cached per content hash; `store` null disables the cache.
 */
export async function decodedImageSize(file: string, store: DiskCache | null = new DiskCache()): Promise<ImageSize> {
  const key = cacheKey("decoded-size", 1, contentHash(file));
  const hit = store?.get("decoded-size", key);
  if (hit) return JSON.parse(hit.toString("utf8")) as ImageSize;
  const size = await imageSize(file);
  await decodeRaw(file, 1);
  store?.put("decoded-size", key, JSON.stringify(size));
  return size;
}

export async function computeStats(root?: string, opts: { cache?: boolean } = {}): Promise<DatasetStats> {
  const ds = openDataset(root ?? resolveDataRoot().dir);
  const [meta, patients] = await Promise.all([loadCovidMetadata(ds.root), patientMap(ds.root)]);

  const present = new Set(ds.byClass("covid").map((r) => r.file));
  const rows: CovidMetaRow[] = meta.rows.filter((r) => r.image !== null && present.has(r.image));
  const counts = metadataCounts(rows);
  const covered = new Set(rows.map((r) => r.image));

  const patientsOf = (cls: ImageClass) => new Set(ds.byClass(cls).map((r) => patients.map.get(`${cls}/${r.file}`) ?? `${cls}/${r.file}`)).size;

  const split = Object.fromEntries(
    SPLITS.map((s) => [s, { covid: ds.bySplit(s, "covid").length, noncovid: ds.bySplit(s, "noncovid").length }]),
  ) as DatasetStats["split"];

  const store = opts.cache === false ? null : new DiskCache();
  const unreadable: DatasetStats["unreadable"] = [];
  const dims = await mapLimit(ds.images, 4, async (r) => {
    try {
      return await decodedImageSize(r.path, store);
    } catch (e) {
      unreadable.push({ cls: r.cls, file: r.file, error: e instanceof Error ? e.message : String(e) });
      return null;
    }
  });
  unreadable.sort((a, b) => (a.cls + a.file < b.cls + b.file ? -1 : 1));
  const sizes = Object.fromEntries(
    CLASSES.map((cls) => {
      const d = dims.filter((x, i): x is ImageSize => x !== null && ds.images[i].cls === cls);
      return [cls, { height: range(d.map((x) => x.height)), width: range(d.map((x) => x.width)) }];
    }),
  ) as DatasetStats["sizes"];

  const firstAge = new Map<string, number>();
  for (const r of rows) if (r.age !== null && r.patient && !firstAge.has(r.patient)) firstAge.set(r.patient, r.age);

  return {
    covid: { images: ds.byClass("covid").length, patients: patientsOf("covid") },
    noncovid: { images: ds.byClass("noncovid").length, patients: patientsOf("noncovid") },
    split,
    metadata: {
      imagesWithAge: counts.imagesWithAge,
      imagesWithGender: counts.imagesWithGender,
      male: counts.male,
      female: counts.female,
      patientsWithAge: counts.patientsWithAge,
      patientsWithGender: counts.patientsWithGender,
      malePatients: counts.malePatients,
      femalePatients: counts.femalePatients,
    },
    sizes,
    root: ds.root,
    ages: {
      images: rows.filter((r) => r.age !== null).map((r) => r.age!),
      patients: [...firstAge.values()],
      unparsed: [...new Set(rows.filter((r) => r.ageRaw !== null && r.age === null).map((r) => r.ageRaw!))],
    },
    splitNotes: {
      missing: ds.missing.map((e) => ({ cls: e.cls, split: e.split, entry: e.entry })),
      tolerant: ds.tolerant.map((e) => ({ cls: e.cls, split: e.split, entry: e.entry, file: e.file!, match: e.match })),
      unlisted: ds.unlisted.map((r) => ({ cls: r.cls, file: r.file })),
      multiListed: ds.multiListed,
    },
    patientSource: { covid: "metadata", noncovid: patients.noncovidSource },
    covidWithoutMetadata: [...present].filter((f) => !covered.has(f)).sort(),
    genderConflicts: counts.genderConflicts,
    unreadable,
    imagesWithNumericAge: counts.imagesWithNumericAge,
  };
}
