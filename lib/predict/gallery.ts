/**
 * gallery.html of `covid-ct predict`: one self-contained page (images inline as data URIs, nothing
 * fetched), so it opens offline like the notebooks' HTML exports. For each single slice: the slice
 * as the model saw it (its chest crop at the run's input size), the lung mask over it, and the
 * lesions over it where a lesion model exists. For each series (a scan): its score (volumetric
 * burden, the six zones, the call), a Plotly chart along the slice axis (lung area and lesion burden
 * per slice, the zones' extents, the series threshold) and the slices that drive the call. Plotly
 * is the notebooks' offline bundle, embedded once.
 */
import { overlayPng } from "../reports/overlay";
import { Figure, figureBundle, PlotlyTrace, tableBundle } from "../plots";
import { escapeHtml } from "../util/html";
import { writeFileAtomic } from "../util/fs";
import type { SeriesRow, SliceRow } from "./rows";
import type { InputError } from "../data/inputs";
import type { SliceScanRow } from "../lesions/scan";

export interface GallerySlice {
  row: SliceRow;
  /** Gray view at viewSize² (the model's input before normalisation). */
  view: Uint8Array;
  /** Lung and lesion masks aligned to the view (0/1, viewSize²). */
  lung: Uint8Array;
  lesion: Uint8Array | null;
  /** Grad-CAM overlay (data URI) where one was drawn. */
  cam: string | null;
}

/** A scan's page section: its row, its per-slice counts, and the slices shown (those that drive the call). */
export interface GalleryScan {
  row: SeriesRow;
  perSlice: SliceScanRow[];
  /** mm² of one pixel (null without spacing: areas in pixels). */
  pixelMm2: number | null;
  /** Each side's craniocaudal extent (0-based slice indices, inclusive). */
  extent: { right: [number, number] | null; left: [number, number] | null };
  /** Slices of the zone split counted from the head (true) or from the first slice (false: orientation unknown). */
  superiorLast: boolean | null;
  shown: GallerySlice[];
}

export interface GalleryData {
  title: string;
  model: string;
  threshold: number;
  viewSize: number;
  window: string;
  /** Which slices have Grad-CAM, or why none. */
  gradcam: string;
  /** Slices given alone (not in a series). */
  slices: GallerySlice[];
  scans: GalleryScan[];
  errors: InputError[];
}

const LUNG_RGB: [number, number, number] = [40, 120, 255];
const LESION_RGB: [number, number, number] = [255, 40, 40];
const pct = (v: number, d = 2) => `${(100 * v).toFixed(d)} %`;
const thr = (t: number) => (t < 0.01 ? t.toPrecision(3) : t.toFixed(3));

async function card(s: GallerySlice, n: number, caption: string): Promise<string> {
  const img = async (layers: Parameters<typeof overlayPng>[2]) => `<img width="160" height="160" src="${await overlayPng(s.view, n, layers, 160, "jpeg")}">`;
  return (
    `<figure class="card"><div>${await img([])}${await img([{ mask: s.lung, size: n, rgb: LUNG_RGB, alpha: 0.35 }])}` +
    (s.lesion ? await img([{ mask: s.lung, size: n, rgb: LUNG_RGB, alpha: 0.2 }, { mask: s.lesion, size: n, rgb: LESION_RGB, alpha: 0.6 }]) : "") +
    (s.cam ? `<img width="160" height="160" src="${s.cam}">` : "") +
    `</div><figcaption>${caption}</figcaption></figure>`
  );
}

function sliceCaption(r: SliceRow, threshold: number): string {
  const call = r.probability === null ? `<b>no score</b>` : r.covid ? `<b style="color:#b00">COVID-19</b>` : `<b style="color:#060">not COVID-19</b>`;
  return (
    `${escapeHtml(r.input)}${r.series ? ` (series ${escapeHtml(r.series)}, slice ${(r.index ?? 0) + 1})` : ""}<br>` +
    (r.probability === null ? `` : `probability ${thr(r.probability)} (threshold ${thr(threshold)}): `) + `${call}${r.series ? " (this slice alone; the series' call is above)" : ""}; lungs ${(100 * r.lungShare).toFixed(1)} % of the image` +
    (r.lesionBurden !== null ? `; lesion burden ${pct(r.lesionBurden)} of the lungs` : "") +
    (r.flag ? `; <b>flagged: ${escapeHtml(r.flag)}</b>` : "")
  );
}

