/**
 * Opening a run directory: the one place that decides whether a run is new, reused, resumed or
 * replaced, and that refuses everything else before a byte is written.
 *
 *   nothing there / empty folder     → new (on failure before the first checkpoint it is removed again)
 *   our finished run, same config    → reused            (--force: replaced)
 *   our run, other config            → refused, listing the differences (--force: replaced)
 *   our interrupted run              → refused unless --resume (config must match) or --force
 *   anything else                    → refused, nothing touched
 *
 * --force builds the new run in a hidden sibling folder and swaps it in only when it finished, so
 * the old run survives a failed or interrupted replacement.
 */
import * as fs from "fs";
import * as path from "path";
import { checkRunDirPath, describeContents, isEmptyDir, LOCK_FILE, METRICS_FILE, readRunManifest, RunDirError } from "./dir";
import { acquireRunLock, liveLockOwner, RunLock } from "./lock";

export interface RunRequest {
  /** The --out flag as typed (undefined → defaultDir). */
  out?: string;
  defaultDir: string;
  /** Manifest kind, e.g. "study1". */
  kind: string;
  /** The recorded config; compared (deeply) for reuse and resume. */
  config: unknown;
  /** Input checksums (data manifests, weights); compared like the config. */
  checksums: Record<string, string>;
  resume?: boolean;
  force?: boolean;
  /** Folders the run must not be written over, into or above (data roots). */
  protect?: readonly string[];
  /**
   * How the caller's user names the directory and the replacement in refusals (default --out and
   * --force): `covid-ct lungs` reaches a segmenter run through --segmenter and --retrain-segmenter.
   */
  flags?: { out?: string; force?: string };
}

interface Writable {
  /** Final run directory. */
  dir: string;
  /** Where this call writes (dir, or a hidden sibling while --force replaces a run). */
  workDir: string;
  lock: RunLock;
  /** The run finished: swap it in (replace) and release the lock. */
  finish(): void;
  /**
   * The run failed or was interrupted: keep what can be resumed, remove what cannot (a new run
   * with no checkpoint yet; a replacement in progress), release the lock. Returns what it did.
   */
  abandon(): "kept" | "removed";
}

export type OpenedRun =
  | { state: "reused"; dir: string; manifest: NonNullable<ReturnType<typeof readRunManifest>> }
  | ({ state: "new" | "resumed" | "replacing" } & Writable);

/** "a.b: 1 → 2" lines for every leaf that differs between stored and requested. */
export function configDiff(stored: unknown, requested: unknown, prefix = ""): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (isObj(stored) && isObj(requested)) {
    const keys = [...new Set([...Object.keys(stored), ...Object.keys(requested)])].sort();
    return keys.flatMap((k) => configDiff(stored[k], requested[k], prefix ? `${prefix}.${k}` : k));
  }
  const a = JSON.stringify(stored), b = JSON.stringify(requested);
  return a === b ? [] : [`${prefix || "(value)"}: ${a ?? "absent"} → ${b ?? "absent"}`];
}

function hasCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, "checkpoints", "last", "state.json"));
}

const active = new Set<Writable>();

/** Abandon every run this process has open (SIGINT handlers); returns the final directories kept. */
export function abandonActiveRuns(): { dir: string; outcome: "kept" | "removed" }[] {
  return [...active].map((r) => ({ dir: r.dir, outcome: r.abandon() }));
}

