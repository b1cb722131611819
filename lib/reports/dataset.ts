/**
 * Notebook 01 (dataset statistics): the paper's numbers beside ours, as tables and Plotly charts.
 * Every function returns a display bundle or a figure; notebooks only call and show them.
 */
import { escapeHtml } from "../util/html";
import { sampleWithoutReplacement } from "../util/random";
import * as path from "path";
import seedrandom from "seedrandom";
import sharp from "sharp";
import { AuditReport } from "../audit";
import { CovidCtDataset, ImageClass } from "../data/dataset";
import { DatasetStats } from "../data/stats";
import { PAPER_DATASET, PAPER_PROTOCOL_TABLES, PAPER_SPLIT } from "../paper";
import { Protocol, protocolCounts } from "../protocols";
import { decodeRaw } from "../data/decode";
import { orientPixels } from "../data/orientation";
import { uprightMeasure } from "../data/upright";
import { preprocessImage } from "../data/preprocess";
import { SourceImage, sourceOrientation, sourcePreprocessing } from "../data/sources";
import { Figure, tableBundle } from "../plots";

type Row = (string | number | null)[];
const pct = (a: number, b: number) => (b > 0 ? `${((100 * a) / b).toFixed(0)} %` : "–");
const r0 = (x: number) => (Number.isFinite(x) ? Math.round(x) : null);

/** (a) Table 1 row for COVID-CT: images, patients, with age, with gender, male:female. */
export function datasetSummaryTable(s: DatasetStats) {
  const m = s.metadata;
  const rows: Row[] = [
    ["COVID images", PAPER_DATASET.covidImages, s.covid.images, "–"],
    ["COVID patients", PAPER_DATASET.covidPatients, "–", s.covid.patients],
    ["with age", PAPER_DATASET.withAge, m.imagesWithAge, m.patientsWithAge],
    ["with gender", PAPER_DATASET.withGender, m.imagesWithGender, m.patientsWithGender],
    ["male : female", `${PAPER_DATASET.male} : ${PAPER_DATASET.female}`, `${m.male} : ${m.female}`, `${m.malePatients} : ${m.femalePatients}`],
    ["NonCOVID images", PAPER_DATASET.noncovidImages, s.noncovid.images, "–"],
    ["NonCOVID patients", "–", "–", s.noncovid.patients],
  ];
  return tableBundle(["quantity", "paper", "ours, per image", "ours, per patient (paper DOI + Patient ID)"], rows, {
    caption: "Table 1 (COVID-CT row) and Figure 2 counts: paper vs this release",
    note:
      `The paper's "patients" with age (${PAPER_DATASET.withAge}) and gender (${PAPER_DATASET.withGender}, ${PAPER_DATASET.male} M : ${PAPER_DATASET.female} F) equal our per-image counts ` +
      `(${m.imagesWithAge}, ${m.imagesWithGender}, ${m.male} : ${m.female}): the paper counted metadata rows, one per image. ` +
      `Identifying a patient by source paper + Patient ID gives ${s.covid.patients} COVID patients (paper: ${PAPER_DATASET.covidPatients}); ` +
      `the sheet's Patient ID strings are reused across papers, so they alone cannot identify patients.`,
  });
}

/** (b) The official split per class. */
export function splitTable(s: DatasetStats) {
  const rows: Row[] = (["train", "val", "test"] as const).flatMap((k) => [
    [k, "COVID", PAPER_SPLIT[k].covid, s.split[k].covid],
    [k, "NonCOVID", PAPER_SPLIT[k].noncovid, s.split[k].noncovid],
  ]);
  const total = (c: "covid" | "noncovid") => s.split.train[c] + s.split.val[c] + s.split.test[c];
  rows.push(["all", "COVID", 349, total("covid")], ["all", "NonCOVID", 397, total("noncovid")]);
  const n = s.splitNotes;
  return tableBundle(["split", "class", "paper", "ours (matched files)"], rows, {
    caption: "Official data split (Data-split/*.txt)",
    note:
      `Split lists are matched to files tolerantly: ${n.tolerant.length} entries matched only by another extension or case, ` +
      `${n.missing.length} entries have no file, ${n.unlisted.length} files are in no list.`,
  });
}

