/**
 * Slurm backend: a grid as sbatch job arrays. One array per dependency level of a study (level 0:
 * runs that need nothing; level k: runs whose dependencies are in lower levels), each level
 * `afterok` on the levels before it, and a final job that renders the study's notebook from the
 * finished runs, `afterok` on every array. One array task = one `covid-ct <command> … --out <run>`,
 * with --resume when the run directory already holds a run, so a requeued or resubmitted task
 * continues from its last checkpoint. The run directory's lock keeps two tasks off one run.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot } from "../config";
import { ProfileName } from "../training/profiles";
import { writeFileAtomic } from "../util/fs";
import { DEFAULT_RUNS_ROOT, dependencyLevels, GridEntry, GridRequest } from "./grid";

/** What each array task asks Slurm for. */
export interface SlurmResources {
  /** GPUs per task (--gres=gpu:N); 0 asks for none. */
  gpus: number;
  cpusPerTask: number;
  /** --mem, Slurm syntax ("32G"). */
  mem: string;
  /** --time, Slurm syntax ("12:00:00"). */
  time: string;
  /** --partition; undefined = the cluster's default. */
  partition?: string;
}

/**
 * Defaults per profile. paper: fine-tuning at 480² on tfjs-node-gpu (one GPU; 8 CPUs for decoding
 * and augmentation; 40 epochs of DenseNet-169 fit well under 12 h). quick: frozen features on CPU
 * (wasm, 2 threads). smoke: tiny models, seconds each.
 */
export const SLURM_DEFAULTS: Record<ProfileName, SlurmResources> = {
  paper: { gpus: 1, cpusPerTask: 8, mem: "32G", time: "12:00:00" },
  quick: { gpus: 0, cpusPerTask: 2, mem: "8G", time: "02:00:00" },
  smoke: { gpus: 0, cpusPerTask: 1, mem: "2G", time: "00:20:00" },
};

export interface SlurmEmitOptions {
  /** Folder for the scripts; logs go to <outDir>/logs. */
  outDir: string;
  resources?: Partial<SlurmResources>;
  /** Extra `#SBATCH` lines, verbatim (e.g. "--account=abc", "--qos=normal"). */
  extraSbatch?: string[];
  /** Node binary the tasks run; default the one running this command. */
  node?: string;
  /** Emit the notebook-rendering job (default true when the grid uses the notebook's runs root). */
  render?: boolean;
}

export interface EmittedScript {
  /** Script file (absolute). */
  file: string;
  kind: "array" | "render";
  /** Array: the entries, in task-index order. */
  entries: GridEntry[];
  /** Indices into the emitted scripts this one waits for (afterok). */
  after: number[];
}

export interface SlurmEmitResult {
  scripts: EmittedScript[];
  /** submit.sh: the sbatch calls in order with their dependencies. */
  submitScript: string;
  logsDir: string;
  /** Why no render job was emitted, when none was. */
  renderSkipped?: string;
}

