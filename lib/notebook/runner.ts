/**
 * Headless notebook runner: executes tslab notebooks top to bottom in a fresh kernel, saves the
 * executed notebook and a standalone HTML export, stops at the first failing cell.
 *
 * Parameters (papermill convention): the first code cell tagged `parameters` holds defaults declared
 * with `let`, e.g. `let profile = process.env.COVIDCT_PROFILE ?? "quick";`. For overrides the runner
 *   1. inserts a cell tagged `injected-parameters` right after it that assigns them
 *      (`{ profile = "paper"; }`), and
 *   2. passes each one to the kernel as an environment variable COVIDCT_<NAME>, NAME being the
 *      parameter name in UPPER_SNAKE_CASE (profile → COVIDCT_PROFILE, maxEpochs → COVIDCT_MAX_EPOCHS;
 *      strings as is, numbers/booleans via String()).
 * A notebook without a `parameters` cell (or a parameter not declared there with let/var) still
 * gets the environment variable.
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../config";
import { writeNotebookHtml } from "./html";
import { ExecuteResult, Kernel } from "./kernel";
import {
  CodeCell,
  Notebook,
  TSLAB_KERNELSPEC,
  TSLAB_LANGUAGE_INFO,
  cellTags,
  codeCell,
  joinSource,
  readNotebook,
  writeNotebook,
} from "./nbformat";

export type ParameterValue = string | number | boolean | null;
export type NotebookParameters = Record<string, ParameterValue>;

/** Prefix of the environment variables that carry parameters into the kernel. */
export const PARAMETER_ENV_PREFIX = "COVIDCT_";

/** Default folder for executed notebooks and their HTML (gitignored). */
export const DEFAULT_EXECUTED_DIR = path.join(PROJECT_ROOT, "notebooks", "executed");

/** Folder holding the project's notebooks. */
export const NOTEBOOKS_DIR = path.join(PROJECT_ROOT, "notebooks");

export interface RunNotebookOptions {
  /** Where the executed .ipynb and .html go (default notebooks/executed/). */
  outDir?: string;
  /** Parameter overrides (see module doc). */
  parameters?: NotebookParameters;
  /** Per-cell time limit in ms; 0/undefined: none. A cell over the limit fails the run. */
  cellTimeoutMs?: number;
  /** Extra environment for the kernel. */
  env?: Record<string, string | undefined>;
  /** Progress lines ("[01-dataset] cell 5/23 ok 1.2s"); default console.log. */
  log?: (line: string) => void;
  /** Kernel start-up limit in ms (default 60 000). */
  startTimeoutMs?: number;
  /** Save the partial notebook at most this often while cells produce output (default 10 000 ms). */
  saveIntervalMs?: number;
}

export interface FailedCell {
  /** 0-based index in the executed notebook's cells (markdown and injected cells included). */
  index: number;
  /** 1-based position among the code cells that run ("cell 5/23"). */
  codeCell: number;
  codeCells: number;
  executionCount: number | null;
  status: ExecuteResult["status"] | "kernel-start";
  source: string;
  /** The kernel's error text for that cell: the TS compile error or the thrown error with stack. */
  errorText: string;
}

export interface RunNotebookResult {
  /** Notebook stem, e.g. "01-dataset". */
  name: string;
  ok: boolean;
  inputPath: string;
  executedPath: string;
  htmlPath: string;
  failedCell?: FailedCell;
  /** One-line-plus-details description of the failure (cell position and error text). */
  error?: string;
  durationMs: number;
  /** Code cells that ran (including a failed one). */
  cellsRun: number;
  /** The kernel's pid (already ended when this returns). */
  kernelPid?: number;
}

export interface ReproduceOptions {
  /** Subset to run: file paths, stems ("01-dataset") or numeric prefixes ("01", "2"). Default: all. */
  notebooks?: string[];
  /** Sets the `profile` parameter (→ COVIDCT_PROFILE). */
  profile?: string;
  /** Default notebooks/executed/. */
  outDir?: string;
  log?: (line: string) => void;
  /** Further parameter overrides for every notebook. */
  parameters?: NotebookParameters;
  cellTimeoutMs?: number;
  env?: Record<string, string | undefined>;
  /** Folder to take notebooks from (default <project>/notebooks). */
  notebooksDir?: string;
}

export interface ReproduceResult {
  /** True when every notebook ran without a failing cell. */
  ok: boolean;
  /** One entry per notebook that was started, in order; the run stops after the first failure. */
  results: RunNotebookResult[];
  /** Notebooks not run because an earlier one failed. */
  skipped: string[];
  durationMs: number;
}