/** The chart along the slice axis of one scan. */
export function scanFigure(s: GalleryScan): Figure {
  const x = s.perSlice.map((_, k) => k + 1);
  const unit = s.pixelMm2 === null ? "pixels" : "cm²";
  const area = (px: number) => (s.pixelMm2 === null ? px : (px * s.pixelMm2) / 100);
  const data: PlotlyTrace[] = [
    { type: "scatter", mode: "lines", name: `lung area (${unit})`, x, y: s.perSlice.map((p) => area(p.lungPixels)), fill: "tozeroy", line: { color: "rgb(40,120,255)" } },
    { type: "scatter", mode: "lines", name: "lung removed (no air beside it, or not connected in 3D)", x, y: s.perSlice.map((p) => area(p.removedLungPixels)), line: { color: "rgb(150,150,150)", dash: "dot" } },
    { type: "scatter", mode: "lines", name: "lesion burden per slice (%)", x, y: s.perSlice.map((p) => (p.burden === null ? null : 100 * p.burden)), yaxis: "y2", line: { color: "rgb(220,30,30)" } },
    { type: "scatter", mode: "lines", name: `scan burden ${pct(s.row.burden)}`, x: [1, x.length], y: [100 * s.row.burden, 100 * s.row.burden], yaxis: "y2", line: { color: "rgb(220,30,30)", dash: "dash" } },
    { type: "scatter", mode: "lines", name: `series threshold ${pct(s.row.threshold)}`, x: [1, x.length], y: [100 * s.row.threshold, 100 * s.row.threshold], yaxis: "y2", line: { color: "black", dash: "dot" } },
  ];
  // The zones: each side's extent cut in thirds, drawn as bars above the plot, shaded by grade.
  const shapes: Record<string, unknown>[] = [];
  const annotations: Record<string, unknown>[] = [];
  const side = (name: "right" | "left", ex: [number, number] | null, y0: number) => {
    if (!ex) return;
    const len = ex[1] - ex[0] + 1;
    for (let k = ex[0]; k <= ex[1]; ) {
      const fromTop = s.superiorLast === true ? ex[1] - k : k - ex[0];
      const third = Math.min(2, Math.floor((3 * fromTop) / len));
      let end = k;
      while (end + 1 <= ex[1] && Math.min(2, Math.floor((3 * (s.superiorLast === true ? ex[1] - (end + 1) : end + 1 - ex[0])) / len)) === third) end++;
      const zone = s.row.zones.find((z) => z.zone === `${name} ${["upper", "middle", "lower"][third]}`)!;
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: k + 0.5, x1: end + 1.5, y0, y1: y0 + 0.05, fillcolor: `rgba(220,30,30,${0.08 + 0.18 * zone.grade})`, line: { width: 1, color: "#888" } });
      annotations.push({ xref: "x", yref: "paper", x: (k + end + 2) / 2, y: y0 + 0.025, text: `${name[0].toUpperCase()}${["U", "M", "L"][third]} ${zone.grade}`, showarrow: false, font: { size: 10 } });
      k = end + 1;
    }
  };
  side("right", s.extent.right, 1.02);
  side("left", s.extent.left, 1.08);
  const ends = s.superiorLast === null ? "series order" : s.superiorLast ? "foot → head" : "head → foot";
  return {
    data,
    layout: {
      title: { text: `${s.row.series}: lung and lesion along the scan (${ends})`, y: 0.97 },
      height: 420,
      margin: { t: 110 },
      xaxis: { title: { text: "slice (series order)" } },
      yaxis: { title: { text: `lung area (${unit})` }, rangemode: "tozero" },
      yaxis2: { title: { text: "lesion burden (%)" }, overlaying: "y", side: "right", rangemode: "tozero" },
      legend: { orientation: "h", y: -0.25 },
      shapes,
      annotations,
    },
  };
}

