/**
 * Notebook 05, "Does it see COVID-19?": the lesion segmenter against the radiologists, a gallery,
 * and "What transfers" — the best rows of Tables 5–7, the lung probe, the shortcut baseline and
 * the two lesion scores, read on the one set whose source cannot give the label away.
 */
import { Example } from "../data/examples";
import { SourceName } from "../data/sources";
import { orientPixels } from "../data/orientation";
import { DiagnosisResult } from "../diagnosis/results";
import { meanSd } from "../evaluation";
import { INF_NET_MEDSEG_DICE, LesionMetrics } from "../lesions/segmenter";
import { LesionScoreResult } from "../lesions/score";
import { resizeMask, segmenterInput, uprightSlice } from "../lungs/slices";
import { PAPER_ARM_NAMES } from "../paper";
import { Figure, tableBundle } from "../plots";
import { spreadIndices } from "../protocols";
import { Segmenter } from "../segmenter/engine";
import { escapeHtml } from "../util/html";
import { EXTERNAL_NOTE, externalAtValCell, externalAucCell, externalCallRateCell, rocFigureOf, ScoredRun, seedMeanBootstrap } from "./runs";
import { overlayPng } from "./overlay";

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");
const f3 = (x: number | undefined) => (x !== undefined && Number.isFinite(x) ? x.toFixed(3) : "–");
const MODEL_NAMES: Record<string, string> = { densenet169: "DenseNet-169", resnet50: "ResNet-50" };

/**
 * The lesion segmenter beside the Study II lesion branch (a 1×1 convolution on a frozen 7×7 map,
 * Table 6's lesion rows) and Inf-Net's published Dice on the same 48 MedSeg test slices.
 */
export function lesionDiceTable(m: LesionMetrics, studyTwo: readonly DiagnosisResult[] = []) {
  const branch = studyTwo.map((r) => r.metrics.lesion?.medsegTest?.pooled.dice).filter((d): d is number => d !== undefined && Number.isFinite(d));
  const b = meanSd(branch);
  const rows = [
    [`lesion U-Net (ours, ${m.profile}: ${m.counts.trainMedseg} MedSeg + ${m.counts.trainExpert} expert training slices)`, f3(m.medsegTest.pooled.dice), f3(m.medsegTest.perImage.dice), f3(m.medsegTest.pooled.iou), f3(m.expertTest.pooled.dice), f3(m.expertTest.perImage.dice), f3(m.expertTest.pooled.iou), `${f3(m.medsegTest.detection.sensitivity)} / ${f3(m.expertTest.detection.sensitivity)}`, `${f3(m.lesionFree.specificity)} (${m.lesionFree.withLesion} of ${m.lesionFree.n})`],
    [`Study II lesion branch (ASPP, 28² output; Table 6's lesion rows, ${branch.length} runs)`, branch.length ? `${f3(b.mean)}${branch.length > 1 ? ` ± ${f3(b.sd)}` : ""}` : "– (run notebook 03)", "–", "–", "–", "–", "–", "–", "–"],
    ["Inf-Net (Fan et al. 2020), published", f3(INF_NET_MEDSEG_DICE), "–", "–", "–", "–", "–", "–", "–"],
  ];
  return tableBundle(["model", "MedSeg test Dice (pooled)", "per slice", "IoU (pooled)", `test blocks ${m.split.test.join(", ")} Dice (pooled)`, "per slice", "IoU (pooled)", "slice sensitivity MedSeg / blocks", "lesion-free LUNA16 slices (specificity proxy)"], rows, {
    caption: `Lesion masks against the radiologists: MedSeg test (48 slices, Inf-Net's split) and the expert test blocks; threshold ${m.threshold} chosen on validation blocks ${m.split.val.join(", ")}`,
    note:
      "Pooled = pixel counts summed over slices, then one Dice; per slice = mean of each slice's Dice. Dice at each file's own size. Every radiologist slice holds a lesion, " +
      `so slice-level specificity is undefined there: the last column is the share of LUNA16 slices (non-COVID, no infection mask) with no predicted lesion above ${pct(m.minLesionShare)} % of the image. ` +
      "Inf-Net trained at 352² on MedSeg's 50 training slices plus 1,600 semi-supervised slices; its number is the published one, not re-run here.",
  });
}