/** Environment variable name for a parameter: COVIDCT_ + UPPER_SNAKE_CASE(name). */
export function parameterEnvName(name: string): string {
  const snake = name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9]+/g, "_")
    .toUpperCase();
  return PARAMETER_ENV_PREFIX + snake;
}

/** Environment variables for a parameter set (null values are left out). */
export function parameterEnv(params: NotebookParameters = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined) continue;
    env[parameterEnvName(k)] = String(v);
  }
  return env;
}

function tsLiteral(v: ParameterValue): string {
  if (typeof v === "number" && !Number.isFinite(v)) return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  return JSON.stringify(v);
}

/** Names declared with let/var/const in a parameters cell, with their keyword. */
export function declaredParameters(source: string): Map<string, "let" | "var" | "const"> {
  const out = new Map<string, "let" | "var" | "const">();
  const re = /(?:^|[;\s{])(let|var|const)\s+([A-Za-z_$][\w$]*)/g;
  for (let m = re.exec(source); m; m = re.exec(source)) {
    if (!out.has(m[2])) out.set(m[2], m[1] as "let" | "var" | "const");
  }
  return out;
}

export interface InjectionPlan {
  /** Index of the `parameters` cell, or -1. */
  parametersCell: number;
  /** The cell to insert after it (undefined when nothing to assign). */
  injected?: CodeCell;
  /** Parameters passed by environment only, with the reason. */
  envOnly: { name: string; reason: string }[];
}

/**
 * Plan the papermill-style injection for `nb` (does not modify it). Only parameters declared with
 * let/var in the `parameters` cell are assigned in the injected cell; all go to the environment.
 */
export function planParameterInjection(nb: Notebook, params: NotebookParameters = {}): InjectionPlan {
  const idx = nb.cells.findIndex((c) => c.cell_type === "code" && cellTags(c).includes("parameters"));
  const names = Object.keys(params);
  for (const n of names) {
    if (!/^[A-Za-z_$][\w$]*$/.test(n)) throw new Error(`parameter name ${JSON.stringify(n)} is not a valid identifier`);
  }
  const envOnly: InjectionPlan["envOnly"] = [];
  if (idx < 0) {
    for (const n of names) envOnly.push({ name: n, reason: "the notebook has no cell tagged `parameters`" });
    return { parametersCell: -1, envOnly };
  }
  const declared = declaredParameters(joinSource(nb.cells[idx].source));
  const lines: string[] = [];
  for (const n of names) {
    const kind = declared.get(n);
    if (!kind) envOnly.push({ name: n, reason: "not declared in the `parameters` cell" });
    else if (kind === "const") envOnly.push({ name: n, reason: "declared with const in the `parameters` cell (use let)" });
    else lines.push(`  ${n} = ${tsLiteral(params[n])};`);
  }
  if (lines.length === 0) return { parametersCell: idx, envOnly };
  const envNote = Object.entries(parameterEnv(params))
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
  const src = [`// Parameters injected by the covid-ct runner${envNote ? ` (also in the kernel env: ${envNote})` : ""}`, "{", ...lines, "}"].join("\n");
  return { parametersCell: idx, injected: codeCell(src, ["injected-parameters"]), envOnly };
}

function fmtSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

function indent(text: string, pad = "    "): string {
  return text
    .split("\n")
    .map((l) => pad + l)
    .join("\n");
}

/** Run one notebook in a fresh tslab kernel. Never throws for notebook errors; reports them instead. */
export async function runNotebook(inPath: string, opts: RunNotebookOptions = {}): Promise<RunNotebookResult> {
  const t0 = Date.now();
  const log = opts.log ?? ((l: string) => console.log(l));
  const inputPath = path.resolve(inPath);
  const name = path.basename(inputPath, ".ipynb");
  const outDir = path.resolve(opts.outDir ?? DEFAULT_EXECUTED_DIR);
  const executedPath = path.join(outDir, `${name}.ipynb`);
  const htmlPath = path.join(outDir, `${name}.html`);
  if (executedPath === inputPath) throw new Error(`runNotebook: outDir would overwrite the input ${inputPath}`);
  const params = opts.parameters ?? {};

  const nb = readNotebook(inputPath);
  // Fresh run: drop previous outputs and any earlier injected-parameters cell.
  nb.cells = nb.cells.filter((c) => !(c.cell_type === "code" && cellTags(c).includes("injected-parameters")));
  for (const c of nb.cells) {
    if (c.cell_type === "code") {
      c.outputs = [];
      c.execution_count = null;
      delete c.metadata.execution;
    }
  }
  nb.metadata.kernelspec ??= { ...TSLAB_KERNELSPEC };
  nb.metadata.language_info ??= { ...TSLAB_LANGUAGE_INFO };

  const plan = planParameterInjection(nb, params);
  if (plan.injected) nb.cells.splice(plan.parametersCell + 1, 0, plan.injected);
  for (const e of plan.envOnly) log(`[${name}] parameter ${e.name}: ${e.reason}; passed only as ${parameterEnvName(e.name)}`);

  const codeIdx: number[] = [];
  nb.cells.forEach((c, i) => {
    if (c.cell_type === "code" && joinSource(c.source).trim() !== "") codeIdx.push(i);
  });
  const total = codeIdx.length;

  const startedAt = new Date();
  let failedCell: FailedCell | undefined;
  let cellsRun = 0;
  let kernel: Kernel | undefined;
  let lastSave = Date.now();
  const saveIntervalMs = opts.saveIntervalMs ?? 10_000;

  const setRunMeta = (final: boolean) => {
    nb.metadata.covidct_run = {
      ok: final ? !failedCell : undefined,
      status: final ? (failedCell ? "failed" : "completed") : "running",
      parameters: params,
      startedAt: startedAt.toISOString(),
      finishedAt: final ? new Date().toISOString() : undefined,
      durationMs: Date.now() - t0,
      failedCell: failedCell?.index,
      error: failedCell ? failedCell.errorText : undefined,
      kernelPid: kernel?.pid,
    };
  };
  const save = (final: boolean) => {
    setRunMeta(final);
    writeNotebook(executedPath, nb);
    lastSave = Date.now();
  };
  const maybeSave = () => {
    if (Date.now() - lastSave >= saveIntervalMs) {
      try {
        save(false);
      } catch (e) {
        log(`[${name}] warning: cannot save partial notebook: ${(e as Error).message}`);
      }
    }
  };

  try {
    const tk = Date.now();
    try {
      kernel = await Kernel.start({
        cwd: path.dirname(inputPath),
        env: { ...(opts.env ?? {}), ...parameterEnv(params) },
        startTimeoutMs: opts.startTimeoutMs,
      });
    } catch (e) {
      failedCell = {
        index: -1,
        codeCell: 0,
        codeCells: total,
        executionCount: null,
        status: "kernel-start",
        source: "",
        errorText: (e as Error).message,
      };
    }
    if (kernel) log(`[${name}] kernel started in ${fmtSeconds(Date.now() - tk)} (pid ${kernel.pid}), ${total} code cells`);

    for (let k = 0; kernel && k < codeIdx.length; k++) {
      const i = codeIdx[k];
      const cell = nb.cells[i] as CodeCell;
      const started = new Date();
      const res = await kernel.execute(joinSource(cell.source), {
        timeoutMs: opts.cellTimeoutMs,
        onOutput: (outs) => {
          cell.outputs = outs;
          maybeSave();
        },
      });
      cellsRun++;
      cell.outputs = res.outputs;
      cell.execution_count = res.executionCount;
      cell.metadata.execution = {
        "iopub.execute_input": started.toISOString(),
        "shell.execute_reply": new Date().toISOString(),
      };
      if (res.status === "ok") {
        log(`[${name}] cell ${k + 1}/${total} ok ${fmtSeconds(res.durationMs)}`);
        maybeSave();
        continue;
      }
      failedCell = {
        index: i,
        codeCell: k + 1,
        codeCells: total,
        executionCount: res.executionCount,
        status: res.status,
        source: joinSource(cell.source),
        errorText: res.errorText ?? `cell ended with status ${res.status}`,
      };
      log(`[${name}] cell ${k + 1}/${total} ${res.status.toUpperCase()} ${fmtSeconds(res.durationMs)}`);
      break;
    }
  } finally {
    // A timed-out kernel is still busy and cannot answer shutdown_request: kill it without the grace period.
    if (kernel) await kernel.shutdown(failedCell?.status === "timeout" ? 50 : 1000);
  }

  let error: string | undefined;
  if (failedCell) {
    const where =
      failedCell.status === "kernel-start"
        ? "the tslab kernel did not start"
        : `cell ${failedCell.codeCell}/${failedCell.codeCells} (notebook cell index ${failedCell.index}, In [${failedCell.executionCount ?? " "}]) failed` +
          (failedCell.status !== "error" ? ` (${failedCell.status})` : "");
    error = `${name}: ${where}:\n${failedCell.errorText}`;
    log(`[${name}] FAILED: ${where}\n${indent(failedCell.errorText)}`);
  }
  save(true);
  try {
    writeNotebookHtml(htmlPath, nb, { title: name });
  } catch (e) {
    log(`[${name}] warning: HTML export failed: ${(e as Error).stack}`);
  }
  const durationMs = Date.now() - t0;
  if (!failedCell) log(`[${name}] done in ${fmtSeconds(durationMs)} → ${path.relative(process.cwd(), executedPath) || executedPath}, ${path.basename(htmlPath)}`);
  return {
    name,
    ok: !failedCell,
    inputPath,
    executedPath,
    htmlPath,
    failedCell,
    error,
    durationMs,
    cellsRun,
    kernelPid: kernel?.pid,
  };
}

function leadingNumber(file: string): number {
  const m = /^(\d+)/.exec(path.basename(file));
  return m ? parseInt(m[1], 10) : Number.POSITIVE_INFINITY;
}

/** The project's notebooks (`<dir>/*.ipynb`, top level only), in numeric order of their prefix. */
export function listNotebooks(dir: string = NOTEBOOKS_DIR): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith(".ipynb") && !d.name.startsWith("."))
    .map((d) => path.join(dir, d.name))
    .sort((a, b) => leadingNumber(a) - leadingNumber(b) || path.basename(a).localeCompare(path.basename(b)));
}