function zonesTable(r: SeriesRow): string {
  const sides = r.patientSides ? "the patient's sides" : "image sides (orientation unknown: 'right' = image left)";
  return tableBundle(
    ["zone", "lung voxels", "lesion voxels", "involved", "grade (0–5)"],
    [...r.zones.map((z) => [z.zone, z.lungVoxels, z.lesionVoxels, pct(z.share, 1), z.grade]), ["total", null, null, null, `${r.severity} / 30`]],
    { caption: `Zones of ${r.series} (${sides}): thirds of each lung's craniocaudal extent, graded like the chest CT severity score (0 none, 1 < 5 %, 2 5–25 %, 3 26–50 %, 4 51–75 %, 5 > 75 %). Zones, not lobes.` },
  )["text/html"];
}

export async function galleryHtml(d: GalleryData): Promise<string> {
  const n = d.viewSize;
  const sections: string[] = [];
  let embedded = false;
  for (const s of d.scans) {
    const r = s.row;
    const call = r.covid ? `<b style="color:#b00">COVID-19-like involvement</b>` : `<b style="color:#060">no COVID-19-like involvement</b>`;
    const vol = r.lungMl !== null ? ` (lesion ${r.lesionMl!.toFixed(1)} ml of ${r.lungMl.toFixed(0)} ml lung)` : "";
    const fig = figureBundle(scanFigure(s), { embedLoader: !embedded })["text/html"];
    embedded = true;
    const cards = await Promise.all(s.shown.map((g) => card(g, n, sliceCaption(g.row, d.threshold))));
    sections.push(
      `<section class="scan"><h2>Series ${escapeHtml(r.series)}: ${call}</h2>` +
        `<p>${escapeHtml(r.folder)}: ${r.slices} slices (order: ${escapeHtml(r.order)}), lungs on ${r.lungSlices}` +
        (r.lungRemovedSlices ? `, ${r.lungRemovedSlices} slice(s) whose "lung" held no air or was not connected to the lungs in 3D and was removed` : "") +
        `. Volumetric lesion burden <b>${pct(r.burden)}</b>${vol}; called at ≥ ${pct(r.threshold)} (the series threshold). Severity (zones) ${r.severity} / 30. Lesion burden measures pneumonia-like involvement, not COVID-19 specifically (community-acquired pneumonia has lesions too).</p>` +
        fig + zonesTable(r) +
        `<h3>The slices that drive the call (${s.shown.length}: the most lesion voxels)</h3>` + cards.join("\n") + `</section>`,
    );
  }
  const single = await Promise.all(d.slices.map((s) => card(s, n, sliceCaption(s.row, d.threshold))));
  const errors = d.errors.length ? `<h2>Not scored (${d.errors.length})</h2><ul>${d.errors.map((e) => `<li><code>${escapeHtml(e.file)}</code>: ${escapeHtml(e.message)}</li>`).join("")}</ul>` : "";
  return (
    `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(d.title)}</title>` +
    `<style>body{font-family:sans-serif;margin:1.5em}.card{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:660px}.card div{white-space:nowrap}.card img{margin-right:2px}` +
    `figcaption{font-size:85%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>` +
    `<h1>${escapeHtml(d.title)}</h1>` +
    `<p>Model: <code>${escapeHtml(d.model)}</code>. A slice is called COVID-19 at probability ≥ ${thr(d.threshold)} (the model's threshold, chosen on its validation set). ` +
    `Each slice: as the model saw it (${n}² chest crop), the predicted lungs (blue)${d.slices.some((s) => s.lesion) || d.scans.length ? ", and the predicted lesions (red) inside them" : ""}. ${escapeHtml(d.window)}. ` +
    `${escapeHtml(d.gradcam)} A score is evidence to check against the image, not a diagnosis.</p>` +
    (d.scans.length
      ? `<p>A series is scored as a scan: its lungs are the U-Net's lung that holds air (kept within 10 mm of aerated lung, so liver and bowel below the lung bases go) and that connects to the main lung volume through adjacent slices, and its call is the volumetric lesion burden (lesion voxels inside the lungs / lung voxels) at the series threshold. ` +
        `<b>Lesion burden measures pneumonia-like involvement (ground glass, consolidation), not COVID-19 specifically: community-acquired pneumonia has lesions too.</b> The zones are thirds of each lung's extent, not anatomical lobes.</p>`
      : "") +
    sections.join("\n") + errors + (single.length ? `<h2>Slices (${single.length})</h2>` + single.join("\n") : "") + `</body></html>\n`
  );
}

export async function writeGallery(file: string, d: GalleryData): Promise<void> {
  writeFileAtomic(file, await galleryHtml(d));
}
