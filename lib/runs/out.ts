/**
 * An output folder of a command that writes next to the user's own files (`covid-ct predict --out`),
 * under the run layer's rules (checkRunDirPath) on the path as given and on its real path (symlinks
 * resolved): not inside the project's own folders, a data root, a run directory of another kind or
 * a file; an existing non-empty folder only with --force, and only one the same command wrote (its
 * manifest says so).
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot, resolveSarsRoot, resolveSegLungsRoot } from "../config";
import { checkRunDirPath, describeContents, isInside, readRunManifest, RunDirError } from "./dir";

/** Top-level folders of the project that no output folder goes into (runs/ and folders of your own are allowed). */
export const PROJECT_FOLDERS = [".git", ".ci", ".cache", "bench", "data", "dist", "figures", "lib", "node_modules", "notebooks", "test"];

/** The real path of p: symlinks of its deepest existing ancestor resolved, the rest appended. */
export function realPathOf(p: string): string {
  const rest: string[] = [];
  let cur = path.resolve(p);
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const up = path.dirname(cur);
      if (up === cur) return path.resolve(p);
      rest.push(path.basename(cur));
      cur = up;
    }
  }
}

/**
 * Check an output folder; returns its real absolute path. `kind` is the manifest kind the command
 * writes; `ownEntry` names the entries the command itself leaves while it works (lock, scratch).
 */
export function checkOutFolder(raw: string, o: { kind: string; force?: boolean; ownEntry: (name: string) => boolean; command: string }): string {
  const protect = [resolveDataRoot, resolveCovidSegRoot, resolveLunaRoot, resolveMedsegRoot, resolveSarsRoot, resolveSegLungsRoot].flatMap((r) => {
    try {
      return [r().dir, realPathOf(r().dir)];
    } catch {
      return [];
    }
  });
  checkRunDirPath(raw, { flag: "--out", protect });
  const dir = realPathOf(raw);
  if (dir !== path.resolve(raw)) checkRunDirPath(dir, { flag: "--out", protect });
  const projectFolders = PROJECT_FOLDERS.flatMap((f) => [path.join(PROJECT_ROOT, f), realPathOf(path.join(PROJECT_ROOT, f))]);
  for (const f of projectFolders) if (isInside(dir, f)) throw new RunDirError(`--out ${raw} is inside the project's ${path.basename(f)}/ folder: choose a folder of your own (e.g. /tmp/predict or runs/predict/mine).`);
  for (let p = path.dirname(dir); ; p = path.dirname(p)) {
    if (fs.existsSync(p) && !fs.statSync(p).isDirectory()) throw new RunDirError(`--out ${raw}: ${p} is a file, not a folder.`);
    const m = readRunManifest(p);
    if (m && m.kind !== o.kind) throw new RunDirError(`--out ${raw} is inside the ${m.kind} run directory ${p}: choose a folder outside every run directory.`);
    if (path.dirname(p) === p) break;
  }
  const own = readRunManifest(dir);
  if (own && own.kind !== o.kind) throw new RunDirError(`--out ${raw} is a ${own.kind} run directory: choose a new folder.`);
  const foreign = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => !o.ownEntry(n)) : [];
  if (foreign.length) {
    if (!o.force) throw new RunDirError(`--out ${raw} exists and is not empty (${describeContents(dir)}). Nothing was changed. Choose a new folder, or add --force to replace an earlier ${o.command.replace(/^covid-ct /, "")} output.`);
    if (!own) throw new RunDirError(`--out ${raw} holds files that ${o.command} did not write (${describeContents(dir)}); --force replaces only an earlier ${o.command.replace(/^covid-ct /, "")} output. Nothing was changed.`);
  }
  return dir;
}
