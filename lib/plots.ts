/**
 * Plotly figures for notebooks and files.
 *
 * One display output carries three representations:
 *  - `application/vnd.plotly.v1+json`: the figure itself, for JupyterLab's plotly renderer;
 *  - `text/html`: a self-contained fallback that works offline (nbconvert/our HTML export, plain
 *    Jupyter). plotly.js is embedded once per kernel session — minified with esbuild, gzipped and
 *    base64-encoded (≈2 MB) and inflated in the browser with DecompressionStream — and later
 *    charts wait for that one copy instead of embedding their own;
 *  - `text/plain`: a one-line summary for terminals and diffs.
 */
import { escapeHtml } from "./util/html";
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as zlib from "zlib";
import { cacheDir } from "./config";
import { writeFileAtomic } from "./util/fs";

export type PlotlyTrace = Record<string, unknown> & { type?: string; name?: string };
export interface Figure {
  data: PlotlyTrace[];
  layout?: Record<string, unknown>;
  config?: Record<string, unknown>;
}
export type MimeBundle = Record<string, unknown> & {
  "application/vnd.plotly.v1+json": Figure;
  "text/html": string;
  "text/plain": string;
};

const PLOTLY_MIME = "application/vnd.plotly.v1+json";
const LOADER_GLOBAL = "__covidctPlotly";

function plotlyVersion(): string {
  return JSON.parse(fs.readFileSync(require.resolve("plotly.js-dist/package.json"), "utf8")).version;
}

let bundleB64: string | undefined;
/** plotly.js from the plotly.js-dist package, minified + gzipped + base64, cached on disk by version. */
export function plotlyBundleBase64(): string {
  if (bundleB64) return bundleB64;
  const version = plotlyVersion();
  const cached = path.join(cacheDir(), "plotly", `plotly-${version}.min.js.gz.b64`);
  if (fs.existsSync(cached)) {
    bundleB64 = fs.readFileSync(cached, "utf8");
    return bundleB64;
  }
  // Minify once: the package ships only the 11 MB unminified build.
  const esbuild = require("esbuild") as typeof import("esbuild");
  const src = fs.readFileSync(require.resolve("plotly.js-dist"), "utf8");
  const min = esbuild.transformSync(src, { minify: true, legalComments: "none" }).code;
  bundleB64 = zlib.gzipSync(Buffer.from(min), { level: 9 }).toString("base64");
  fs.mkdirSync(path.dirname(cached), { recursive: true });
  writeFileAtomic(cached, bundleB64);
  return bundleB64;
}

/** A <script> that defines window.__covidctPlotly, a promise of the Plotly object, exactly once. */
function loaderScript(): string {
  const b64 = plotlyBundleBase64();
  // window.define is hidden while plotly evaluates so that its UMD wrapper sets window.Plotly even
  // where require.js is present (classic Jupyter Notebook).
  return `<script>/* plotly.js ${plotlyVersion()} (MIT licence, (c) Plotly Technologies Inc.), gzip+base64 */
if (!window.${LOADER_GLOBAL}) { window.${LOADER_GLOBAL} = (async function () {
  if (window.Plotly) return window.Plotly;
  const bin = Uint8Array.from(atob("${b64}"), c => c.charCodeAt(0));
  const text = await new Response(new Blob([bin]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  const d = window.define; window.define = undefined;
  try { (0, eval)(text); } finally { window.define = d; }
  return window.Plotly;
})(); }
</script>`;
}


/** JSON safe to put inside <script>: no "</script>" or "<!--" can close it. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, "\\u003c").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

function chartHtml(fig: Figure, id: string, withLoader: boolean): string {
  const height = typeof fig.layout?.height === "number" ? (fig.layout.height as number) : 420;
  const config = { responsive: true, displaylogo: false, ...(fig.config ?? {}) };
  return `${withLoader ? loaderScript() : ""}<div id="${id}" class="covidct-plot" style="width:100%;height:${height}px;"></div>
<script>(function () {
  var el = document.getElementById("${id}");
  var p = window.${LOADER_GLOBAL};
  if (!p) { el.textContent = "plotly.js was not loaded: run the notebook's first chart cell again."; return; }
  p.then(function (P) { P.newPlot(el, ${scriptJson(fig.data)}, ${scriptJson(fig.layout ?? {})}, ${scriptJson(config)}); })
   .catch(function (e) { el.textContent = "Could not render the chart: " + e; });
})();</script>`;
}

/** Short text description of a figure, for text/plain. */
export function describeFigure(fig: Figure): string {
  const title = (fig.layout?.title as { text?: string } | string | undefined);
  const t = typeof title === "string" ? title : title?.text;
  const kinds = fig.data.map((d) => `${d.type ?? "scatter"}${d.name ? ` "${d.name}"` : ""}`);
  return `Plotly figure${t ? `: ${t}` : ""} (${kinds.join(", ")})`;
}

