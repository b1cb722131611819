/**
 * Export an (executed) notebook to one standalone HTML file that works offline: no scripts, fonts
 * or styles are fetched from anywhere; images are inlined as data URIs.
 *
 * - markdown cells → marked (attachments inlined as data URIs),
 * - code cells → escaped source with `In [n]:` prompts,
 * - outputs by nbconvert's priority: text/html, text/markdown, image/svg+xml, image/png,
 *   image/jpeg, image/gif, text/latex, application/json, text/plain. Plotly figures
 *   (application/vnd.plotly.v1+json) are shown through their text/html fallback, which the plot
 *   helper makes self-contained; a figure without one falls back to text/plain,
 * - stream text and tracebacks → ANSI colours via ansi_up (HTML-escaped), "\r" progress lines collapsed.
 */
import { escapeHtml } from "../util/html";
import * as path from "path";
import { Cell, Notebook, Output, cellTags, joinSource } from "./nbformat";
import { writeFileAtomic } from "./nbformat";

export interface HtmlExportOptions {
  /** Page title (default: the notebook's file name or "Notebook"). */
  title?: string;
}

/** Output mime types in the order they are preferred (the first present wins). */
export const MIME_PRIORITY: readonly string[] = [
  "text/html",
  "text/markdown",
  "image/svg+xml",
  "image/png",
  "image/jpeg",
  "image/gif",
  "text/latex",
  "application/json",
  "text/plain",
];

export { escapeHtml };

type AnsiToHtml = (s: string) => string;
let ansiConverter: AnsiToHtml | undefined;
function ansiToHtml(s: string): string {
  if (!ansiConverter) {
    try {
      // ansi_up 6 is an ES module; Node >= 20.19 can require() it.
      const { AnsiUp } = require("ansi_up") as typeof import("ansi_up");
      const au = new AnsiUp();
      au.use_classes = false;
      ansiConverter = (t) => au.ansi_to_html(t);
    } catch {
      // eslint-disable-next-line no-control-regex
      ansiConverter = (t) => escapeHtml(t.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, ""));
    }
  }
  return ansiConverter(s);
}

type MarkdownToHtml = (s: string) => string;
let markdownConverter: MarkdownToHtml | undefined;
function markdownToHtml(s: string): string {
  if (!markdownConverter) {
    const { Marked } = require("marked") as typeof import("marked");
    const m = new Marked({ gfm: true, async: false });
    markdownConverter = (t) => m.parse(t, { async: false }) as string;
  }
  return markdownConverter(s);
}

/** Terminal-like "\r" handling: text before a lone carriage return on the same line is overwritten. */
export function collapseCarriageReturns(s: string): string {
  return s.replace(/\r\n/g, "\n").replace(/[^\n]*\r/g, "");
}

function mimeText(v: unknown): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v.join("");
  return JSON.stringify(v, null, 2);
}

function imageAttrs(meta: unknown): string {
  const m = (meta ?? {}) as { width?: unknown; height?: unknown };
  let a = "";
  if (typeof m.width === "number" || typeof m.width === "string") a += ` width="${escapeHtml(String(m.width))}"`;
  if (typeof m.height === "number" || typeof m.height === "string") a += ` height="${escapeHtml(String(m.height))}"`;
  return a;
}

/** Render one mime bundle by priority. */
export function renderMimeBundle(data: Record<string, unknown>, metadata: Record<string, unknown> = {}): string {
  for (const mime of MIME_PRIORITY) {
    if (!(mime in data)) continue;
    const text = mimeText(data[mime]);
    const meta = metadata[mime];
    switch (mime) {
      case "text/html":
        return `<div class="out-html">${text}</div>`;
      case "text/markdown":
        return `<div class="out-markdown">${markdownToHtml(text)}</div>`;
      case "image/svg+xml":
        return `<div class="out-image">${text}</div>`;
      case "image/png":
      case "image/jpeg":
      case "image/gif":
        return `<div class="out-image"><img src="data:${mime};base64,${text.replace(/\s+/g, "")}"${imageAttrs(meta)} alt="output image"></div>`;
      case "text/latex":
        return `<pre class="out-text out-latex">${escapeHtml(text)}</pre>`;
      case "application/json":
        return `<pre class="out-text">${escapeHtml(text)}</pre>`;
      case "text/plain":
        return `<pre class="out-text">${ansiToHtml(text)}</pre>`;
    }
  }
  const kinds = Object.keys(data);
  return kinds.length ? `<pre class="out-text out-unsupported">[output of type ${escapeHtml(kinds.join(", "))} not shown]</pre>` : "";
}

