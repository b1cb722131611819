/**
 * Typed nbformat v4 (minor 5) read/write.
 *
 * On disk, multi-line strings (cell sources, stream text, text-like mime data) are stored as arrays of
 * lines, each keeping its trailing "\n", the way Jupyter writes them; in memory either form is accepted
 * and `joinSource` / `splitLines` convert. Writes go through a temp file + rename so a crash never
 * leaves a half-written notebook behind.
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { writeFileAtomic } from "../util/fs";

/** A string, or the same string split into lines (each keeping its "\n"). */
export type MultilineString = string | string[];

/** Mime bundle: text-like values are (multiline) strings, JSON mime types hold any JSON value. */
export type MimeBundle = Record<string, unknown>;

export interface StreamOutput {
  output_type: "stream";
  name: "stdout" | "stderr";
  text: MultilineString;
}

export interface DisplayDataOutput {
  output_type: "display_data";
  data: MimeBundle;
  metadata: Record<string, unknown>;
  /** Runtime only (never written): the kernel's transient display_id, for update_display_data. */
  transient?: { display_id?: string };
}

export interface ExecuteResultOutput {
  output_type: "execute_result";
  execution_count: number | null;
  data: MimeBundle;
  metadata: Record<string, unknown>;
}

export interface ErrorOutput {
  output_type: "error";
  ename: string;
  evalue: string;
  traceback: string[];
}

export type Output = StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput;

export interface CellMetadata {
  tags?: string[];
  [key: string]: unknown;
}

export interface CodeCell {
  cell_type: "code";
  id?: string;
  metadata: CellMetadata;
  source: MultilineString;
  execution_count: number | null;
  outputs: Output[];
}

export interface MarkdownCell {
  cell_type: "markdown";
  id?: string;
  metadata: CellMetadata;
  source: MultilineString;
  attachments?: Record<string, MimeBundle>;
}

export interface RawCell {
  cell_type: "raw";
  id?: string;
  metadata: CellMetadata;
  source: MultilineString;
}

export type Cell = CodeCell | MarkdownCell | RawCell;

export interface KernelSpecMetadata {
  name: string;
  display_name: string;
  language: string;
}

export interface LanguageInfo {
  name: string;
  version?: string;
  mimetype?: string;
  file_extension?: string;
  codemirror_mode?: unknown;
  [key: string]: unknown;
}

export interface NotebookMetadata {
  kernelspec?: KernelSpecMetadata;
  language_info?: LanguageInfo;
  [key: string]: unknown;
}

export interface Notebook {
  nbformat: 4;
  nbformat_minor: number;
  metadata: NotebookMetadata;
  cells: Cell[];
}

/** Kernelspec metadata matching notebooks/kernels/tslab/kernel.json. */
export const TSLAB_KERNELSPEC: KernelSpecMetadata = {
  name: "tslab",
  display_name: "TypeScript (covid-ct, tslab)",
  language: "typescript",
};

/** language_info as tslab's kernel_info_reply reports it for the TypeScript kernel. */
export const TSLAB_LANGUAGE_INFO: LanguageInfo = {
  name: "typescript",
  version: "3.7.2",
  mimetype: "text/typescript",
  file_extension: ".ts",
  codemirror_mode: { mode: "typescript", name: "javascript", typescript: true },
};

/** Mime types stored as line arrays (same list as nbformat's rwbase). Others (base64 images, JSON) stay whole. */
function isLineSplitMime(mime: string): boolean {
  return (
    mime.startsWith("text/") ||
    mime === "image/svg+xml" ||
    mime === "application/javascript" ||
    mime === "application/x-javascript"
  );
}

/** Split into lines, each keeping its trailing "\n" (the last may lack one). "" → []. */
export function splitLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split(/(?<=\n)/);
  return lines;
}

/** Join a MultilineString into one string. */
export function joinSource(src: MultilineString | undefined | null): string {
  if (src == null) return "";
  return Array.isArray(src) ? src.join("") : src;
}

/** Tags of a cell ([] when none). */
export function cellTags(cell: Cell): string[] {
  const t = cell.metadata?.tags;
  return Array.isArray(t) ? t.filter((x): x is string => typeof x === "string") : [];
}

/** A fresh nbformat 4.5 cell id. */
export function newCellId(): string {
  return crypto.randomBytes(4).toString("hex");
}

export function codeCell(source: string, tags?: string[]): CodeCell {
  return {
    cell_type: "code",
    id: newCellId(),
    metadata: tags && tags.length ? { tags } : {},
    source: splitLines(source),
    execution_count: null,
    outputs: [],
  };
}

