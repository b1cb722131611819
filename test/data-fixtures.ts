/** Fixtures for the data and audit tests: temp releases built from a few real files, and a tiny zip writer. */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as zlib from "zlib";
import { resolveDataRoot } from "../lib/config";
import { CLASSES, ImageClass, SPLITS, Split, imageDirRel, splitListRel } from "../lib/data/dataset";

export const REAL_ROOT = resolveDataRoot().dir;
export const HAVE_REAL_DATA = fs.existsSync(path.join(REAL_ROOT, "Images-processed", "CT_COVID"));

/** mocha `before` hook body: skip the suite when the shared dataset is absent (e.g. a bare CI box). */
export function requireRealData(ctx: Mocha.Context): void {
  if (!HAVE_REAL_DATA) ctx.skip();
}

const made: string[] = [];

/** A fresh temp folder, removed by cleanupTempDirs(). */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `covid-ct-${prefix}-`));
  made.push(dir);
  return dir;
}

/** Remove every folder tempDir made (symlinks inside are removed, never their targets). */
export function cleanupTempDirs(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

export type Lists = Partial<Record<ImageClass, Partial<Record<Split, string[]>>>>;

/** Write the six split lists (absent ones empty). */
export function writeLists(root: string, lists: Lists): void {
  for (const cls of CLASSES) {
    for (const s of SPLITS) {
      const file = path.join(root, splitListRel(cls, s));
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, (lists[cls]?.[s] ?? []).map((l) => `${l}\n`).join(""));
    }
  }
}

/**
 * A release whose images are symlinks to the real ones (cheap, and removable one by one) and whose
 * split lists and metadata are copies (editable). `images` limits which files are linked.
 */
export function linkedCopyOfRealData(opts: { images?: Partial<Record<ImageClass, string[]>>; metadata?: boolean } = {}): string {
  const root = tempDir("copy");
  for (const cls of CLASSES) {
    const src = path.join(REAL_ROOT, imageDirRel(cls));
    const dst = path.join(root, imageDirRel(cls));
    fs.mkdirSync(dst, { recursive: true });
    for (const f of opts.images?.[cls] ?? fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(dst, f));
  }
  for (const cls of CLASSES) {
    for (const s of SPLITS) {
      const rel = splitListRel(cls, s);
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.copyFileSync(path.join(REAL_ROOT, rel), path.join(root, rel));
    }
  }
  if (opts.metadata !== false) {
    for (const f of ["COVID-CT-MetaInfo.xlsx", "NonCOVID-CT-MetaInfo.csv"]) {
      if (fs.existsSync(path.join(REAL_ROOT, f))) fs.copyFileSync(path.join(REAL_ROOT, f), path.join(root, f));
    }
  }
  return root;
}

/** Read a split list of the real data (non-empty lines). */
export function realList(cls: ImageClass, split: Split): string[] {
  return fs.readFileSync(path.join(REAL_ROOT, splitListRel(cls, split)), "utf8").split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

/**
 * Minimal zip writer (stored entries, no compression) so the fetch tests need neither the `zip`
 * CLI nor a network: entries ending in "/" are folders.
 */
export function writeZip(file: string, entries: { name: string; data?: Buffer }[]): void {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  const DOS_DATE = (0 << 9) | (1 << 5) | 1; // 1980-01-01
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const data = e.data ?? Buffer.alloc(0);
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8);
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(DOS_DATE, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(DOS_DATE, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(e.name.endsWith("/") ? 0x10 : 0, 38); // MS-DOS directory attribute
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  fs.writeFileSync(file, Buffer.concat([...locals, cd, end]));
}