function renderOutput(o: Output): string {
  switch (o.output_type) {
    case "stream":
      return `<pre class="out-stream ${o.name === "stderr" ? "stderr" : "stdout"}">${ansiToHtml(collapseCarriageReturns(joinSource(o.text)))}</pre>`;
    case "display_data":
      return renderMimeBundle(o.data ?? {}, o.metadata ?? {});
    case "execute_result": {
      const prompt = `<div class="prompt out-prompt">Out[${o.execution_count ?? " "}]:</div>`;
      return `<div class="out-result">${prompt}<div class="out-body">${renderMimeBundle(o.data ?? {}, o.metadata ?? {})}</div></div>`;
    }
    case "error": {
      const tb = o.traceback && o.traceback.length ? o.traceback.join("\n") : `${o.ename}: ${o.evalue}`;
      return `<pre class="out-error">${ansiToHtml(tb)}</pre>`;
    }
    default:
      return "";
  }
}

function inlineAttachments(md: string, cell: Cell): string {
  if (cell.cell_type !== "markdown" || !cell.attachments) return md;
  return md.replace(/attachment:([^\s)"']+)/g, (whole, name: string) => {
    const bundle = cell.attachments?.[decodeURIComponent(name)];
    if (!bundle) return whole;
    const mime = Object.keys(bundle).find((k) => k.startsWith("image/"));
    return mime ? `data:${mime};base64,${mimeText(bundle[mime]).replace(/\s+/g, "")}` : whole;
  });
}

function renderCell(cell: Cell, index: number, failedIndex: number | undefined): string {
  const src = joinSource(cell.source);
  if (cell.cell_type === "markdown") {
    return `<section class="cell markdown" id="cell-${index}">${markdownToHtml(inlineAttachments(src, cell))}</section>`;
  }
  if (cell.cell_type === "raw") {
    return `<section class="cell raw" id="cell-${index}"><pre>${escapeHtml(src)}</pre></section>`;
  }
  const tags = cellTags(cell);
  const classes = ["cell", "code"];
  if (index === failedIndex) classes.push("failed");
  if (tags.includes("injected-parameters")) classes.push("injected");
  if (tags.includes("parameters")) classes.push("parameters");
  const count = cell.execution_count ?? " ";
  const tagHtml = tags.length ? `<div class="tags">${tags.map((t) => `<span>${escapeHtml(t)}</span>`).join("")}</div>` : "";
  const outputs = (cell.outputs ?? []).map(renderOutput).join("\n");
  return (
    `<section class="${classes.join(" ")}" id="cell-${index}">` +
    `<div class="input"><div class="prompt in-prompt">In [${count}]:</div>` +
    `<div class="in-body">${tagHtml}<pre class="source"><code class="language-typescript">${escapeHtml(src)}</code></pre></div></div>` +
    (outputs ? `<div class="outputs">${outputs}</div>` : "") +
    `</section>`
  );
}

