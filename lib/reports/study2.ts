/**
 * Notebook 03 (Study II): Table 6 with the paper beside ours, lesion Dice on expert masks, ROC
 * curves, Figure 3 (CT, lung mask, lesion mask) and predicted lesion masks, from finished runs.
 */
import * as path from "path";
import { meanSd } from "../evaluation";
import { PAPER_ARM_NAMES } from "../paper";
import { Figure, tableBundle } from "../plots";
import { Example, loadGrayImages } from "../data/examples";
import { runProfile, variantName } from "../diagnosis/config";
import { LUNG_PROBES, LungProbe } from "../diagnosis/lung-probe";
import { expertLungMasks, LungMaskProvider, lesionMasks, lungMasks } from "../diagnosis/masks";
import { DiagnosisResult, PredictionRow, readLesionPredictions } from "../diagnosis/results";
import { paperRowSix, rowKey, TABLE6_ROWS, TableSixRow } from "../studies/study2";
import { MULTITASK_HEADS, PROFILES, StudyProfile } from "../training/profiles";
import { escapeHtml } from "../util/html";
import { overlayPng } from "./overlay";
export { overlayPng } from "./overlay";
import { EXTERNAL_NOTE, externalAtValCell, externalAucCell, hasExternal, rocFigureOf, seedMeanBootstrap } from "./runs";

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");
const VARIANT_LABEL: Record<string, string> = { "": "image only", lung: "+ lung mask", lesion: "+ lesion mask", "lung-lesion": "+ lung and lesion masks" };

/** Runs grouped by Table 6 row key, in the order given. */
function byRow(results: readonly DiagnosisResult[]): Map<string, DiagnosisResult[]> {
  const m = new Map<string, DiagnosisResult[]>();
  for (const r of results) {
    const k = rowKey({ arm: r.config.positives, lungMask: r.config.lungMask, lesionMask: r.config.lesionMask });
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(r);
  }
  return m;
}

function cell(runs: readonly DiagnosisResult[], metric: "accuracy" | "f1" | "auc"): string {
  const ms = meanSd(runs.map((r) => r.metrics.test[metric]));
  const [lo, hi] = seedMeanBootstrap(runs, metric);
  return `${pct(ms.mean)} ± ${runs.length > 1 ? pct(ms.sd) : "–"} [${pct(lo)}, ${pct(hi)}]`;
}

/**
 * Table 6: all 11 rows in the paper's order, the paper's Acc / F1 / AUC beside ours (mean ± sd over
 * seeds [95 % bootstrap CI of that mean]) and, for lesion rows, the pooled lesion Dice on the MedSeg
 * test slices (radiologists' masks; the paper reports none). A row without runs is shown as not run.
 */