/** Single-quote for bash. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_./:=@+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function checkSlurmValue(flag: string, v: string, re: RegExp, example: string): string {
  if (!re.test(v)) throw new Error(`${flag} '${v}' is not a Slurm value; use e.g. ${flag} ${example}.`);
  return v;
}

export function resolveResources(profile: ProfileName, over: Partial<SlurmResources> = {}): SlurmResources {
  const r = { ...SLURM_DEFAULTS[profile], ...Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined)) } as SlurmResources;
  if (!Number.isInteger(r.gpus) || r.gpus < 0) throw new Error(`--gpus must be an integer ≥ 0, got '${r.gpus}'.`);
  if (!Number.isInteger(r.cpusPerTask) || r.cpusPerTask < 1) throw new Error(`--cpus must be an integer ≥ 1, got '${r.cpusPerTask}'.`);
  checkSlurmValue("--mem", r.mem, /^\d+[KMGT]?$/i, "16G");
  checkSlurmValue("--time", r.time, /^(\d+-)?\d+(:\d{2}){0,2}$/, "04:00:00");
  if (r.partition !== undefined) checkSlurmValue("--partition", r.partition, /^[A-Za-z0-9_.,-]+$/, "gpu");
  return r;
}

function header(lines: string[], o: { name: string; output: string; res: SlurmResources; extra: string[]; array?: string; requeue: boolean }): void {
  lines.push(`#SBATCH --job-name=${o.name}`);
  if (o.array) lines.push(`#SBATCH --array=${o.array}`);
  lines.push(`#SBATCH --output=${o.output}`);
  // Append: a requeued task keeps the log of its interrupted attempt above the new one.
  lines.push("#SBATCH --open-mode=append");
  if (o.requeue) lines.push("#SBATCH --requeue");
  lines.push(`#SBATCH --cpus-per-task=${o.res.cpusPerTask}`, `#SBATCH --mem=${o.res.mem}`, `#SBATCH --time=${o.res.time}`);
  if (o.res.gpus > 0) lines.push(`#SBATCH --gres=gpu:${o.res.gpus}`);
  if (o.res.partition) lines.push(`#SBATCH --partition=${o.res.partition}`);
  for (const x of o.extra) lines.push(`#SBATCH ${x}`);
}

function environment(lines: string[], node: string, threads: string): void {
  const data = resolveDataRoot().dir, medseg = resolveMedsegRoot().dir, covidSeg = resolveCovidSegRoot().dir, luna = resolveLunaRoot().dir;
  lines.push(
    "set -euo pipefail",
    `cd ${shq(PROJECT_ROOT)}`,
    "# Data roots as resolved when the grid was emitted; the environment of sbatch wins.",
    `export COVIDCT_DATA="\${COVIDCT_DATA:-${data}}"`,
    `export COVIDCT_MEDSEG="\${COVIDCT_MEDSEG:-${medseg}}"`,
    `export COVIDCT_COVIDSEG="\${COVIDCT_COVIDSEG:-${covidSeg}}"`,
    `export COVIDCT_LUNA="\${COVIDCT_LUNA:-${luna}}"`,
    `export COVIDCT_WASM_THREADS="${threads}"`,
    `NODE="\${COVIDCT_NODE:-${node}}"`,
  );
}

/** Write the scripts of one study's grid (entries as listed by listGrid). */
export function emitSlurm(study: string, req: GridRequest, entries: GridEntry[], notebook: string | undefined, o: SlurmEmitOptions): SlurmEmitResult {
  if (!entries.length) throw new Error(`grid ${study} (${req.protocol}, ${req.profile}) has no runs: nothing to emit.`);
  const outDir = path.resolve(o.outDir);
  const logsDir = path.join(outDir, "logs");
  fs.mkdirSync(logsDir, { recursive: true });
  const res = resolveResources(req.profile, o.resources);
  const extra = o.extraSbatch ?? [];
  for (const x of extra) if (!/^--[a-z-]+(=\S+)?$/.test(x)) throw new Error(`--sbatch '${x}' is not one sbatch option; use e.g. --sbatch --account=abc.`);
  const node = o.node ?? process.execPath;
  const levels = dependencyLevels(entries);
  const scripts: EmittedScript[] = [];
  const stamp = `covid-ct grid --study ${study} --protocol ${req.protocol} --profile ${req.profile}`;
  levels.forEach((level, li) => {
    const file = path.join(outDir, levels.length === 1 ? `${study}.sbatch` : `${study}-level${li}.sbatch`);
    const lines = [
      "#!/bin/bash",
      `# ${stamp}: ${level.length} run(s)${levels.length > 1 ? `, dependency level ${li} of ${levels.length - 1}` : ""}.`,
      "# One array task = one run. A task that failed or was cancelled is rerun alone with",
      `#   sbatch --array=<index> ${file}`,
      "# and continues from its last checkpoint (--resume is added when the run directory holds a run).",
    ];
    header(lines, { name: `covid-ct-${study}${levels.length > 1 ? `-l${li}` : ""}`, output: path.join(logsDir, `${study}-%A_%a.out`), res, extra, array: `0-${level.length - 1}`, requeue: true });
    environment(lines, node, "${SLURM_CPUS_PER_TASK:-1}");
    lines.push(
      "run() {  # run <run dir> <covid-ct command and flags…>",
      '  local out="$1"; shift',
      "  local resume=()",
      '  if [ -f "$out/manifest.json" ]; then resume=(--resume); fi',
      '  echo "[$(date -u +%FT%TZ)] task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}: covid-ct $* --out $out ${resume[*]}"',
      '  exec "$NODE" dist/lib/cli.js "$@" --out "$out" "${resume[@]}"',
      "}",
      'case "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}" in',
    );
    level.forEach((e, i) => lines.push(`  ${i}) run ${shq(e.runDir)} ${[e.command, ...e.args].map(shq).join(" ")} ;;  # ${e.id}`));
    lines.push(`  *) echo "task \${SLURM_ARRAY_TASK_ID} is not in this array (0-${level.length - 1})" >&2; exit 2 ;;`, "esac", "");
    writeFileAtomic(file, lines.join("\n"));
    fs.chmodSync(file, 0o755);
    scripts.push({ file, kind: "array", entries: level, after: scripts.map((_, k) => k) });
  });
  let renderSkipped: string | undefined;
  const sameRoot = path.resolve(req.runsRoot ?? DEFAULT_RUNS_ROOT) === DEFAULT_RUNS_ROOT;
  if (!notebook) renderSkipped = `study ${study} has no notebook`;
  else if (o.render === false) renderSkipped = "--no-render";
  else if (!sameRoot) renderSkipped = `the notebook reads runs from ${DEFAULT_RUNS_ROOT}, this grid writes to ${path.resolve(req.runsRoot!)}`;
  if (!renderSkipped) {
    const file = path.join(outDir, `${study}-render.sbatch`);
    const lines = ["#!/bin/bash", `# ${stamp}: render notebook ${notebook} from the finished runs (reuses every run; trains nothing when all finished).`];
    header(lines, { name: `covid-ct-${study}-render`, output: path.join(logsDir, `${study}-render-%j.out`), res: { ...res, gpus: 0 }, extra, requeue: false });
    environment(lines, node, "${SLURM_CPUS_PER_TASK:-1}");
    lines.push(
      `export COVIDCT_PROTOCOL=${shq(req.protocol)}  # for notebooks with a protocol parameter`,
      `exec "$NODE" dist/lib/cli.js reproduce ${shq(notebook!)} --profile ${shq(req.profile)} --out ${shq(path.join(outDir, "notebooks"))}`,
      "",
    );
    writeFileAtomic(file, lines.join("\n"));
    fs.chmodSync(file, 0o755);
    scripts.push({ file, kind: "render", entries: [], after: scripts.map((_, k) => k) });
  }
  const sub = ["#!/bin/bash", `# ${stamp}: submit every script in order with its dependencies; prints the job ids.`, "set -euo pipefail", 'cd "$(dirname "$0")"'];
  scripts.forEach((s, k) => {
    const dep = s.after.length ? ` --dependency=afterok:${s.after.map((a) => `\${j${a}}`).join(":")}` : "";
    sub.push(`j${k}=$(sbatch --parsable${dep} ${shq(path.basename(s.file))} | cut -d';' -f1)`, `echo "${path.basename(s.file)} $j${k}"`);
  });
  const submitScript = path.join(outDir, `${study}-submit.sh`);
  writeFileAtomic(submitScript, sub.join("\n") + "\n");
  fs.chmodSync(submitScript, 0o755);
  return { scripts, submitScript, logsDir, renderSkipped };
}

