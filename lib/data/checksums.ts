/**
 * Data integrity: the committed manifest `data/covid-ct.sha256`, `verifyData` and `fetchData`.
 *
 * The manifest (sha256sum format, paths relative to the data root, sorted bytewise) covers exactly
 * what upstream publishes and fetch-data can therefore reproduce: the 746 images of
 * Images-processed/CT_COVID and CT_NonCOVID (as extracted from the two zips), the six Data-split
 * lists and COVID-CT-MetaInfo.xlsx. The two CSVs of our shared copy (COVID-CT-MetaInfo.csv, an
 * export of the xlsx, and NonCOVID-CT-MetaInfo.csv) are not upstream files: they are left out, and
 * verifyData reports them under `extra`, which never fails verification. Check by hand with
 * `cd $DATA && sha256sum -c /path/to/data/covid-ct.sha256`.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { Readable } from "stream";
import { pipeline } from "stream/promises";
import extract from "extract-zip";
import { PROJECT_ROOT, resolveDataRoot } from "../config";
import { CLASSES, CLASS_DIR, COVID_META_XLSX, SPLITS, imageDirRel, isImageFile, splitListRel } from "./dataset";
import { mapLimit } from "./cache";

export const MANIFEST_FILE = path.join(PROJECT_ROOT, "data", "covid-ct.sha256");

export interface ManifestEntry {
  /** Data-root-relative, forward slashes. */
  path: string;
  sha256: string;
}

/** Parse sha256sum output ("<hex>  <path>" or binary-mode "<hex> *<path>"); blank lines and # comments skipped. */
export function parseManifest(text: string, source = "manifest"): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim() || line.startsWith("#")) return;
    const m = line.match(/^([0-9a-fA-F]{64}) [ *](.+)$/);
    if (!m) throw new Error(`${source}:${i + 1}: not a sha256sum line: ${JSON.stringify(line)}`);
    out.push({ sha256: m[1].toLowerCase(), path: m[2] });
  });
  return out;
}