export function table6(results: readonly DiagnosisResult[], opts: { notRun?: Record<string, string>; shortcut?: readonly DiagnosisResult[] } = {}) {
  const g = byRow(results);
  const rows = TABLE6_ROWS.map((r) => {
    const k = rowKey(r);
    const runs = g.get(k) ?? [];
    const p = paperRowSix(r);
    const paper = `${p.accuracy} / ${p.f1} / ${p.auc}`;
    const name = [PAPER_ARM_NAMES[r.arm] ?? r.arm, VARIANT_LABEL[variantName(r)]];
    if (!runs.length) return [...name, paper, "not run", opts.notRun?.[k] ?? "", "", "", "", "", "", 0];
    const dice = runs.map((x) => x.metrics.lesion?.medsegTest?.pooled.dice).filter((d): d is number => d !== undefined);
    const shortcut = (opts.shortcut ?? []).filter((x) => x.config.positives === r.arm);
    return [
      ...name, paper, cell(runs, "accuracy"), cell(runs, "f1"), cell(runs, "auc"),
      externalAucCell(runs), externalAtValCell(runs), shortcut.length ? externalAucCell(shortcut).replace(/ \[.*$/, "") : "–",
      dice.length ? `${pct(meanSd(dice).mean)}${dice.length > 1 ? ` ± ${pct(meanSd(dice).sd)}` : ""}` : "–", runs.length,
    ];
  });
  const prof = results[0]?.config.profile ?? "quick";
  return tableBundle(["training set", "variant", "paper Acc / F1 / AUC", "ours Acc", "ours F1", "ours AUC", "external AUC", "external Acc / F1 @ val. threshold", "shortcut baseline external AUC", "lesion Dice, MedSeg (expert)", "seeds"], rows, {
    caption: `Table 6 — Study II, DenseNet-169, paper protocol, profile '${prof}' (test set, threshold 0.5, COVID positive; mean ± sd over seeds [95 % bootstrap CI of that mean]); external set beside it`,
    note:
      "Test set: COVID-Seg slices of 4 volumes + LUNA slices (no Radiopaedia negatives; near-duplicates of training removed). Lung masks: our residual U-Net trained on radiologists' lung masks of COVID-19-CT-Seg slices (covid19-ct-seg-lungs; the paper does not say where its lung labels came from). " +
      "Lesion masks in training: Inf-Net's PSEUDO labels of the COVID-Seg slices; negatives count as lesion-free; COVID-CT figures carry no lesion loss. Lesion Dice is pooled over the 48 MedSeg test slices at the lesion output's size. " +
      `The paper's numbers are single runs at 480² with full fine-tuning${prof === "paper" ? "" : "; ours follow the profile shown in 'How each row's model differs'"}. ${EXTERNAL_NOTE}`,
  });
}

const PROBE_LABEL: Record<string, string> = {
  "whole-image": "whole image (the probes' reference)",
  "lungs-only": "lungs only (outside the lung mask blanked)",
  "lungs-removed": "lungs removed (the lung mask blanked)",
};

const sizeOf = (runs: readonly DiagnosisResult[]) => (runs.length ? runProfile(runs[0].config).inputSize : undefined);

/**
 * The lung probes: protocol test and external AUC of the same classifier on whole images, on the
 * lungs alone and on everything but the lungs, all at the probes' input size; Table 6's image-only
 * row (the profile's size) below them for context, when given.
 */
export function lungProbeTable(probes: readonly DiagnosisResult[], imageOnly: readonly DiagnosisResult[] = []) {
  const groups: [string, DiagnosisResult[]][] = LUNG_PROBES.map((p) => [PROBE_LABEL[p], probes.filter((r) => r.config.lungProbe === p)]);
  if (imageOnly.length) groups.push([`whole image at ${sizeOf(imageOnly)}² (Table 6's image-only row)`, [...imageOnly]]);
  const rows = groups.map(([name, runs]) => (runs.length ? [name, `${sizeOf(runs)}²`, cell(runs, "auc"), externalAucCell(runs), externalAtValCell(runs), runs.length] : [name, "", "not run", "", "", 0]));
  const arm = PAPER_ARM_NAMES[probes[0]?.config.positives ?? imageOnly[0]?.config.positives ?? "combination"] ?? "Combination";
  return tableBundle(["input", "size", "protocol test AUC", "external AUC", "external Acc / F1 @ val. threshold", "seeds"], rows, {
    caption: `Lung probes (beyond the paper) — DenseNet-169 image-only classifier, training set ${arm}, paper protocol; mean ± sd over seeds [95 % bootstrap CI of that mean]`,
    note:
      "Each probe is trained and tested on blanked images (blanked pixels set to 0, the black of air), with the lung masks of the U-Net above. Lungs only and lungs removed are exact complements. " +
      "The three probe rows share one input size, so they compare with each other; Table 6's row, at the profile's size, is there for context. " +
      EXTERNAL_NOTE,
  });
}

/** What the lung probes say, in words, with the numbers (leads with "lungs removed" on the protocol test). */
export function lungProbeFindings(probes: readonly DiagnosisResult[]) {
  const auc = (runs: readonly DiagnosisResult[], set: "test" | "external") => meanSd(runs.map((r) => (set === "test" ? r.metrics.test.auc : r.metrics.external?.atHalf.auc ?? NaN))).mean;
  const of = (p: LungProbe) => probes.filter((r) => r.config.lungProbe === p);
  const removed = of("lungs-removed"), only = of("lungs-only"), whole = of("whole-image");
  const lines: string[] = [];
  if (removed.length) {
    const t = auc(removed, "test");
    lines.push(
      t >= 0.9
        ? `With the lungs removed, the classifier still separates the protocol's test classes at AUC ${pct(t)}: this test set can be solved without looking at a lung, so its AUCs cannot tell COVID-19 from where a slice came from.`
        : `With the lungs removed, the protocol test AUC falls to ${pct(t)}: outside the lungs there is ${t >= 0.7 ? "some" : "little"} signal left.`,
    );
    const e = auc(removed, "external");
    if (Number.isFinite(e)) lines.push(`On the external set (both classes from one hospital), lungs removed reaches AUC ${pct(e)}.`);
  }
  const both = (runs: readonly DiagnosisResult[]) => {
    const t = auc(runs, "test"), e = auc(runs, "external");
    return `protocol test AUC ${pct(t)}${Number.isFinite(e) ? ` and external AUC ${pct(e)}` : ""}`;
  };
  if (only.length) lines.push(`The lungs alone give ${both(only)}${whole.length ? `; the whole image at the same size: ${both(whole)}` : ""}.`);
  else if (whole.length) lines.push(`The whole image at the probes' size gives ${both(whole)}.`);
  const text = lines.join(" ");
  return { "text/markdown": text, "text/plain": text };
}

/** Quality of the lung masks the runs use, beside the radiologists' and the classical extractor's (from the segmenter run). */
export function lungQualityTable(lungs: LungMaskProvider) {
  const q = lungs.quality ?? {};
  const f = (x: number | undefined, d = 3) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d));
  const rows = Object.entries(q).map(([k, v]) => [k, f(v.expertDice), f(v.medsegCoverage), f(v.chestWall), f(v.lungShare)]);
  return tableBundle(["lung masks", "Dice vs radiologists (test blocks 3, 7, 12)", "MedSeg lesion coverage (radiologists)", "chest-wall share (MedSeg)", "mean lung share of image (MedSeg)"], rows.length ? rows : [["(not measured)", "", "", "", ""]], {
    caption: `Lung masks used by the runs: ${lungs.description ?? lungs.id}`,
    note:
      "Dice: pooled over the held-out volume blocks' slices at their 256², against the radiologists' lung masks (the U-Net never saw these blocks; its threshold was chosen on blocks 5 and 10). " +
      "Coverage = share of lesion pixels inside the lung mask, pooled over MedSeg's 98 slices: lesion the mask leaves out is hidden from a lung-masked model. " +
      "Chest-wall share = share of mask pixels that are dense tissue (above Otsu's threshold of the body) and not lesion: inside true lungs only vessels and airway walls are dense, so the radiologists' own masks (first row, on their test slices) set the level a mask that hugs the lungs reaches; ribs, muscle and heart in a mask raise it. " +
      "MedSeg has no lung masks, so this is how its masks are checked.",
  });
}