let loaderEmitted = false;

/**
 * The mime bundle for one figure. The first bundle of a process carries plotly.js; pass
 * `standalone: true` to always embed it (files, or outputs that must stand alone).
 */
export function figureBundle(fig: Figure, opts: { standalone?: boolean; /** A page of many charts: embed plotly.js in this one (true) or rely on an earlier one's (false); the process-wide state is left alone. */ embedLoader?: boolean } = {}): MimeBundle {
  const withLoader = opts.embedLoader ?? (opts.standalone || !loaderEmitted);
  if (!opts.standalone && opts.embedLoader === undefined) loaderEmitted = true;
  const id = `covidct-plot-${crypto.randomBytes(6).toString("hex")}`;
  return {
    [PLOTLY_MIME]: { data: fig.data, layout: fig.layout ?? {}, ...(fig.config ? { config: fig.config } : {}) },
    "text/html": chartHtml(fig, id, withLoader),
    "text/plain": describeFigure(fig),
  } as MimeBundle;
}

/** Forget that plotly.js was embedded (tests; a new notebook in the same process). */
export function resetPlotlyEmbedding(): void {
  loaderEmitted = false;
}

type WriteDisplay = (msg: { data: Record<string, unknown>; metadata: object; transient: object }, update: boolean) => void;

/** tslab's display channel when running inside a tslab kernel, else undefined. */
function tslabDisplay(): WriteDisplay | undefined {
  try {
    const j = require("tslab/dist/jupyter") as { lastWriteDisplayData: WriteDisplay | null };
    return j.lastWriteDisplayData ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Display any mime bundle as one output (a notebook cell inside tslab) or print its text/plain
 * (CLI). Returns nothing, so that tslab does not echo the bundle as the cell's value.
 */
export function displayBundle(bundle: Record<string, unknown>, displayId?: string, update = false): void {
  const write = tslabDisplay();
  if (write) write({ data: bundle, metadata: {}, transient: displayId ? { display_id: displayId } : {} }, update);
  else if (typeof bundle["text/plain"] === "string") console.log(bundle["text/plain"]);
}

/** Show a figure inline (notebook) or describe it (CLI). */
export function showFigure(fig: Figure): void {
  displayBundle(figureBundle(fig));
}

/** Write a figure as a standalone offline HTML file (e.g. under figures/). */
export function writeFigureHtml(fig: Figure, file: string): string {
  const b = figureBundle(fig, { standalone: true });
  const t = describeFigure(fig);
  const html = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(t)}</title></head><body>${b["text/html"]}</body></html>\n`;
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileAtomic(file, html);
  return file;
}

/** An HTML table (with a text/plain twin) as one display output. */
export function tableBundle(
  columns: string[],
  rows: (string | number | null | undefined)[][],
  opts: { caption?: string; note?: string } = {},
): { "text/html": string; "text/plain": string } {
  const cell = (v: string | number | null | undefined) => (v === null || v === undefined ? "–" : String(v));
  const head = columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((v) => `<td>${escapeHtml(cell(v))}</td>`).join("")}</tr>`).join("\n");
  const html =
    `<table class="covidct-table">${opts.caption ? `<caption>${escapeHtml(opts.caption)}</caption>` : ""}` +
    `<thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>` +
    (opts.note ? `<p><em>${escapeHtml(opts.note)}</em></p>` : "");
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => cell(r[i]).length)));
  const line = (r: string[]) => r.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  const text = [
    ...(opts.caption ? [opts.caption] : []),
    line(columns),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map((r) => line(r.map(cell))),
    ...(opts.note ? [opts.note] : []),
  ].join("\n");
  return { "text/html": html, "text/plain": text };
}

/** Show a table inline (notebook) or print it (CLI). */
export function showTable(columns: string[], rows: (string | number | null | undefined)[][], opts: { caption?: string; note?: string } = {}): void {
  displayBundle(tableBundle(columns, rows, opts));
}