export function markdownCell(source: string): MarkdownCell {
  return { cell_type: "markdown", id: newCellId(), metadata: {}, source: splitLines(source) };
}

/** A new empty tslab notebook. */
export function newNotebook(cells: Cell[] = []): Notebook {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { ...TSLAB_KERNELSPEC }, language_info: { ...TSLAB_LANGUAGE_INFO } },
    cells,
  };
}

function normalizeMime(bundle: MimeBundle | undefined): MimeBundle {
  const out: MimeBundle = {};
  for (const [k, v] of Object.entries(bundle ?? {})) {
    if (typeof v === "string" && isLineSplitMime(k)) out[k] = splitLines(v);
    else if (Array.isArray(v) && !isLineSplitMime(k) && !k.endsWith("json") && v.every((x) => typeof x === "string")) {
      out[k] = v.join(""); // e.g. base64 image split into lines by some writer
    } else out[k] = v;
  }
  return out;
}

/** Output in on-disk form (lines split, runtime-only fields dropped). */
export function normalizeOutput(o: Output): Output {
  switch (o.output_type) {
    case "stream":
      return { output_type: "stream", name: o.name, text: splitLines(joinSource(o.text)) };
    case "display_data":
      return { output_type: "display_data", data: normalizeMime(o.data), metadata: o.metadata ?? {} };
    case "execute_result":
      return {
        output_type: "execute_result",
        execution_count: o.execution_count ?? null,
        data: normalizeMime(o.data),
        metadata: o.metadata ?? {},
      };
    case "error":
      return { output_type: "error", ename: o.ename ?? "", evalue: o.evalue ?? "", traceback: o.traceback ?? [] };
    default:
      return o;
  }
}

/** Cell in on-disk form. */
export function normalizeCell(c: Cell): Cell {
  const base = { id: c.id ?? newCellId(), metadata: c.metadata ?? {}, source: splitLines(joinSource(c.source)) };
  if (c.cell_type === "code") {
    return {
      cell_type: "code",
      ...base,
      execution_count: c.execution_count ?? null,
      outputs: (c.outputs ?? []).map(normalizeOutput),
    };
  }
  if (c.cell_type === "markdown") {
    const m: MarkdownCell = { cell_type: "markdown", ...base };
    if (c.attachments) m.attachments = c.attachments;
    return m;
  }
  return { cell_type: "raw", ...base };
}

/** Parse and validate the parts of nbformat v4 this project relies on. */
export function parseNotebook(json: string, what = "notebook"): Notebook {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new Error(`${what}: not valid JSON (${(e as Error).message})`);
  }
  const nb = raw as Partial<Notebook>;
  if (!nb || typeof nb !== "object") throw new Error(`${what}: not a JSON object`);
  if (nb.nbformat !== 4) throw new Error(`${what}: nbformat ${String(nb.nbformat)} is not supported (need 4)`);
  if (!Array.isArray(nb.cells)) throw new Error(`${what}: no cells array`);
  for (const [i, c] of nb.cells.entries()) {
    if (!c || !["code", "markdown", "raw"].includes((c as Cell).cell_type)) {
      throw new Error(`${what}: cell ${i} has unknown cell_type ${JSON.stringify((c as Cell)?.cell_type)}`);
    }
    if (!c.metadata) c.metadata = {};
    if (c.cell_type === "code") {
      if (!Array.isArray(c.outputs)) c.outputs = [];
      if (c.execution_count === undefined) c.execution_count = null;
    }
  }
  return {
    nbformat: 4,
    nbformat_minor: typeof nb.nbformat_minor === "number" ? nb.nbformat_minor : 5,
    metadata: nb.metadata ?? {},
    cells: nb.cells as Cell[],
  };
}

export function readNotebook(file: string): Notebook {
  return parseNotebook(fs.readFileSync(file, "utf8"), file);
}

/** Serialise like Jupyter: 1-space indent, sorted-ish as given, trailing newline. */
export function serializeNotebook(nb: Notebook): string {
  const out: Notebook = {
    cells: nb.cells.map(normalizeCell),
    metadata: nb.metadata ?? {},
    nbformat: 4,
    nbformat_minor: Math.max(nb.nbformat_minor ?? 5, 5),
  } as Notebook;
  return JSON.stringify(out, null, 1) + "\n";
}

export { writeFileAtomic };

export function writeNotebook(file: string, nb: Notebook): void {
  writeFileAtomic(file, serializeNotebook(nb));
}