/** (c) Image height and width per class. */
export function sizeTable(s: DatasetStats) {
  const rows: Row[] = [];
  for (const dim of ["height", "width"] as const) {
    const p = PAPER_DATASET[dim];
    rows.push([dim, "min", p.min, r0(s.sizes.covid[dim].min), r0(s.sizes.noncovid[dim].min)]);
    rows.push([dim, "mean", p.mean, r0(s.sizes.covid[dim].mean), r0(s.sizes.noncovid[dim].mean)]);
    rows.push([dim, "max", p.max, r0(s.sizes.covid[dim].max), r0(s.sizes.noncovid[dim].max)]);
  }
  return tableBundle(["dimension", "statistic", "paper (COVID)", "ours COVID", "ours NonCOVID"], rows, {
    caption: "Image sizes in pixels",
    note:
      "Our sizes come from the processed release (Images-processed), which was cropped and re-saved after the paper's " +
      "statistics were computed; the paper's heights and widths also look swapped (its mean height exceeds its mean width, " +
      "the release's images are wider than tall). Neither matches the release, so we report the release.",
  });
}

/** (d) Age histogram (Figure 2, left): per image as the paper counted, and per patient. */
export function ageHistogram(s: DatasetStats): Figure {
  const bins = { start: 0, end: 100, size: 10 };
  return {
    data: [
      { type: "histogram", x: s.ages.images, name: `per image (n=${s.ages.images.length})`, xbins: bins, opacity: 0.75 },
      { type: "histogram", x: s.ages.patients, name: `per patient (n=${s.ages.patients.length})`, xbins: bins, opacity: 0.75 },
    ],
    layout: {
      title: { text: "Age of COVID-19 patients (Figure 2, left)" },
      barmode: "overlay",
      xaxis: { title: { text: "age (years)" } },
      yaxis: { title: { text: "count" } },
      height: 380,
    },
  };
}

/** (d) Gender counts (Figure 2, right): paper, ours per image, ours per patient. */
export function genderChart(s: DatasetStats): Figure {
  const m = s.metadata;
  const x = ["paper (per image)", "ours, per image", "ours, per patient"];
  return {
    data: [
      { type: "bar", name: "male", x, y: [PAPER_DATASET.male, m.male, m.malePatients] },
      { type: "bar", name: "female", x, y: [PAPER_DATASET.female, m.female, m.femalePatients] },
    ],
    layout: { title: { text: "Gender of COVID-19 patients (Figure 2, right)" }, barmode: "group", yaxis: { title: { text: "count" } }, height: 380 },
  };
}

/** A small JPEG thumbnail as a data URI (keeps executed notebooks small). */
export async function thumbnail(file: string, height = 96): Promise<string> {
  const buf = await sharp(file).flatten({ background: "#000" }).resize({ height }).jpeg({ quality: 70 }).toBuffer();
  return `data:image/jpeg;base64,${buf.toString("base64")}`;
}


/** (e) A seeded random gallery of each class. */
export async function gallery(ds: CovidCtDataset, opts: { perClass?: number; seed?: number; height?: number } = {}) {
  const per = opts.perClass ?? 6;
  const rng = seedrandom(String(opts.seed ?? 0));
  const parts: string[] = [];
  const text: string[] = [];
  for (const cls of ["covid", "noncovid"] as ImageClass[]) {
    const pool = [...ds.byClass(cls)];
    const pick = sampleWithoutReplacement(pool, per, rng);
    const imgs = await Promise.all(pick.map(async (r) => `<figure style="display:inline-block;margin:4px;text-align:center"><img src="${await thumbnail(r.path, opts.height)}" title="${escapeHtml(r.file)}"/><figcaption style="font-size:10px;max-width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">${escapeHtml(r.file)}</figcaption></figure>`));
    parts.push(`<h4>${cls === "covid" ? "COVID" : "NonCOVID"}</h4><div>${imgs.join("")}</div>`);
    text.push(`${cls}: ${pick.map((r) => r.file).join(", ")}`);
  }
  return { "text/html": parts.join("\n"), "text/plain": text.join("\n") };
}