export function formatManifest(entries: readonly ManifestEntry[]): string {
  return [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((e) => `${e.sha256}  ${e.path}\n`).join("");
}

export function readManifest(file: string = MANIFEST_FILE): ManifestEntry[] {
  if (!fs.existsSync(file)) throw new Error(`Checksum manifest ${file} is missing (it is committed with the project; restore it from git).`);
  return parseManifest(fs.readFileSync(file, "utf8"), file);
}

function toEntries(m: string | readonly ManifestEntry[] | undefined): ManifestEntry[] {
  return m === undefined ? readManifest() : typeof m === "string" ? readManifest(m) : [...m];
}

export async function sha256Of(file: string): Promise<string> {
  const h = crypto.createHash("sha256");
  await pipeline(fs.createReadStream(file), h);
  return h.digest("hex");
}

/** The upstream files present under root, release-relative (what a manifest of it should list). */
export function upstreamFiles(root: string): string[] {
  const out: string[] = [];
  for (const cls of CLASSES) {
    const dir = path.join(root, imageDirRel(cls));
    if (fs.existsSync(dir)) for (const f of fs.readdirSync(dir).filter(isImageFile)) out.push(`${imageDirRel(cls)}/${f}`);
  }
  for (const cls of CLASSES) for (const s of SPLITS) if (fs.existsSync(path.join(root, splitListRel(cls, s)))) out.push(splitListRel(cls, s));
  if (fs.existsSync(path.join(root, COVID_META_XLSX))) out.push(COVID_META_XLSX);
  return out.sort();
}

/** Hash the upstream files of a release (used once to write data/covid-ct.sha256, and by tests). */
export async function generateManifest(root: string, files: string[] = upstreamFiles(root)): Promise<ManifestEntry[]> {
  const hashes = await mapLimit(files, 8, (rel) => sha256Of(path.join(root, rel)));
  return files.map((p, i) => ({ path: p, sha256: hashes[i] })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export interface VerifyReport {
  /** No manifest file missing or different (extras allowed). */
  ok: boolean;
  root: string;
  checked: number;
  missing: string[];
  mismatched: { path: string; expected: string; actual: string }[];
  /** Files in the folders the manifest covers that it does not list (informational). */
  extra: string[];
}

export interface VerifyOptions {
  /** Manifest file or entries (default data/covid-ct.sha256). */
  manifest?: string | readonly ManifestEntry[];
  log?: (msg: string) => void;
}

/** Compare the files under root with the manifest. Never throws for data problems: read the report. */
export async function verifyData(root?: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const abs = path.resolve(root ?? resolveDataRoot().dir);
  const entries = toEntries(opts.manifest);
  const missing: string[] = [];
  const mismatched: VerifyReport["mismatched"] = [];
  let done = 0;
  await mapLimit(entries, 8, async (e) => {
    const file = path.join(abs, e.path);
    if (!fs.existsSync(file)) missing.push(e.path);
    else {
      const actual = await sha256Of(file);
      if (actual !== e.sha256) mismatched.push({ path: e.path, expected: e.sha256, actual });
    }
    if (++done % 250 === 0) opts.log?.(`verify-data: ${done}/${entries.length}`);
  });
  const listed = new Set(entries.map((e) => e.path));
  const dirs = new Set(entries.map((e) => path.posix.dirname(e.path)));
  const extra: string[] = [];
  for (const d of dirs) {
    const dir = path.join(abs, d);
    if (!fs.existsSync(dir)) continue;
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      if (ent.name.startsWith(".") || ent.isDirectory()) continue;
      const rel = d === "." ? ent.name : `${d}/${ent.name}`;
      if (!listed.has(rel)) extra.push(rel);
    }
  }
  missing.sort();
  mismatched.sort((a, b) => (a.path < b.path ? -1 : 1));
  extra.sort();
  return { ok: missing.length === 0 && mismatched.length === 0, root: abs, checked: entries.length, missing, mismatched, extra };
}

/** One-line-per-problem text for a report (CLI and error messages). */
export function describeVerify(r: VerifyReport, max = 10): string {
  const lines = [`${r.root}: ${r.checked} files checked, ${r.missing.length} missing, ${r.mismatched.length} different, ${r.extra.length} extra`];
  const list = (title: string, items: string[]) => {
    if (items.length === 0) return;
    lines.push(`${title}:`, ...items.slice(0, max).map((s) => `  ${s}`));
    if (items.length > max) lines.push(`  … and ${items.length - max} more`);
  };
  list("missing", r.missing);
  list("different", r.mismatched.map((m) => m.path));
  list("extra (not in the manifest; harmless)", r.extra);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// fetch-data

export const UPSTREAM_REPO = "UCSD-AI4H/COVID-CT";
export const UPSTREAM_BASE_URL = `https://raw.githubusercontent.com/${UPSTREAM_REPO}/master`;

/** What is downloaded, release-relative (also the place to put a file obtained by hand). */
export const UPSTREAM_FILES: readonly string[] = [
  ...CLASSES.map((c) => `${imageDirRel(c)}.zip`),
  ...CLASSES.flatMap((c) => SPLITS.map((s) => splitListRel(c, s))),
  COVID_META_XLSX,
];

/** Fetch `url` into `dest` (a fresh path); reject on any failure. Injectable for tests and mirrors. */
export type Downloader = (url: string, dest: string) => Promise<void>;

/** Default downloader: Node's fetch, redirects followed, streamed to disk. */
export const httpDownload: Downloader = async (url, dest) => {
  const res = await fetch(url, { redirect: "follow", signal: AbortSignal.timeout(15 * 60 * 1000) });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} ${res.statusText}`);
  await pipeline(Readable.fromWeb(res.body as import("stream/web").ReadableStream), fs.createWriteStream(dest));
};

export interface FetchOptions {
  log?: (msg: string) => void;
  download?: Downloader;
  baseUrl?: string;
  manifest?: string | readonly ManifestEntry[];
  /** Re-fetch even when the root already verifies. */
  force?: boolean;
}

export interface FetchReport {
  root: string;
  /** True when the root already verified and nothing was done. */
  skipped: boolean;
  downloaded: string[];
  /** Files taken from the root because they were already there (e.g. zips placed by hand). */
  reused: string[];
  verify: VerifyReport;
}

/** A download that failed: names the URLs and the files to provide by hand instead. */
export class FetchError extends Error {
  constructor(
    readonly failures: { url: string; file: string; reason: string }[],
    readonly root: string,
  ) {
    super(
      failures.map((f) => `Download failed: ${f.url} (${f.reason})`).join("\n") +
        `\nWithout network access, download these by hand and place them under ${root}:\n` +
        failures.map((f) => `  ${f.file}   ← ${f.url}`).join("\n") +
        "\nthen run `npx covid-ct fetch-data` again (it uses files already there, extracts the zips and verifies everything)," +
        " or extract the zips into Images-processed/ yourself and run `npx covid-ct verify-data`.",
    );
    this.name = "FetchError";
  }
}

/** Find the folder holding the images inside an extracted zip (top level or one named dirName). */
function findImageDir(dir: string, dirName: string, depth = 0): string | null {
  const ents = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => !e.name.startsWith(".") && e.name !== "__MACOSX");
  const named = ents.find((e) => e.isDirectory() && e.name.toLowerCase() === dirName.toLowerCase());
  if (named) return path.join(dir, named.name);
  if (ents.some((e) => e.isFile() && isImageFile(e.name))) return dir;
  if (depth < 2) {
    for (const e of ents.filter((x) => x.isDirectory())) {
      const hit = findImageDir(path.join(dir, e.name), dirName, depth + 1);
      if (hit) return hit;
    }
  }
  return null;
}

/** What fetchData installs into the root, release-relative; each is replaced as a whole. */
const INSTALLED: readonly string[] = [...CLASSES.map(imageDirRel), "Data-split/COVID", "Data-split/NonCOVID", COVID_META_XLSX];

/**
 * Download the release from GitHub (UCSD-AI4H/COVID-CT) into root in the upstream layout, extract
 * the image zips and verify everything against the manifest. Work happens in a temp folder beside
 * root; root is only touched once everything verified, by renames. Files already in root at their
 * upstream place (e.g. zips put there by hand) are used instead of downloading them, unless `force`.
 */
export async function fetchData(root?: string, opts: FetchOptions = {}): Promise<FetchReport> {
  const abs = path.resolve(root ?? resolveDataRoot().dir);
  const log = opts.log ?? (() => undefined);
  const download = opts.download ?? httpDownload;
  const base = (opts.baseUrl ?? UPSTREAM_BASE_URL).replace(/\/+$/, "");
  const manifest = toEntries(opts.manifest);

  if (!opts.force && fs.existsSync(abs)) {
    const pre = await verifyData(abs, { manifest });
    if (pre.ok) {
      log(`fetch-data: ${abs} already complete (${pre.checked} files verified); nothing to do`);
      return { root: abs, skipped: true, downloaded: [], reused: [], verify: pre };
    }
  }

  fs.mkdirSync(path.dirname(abs), { recursive: true });
  const tmp = fs.mkdtempSync(path.join(path.dirname(abs), `.${path.basename(abs)}.fetch-`));
  try {
    const got = new Map<string, string>();
    const downloaded: string[] = [];
    const reused: string[] = [];
    const failures: FetchError["failures"] = [];
    for (const rel of UPSTREAM_FILES) {
      const local = path.join(abs, rel);
      if (!opts.force && fs.existsSync(local) && fs.statSync(local).isFile()) {
        got.set(rel, local);
        reused.push(rel);
        continue;
      }
      const url = `${base}/${rel.split("/").map(encodeURIComponent).join("/")}`;
      const dest = path.join(tmp, "download", rel);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      log(`fetch-data: downloading ${url}`);
      try {
        await download(url, `${dest}.part`);
        fs.renameSync(`${dest}.part`, dest);
        got.set(rel, dest);
        downloaded.push(rel);
      } catch (e) {
        failures.push({ url, file: rel, reason: e instanceof Error ? e.message : String(e) });
      }
    }
    if (failures.length > 0) throw new FetchError(failures, abs);

    // Stage the upstream layout.
    const stage = path.join(tmp, "stage");
    for (const cls of CLASSES) {
      const zip = got.get(`${imageDirRel(cls)}.zip`)!;
      const out = path.join(tmp, "unzip", cls);
      log(`fetch-data: extracting ${path.basename(zip)}`);
      try {
        await extract(zip, { dir: out });
      } catch (e) {
        throw new Error(`Cannot extract ${zip}: ${e instanceof Error ? e.message : e}. The zip is damaged: delete it and run \`npx covid-ct fetch-data\` again.`);
      }
      const found = findImageDir(out, CLASS_DIR[cls]);
      if (!found) throw new Error(`${zip} holds no images (expected a ${CLASS_DIR[cls]}/ folder of PNG/JPG files).`);
      const dest = path.join(stage, imageDirRel(cls));
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.renameSync(found, dest);
      // macOS zips carry AppleDouble companions ("._x.png"): not data.
      for (const f of fs.readdirSync(dest)) if (f.startsWith(".")) fs.rmSync(path.join(dest, f), { recursive: true, force: true });
    }
    for (const rel of UPSTREAM_FILES.filter((r) => !r.endsWith(".zip"))) {
      const dest = path.join(stage, rel);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.copyFileSync(got.get(rel)!, dest);
    }

    const staged = await verifyData(stage, { manifest });
    if (!staged.ok) {
      throw new Error(
        `Fetched data does not match the manifest; nothing was installed in ${abs}.\n${describeVerify(staged)}\n` +
          "The upstream files may have changed or a download was damaged: run `npx covid-ct fetch-data --force` again, " +
          "or report it if it persists.",
      );
    }

    // Install: move old pieces aside, new pieces in (renames within one file system).
    fs.mkdirSync(abs, { recursive: true });
    for (const rel of INSTALLED) {
      const dest = path.join(abs, rel);
      if (fs.existsSync(dest)) {
        const old = path.join(tmp, "old", rel);
        fs.mkdirSync(path.dirname(old), { recursive: true });
        fs.renameSync(dest, old);
      }
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.renameSync(path.join(stage, rel), dest);
    }
    const verify = await verifyData(abs, { manifest });
    log(`fetch-data: ${abs}: ${verify.checked} files verified`);
    return { root: abs, skipped: false, downloaded, reused, verify };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