/** Paper vs the profile's Study II model, row by row (what a `quick` row really is). */
export function studyTwoProtocolTable(p: StudyProfile) {
  const paper = PROFILES.paper;
  const h = MULTITASK_HEADS[p.name];
  const frozen = p.strategy === "frozen-features";
  const rows = [
    ["backbone", "DenseNet-169 from ImageNet, fine-tuned", frozen ? `DenseNet-169 from ImageNet, FROZEN: its last feature map (${p.inputSize / 32}×${p.inputSize / 32}×1664 at ${p.inputSize}²) cached once` : p.tinyModels ? "tiny-densenet (smoke), trained from scratch" : "DenseNet-169 from ImageNet, fine-tuned"],
    ["input size", `${paper.inputSize}²`, `${p.inputSize}²`],
    ["image only (rows 1, 3, 6, 8)", "DenseNet-169 classifier", frozen ? "global average of the frozen map → softmax (Study I's quick model; rows 1, 3, 6 are Study I's runs)" : `${p.tinyModels ? "tiny-densenet" : "DenseNet-169"} classifier (rows 1, 3, 6 are Study I's runs)`],
    ["+ lung mask (Fig. 4A)", "mask concatenated with the image as an input channel", frozen ? "the frozen backbone cannot take a 4th channel: the mask enters at the feature map — the share of lung in each map cell is a second input, and the classifier adds the lung-masked mean of the features" : "4-channel input; the mask channel's first-conv filters start at zero (ImageNet filters for the image)"],
    ["+ lesion mask (Fig. 4B)", "ASPP → lesion branch + classification branch fed the predicted mask; loss CE + lesion loss (1:1)", frozen ? `no ASPP (a 7×7 map): a 1×1 conv lesion branch on the frozen map, output ${h.lesionSize}²; classifier fed [mean features, lesion-weighted mean, lesion burden]; loss CE + Dice+BCE (1:1)` : `ASPP (${h.asppFilters} filters, rates for stride ${h.outputStride}) → lesion branch at the input size + classifier fed [mean features, lesion-weighted mean, lesion burden]; loss CE + Dice+BCE (1:1)`],
    ["augmentation", "crop, flip, jitter — identical on image and masks", frozen ? "none (features cached)" : "crop, flip, brightness/contrast — crop and flip identical on image and masks"],
    ["optimiser", "Adam, lr 1e-4, cosine period 10", `Adam, lr ${p.schedule.lr}, cosine period ${p.schedule.periodEpochs}`],
    ["epochs, batch", "not stated, 16", `${p.epochs}, ${p.batchSize}; checkpoint selected on validation AUC`],
    ["seeds", "1 run", p.seeds.join(", ")],
  ];
  return tableBundle(["setting", "paper", `ours (profile '${p.name}')`], rows, { caption: "How each row's model differs from the paper's" });
}