/** Submit emitted scripts with sbatch (dependencies by job id); returns the job id of each. */
export function submitSlurm(r: SlurmEmitResult, sbatch = process.env.COVIDCT_SBATCH ?? "sbatch"): string[] {
  const ids: string[] = [];
  for (const s of r.scripts) {
    const args = ["--parsable", ...(s.after.length ? [`--dependency=afterok:${s.after.map((a) => ids[a]).join(":")}`] : []), s.file];
    let out: string;
    try {
      out = execFileSync(sbatch, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { stderr?: string };
      if (err.code === "ENOENT") throw new Error(`${sbatch} not found: --submit needs Slurm's sbatch on PATH (or submit ${r.submitScript} on a login node). ${ids.length ? `Already submitted: ${ids.join(", ")}.` : ""}`);
      throw new Error(`sbatch ${args.join(" ")} failed: ${(err.stderr ?? err.message).trim()}${ids.length ? ` (already submitted: ${ids.join(", ")}; cancel them with scancel ${ids.join(" ")})` : ""}`);
    }
    const id = out.trim().split(";")[0] ?? "";
    if (!/^\d+$/.test(id)) throw new Error(`sbatch printed '${out.trim()}' instead of a job id for ${s.file}.`);
    ids.push(id);
  }
  return ids;
}
