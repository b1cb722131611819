/**
 * On-disk cache under cacheDir() for preprocessed images and image hashes. Keys are SHA-256 of the
 * file's content plus the parameters, never its path or mtime, so renamed or re-fetched files hit
 * and changed files miss. Writes go to a temp file then rename (lib/util/fs), so concurrent
 * processes (notebooks, tests) never read half an entry. Safe to delete at any time.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { cacheDir, cacheWriteDir } from "../config";
import { writeFileAtomic } from "../util/fs";
import { PreprocessOptions, PreprocessedImage, normalisePreprocessOptions, preprocessImage } from "./preprocess";

/** Bump when preprocessing output changes for the same parameters, so old entries are not reused. */
export const PREPROCESS_VERSION = 1;

const hashMemo = new Map<string, { size: number; mtimeMs: number; hash: string }>();

/** SHA-256 (hex) of a file's content; memoised in-process by path, size and mtime. */
export function contentHash(file: string): string {
  const abs = path.resolve(file);
  const st = fs.statSync(abs);
  const memo = hashMemo.get(abs);
  if (memo && memo.size === st.size && memo.mtimeMs === st.mtimeMs) return memo.hash;
  const hash = crypto.createHash("sha256").update(fs.readFileSync(abs)).digest("hex");
  hashMemo.set(abs, { size: st.size, mtimeMs: st.mtimeMs, hash });
  return hash;
}

/** Stable key of arbitrary JSON-able parts (object keys sorted). */
export function cacheKey(...parts: unknown[]): string {
  const canon = (v: unknown): unknown =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])]))
      : Array.isArray(v) ? v.map(canon) : v;
  return crypto.createHash("sha256").update(JSON.stringify(parts.map(canon))).digest("hex");
}

/** A namespaced key → bytes store; entries live at <dir>/<namespace>/<key[0:2]>/<key>. */
export class DiskCache {
  readonly dir: string;
  constructor(dir: string = cacheDir()) {
    this.dir = path.resolve(dir);
  }
  private file(ns: string, key: string): string {
    return path.join(this.dir, ns, key.slice(0, 2), key);
  }
  /** The redirect of cacheDir()'s writes (redirectCacheWrites) when this cache is cacheDir()'s. */
  private overlay(): string | null {
    const w = cacheWriteDir();
    return w && this.dir === path.resolve(cacheDir()) ? w : null;
  }
  get(ns: string, key: string): Buffer | null {
    const o = this.overlay();
    for (const f of o ? [path.join(o, ns, key.slice(0, 2), key), this.file(ns, key)] : [this.file(ns, key)]) {
      try {
        return fs.readFileSync(f);
      } catch {
        /* next */
      }
    }
    return null;
  }
  put(ns: string, key: string, data: Uint8Array | string): void {
    const o = this.overlay();
    writeFileAtomic(o ? path.join(o, ns, key.slice(0, 2), key) : this.file(ns, key), data);
  }
}

// Entry format: 4-byte little-endian header length, JSON header, then the raw 8-bit pixels.
function encode(img: PreprocessedImage): Buffer {
  const header = Buffer.from(JSON.stringify({ size: img.size, channels: img.channels, crop: img.crop, source: img.source }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return Buffer.concat([len, header, Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength)]);
}

function decode(buf: Buffer, file: string): PreprocessedImage | null {
  if (buf.length < 4) return null;
  const n = buf.readUInt32LE(0);
  if (4 + n > buf.length) return null;
  try {
    const h = JSON.parse(buf.subarray(4, 4 + n).toString("utf8"));
    const data = new Uint8Array(buf.subarray(4 + n)); // copy: own, aligned storage
    if (data.length !== h.size * h.size * h.channels) return null;
    if (h.crop && h.crop.threshold === null) h.crop.threshold = NaN; // JSON has no NaN
    return { data, size: h.size, channels: h.channels, crop: h.crop, source: h.source, file };
  } catch {
    return null;
  }
}

export interface CacheUse {
  /** false: compute without reading or writing the cache. */
  cache?: boolean;
  /** Cache root (default cacheDir()). */
  dir?: string;
}

/** preprocessImage with the on-disk cache; a damaged entry is recomputed, not trusted. */
export async function preprocessCached(file: string, options: PreprocessOptions = {}, use: CacheUse = {}): Promise<PreprocessedImage> {
  if (use.cache === false) return preprocessImage(file, options);
  const store = new DiskCache(use.dir);
  const key = cacheKey("preprocess", PREPROCESS_VERSION, contentHash(file), normalisePreprocessOptions(options));
  const hit = store.get("preprocessed", key);
  const img = hit ? decode(hit, file) : null;
  if (img) return img;
  const fresh = await preprocessImage(file, options);
  store.put("preprocessed", key, encode(fresh));
  return fresh;
}

/** Run `fn` over items with at most `limit` in flight (sharp has its own thread pool; this bounds memory). */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** preprocessCached over many files, a few at a time, in input order (e.g. a whole split). */
export function preprocessAll(
  files: readonly string[],
  options: PreprocessOptions = {},
  use: CacheUse & { concurrency?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<PreprocessedImage[]> {
  let done = 0;
  return mapLimit(files, use.concurrency ?? 4, async (f) => {
    const img = await preprocessCached(f, options, use);
    use.onProgress?.(++done, files.length);
    return img;
  });
}
