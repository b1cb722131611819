/**
 * gallery.html of `covid-ct predict`: one self-contained page (images inline as data URIs, no
 * script, nothing fetched), so it opens offline like the notebooks' HTML exports. For each slice:
 * the slice as the model saw it (its chest crop at the run's input size), the lung mask over it, and
 * the lesions over it where a lesion model exists; then the series table and the inputs that failed.
 */
import { overlayPng } from "../reports/overlay";
import { tableBundle } from "../plots";
import { escapeHtml } from "../util/html";
import { writeFileAtomic } from "../util/fs";
import type { SeriesRow, SliceRow } from "./rows";
import type { InputError } from "../data/inputs";

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

export interface GalleryData {
  title: string;
  model: string;
  threshold: number;
  viewSize: number;
  seriesRule: string;
  window: string;
  /** Which slices have Grad-CAM, or why none. */
  gradcam: string;
  slices: GallerySlice[];
  series: SeriesRow[];
  errors: InputError[];
}

const LUNG_RGB: [number, number, number] = [40, 120, 255];
const LESION_RGB: [number, number, number] = [255, 40, 40];

export async function galleryHtml(d: GalleryData): Promise<string> {
  const n = d.viewSize;
  const cards: string[] = [];
  for (const s of d.slices) {
    const img = async (layers: Parameters<typeof overlayPng>[2]) => `<img width="160" height="160" src="${await overlayPng(s.view, n, layers, 160, "jpeg")}">`;
    const r = s.row;
    const call = r.covid ? `<b style="color:#b00">COVID-19</b>` : `<b style="color:#060">not COVID-19</b>`;
    cards.push(
      `<figure class="card"><div>${await img([])}${await img([{ mask: s.lung, size: n, rgb: LUNG_RGB, alpha: 0.35 }])}` +
        (s.lesion ? await img([{ mask: s.lung, size: n, rgb: LUNG_RGB, alpha: 0.2 }, { mask: s.lesion, size: n, rgb: LESION_RGB, alpha: 0.6 }]) : "") +
        (s.cam ? `<img width="160" height="160" src="${s.cam}">` : "") +
        `</div><figcaption>${escapeHtml(r.input)}${r.series ? ` (series ${escapeHtml(r.series)}, slice ${(r.index ?? 0) + 1})` : ""}<br>` +
        `probability ${r.probability.toFixed(3)}: ${call}; lungs ${(100 * r.lungShare).toFixed(1)} % of the image` +
        (r.lesionBurden !== null ? `; lesion burden ${(100 * r.lesionBurden).toFixed(2)} % of the lungs` : "") +
        `</figcaption></figure>`,
    );
  }
  const series = d.series.length
    ? tableBundle(["series", "folder", "slices", "score", "call", "driven by (slice: file)", "order"], d.series.map((s) => [s.series, s.folder, s.slices, s.probability.toFixed(3), s.covid ? "COVID-19" : "not COVID-19", `${s.drivenBy.index}: ${s.drivenBy.input}`, s.order]), { caption: `Series: ${d.seriesRule}` })["text/html"]
    : "";
  const errors = d.errors.length ? `<h2>Not scored (${d.errors.length})</h2><ul>${d.errors.map((e) => `<li><code>${escapeHtml(e.file)}</code>: ${escapeHtml(e.message)}</li>`).join("")}</ul>` : "";
  return (
    `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(d.title)}</title>` +
    `<style>body{font-family:sans-serif;margin:1.5em}.card{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:660px}.card div{white-space:nowrap}.card img{margin-right:2px}` +
    `figcaption{font-size:85%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>` +
    `<h1>${escapeHtml(d.title)}</h1>` +
    `<p>Model: <code>${escapeHtml(d.model)}</code>. Called COVID-19 at probability ≥ ${d.threshold < 0.01 ? d.threshold.toPrecision(3) : d.threshold.toFixed(3)} (the model's threshold, chosen on its validation set). ` +
    `Each slice: as the model saw it (${n}² chest crop), the predicted lungs (blue)${d.slices.some((s) => s.lesion) ? ", and the predicted lesions (red) inside them" : ""}. ${escapeHtml(d.window)}. ` +
    `${escapeHtml(d.gradcam)} A score is evidence to check against the image, not a diagnosis.</p>` +
    series + errors + `<h2>Slices (${d.slices.length})</h2>` + cards.join("\n") + `</body></html>\n`
  );
}

export async function writeGallery(file: string, d: GalleryData): Promise<void> {
  writeFileAtomic(file, await galleryHtml(d));
}