/** ROC curves of the Table 6 rows of one training set (seed-averaged probabilities). */
export function rocFigureSix(results: readonly DiagnosisResult[], arm: string, set: "test" | "external" = "test"): Figure {
  const curves = [...byRow(results)].filter(([k]) => k.startsWith(`${arm}|`)).map(([k, runs]) => ({ name: VARIANT_LABEL[k.split("|")[1]], runs }));
  return rocFigureOf(PAPER_ARM_NAMES[arm] ?? arm, curves, set);
}

/** Validation AUC (and lesion Dice where measured) per epoch of every Study II run of one arm. */
export function trainingCurvesSix(results: readonly DiagnosisResult[], arm: string): Figure {
  const data: Record<string, unknown>[] = [];
  for (const r of results.filter((x) => x.config.positives === arm)) {
    const name = `${VARIANT_LABEL[variantName(r.config)]} s${r.config.seed}`;
    const x = r.history.map((h) => h.epoch + 1);
    data.push({ type: "scatter", mode: "lines+markers", name: `val AUC ${name}`, x, y: r.history.map((h) => h.valAuc) });
    if (r.history.some((h) => Number.isFinite(h.valLesionDice))) data.push({ type: "scatter", mode: "lines+markers", name: `val lesion Dice (pseudo) ${name}`, x, y: r.history.map((h) => h.valLesionDice), line: { dash: "dot" } });
  }
  return { data, layout: { title: { text: `Training curves — ${PAPER_ARM_NAMES[arm] ?? arm}` }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "validation AUC / lesion Dice" } }, height: 420 } };
}


const LUNG_RGB: [number, number, number] = [40, 120, 255];
const LESION_RGB: [number, number, number] = [255, 40, 40];
const PRED_RGB: [number, number, number] = [255, 220, 0];