export function openRun(req: RunRequest): OpenedRun {
  const raw = req.out ?? req.defaultDir;
  const out = req.flags?.out ?? "--out", force = req.flags?.force ?? "--force";
  const dir = checkRunDirPath(raw, { flag: out, protect: req.protect });
  const stored = { config: req.config, checksums: req.checksums };
  const exists = fs.existsSync(dir);
  if (exists) {
    const owner = liveLockOwner(dir);
    if (owner) throw new RunDirError(`Run directory ${dir} is in use by pid ${owner.pid} on ${owner.host} since ${owner.startedAt}. Wait for it to finish, or choose another ${out}.`);
  }
  const m = exists ? readRunManifest(dir) : null;
  if (exists && !m && !isEmptyDir(dir)) {
    throw new RunDirError(
      `${dir} is not a run directory of covid-ct (no run manifest; it holds ${describeContents(dir)}). Nothing was changed. ` +
        `Choose a new or empty directory with ${out}.`,
    );
  }
  if (!m) {
    if (req.resume) throw new RunDirError(`Nothing to resume in ${dir}: no run was started there. Run the same command without --resume.`);
    return startNew(dir, !exists);
  }
  // A run of another command (a diagnosis run named as a lung segmenter's directory, say) is the
  // user's result: never resumed, reused or replaced here, not even with --force.
  if (m.kind !== req.kind) {
    throw new RunDirError(`${dir} holds a '${m.kind}' run, not a '${req.kind}' run: not this command's to reuse or replace, even when forced. Nothing was changed. Choose another ${out}.`);
  }
  const diffs = configDiff({ config: m.config, checksums: m.checksums ?? {} }, stored);
  const finished = fs.existsSync(path.join(dir, METRICS_FILE));
  if (req.resume) {
    if (diffs.length) {
      throw new RunDirError(`Cannot resume ${dir}: the request differs from the run stored there:\n  ${diffs.join("\n  ")}\nRepeat the original flags to resume it, or use ${force} to replace it with this configuration.`);
    }
    if (finished) return { state: "reused", dir, manifest: m };
    return writable("resumed", dir, dir, acquireRunLock(dir), false);
  }
  if (req.force) return startReplacement(dir);
  if (finished && diffs.length === 0) return { state: "reused", dir, manifest: m };
  if (finished) {
    throw new RunDirError(`${dir} holds a finished run with another configuration:\n  ${diffs.join("\n  ")}\nNothing was changed. Use ${force} to replace it, or choose another ${out}.`);
  }
  if (diffs.length) {
    throw new RunDirError(`${dir} holds an interrupted run with another configuration:\n  ${diffs.join("\n  ")}\nNothing was changed. Use ${force} to replace it, or choose another ${out}.`);
  }
  throw new RunDirError(`${dir} holds an interrupted run of this configuration. Continue it with --resume, or start it again with ${force}.`);
}

function startNew(dir: string, create: boolean): OpenedRun {
  if (create) fs.mkdirSync(dir, { recursive: true });
  const lock = acquireRunLock(dir);
  if (!isEmptyDir(dir)) {
    lock.release();
    throw new RunDirError(`${dir} was filled by another process while this one started. Nothing was changed; try again.`);
  }
  return writable("new", dir, dir, lock, create);
}

function startReplacement(dir: string): OpenedRun {
  const lock = acquireRunLock(dir);
  const work = path.join(path.dirname(dir), `.${path.basename(dir)}.new-${process.pid}`);
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work);
  return writable("replacing", dir, work, lock, true);
}

function writable(state: "new" | "resumed" | "replacing", dir: string, workDir: string, lock: RunLock, created: boolean): OpenedRun {
  let done = false;
  const w: Writable = {
    dir,
    workDir,
    lock,
    finish() {
      if (done) return;
      done = true;
      active.delete(w);
      if (state === "replacing") {
        const old = path.join(path.dirname(dir), `.${path.basename(dir)}.old-${process.pid}`);
        fs.renameSync(dir, old);
        fs.renameSync(workDir, dir);
        fs.rmSync(old, { recursive: true, force: true });
        fs.rmSync(path.join(dir, LOCK_FILE), { force: true });
      }
      lock.release();
    },
    abandon() {
      if (done) return "kept";
      done = true;
      active.delete(w);
      let outcome: "kept" | "removed" = "kept";
      if (state === "replacing") {
        fs.rmSync(workDir, { recursive: true, force: true });
        outcome = "removed";
      } else if (state === "new" && !hasCheckpoint(dir)) {
        // Nothing resumable yet: leave no half-written run behind (only our own files are there).
        if (created) fs.rmSync(dir, { recursive: true, force: true });
        else for (const n of fs.readdirSync(dir)) if (n !== LOCK_FILE) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
        outcome = "removed";
      }
      lock.release();
      return outcome;
    },
  };
  active.add(w);
  return { state, ...w };
}
