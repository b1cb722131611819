/**
 * Run directories: where a run may be written, and whether a directory is one of ours.
 *
 * A run directory is "ours" when it holds a manifest.json written by makeManifest (kind, createdAt,
 * git). Nothing else is ever removed or overwritten: a mistyped --out must cost an error message,
 * never a user's files.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PROJECT_ROOT } from "../config";

/** A refused run directory; the message names the path, what is there and what to do. */
export class RunDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunDirError";
  }
}

export const MANIFEST_FILE = "manifest.json";
export const METRICS_FILE = "metrics.json";
export const LOCK_FILE = ".lock";

/** The manifest of a run directory of ours, or null (absent, unreadable, or not ours). */
export function readRunManifest(dir: string): { kind: string; config: unknown; checksums?: Record<string, string>; seed?: number; [k: string]: unknown } | null {
  const f = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(f)) return null;
  try {
    const m = JSON.parse(fs.readFileSync(f, "utf8"));
    if (m && typeof m.kind === "string" && typeof m.createdAt === "string" && m.git && typeof m.git === "object" && "config" in m) return m;
  } catch {
    /* not ours: an unparsable manifest is treated like a foreign file */
  }
  return null;
}

export function isOurRunDir(dir: string): boolean {
  return readRunManifest(dir) !== null;
}

/** True when `child` is `parent` or inside it (paths as given: resolve symlinks first where they matter, realPathOf). */
export function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** What a directory holds, for error messages ("12 entries: a.txt, b/, …"). */
export function describeContents(dir: string, max = 5): string {
  const entries = fs.readdirSync(dir, { withFileTypes: true });
  const names = entries.slice(0, max).map((e) => (e.isDirectory() ? `${e.name}/` : e.name));
  return `${entries.length} entr${entries.length === 1 ? "y" : "ies"}: ${names.join(", ")}${entries.length > max ? ", …" : ""}`;
}

/**
 * Validate a requested run directory before anything is written. `raw` is the flag's text (an
 * empty string is refused before path.resolve turns it into the working directory). `protect` are
 * folders that must be neither the run directory, inside it, nor contain it (data roots).
 * Returns the absolute path.
 */
export function checkRunDirPath(raw: string, opts: { flag?: string; protect?: readonly string[] } = {}): string {
  const flag = opts.flag ?? "--out";
  if (raw.trim() === "") throw new RunDirError(`${flag} is empty: give the directory the run should be written to (or leave ${flag} out for the default under runs/).`);
  const dir = path.resolve(raw);
  const refuse = (why: string) => new RunDirError(`${flag} ${raw} (${dir}) ${why}. Choose a new directory, e.g. ${flag} runs/my-run.`);
  if (dir === path.parse(dir).root) throw refuse("is the filesystem root");
  if (dir === os.homedir()) throw refuse("is your home directory");
  if (isInside(PROJECT_ROOT, dir)) throw refuse(dir === PROJECT_ROOT ? "is the project root" : "contains the project");
  // ../shared beside the project holds the read-only data and weights of every checkout: nothing
  // is ever written inside it, even beside (not inside) a data root.
  const shared = path.resolve(PROJECT_ROOT, "..", "shared");
  if (fs.existsSync(shared) && isInside(dir, shared)) throw refuse(`is inside ${shared}, the shared read-only data and weights`);
  for (const p of [...(opts.protect ?? []), ...(fs.existsSync(shared) ? [shared] : [])]) {
    const abs = path.resolve(p);
    if (isInside(abs, dir)) throw refuse(`contains the data root ${abs}`);
    if (isInside(dir, abs)) throw refuse(`is inside the data root ${abs}`);
  }
  if (fs.existsSync(dir)) {
    const st = fs.statSync(dir);
    if (!st.isDirectory()) throw refuse("is a file, not a directory");
  }
  return dir;
}

/** True when dir does not exist, or exists and is empty apart from a lock file. */
export function isEmptyDir(dir: string): boolean {
  if (!fs.existsSync(dir)) return true;
  return fs.readdirSync(dir).every((n) => n === LOCK_FILE);
}

/**
 * Validate a folder a command writes generated files into (e.g. Slurm scripts): the same refusals
 * as a run directory, and a non-empty folder must hold only files this kind of output writes
 * (`ours(name)`), so nothing of the user's is overwritten.
 */
export function checkOutputDir(raw: string, flag: string, ours: (name: string) => boolean): string {
  const dir = checkRunDirPath(raw, { flag });
  if (fs.existsSync(dir)) {
    const foreign = fs.readdirSync(dir).filter((n) => !ours(n));
    if (foreign.length) {
      throw new RunDirError(`${flag} ${dir} holds files this command did not write (${foreign.slice(0, 5).join(", ")}${foreign.length > 5 ? ", …" : ""}). Nothing was changed. Choose a new or empty folder.`);
    }
  }
  return dir;
}

/**
 * Validate a file a command writes (e.g. protocol.json): not empty, not a folder, inside no
 * protected place, and an existing file only when `ours(text)` says this command wrote it.
 */
export function checkOutputFile(raw: string, flag: string, ours: (text: string) => boolean): string {
  if (raw.trim() === "") throw new RunDirError(`${flag} is empty: give the file to write.`);
  const file = path.resolve(raw);
  if (fs.existsSync(file)) {
    if (fs.statSync(file).isDirectory()) throw new RunDirError(`${flag} ${file} is a folder: give a file name, e.g. ${path.join(raw, "protocol.json")}.`);
    let mine = false;
    try {
      mine = ours(fs.readFileSync(file, "utf8"));
    } catch {
      mine = false;
    }
    if (!mine) throw new RunDirError(`${flag} ${file} exists and was not written by this command. Nothing was changed. Choose another file name.`);
  }
  return file;
}