const EXPERT_RGB: [number, number, number] = [40, 200, 80];

/**
 * Figure 3: CT slices, their lung mask (our U-Net) and lesion mask (COVID-Seg: pseudo labels; MedSeg
 * and the lung segmenter's test blocks: radiologists'), side by side; on the test-block slices the
 * radiologists' lung mask (green) beside the U-Net's (blue).
 */
export async function figure3(examples: readonly Example[], lungs: LungMaskProvider, size = 224) {
  const gray = await loadGrayImages(examples, size);
  const lung = await lungMasks(examples, size, lungs);
  const lesion = await lesionMasks(examples, size);
  const expert = await expertLungMasks(examples, size);
  const cells: string[] = [];
  for (let i = 0; i < examples.length; i++) {
    const e = examples[i];
    const kind = e.source === "covid19-ct-seg" ? "pseudo lesion mask" : "radiologists' lesion mask";
    const imgs = await Promise.all([
      overlayPng(gray[i], size, []),
      ...(expert[i] ? [overlayPng(gray[i], size, [{ mask: expert[i]!, size, rgb: EXPERT_RGB }])] : []),
      overlayPng(gray[i], size, [{ mask: lung[i], size, rgb: LUNG_RGB }]),
      overlayPng(gray[i], size, lesion[i] ? [{ mask: lesion[i]!, size, rgb: LESION_RGB, alpha: 0.6 }] : []),
    ]);
    cells.push(`<figure style="display:inline-block;margin:6px;text-align:center">${imgs.map((s) => `<img src="${s}"/>`).join("")}<figcaption style="font-size:11px">${escapeHtml(e.id)}: CT · ${expert[i] ? "radiologists' lung mask (green) · " : ""}lung mask (U-Net, blue) · ${kind} (red)</figcaption></figure>`);
  }
  return { "text/html": `<div>${cells.join("")}</div>`, "text/plain": `Figure 3: ${examples.length} slices with lung and lesion masks` };
}

/** The U-Net's lung masks (blue) on slices of every source, one row per group, as the models see the slices. */
export async function lungGallery(groups: readonly { group: string; examples: readonly Example[] }[], lungs: LungMaskProvider, size = 224) {
  const rows: string[] = [];
  for (const g of groups) {
    if (!g.examples.length) continue;
    const gray = await loadGrayImages(g.examples, size);
    const lung = await lungMasks(g.examples, size, lungs);
    const imgs = await Promise.all(g.examples.map((e, i) => overlayPng(gray[i], size, [{ mask: lung[i], size, rgb: LUNG_RGB, alpha: 0.4 }], 150)));
    rows.push(`<div><div style="font-size:12px;font-weight:bold">${escapeHtml(g.group)}</div>${imgs.map((s, i) => `<img title="${escapeHtml(g.examples[i].id)}" style="margin:2px" src="${s}"/>`).join("")}</div>`);
  }
  return { "text/html": rows.join(""), "text/plain": `Lung masks on ${groups.reduce((a, g) => a + g.examples.length, 0)} slices of ${groups.length} groups` };
}

/** Per-slice Dice of the U-Net against the radiologists on the held-out blocks (from the segmenter run). */
export function expertDicePerSlice(lungs: LungMaskProvider) {
  const per = lungs.perSlice ?? [];
  const d = per.map((x) => x.dice).sort((a, b) => a - b);
  const q = (f: number) => (d.length ? d[Math.min(d.length - 1, Math.floor(f * d.length))].toFixed(3) : "–");
  const worst = [...per].sort((a, b) => a.dice - b.dice).slice(0, 3).map((x) => `${x.id.split("/").pop()} ${x.dice.toFixed(3)}`);
  return tableBundle(["slices", "min", "10th pct", "median", "max", "lowest three"], [[per.length, q(0), q(0.1), q(0.5), d.length ? d[d.length - 1].toFixed(3) : "–", worst.join(", ")]], {
    caption: "U-Net Dice per held-out slice against the radiologists' lung masks (test blocks 3, 7, 12)",
  });
}