/** Upright gray and upright masks of a file, all stretched to side × side (as the U-Nets see it). */
async function uprightView(e: { path: string; source: SourceName }, masks: readonly { data: Uint8Array; height: number; width: number }[], side: number) {
  const s = await uprightSlice(e.path, e.source);
  const gray = await segmenterInput(s, side, { kind: "none" });
  const up = await Promise.all(masks.map((m) => resizeMask(orientPixels(m.data, m.height, m.width, 1, s.orientation).data, s.height, s.width, side, side)));
  return { gray, masks: up };
}

const LUNG_RGB: [number, number, number] = [40, 120, 255];
const REF_RGB: [number, number, number] = [255, 40, 40];
const PRED_RGB: [number, number, number] = [255, 220, 0];

function figure(imgs: string[], caption: string): string {
  return `<figure style="display:inline-block;margin:6px;text-align:center;vertical-align:top">${imgs.map((s) => `<img src="${s}"/>`).join("")}<figcaption style="font-size:11px;max-width:${170 * imgs.length}px">${escapeHtml(caption)}</figcaption></figure>`;
}

/** MedSeg test slices: the radiologists' lesions (red) beside the U-Net's (yellow), with each slice's Dice. */
export async function medsegLesionGallery(lesions: Segmenter, metrics: LesionMetrics, examples: readonly Example[], n = 6) {
  const dice = new Map(metrics.medsegTest.perSlice.map((p) => [p.id, p.dice]));
  // The slices the run measured (all 48; a smoke run measures a few).
  const measured = examples.filter((e) => dice.has(e.id));
  const shown = spreadIndices(measured.length, Math.min(n, measured.length)).map((i) => measured[i]);
  const { lesionMask } = await import("../segmenter/reference");
  const side = 192;
  const cells: string[] = [];
  for (const e of shown) {
    const pred = await lesions.maskFor(e.path, "medseg");
    const s = await uprightSlice(e.path, "medseg");
    const ref = (await lesionMask({ path: e.path, source: "medseg" }, s))!;
    const gray = await segmenterInput(s, side, { kind: "none" });
    const refUp = await resizeMask(ref, s.height, s.width, side, side);
    const predUp = await resizeMask(orientPixels(pred.data, pred.height, pred.width, 1, s.orientation).data, s.height, s.width, side, side);
    const imgs = await Promise.all([overlayPng(gray, side, [{ mask: refUp, size: side, rgb: REF_RGB, alpha: 0.55 }], 170), overlayPng(gray, side, [{ mask: predUp, size: side, rgb: PRED_RGB, alpha: 0.55 }], 170)]);
    cells.push(figure(imgs, `${e.id}: radiologists (red) · U-Net (yellow) · Dice ${f3(dice.get(e.id))}`));
  }
  return { "text/html": `<div>${cells.join("")}</div>`, "text/plain": `${shown.length} MedSeg test slices: radiologists' lesions beside the U-Net's` };
}

/**
 * São Paulo slices (the external set) with the predicted lung (blue) and lesions (yellow), their
 * burden, and the call at the lesion-burden run's validation threshold: true or false.
 */
