/**
 * Audit across sources (issue 8, point 4): near-duplicate images between every pair of sources,
 * and patient/volume leaks across the splits of a protocol.
 *
 * Images are compared after the source's orientation transform and chest crop (sourcePreprocessing), so that a LUNA
 * slice (upright, wide black margins) and the same slice cropped into a paper figure, or an Inf-Net
 * COVID-Seg slice (turned 90°) and a figure of the same Radiopaedia case, hash alike. The hash is
 * the audit's 64-bit pHash (sharp-phash of the decoded gray pixels, lib/audit.ts) of that view,
 * cached on disk by file content and view.
 */
import phash from "sharp-phash";
import { DEFAULT_PHASH_THRESHOLD, hammingHex } from "../audit";
import { DiskCache, cacheKey, contentHash, mapLimit } from "../data/cache";
import { ImageClass, Split } from "../data/dataset";
import { decodeRaw } from "../data/decode";
import { Orientation, orientPixels } from "../data/orientation";
import { ChestCropOptions, chestCropBox } from "../data/preprocess";
import { SourceName, sourceOrientation, sourcePreprocessing } from "../data/sources";

/** Bump when the hashed view changes (orientation table, crop) so cached hashes are not reused. */
export const VIEW_PHASH_VERSION = 1;

export interface HashableImage {
  id: string;
  source: SourceName;
  path: string;
}

/** pHash (16 hex digits) of the image as every source is compared: oriented, then chest-cropped. */
export async function viewPhash(file: string, orientation: Orientation, cropOptions: ChestCropOptions = {}): Promise<string> {
  const raw = await decodeRaw(file, 1);
  const o = orientPixels(new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength), raw.height, raw.width, 1, orientation);
  const box = chestCropBox(o.data, o.height, o.width, cropOptions).box;
  const crop = new Uint8Array(box.width * box.height);
  for (let y = 0; y < box.height; y++) crop.set(o.data.subarray((box.top + y) * o.width + box.left, (box.top + y) * o.width + box.left + box.width), y * box.width);
  const bits = await phash(Buffer.from(crop.buffer, crop.byteOffset, crop.byteLength), { raw: { width: box.width, height: box.height, channels: 1 } });
  let hex = "";
  for (let i = 0; i < 64; i += 4) hex += parseInt(bits.slice(i, i + 4), 2).toString(16);
  return hex;
}

export interface HashOptions {
  /** Use the on-disk cache (default true). */
  cache?: boolean;
  cacheDir?: string;
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

/** id → view pHash, cached by content + orientation. Unreadable images are reported, not thrown. */
export async function hashImages(images: readonly HashableImage[], opts: HashOptions = {}): Promise<{ hashes: Map<string, string>; unreadable: { id: string; error: string }[] }> {
  const store = opts.cache === false ? null : new DiskCache(opts.cacheDir);
  const hashes = new Map<string, string>();
  const unreadable: { id: string; error: string }[] = [];
  let done = 0;
  await mapLimit(images, opts.concurrency ?? 4, async (img) => {
    try {
      const orientation = sourceOrientation(img.source, img.path);
      const crop = sourcePreprocessing(img.source, img.path).cropOptions;
      const key = cacheKey("view-phash", VIEW_PHASH_VERSION, contentHash(img.path), orientation, ...(crop ? [crop] : []));
      let h = store?.get("view-phash", key)?.toString("utf8") ?? null;
      if (!h || !/^[0-9a-f]{16}$/.test(h)) {
        h = await viewPhash(img.path, orientation, crop);
        store?.put("view-phash", key, h);
      }
      hashes.set(img.id, h);
    } catch (e) {
      unreadable.push({ id: img.id, error: e instanceof Error ? e.message : String(e) });
    } finally {
      opts.onProgress?.(++done, images.length);
    }
  });
  return { hashes, unreadable };
}

export interface CrossSourcePair {
  a: string;
  b: string;
  aSource: SourceName;
  bSource: SourceName;
  distance: number;
}

/**
 * Near-duplicate pairs (Hamming distance ≤ threshold) between images of different sources. All
 * pairs: 2,600 images → 3.4 M XOR+popcounts, well under a second.
 */
export function crossSourcePairs(images: readonly HashableImage[], hashes: Map<string, string>, threshold = DEFAULT_PHASH_THRESHOLD): CrossSourcePair[] {
  const ok = images.filter((i) => hashes.has(i.id));
  const out: CrossSourcePair[] = [];
  for (let i = 0; i < ok.length; i++) {
    const hi = hashes.get(ok[i].id)!;
    for (let j = i + 1; j < ok.length; j++) {
      if (ok[i].source === ok[j].source) continue;
      const d = hammingHex(hi, hashes.get(ok[j].id)!);
      if (d <= threshold) out.push({ a: ok[i].id, b: ok[j].id, aSource: ok[i].source, bSource: ok[j].source, distance: d });
    }
  }
  return out.sort((x, y) => x.distance - y.distance || (x.a < y.a ? -1 : x.a > y.a ? 1 : x.b < y.b ? -1 : 1));
}

/** Count of pairs per source pair, keyed `a|b` with the names sorted. */
export function pairCounts(pairs: readonly CrossSourcePair[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of pairs) {
    const k = [p.aSource, p.bSource].sort().join("|");
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

export interface MemberLike {
  id: string;
  source: SourceName;
  patient: string;
}

export interface ProtocolLeak {
  /** `<source>:<patient>` */
  patient: string;
  source: SourceName;
  splits: Split[];
  ids: Partial<Record<Split, string[]>>;
}

/** Patients (volumes, series, source paper + patient) with images in more than one split. */
export function protocolLeaks(splits: Record<Split, Record<ImageClass, readonly MemberLike[]>>): ProtocolLeak[] {
  const by = new Map<string, { source: SourceName; ids: Partial<Record<Split, string[]>> }>();
  for (const s of ["train", "val", "test"] as Split[]) {
    for (const cls of ["covid", "noncovid"] as ImageClass[]) {
      for (const m of splits[s][cls]) {
        const k = `${m.source}:${m.patient}`;
        const e = by.get(k) ?? { source: m.source, ids: {} };
        (e.ids[s] ??= []).push(m.id);
        by.set(k, e);
      }
    }
  }
  const out: ProtocolLeak[] = [];
  for (const [patient, e] of by) {
    const ss = (["train", "val", "test"] as Split[]).filter((s) => e.ids[s]);
    if (ss.length > 1) out.push({ patient, source: e.source, splits: ss, ids: e.ids });
  }
  return out.sort((a, b) => (a.patient < b.patient ? -1 : 1));
}