const CSS = `
:root { --fg:#1f2328; --muted:#656d76; --border:#d0d7de; --code-bg:#f6f8fa; --err-bg:#fff0f0; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff; font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main.nb { max-width: 1100px; margin: 0 auto; padding: 24px 20px 64px; }
.run-banner { border:1px solid var(--border); border-radius:6px; padding:8px 12px; margin-bottom:20px; font-size:13px; color:var(--muted); }
.run-banner.failed { border-color:#cf222e; background:var(--err-bg); color:#82071e; }
.run-banner a { color: inherit; }
.cell { margin: 10px 0; }
.cell.markdown { padding: 0 4px 0 92px; }
.cell.markdown img { max-width: 100%; }
.cell.markdown table { border-collapse: collapse; }
.cell.markdown th, .cell.markdown td { border:1px solid var(--border); padding:4px 8px; }
.input, .out-result { display:flex; gap:8px; }
.prompt { flex: 0 0 84px; text-align:right; font: 12px/1.9 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color:var(--muted); padding-top:6px; }
.in-prompt { color: #303f9f; } .out-prompt { color: #d84315; }
.in-body, .out-body { flex: 1 1 auto; min-width:0; }
pre { margin:0; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-word; }
pre.source { background:var(--code-bg); border:1px solid var(--border); border-radius:6px; padding:8px 10px; }
.cell.failed pre.source { border-color:#cf222e; }
.cell.injected pre.source { border-style: dashed; }
.tags { margin-bottom:2px; } .tags span { font-size:11px; color:var(--muted); border:1px solid var(--border); border-radius:10px; padding:0 6px; margin-right:4px; }
.outputs { margin: 4px 0 0 92px; min-width:0; }
.outputs > * { margin: 4px 0; }
.out-result .out-body { overflow-x:auto; }
.out-stream, .out-text { padding: 2px 4px; }
.out-stream.stderr { background: var(--err-bg); }
.out-error { background: var(--err-bg); padding: 6px 8px; border-left: 3px solid #cf222e; }
.out-html { overflow-x: auto; }
.out-html table { border-collapse: collapse; font-size: 13px; }
.out-html th, .out-html td { border: 1px solid var(--border); padding: 3px 8px; text-align: right; }
.out-image img, .out-image svg { max-width: 100%; height: auto; }
@media print { .cell { break-inside: avoid; } }
`;

export interface HtmlRunInfo {
  ok?: boolean;
  failedCell?: number;
  error?: string;
  durationMs?: number;
  parameters?: Record<string, unknown>;
  finishedAt?: string;
}

/** Standalone HTML for a notebook. `run` (defaults to metadata.covidct_run) adds a status banner. */
export function notebookToHtml(nb: Notebook, opts: HtmlExportOptions = {}, run?: HtmlRunInfo): string {
  const info = run ?? (nb.metadata?.covidct_run as HtmlRunInfo | undefined);
  const title = opts.title ?? "Notebook";
  const failedIndex = info && info.ok === false && (info.failedCell ?? -1) >= 0 ? info.failedCell : undefined;
  let banner = "";
  if (info) {
    const params = info.parameters && Object.keys(info.parameters).length ? ` · parameters ${escapeHtml(JSON.stringify(info.parameters))}` : "";
    const when = info.finishedAt ? ` · ${escapeHtml(info.finishedAt)}` : "";
    const dur = info.durationMs !== undefined ? ` in ${(info.durationMs / 1000).toFixed(1)} s` : "";
    banner =
      info.ok === false
        ? `<div class="run-banner failed">Execution <b>failed</b>${failedIndex !== undefined ? ` at <a href="#cell-${failedIndex}">cell ${failedIndex}</a>` : ""}${dur}${params}${when}; later cells were not run.` +
          (info.error ? `<pre>${ansiToHtml(info.error)}</pre>` : "") +
          `</div>`
        : `<div class="run-banner">Executed headlessly${dur}${params}${when}.</div>`;
  }
  const body = nb.cells.map((c, i) => renderCell(c, i, failedIndex)).join("\n");
  return (
    `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">\n` +
    `<title>${escapeHtml(title)}</title>\n<style>${CSS}</style>\n</head>\n<body>\n<main class="nb">\n` +
    `${banner}\n${body}\n</main>\n</body>\n</html>\n`
  );
}

/** Write the HTML export of `nb` to `file` (atomically). */
export function writeNotebookHtml(file: string, nb: Notebook, opts: HtmlExportOptions = {}): void {
  writeFileAtomic(file, notebookToHtml(nb, { title: opts.title ?? path.basename(file, ".html") }));
}