export async function externalLesionGallery(lungs: Segmenter, lesions: Segmenter, burden: LesionScoreResult, examples: readonly Example[], perClass = 4) {
  const t = burden.metrics.testAtValThreshold.threshold;
  const { predictionsOf } = await import("./runs");
  const score = new Map(predictionsOf(burden, "external").map((p) => [p.file, p.probability]));
  const side = 192;
  const rows: string[] = [];
  for (const label of [1, 0]) {
    const xs = examples.filter((e) => e.label === label);
    const shown = spreadIndices(xs.length, Math.min(perClass, xs.length)).map((i) => xs[i]);
    const cells: string[] = [];
    for (const e of shown) {
      const src = (e.source ?? "sars-cov-2-ct-scan") as SourceName;
      const [lung, lesion] = [await lungs.maskFor(e.path, src), await lesions.maskFor(e.path, src)];
      const v = await uprightView({ path: e.path, source: src }, [lung, lesion], side);
      const b = score.get(e.id) ?? NaN;
      const called = b >= t;
      const verdict = called === (label === 1) ? (called ? "true positive" : "true negative") : called ? "false positive" : "false negative";
      const img = await overlayPng(v.gray, side, [{ mask: v.masks[0], size: side, rgb: LUNG_RGB, alpha: 0.25 }, { mask: v.masks[1], size: side, rgb: PRED_RGB, alpha: 0.6 }], 170);
      cells.push(figure([img], `${e.id.split("/").pop()}: burden ${pct(b)} % → ${called ? "COVID" : "not COVID"} (${verdict})`));
    }
    rows.push(`<div><div style="font-size:12px;font-weight:bold">${label ? "COVID-19 (RT-PCR positive)" : "not COVID-19"}</div>${cells.join("")}</div>`);
  }
  return {
    "text/html": `<p style="font-size:12px">${escapeHtml(`Predicted lungs (blue) and lesions (yellow) on São Paulo slices; called COVID when the lesion burden is at least ${pct(t)} % (the threshold chosen on the paper protocol's validation set).`)}</p>${rows.join("")}`,
    "text/plain": `São Paulo slices with predicted lesions, ${perClass} per class`,
  };
}

/** What these tables read of Table 7's results (lib/studies/cssl Table7Runs): each fine-tuning run with its row. */
export type Table7Runs = { runs: readonly { row: { label: string }; result: DiagnosisResult }[] };

/** One row of "What transfers": a group of runs (seeds) with its name and protocol. */
export interface TransferRow {
  name: string;
  protocol: "official" | "paper";
  runs: readonly ScoredRun[];
  /** What the row is, in a few words (where it comes from). */
  what: string;
}

type Group = { key: string; runs: DiagnosisResult[] };
function groupBy(results: readonly DiagnosisResult[], key: (r: DiagnosisResult) => string): Group[] {
  const m = new Map<string, DiagnosisResult[]>();
  for (const r of results) {
    const k = key(r);
    m.set(k, [...(m.get(k) ?? []), r]);
  }
  return [...m].map(([k, runs]) => ({ key: k, runs }));
}
const meanOf = (runs: readonly ScoredRun[], f: (r: ScoredRun) => number) => runs.reduce((a, r) => a + f(r), 0) / Math.max(1, runs.length);

/**
 * The best group of a table, chosen as every run chose its checkpoint: on the protocol's
 * VALIDATION AUC (seed mean); ties (many rows reach 1.0 under the paper protocol) broken by the
 * protocol's test AUC. Never on the external set.
 */
export function bestByValidation(groups: readonly Group[]): Group | null {
  const score = (g: Group) => [meanOf(g.runs, (r) => r.metrics.val.auc), meanOf(g.runs, (r) => r.metrics.test.auc)];
  return [...groups].sort((a, b) => {
    const [va, ta] = score(a), [vb, tb] = score(b);
    return vb - va || tb - ta;
  })[0] ?? null;
}

const armName = (a: string) => PAPER_ARM_NAMES[a] ?? a;
const variantLabel = (c: DiagnosisResult["config"]) => [c.lungMask ? "lung mask" : "", c.lesionMask ? "lesion branch" : ""].filter(Boolean).join(" + ") || "image only";

/** The rows of "What transfers" from the studies' results (finished runs, reused) and the lesion scores. */
export function transferRows(o: {
  table5?: { official?: readonly DiagnosisResult[]; paper?: readonly DiagnosisResult[] };
  table6?: readonly DiagnosisResult[];
  table7?: Table7Runs;
  lungProbes?: readonly DiagnosisResult[];
  shortcut?: readonly DiagnosisResult[];
  scores?: Partial<Record<"lesion-burden" | "lesion-logistic", LesionScoreResult>>;
}): TransferRow[] {
  const rows: TransferRow[] = [];
  for (const protocol of ["paper", "official"] as const) {
    const r5 = (o.table5?.[protocol] ?? []).filter((r) => r.config.model !== "shortcut");
    const best = bestByValidation(groupBy(r5, (r) => `${r.config.model}|${r.config.positives}`));
    if (best) rows.push({ name: `Table 5 best: ${MODEL_NAMES[best.runs[0].config.model] ?? best.runs[0].config.model} on ${armName(best.runs[0].config.positives)}`, protocol, runs: best.runs, what: "Study I, chosen on validation AUC" });
  }
  const b6 = bestByValidation(groupBy(o.table6 ?? [], (r) => `${r.config.positives}|${variantLabel(r.config)}`));
  if (b6) rows.push({ name: `Table 6 best: ${armName(b6.runs[0].config.positives)}, ${variantLabel(b6.runs[0].config)}`, protocol: "paper", runs: b6.runs, what: "Study II, chosen on validation AUC" });
  const g7 = groupBy((o.table7?.runs ?? []).map((x) => Object.assign(Object.create(null), x.result, { __row: x.row.label }) as DiagnosisResult), (r) => (r as unknown as { __row: string }).__row);
  const b7 = bestByValidation(g7);
  if (b7) rows.push({ name: `Table 7 best: ${b7.key}`, protocol: "paper", runs: b7.runs, what: "CSSL, chosen on validation AUC" });
  const only = (o.lungProbes ?? []).filter((r) => r.config.lungProbe === "lungs-only");
  if (only.length) rows.push({ name: "Lungs only (probe)", protocol: "paper", runs: only, what: "image-only classifier on Combination, everything outside the lung mask blanked" });
  if (o.shortcut?.length) rows.push({ name: `Shortcut baseline (${armName(o.shortcut[0].config.positives)})`, protocol: "paper", runs: o.shortcut, what: "file cues only: size, aspect, grey statistics; no anatomy" });
  const burden = o.scores?.["lesion-burden"], logistic = o.scores?.["lesion-logistic"];
  if (burden) rows.push({ name: "Lesion burden (not fitted to labels)", protocol: "paper", runs: [burden], what: "predicted lesion share of the predicted lung; threshold on validation" });
  if (logistic) rows.push({ name: "Lesion logistic model", protocol: "paper", runs: [logistic], what: "burden, both lungs, peripheral share, components; fitted on the protocol's training images" });
  return rows;
}

/** "What transfers": protocol test AUC beside the external set's AUC (CI), Acc / F1 at the validation threshold and COVID call rate. */
export function transferTable(rows: readonly TransferRow[]) {
  const body = rows.map((r) => {
    const test = meanSd(r.runs.map((x) => x.metrics.test.auc));
    const [lo, hi] = seedMeanBootstrap(r.runs, "auc", 1000, 0, "test");
    return [r.name, r.protocol, `${pct(test.mean)} [${pct(lo)}, ${pct(hi)}]`, externalAucCell(r.runs), externalAtValCell(r.runs), externalCallRateCell(r.runs), `${r.runs.length}`, r.what];
  });
  return tableBundle(["row", "protocol", "protocol test AUC [95 % CI]", "external AUC (mean ± sd over seeds) [95 % CI]", "external Acc / F1 @ val. threshold", "external COVID call rate", "seeds", "what it is"], body, {
    caption: "What transfers: the best rows of Tables 5–7 (chosen on the protocol's validation AUC, ties by its test AUC; never on the external set), the lungs-only probe, the shortcut baseline and the lesion scores, on the protocol's test set and on the external set",
    note:
      EXTERNAL_NOTE +
      " Under the paper protocol the test classes also differ by source (COVID-Seg vs LUNA16), so its test AUC can be earned by source alone (the shortcut row shows how far); the external column cannot. " +
      "The lesion rows never saw a class label through their masks: the U-Nets learned from radiologists' masks, and the logistic model's weights and every threshold come from the protocol's training and validation images.",
  });
}

/** External ROC curves of the rows. */
export function transferRoc(rows: readonly TransferRow[]): Figure {
  return rocFigureOf("What transfers", rows.map((r) => ({ name: `${r.name} (${r.protocol})`, runs: r.runs })), "external");
}

function externalAuc(runs: readonly ScoredRun[]): { mean: number; lo: number; hi: number } | null {
  if (!runs.length || !runs.every((r) => r.metrics.external)) return null;
  const [lo, hi] = seedMeanBootstrap(runs, "auc", 1000, 0, "external");
  return { mean: meanOf(runs, (r) => r.metrics.external!.atHalf.auc), lo, hi };
}

/**
 * One sentence per ordering the paper claims, read on the external set: the groups' external AUC
 * with intervals, and whether the intervals let the set order them at all.
 */
export function orderingSentence(claim: string, groups: readonly { name: string; runs: readonly ScoredRun[] }[]): string {
  const xs = groups.map((g) => ({ name: g.name, auc: externalAuc(g.runs) })).filter((g): g is { name: string; auc: NonNullable<ReturnType<typeof externalAuc>> } => !!g.auc);
  if (xs.length < 2) return `${claim}: not measured on the external set here.`;
  const listed = xs.map((x) => `${x.name} ${pct(x.auc.mean)} [${pct(x.auc.lo)}, ${pct(x.auc.hi)}]`).join(", ");
  const sorted = [...xs].sort((a, b) => b.auc.mean - a.auc.mean);
  const separated = sorted.slice(1).every((x) => x.auc.hi < sorted[0].auc.lo);
  const allChance = xs.every((x) => x.auc.lo <= 0.5 && x.auc.hi >= 0.5);
  const verdict = allChance
    ? "every interval holds 50: the external set cannot order them, and none of them carries COVID-19 to this hospital"
    : separated
      ? `${sorted[0].name} is ahead of the others beyond the intervals`
      : "the intervals overlap: the external set cannot order them";
  return `${claim} — external AUC: ${listed}; ${verdict}.`;
}

/** The paragraph that reads the paper's orderings on the external column. */
export function orderingsParagraph(o: { table5Paper?: readonly DiagnosisResult[]; table6?: readonly DiagnosisResult[]; table7?: Table7Runs; scores?: Partial<Record<string, LesionScoreResult>> }) {
  const lines: string[] = [];
  const dn = (o.table5Paper ?? []).filter((r) => r.config.model === "densenet169");
  if (dn.length) lines.push(orderingSentence("Paper: COVID-Seg > CT-118 and CT-349 as training positives (Table 5, DenseNet-169)", groupBy(dn, (r) => armName(r.config.positives)).map((g) => ({ name: g.key, runs: g.runs }))));
  const comb = (o.table6 ?? []).filter((r) => r.config.positives === "combination");
  if (comb.length) lines.push(orderingSentence("Paper: lung mask and lesion branch each add to image only, both most (Table 6, Combination)", groupBy(comb, (r) => variantLabel(r.config)).map((g) => ({ name: g.key, runs: g.runs }))));
  if (o.table7?.runs.length) lines.push(orderingSentence("Paper: random < ImageNet < ImageNet + MoCo (Table 7)", groupBy(o.table7.runs.map((x) => Object.assign(Object.create(null), x.result, { __row: x.row.label }) as DiagnosisResult), (r) => (r as unknown as { __row: string }).__row).map((g) => ({ name: g.key, runs: g.runs }))));
  const burden = o.scores?.["lesion-burden"];
  const bestImage = [...(o.table6 ?? [])];
  if (burden && bestImage.length) {
    const a = externalAuc([burden]);
    if (a) lines.push(`Beyond the paper: the lesion burden, which no class label shaped, reaches external AUC ${pct(a.mean)} [${pct(a.lo)}, ${pct(a.hi)}] on the same slices.`);
  }
  return { "text/plain": lines.join("\n"), "text/html": `<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>` };
}