/** Resolve a notebook selector: a path, a stem ("01-dataset") or a numeric prefix ("01", "1"). */
export function resolveNotebook(selector: string, dir: string = NOTEBOOKS_DIR): string {
  for (const p of [path.resolve(selector), path.resolve(dir, selector), path.resolve(dir, `${selector}.ipynb`)]) {
    if (p.endsWith(".ipynb") && fs.existsSync(p) && fs.statSync(p).isFile()) return p;
  }
  const all = listNotebooks(dir);
  const stem = (f: string) => path.basename(f, ".ipynb");
  let hits = all.filter((f) => stem(f) === selector || stem(f).startsWith(`${selector}-`) || stem(f).startsWith(`${selector}_`));
  if (hits.length === 0 && /^\d+$/.test(selector)) hits = all.filter((f) => leadingNumber(f) === parseInt(selector, 10));
  if (hits.length === 1) return hits[0];
  const names = all.map(stem).join(", ") || "(none)";
  if (hits.length === 0) throw new Error(`no notebook matches ${JSON.stringify(selector)}; available: ${names}`);
  throw new Error(`${JSON.stringify(selector)} matches several notebooks: ${hits.map(stem).join(", ")}`);
}

/**
 * Run the project's notebooks (all of notebooks/*.ipynb in numeric order, or `opts.notebooks`),
 * saving each executed notebook and its HTML under outDir; stops at the first failing notebook.
 */
