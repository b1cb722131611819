/**
 * Grids as data: every study registers one function that lists its runs (one entry per run
 * directory, with the exact `covid-ct` command that produces it). The notebook, the `grid` command,
 * the local runner and the Slurm emitter all read this one list, so they cannot disagree about
 * which runs a table needs or where they live.
 */
import type { HarmoniseName } from "../data/harmonise";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../config";
import { isOurRunDir, METRICS_FILE } from "../runs";
import { PROFILE_NAMES, ProfileName } from "../training/profiles";

export type RunState = "finished" | "partial" | "missing";

/** One run of a grid. */
export interface GridEntry {
  study: string;
  /** Unique within the grid, safe as a file name (e.g. "tiny-densenet-covid-ct-all-seed1"). */
  id: string;
  /** The covid-ct subcommand that produces the run ("train", later "pretrain"). */
  command: string;
  /** Its arguments, without --out and --resume (the backends add those). */
  args: string[];
  /** Absolute run directory; every backend passes it as --out so grid and run cannot disagree. */
  runDir: string;
  /** Ids of entries that must have finished first (MoCo pretraining → fine-tuning). */
  dependsOn: string[];
  /** What the run is, for listings and --json: protocol, profile, model, arm/variant, init, seed, … */
  config: Record<string, unknown>;
}

export interface GridRequest {
  protocol: string;
  profile: ProfileName;
  /** Root of the run directories; default <project>/runs (where the notebooks look). */
  runsRoot?: string;
  /** Override the profile's seeds. */
  seeds?: number[];
  /** Override the profile's epoch count (passed to every run as --epochs). */
  epochs?: number;
  /** Harmonisation of every run (passed as --harmonise when not none; Study I only). */
  harmonise?: HarmoniseName;
}

export interface StudyGrid {
  study: string;
  description: string;
  entries(req: GridRequest): GridEntry[];
  /** Notebook (name or number for `covid-ct reproduce`) that renders the study's tables from its runs. */
  notebook?: string;
}

const registry = new Map<string, StudyGrid>();

/** Register a study's grid (idempotent per name: a later registration replaces the earlier). */
export function registerGrid(g: StudyGrid): void {
  registry.set(g.study, g);
}

export function gridNames(): string[] {
  return [...registry.keys()];
}

export function getGrid(study: string): StudyGrid {
  const g = registry.get(study);
  if (!g) throw new Error(`--study '${study}' has no grid; use one of: ${gridNames().join(", ") || "(none registered)"}.`);
  return g;
}

export const DEFAULT_RUNS_ROOT = path.join(PROJECT_ROOT, "runs");

/** Where a run directory stands: finished (our manifest and metrics), partial (anything started), missing. */
export function runDirState(dir: string): RunState {
  if (fs.existsSync(path.join(dir, METRICS_FILE)) && isOurRunDir(dir)) return "finished";
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0 ? "partial" : "missing";
}

/** The grid of a study with each entry's state; checks ids and dependencies. */
export function listGrid(study: string, req: GridRequest): (GridEntry & { state: RunState })[] {
  if (!(PROFILE_NAMES as readonly string[]).includes(req.profile)) throw new Error(`--profile '${req.profile}' is not known: use one of ${PROFILE_NAMES.join(", ")}.`);
  const entries = getGrid(study).entries(req);
  const ids = new Set<string>();
  for (const e of entries) {
    if (ids.has(e.id)) throw new Error(`grid ${study}: two entries have the id '${e.id}'.`);
    ids.add(e.id);
  }
  for (const e of entries) {
    for (const d of e.dependsOn) if (!ids.has(d)) throw new Error(`grid ${study}: entry '${e.id}' depends on '${d}', which is not in the grid.`);
  }
  return entries.map((e) => ({ ...e, state: runDirState(e.runDir) }));
}

/**
 * Entries in dependency levels: level 0 needs nothing, level k needs only entries of levels < k.
 * Each level becomes one Slurm job array; a cycle is an error.
 */
export function dependencyLevels<T extends Pick<GridEntry, "id" | "dependsOn">>(entries: T[]): T[][] {
  const level = new Map<string, number>();
  const byId = new Map(entries.map((e) => [e.id, e]));
  const visit = (e: T, seen: string[]): number => {
    const known = level.get(e.id);
    if (known !== undefined) return known;
    if (seen.includes(e.id)) throw new Error(`grid: dependency cycle ${[...seen, e.id].join(" → ")}.`);
    let l = 0;
    for (const d of e.dependsOn) {
      const dep = byId.get(d);
      if (!dep) throw new Error(`grid: entry '${e.id}' depends on '${d}', which is not in the grid.`);
      l = Math.max(l, visit(dep, [...seen, e.id]) + 1);
    }
    level.set(e.id, l);
    return l;
  };
  entries.forEach((e) => visit(e, []));
  const out: T[][] = [];
  for (const e of entries) (out[level.get(e.id)!] ??= []).push(e);
  return out;
}

/** The command line of one run: `<command> <args> --out <runDir>` (the backends add --resume when the directory holds a run). */
export function entryArgv(e: GridEntry): string[] {
  return [e.command, ...e.args, "--out", e.runDir];
}