/** (f) Audit summary table. */
export function auditSummaryTable(a: AuditReport) {
  const k = a.summary.byKind;
  const rows: Row[] = [
    ["split entries without a file", a.missing.length],
    ["image files in no split", a.unlisted.length],
    ["entries matched tolerantly (extension/case)", a.tolerant.length],
    ["patients in more than one split", a.summary.leakedPatients],
    ["images of those patients", a.summary.leakedImages],
    [`near-duplicate pairs (pHash distance ≤ ${a.threshold})`, a.summary.duplicatePairs],
    ["  within one split", k["within-split"]],
    ["  across splits (same class)", k["cross-split"]],
    ["  across classes", k["cross-class"]],
    ["  byte-identical pairs", a.summary.identicalPairs],
    ["unreadable images", a.unreadable.length],
  ];
  return tableBundle(["check", "count"], rows, {
    caption: "Integrity audit of the official split",
    note: "The paper does not report these checks. Leaks use patient identity = source paper + Patient ID (COVID) and the NonCOVID metadata (NonCOVID).",
  });
}

/** (f) Leaks as a table. */
export function leakTable(a: AuditReport, max = 15) {
  const rows: Row[] = a.leaks.slice(0, max).map((l) => [l.patient, l.cls, l.splits.join(" + "), l.files.length]);
  return tableBundle(["patient", "class", "splits", "images"], rows, {
    caption: `Patients whose images are in more than one split (${a.leaks.length}${a.leaks.length > max ? `, first ${max} shown` : ""})`,
  });
}

/** (f) Thumbnails of duplicate pairs, closest first. */
export async function duplicatePairsGallery(a: AuditReport, ds: CovidCtDataset, max = 8) {
  const pairs = [...a.duplicates].sort((x, y) => x.distance - y.distance).slice(0, max);
  const fileOf = (cls: ImageClass, file: string) => ds.get(cls, file)?.path ?? path.join(ds.root, file);
  const rows = await Promise.all(
    pairs.map(async (d) => {
      const [ta, tb] = await Promise.all([thumbnail(fileOf(d.aClass, d.a), 80), thumbnail(fileOf(d.bClass, d.b), 80)]);
      return `<tr><td><img src="${ta}"/><br/><small>${d.aClass}/${escapeHtml(d.a)} (${d.aSplit ?? "no split"})</small></td><td><img src="${tb}"/><br/><small>${d.bClass}/${escapeHtml(d.b)} (${d.bSplit ?? "no split"})</small></td><td>${d.distance}${d.identical ? " (identical)" : ""}</td><td>${d.kind}</td></tr>`;
    }),
  );
  return {
    "text/html": `<table><thead><tr><th>image A</th><th>image B</th><th>pHash distance</th><th>kind</th></tr></thead><tbody>${rows.join("")}</tbody></table>`,
    "text/plain": pairs.map((d) => `d=${d.distance} ${d.a} <-> ${d.b} (${d.kind})`).join("\n"),
  };
}

/**
 * (g) The paper's Tables 2–4 as our `paper` protocol builds them: images and patients per split,
 * class and source, beside the paper's counts (lib/paper.ts), plus what was removed and why.
 */
export function protocolTables(p: Protocol) {
  const c = protocolCounts(p);
  const sources = ["covid-ct", "covid19-ct-seg", "luna16", "radiopaedia", "all"] as const;
  const title = { train: "Table 2 (train)", val: "Table 4 (val)", test: "Table 3 (test)" } as const;
  const rows: Row[] = [];
  for (const split of ["train", "val", "test"] as const) {
    for (const cls of ["covid", "noncovid"] as const) {
      for (const src of sources) {
        const paper = PAPER_PROTOCOL_TABLES.find((r) => r.split === split && r.cls === cls && r.source === src);
        const ours = src === "all" ? { images: c[split][cls].images, patients: c[split][cls].patients } : src === "radiopaedia" ? null : c[split][cls].bySource[src];
        if (!paper && !ours) continue;
        const removed = p.removed.filter((r) => r.split === split && r.cls === cls && (src === "all" || r.id.startsWith(`${src}/`))).length;
        rows.push([
          title[split], cls === "covid" ? "COVID" : "NonCOVID", src === "all" ? "all sources" : src,
          paper?.images ?? null, paper?.patients ?? null,
          ours ? ours.images : src === "radiopaedia" ? "absent here" : 0, ours ? ours.patients : null,
          split === "train" ? null : removed || null,
        ]);
      }
    }
  }
  return tableBundle(["table", "class", "source", "paper images", "paper patients", "ours images", "ours patients", "removed (eval)"], rows, {
    caption: `The paper's evaluation protocol (Tables 2–4) rebuilt by protocol '${p.name}' v${p.version}, seed ${p.seed}, hash ${p.hash.slice(0, 12)}`,
    note:
      `Patients: COVID-Seg volume, LUNA series, COVID-CT source paper + Patient ID. "removed" counts evaluation images of that source ` +
      `taken out for a near-duplicate in training (all splits together: ${p.removed.length}). ${p.notes.join(" ")}`,
  });
}