export async function reproduce(opts: ReproduceOptions = {}): Promise<ReproduceResult> {
  const t0 = Date.now();
  const log = opts.log ?? ((l: string) => console.log(l));
  const dir = opts.notebooksDir ?? NOTEBOOKS_DIR;
  const files = opts.notebooks && opts.notebooks.length ? opts.notebooks.map((s) => resolveNotebook(s, dir)) : listNotebooks(dir);
  if (files.length === 0) throw new Error(`no notebooks found in ${dir}`);
  const parameters: NotebookParameters = { ...(opts.parameters ?? {}) };
  if (opts.profile !== undefined) parameters.profile = opts.profile;
  const outDir = opts.outDir ?? DEFAULT_EXECUTED_DIR;
  log(
    `reproduce: ${files.length} notebook(s)${Object.keys(parameters).length ? `, parameters ${JSON.stringify(parameters)}` : ""} → ${outDir}`,
  );
  const results: RunNotebookResult[] = [];
  const skipped: string[] = [];
  for (const [i, f] of files.entries()) {
    const r = await runNotebook(f, { outDir, parameters, cellTimeoutMs: opts.cellTimeoutMs, env: opts.env, log });
    results.push(r);
    if (!r.ok) {
      skipped.push(...files.slice(i + 1).map((x) => path.basename(x, ".ipynb")));
      break;
    }
  }
  const ok = results.every((r) => r.ok) && skipped.length === 0;
  const durationMs = Date.now() - t0;
  if (ok) log(`reproduce: all ${results.length} notebook(s) ran in ${fmtSeconds(durationMs)}`);
  else {
    const bad = results.find((r) => !r.ok)!;
    log(
      `reproduce: FAILED in ${bad.name}` +
        (bad.failedCell && bad.failedCell.index >= 0 ? ` at cell ${bad.failedCell.codeCell}/${bad.failedCell.codeCells}` : "") +
        `; partial notebook ${bad.executedPath}` +
        (skipped.length ? `; not run: ${skipped.join(", ")}` : ""),
    );
  }
  return { ok, results, skipped, durationMs };
}