/** Predicted lesion masks (yellow) beside the radiologists' (red) on MedSeg test slices, from a run's lesion-predictions.json. */
export async function lesionPredictionGallery(run: DiagnosisResult, medseg: readonly Example[], max = 6) {
  const lp = readLesionPredictions(run.runDir);
  if (!lp) return { "text/plain": `${run.runDir} has no lesion predictions (not a lesion run)` };
  const shown = medseg.filter((e) => lp.masks.has(e.id)).slice(0, max);
  const size = 224;
  const gray = await loadGrayImages(shown, size);
  const ref = await lesionMasks(shown, size);
  const cells: string[] = [];
  for (let i = 0; i < shown.length; i++) {
    const pred = lp.masks.get(shown[i].id)!;
    const [a, b] = await Promise.all([
      overlayPng(gray[i], size, ref[i] ? [{ mask: ref[i]!, size, rgb: LESION_RGB, alpha: 0.6 }] : []),
      overlayPng(gray[i], size, [{ mask: pred, size: lp.size, rgb: PRED_RGB, alpha: 0.6 }]),
    ]);
    cells.push(`<figure style="display:inline-block;margin:6px;text-align:center"><img src="${a}"/><img src="${b}"/><figcaption style="font-size:11px">${escapeHtml(shown[i].id)}: radiologists (red) · predicted (yellow, ${lp.size}²)</figcaption></figure>`);
  }
  const d = run.metrics.lesion?.medsegTest?.pooled.dice;
  return { "text/html": `<p>${escapeHtml(`${path.basename(run.runDir)}: pooled lesion Dice on the MedSeg test slices ${d === undefined ? "–" : d.toFixed(3)}`)}</p><div>${cells.join("")}</div>`, "text/plain": `${shown.length} MedSeg test slices with predicted lesion masks` };
}

/** The rows each variant adds: mean test AUC change over the image-only row of the same training set. */
export function maskEffects(results: readonly DiagnosisResult[]) {
  const g = byRow(results);
  const ext = [...g.values()].every((runs) => hasExternal(runs));
  const auc = (k: string, set: "test" | "external") => {
    const r = g.get(k);
    return r ? meanSd(r.map((x) => (set === "external" ? x.metrics.external?.atHalf.auc ?? NaN : x.metrics.test.auc))).mean : NaN;
  };
  const lines: string[] = [];
  for (const r of TABLE6_ROWS.filter((x: TableSixRow) => x.lungMask || x.lesionMask)) {
    const p = paperRowSix(r).auc - paperRowSix({ arm: r.arm, lungMask: false, lesionMask: false }).auc;
    const base = auc(`${r.arm}|`, "test"), ours = auc(rowKey(r), "test");
    if (!Number.isFinite(base) || !Number.isFinite(ours)) continue;
    const d = (x: number) => `${x >= 0 ? "+" : ""}${pct(x)}`;
    // The external set is the only one where a mask's effect cannot be the source's: lead with it.
    const e0 = auc(`${r.arm}|`, "external"), e1 = auc(rowKey(r), "external");
    const external = ext && Number.isFinite(e0) && Number.isFinite(e1) ? `external AUC ${d(e1 - e0)} points over image only (${pct(e0)} → ${pct(e1)}); ` : "";
    const ceiling = base >= 0.98 ? " — the image-only row is at the test set's ceiling: the protocol's test cannot show a gain here" : "";
    lines.push(`${PAPER_ARM_NAMES[r.arm] ?? r.arm} ${VARIANT_LABEL[variantName(r)]}: ${external}protocol test AUC ${d(ours - base)} (paper: ${p >= 0 ? "+" : ""}${p.toFixed(1)})${ceiling}.`);
  }
  return { "text/plain": lines.join("\n"), "text/html": `<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>` };
}

export type { PredictionRow };