/**
 * (g) One orientation for every source: for a few images of each source, the file as stored and
 * what the shared preprocessing makes of it (the source's orientation transform, then the chest
 * crop), with the upright measure (lib/data/orientation.ts) of both. Deterministic: evenly spaced
 * images of each source.
 */
export async function orientationGallery(images: readonly SourceImage[], opts: { perSource?: number; side?: number } = {}) {
  const per = opts.perSource ?? 3;
  const side = opts.side ?? 112;
  const parts: string[] = [];
  const text: string[] = [];
  const uri = async (data: Uint8Array, w: number, h: number, channels: 1 | 2 | 3 | 4 = 1) =>
    `data:image/jpeg;base64,${(await sharp(Buffer.from(data), { raw: { width: w, height: h, channels } }).jpeg({ quality: 75 }).toBuffer()).toString("base64")}`;
  for (const source of [...new Set(images.map((i) => i.source))]) {
    const pool = images.filter((i) => i.source === source);
    const pick = Array.from({ length: Math.min(per, pool.length) }, (_, k) => pool[Math.floor(((k + 0.5) * pool.length) / Math.min(per, pool.length))]);
    const cells: string[] = [];
    for (const x of pick) {
      const raw = await decodeRaw(x.path, 1);
      const asStored = uprightMeasure(raw.data, raw.height, raw.width);
      const scale = side / Math.max(raw.height, raw.width);
      const shown = await sharp(raw.data, { raw: { width: raw.width, height: raw.height, channels: 1 } }).resize(Math.max(1, Math.round(raw.width * scale)), Math.max(1, Math.round(raw.height * scale))).raw().toBuffer({ resolveWithObject: true });
      const pre = await preprocessImage(x.path, { size: side, channels: 1, ...sourcePreprocessing(x.source, x.path) });
      const o = sourceOrientation(x.source, x.path);
      const raw2 = orientPixels(new Uint8Array(raw.data), raw.height, raw.width, 1, o);
      const after = uprightMeasure(raw2.data, raw2.height, raw2.width);
      const fig = (src: string, cap: string) => `<figure style="display:inline-block;margin:2px;text-align:center;vertical-align:top"><img src="${src}"/><figcaption style="font-size:10px">${escapeHtml(cap)}</figcaption></figure>`;
      cells.push(
        fig(await uri(new Uint8Array(shown.data), shown.info.width, shown.info.height, shown.info.channels as 1 | 3), `stored: ${asStored.upright ? "upright" : "not upright"}`) +
          fig(await uri(pre.data, side, side), `${o}: ${after.upright ? "upright" : "not upright"}`),
      );
      text.push(`${x.id}: stored ${asStored.upright ? "upright" : "not upright"} (aspect ${asStored.aspect.toFixed(2)}, bone y ${asStored.boneCentroidY.toFixed(2)}); after ${o} ${after.upright ? "upright" : "not upright"} (aspect ${after.aspect.toFixed(2)}, bone y ${after.boneCentroidY.toFixed(2)})`);
    }
    parts.push(`<h4>${escapeHtml(source)} (transform: ${escapeHtml([...new Set(pick.map((x) => sourceOrientation(x.source, x.path)))].join(", "))})</h4><div>${cells.join('<span style="display:inline-block;width:16px"></span>')}</div>`);
  }
  return { "text/html": parts.join("\n"), "text/plain": text.join("\n") };
}
