/**
 * Notebook 02 (Study I): Table 5 with the paper beside ours, ROC curves, training curves,
 * the MedSeg domain-shift check and Grad-CAM overlays, from finished run directories.
 */
import * as fs from "fs";
import type { SourceName } from "../data/sources";
import { escapeHtml } from "../util/html";
import { sampleWithoutReplacement } from "../util/random";
import * as tf from "@tensorflow/tfjs";
import * as path from "path";
import seedrandom from "seedrandom";
import { camOverlayPng, gradCam, grayPng } from "../gradcam";
import { meanSd } from "../evaluation";
import { PAPER_ARM_NAMES, PAPER_TABLE5, PAPER_TABLE5_KEY } from "../paper";
import { Figure, tableBundle } from "../plots";
import { loadGrayImages } from "../data/examples";
import { DiagnosisResult, loadRunModel, PredictionRow, readPredictions } from "../diagnosis/results";
import { toModelInput } from "../models/input";
import { PROFILES, StudyProfile } from "../training/profiles";
import { EXTERNAL_NOTE, externalAtValCell, hasExternal, externalAucCell, externalCallRateCell, rocFigureOf, seedMeanBootstrap } from "./runs";

const MODEL_NAMES_PRETTY: Record<string, string> = { densenet169: "DenseNet-169", resnet50: "ResNet-50", shortcut: "Shortcut baseline (no anatomy)" };

function paperRow(model: string, arm: string): { accuracy: number; f1: number; auc: number } | undefined {
  return (PAPER_TABLE5 as Record<string, Record<string, { accuracy: number; f1: number; auc: number }>>)[model]?.[PAPER_TABLE5_KEY[arm] ?? arm];
}

/** What a table of one protocol says about its test set (printed under every Table 5). */
const PROTOCOL_NOTES: Record<string, string> = {
  official:
    "Official COVID-CT split: test = 98 COVID figures from papers + 105 NonCOVID images. The paper tested on original CTs (COVID-Seg + LUNA); " +
    "our arms covid-ct-all (191) and original-ct (50 MedSeg slices) stand in for COVID-CT-349 and COVID-Seg.",
  paper:
    "Paper protocol (Tables 2–4 rebuilt): test = COVID-Seg slices of 4 volumes + LUNA slices of 82 series, as in the paper, without its 4 Radiopaedia negatives " +
    "(not available); evaluation images with a near-duplicate in training are removed (see notebook 01). Positives and negatives come from different sources: " +
    "the shortcut baseline row shows what file size, framing and grey levels alone reach.",
};
/** Table label of a group of runs: the paper's model name, and the stand-in that really ran. */
function modelLabel(model: string, runs: readonly DiagnosisResult[]): string {
  const name = MODEL_NAMES_PRETTY[model] ?? model;
  const built = runs[0]?.modelBuilt;
  return built && built !== model ? `${name} → ${built} (stand-in)` : name;
}
const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");

function groups(results: readonly DiagnosisResult[]): Map<string, DiagnosisResult[]> {
  const m = new Map<string, DiagnosisResult[]>();
  for (const r of results) {
    const k = `${r.config.model}|${r.config.positives}`;
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(r);
  }
  return m;
}

/** Table 5: paper vs ours (mean ± sd over seeds, 95 % bootstrap CI), accuracy / F1 / AUC in %. */
export function table5(results: readonly DiagnosisResult[]) {
  const protocol = results[0]?.config.protocol ?? "official";
  const rows: (string | number)[][] = [];
  const g = groups(results);
  for (const [k, runs] of g) {
    const [model, arm] = k.split("|");
    const paper = paperRow(model, arm);
    const cell = (metric: "accuracy" | "f1" | "auc") => {
      const ms = meanSd(runs.map((r) => r.metrics.test[metric]));
      const [lo, hi] = seedMeanBootstrap(runs, metric);
      return `${pct(ms.mean)} ± ${runs.length > 1 ? pct(ms.sd) : "–"} [${pct(lo)}, ${pct(hi)}]`;
    };
    const shortcut = g.get(`shortcut|${arm}`);
    rows.push([
      modelLabel(model, runs),
      `${arm} (paper: ${PAPER_ARM_NAMES[arm] ?? "–"})`,
      paper ? `${paper.accuracy} / ${paper.f1} / ${paper.auc}` : "–",
      cell("accuracy"),
      cell("f1"),
      cell("auc"),
      externalAucCell(runs),
      externalAtValCell(runs),
      externalCallRateCell(runs),
      shortcut ? externalAucCell(shortcut).replace(/ \[.*$/, "") : "–",
      runs.length,
    ]);
  }
  return tableBundle(
    ["model", "positive training set", "paper Acc / F1 / AUC", "ours Acc", "ours F1", "ours AUC", "external AUC", "external Acc / F1 @ val. threshold", "external called COVID", "shortcut baseline external AUC", "seeds"],
    rows,
    {
      caption: `Table 5 — Study I, ${protocol} protocol (test set, threshold 0.5, COVID positive; mean ± sd over seeds [95 % bootstrap CI of that mean]); external set beside it`,
      note: `${PROTOCOL_NOTES[protocol] ?? ""} The paper's numbers are single runs at 480² with full fine-tuning; see 'Where our protocol differs'. ${EXTERNAL_NOTE}`,
    },
  );
}

/** MedSeg original CTs (all COVID): recall of every cell, the domain-shift check. */
export function medsegTable(results: readonly DiagnosisResult[]) {
  const rows: (string | number)[][] = [];
  for (const [k, runs] of groups(results)) {
    const [model, arm] = k.split("|");
    const a = meanSd(runs.map((r) => r.metrics.medsegTest.recall));
    const b = meanSd(runs.map((r) => r.metrics.medsegTest.recallAtValThreshold));
    rows.push([modelLabel(model, runs), arm, runs[0].metrics.medsegTest.n, `${pct(a.mean)} ± ${runs.length > 1 ? pct(a.sd) : "–"}`, `${pct(b.mean)} ± ${runs.length > 1 ? pct(b.sd) : "–"}`]);
  }
  return tableBundle(["model", "positive training set", "MedSeg test slices", "recall @ 0.5 (%)", "recall @ validation threshold (%)"], rows, {
    caption: `Recall on original CT slices (MedSeg test, all COVID-19), ${results[0]?.config.protocol ?? "official"} protocol: does a model recognise scans of a source it never saw?`,
  });
}

/** ROC curves of one model, one curve per arm (seed-averaged probabilities). */
export function rocFigure(results: readonly DiagnosisResult[], model: string, set: "test" | "external" = "test"): Figure {
  const curves = [...groups(results)].filter(([k]) => k.split("|")[0] === model).map(([k, runs]) => ({ name: k.split("|")[1], runs }));
  return rocFigureOf(modelLabel(model, results.filter((r) => r.config.model === model)), curves, set);
}

/** Validation AUC and training loss per epoch, every arm and seed of one model. */
export function trainingCurves(results: readonly DiagnosisResult[], model: string): Figure {
  const data: Record<string, unknown>[] = [];
  for (const r of results.filter((x) => x.config.model === model)) {
    const name = `${r.config.positives} s${r.config.seed}`;
    const x = r.history.map((h) => h.epoch + 1);
    data.push({ type: "scatter", mode: "lines+markers", name: `val AUC ${name}`, x, y: r.history.map((h) => h.valAuc) });
    data.push({ type: "scatter", mode: "lines+markers", name: `train loss ${name}`, x, y: r.history.map((h) => h.trainLoss), yaxis: "y2", line: { dash: "dot" } });
  }
  return {
    data,
    layout: {
      title: { text: `Training curves — ${modelLabel(model, results.filter((r) => r.config.model === model))}` },
      xaxis: { title: { text: "epoch" } },
      yaxis: { title: { text: "validation AUC" } },
      yaxis2: { title: { text: "training loss" }, overlaying: "y", side: "right" },
      height: 420,
    },
  };
}

/** Settings of the paper beside the profile that ran. */
export function protocolTable(p: StudyProfile, protocol: "official" | "paper" = "official") {
  const paper = PROFILES.paper;
  const a = (x: StudyProfile) => (x.augment.minScale < 1 ? `crop scale ${x.augment.minScale}, flip, contrast/brightness ${x.augment.contrast}` : x.trainViews === 2 ? "horizontal flip (cached)" : "none");
  const rows = [
    ["input size", "480²", `${p.inputSize}²`],
    ["training", "full fine-tuning from ImageNet", p.strategy === "finetune" ? "full fine-tuning from ImageNet" : "frozen ImageNet backbone, head trained on cached pooled features"],
    ["augmentation", a(paper), a(p)],
    ["optimiser", "Adam, lr 1e-4", `Adam, lr ${p.schedule.lr}`],
    ["schedule", "cosine, period 10 epochs", `cosine, period ${p.schedule.periodEpochs} epochs, stepped per iteration`],
    ["mini-batch", "16", `${p.batchSize}${p.microBatch < p.batchSize ? ` (micro-batches of ${p.microBatch})` : ""}`],
    ["epochs", "not stated", `${p.epochs}, checkpoint selected on validation AUC`],
    ["seeds", "1 run", p.seeds.join(", ")],
    [
      "test set",
      "original CTs: 173 COVID-Seg slices (4 volumes) + 164 LUNA + 4 Radiopaedia negatives",
      protocol === "paper" ? "paper protocol: COVID-Seg slices of 4 volumes + 164 LUNA slices (no Radiopaedia; near-duplicates of training removed)" : "official COVID-CT split (98 COVID / 105 NonCOVID)",
    ],
  ];
  return tableBundle(["setting", "paper", `ours (profile '${p.name}')`], rows, { caption: "Protocol" });
}

/** Grad-CAM overlays for a few test images of each class from one finished run. */
export async function gradCamGallery(runDir: string, opts: { perClass?: number; seed?: number; weightsRoot?: string } = {}) {
  const { built, pre, profile } = await loadRunModel(runDir, opts.weightsRoot);
  const preds = readPredictions(path.join(runDir, "predictions.csv")).filter((p) => p.set === "test");
  const rng = seedrandom(`gradcam:${opts.seed ?? 0}`);
  const per = opts.perClass ?? 3;
  const pick = (label: number) => {
    const pool = preds.filter((p) => p.label === label);
    const out: PredictionRow[] = [];
    out.push(...sampleWithoutReplacement(pool, per, rng));
    return out;
  };
  // Image files and sources from the membership the run recorded (protocol.json beside it).
  const members = new Map<string, { path: string; source: SourceName }>();
  const pj = JSON.parse(fs.readFileSync(path.join(runDir, "protocol.json"), "utf8")) as { splits: Record<string, Record<string, { id: string; path: string; source: SourceName }[]>> };
  for (const split of Object.values(pj.splits)) for (const ms of Object.values(split)) for (const m of ms) members.set(m.id, m);
  const cells: string[] = [];
  const text: string[] = [];
  for (const label of [1, 0]) {
    for (const p of pick(label)) {
      const rec = members.get(p.file);
      if (!rec) continue;
      const file = path.basename(p.file);
      const [gray] = await loadGrayImages([{ id: p.file, path: rec.path, label: label as 0 | 1, source: rec.source }], profile.inputSize);
      const x = tf.tidy(() => toModelInput(tf.tensor4d(Float32Array.from(gray, (v) => v / 255), [1, profile.inputSize, profile.inputSize, 1]), pre));
      const cam = gradCam(built, x, 1);
      x.dispose();
      const [g, o] = await Promise.all([grayPng(gray, profile.inputSize), camOverlayPng(gray, cam)]);
      cells.push(`<figure style="display:inline-block;margin:6px;text-align:center"><img src="${g}"/><img src="${o}"/><figcaption style="font-size:11px">${label ? "COVID" : "NonCOVID"} · P(COVID) ${cam.probability.toFixed(2)}<br/>${escapeHtml(file)}</figcaption></figure>`);
      text.push(`${label ? "COVID" : "NonCOVID"} ${file}: P(COVID) ${cam.probability.toFixed(3)}`);
    }
  }
  built.model.dispose();
  return { "text/html": `<div>${cells.join("")}</div>`, "text/plain": text.join("\n") };
}

/**
 * One sentence per model: arms ordered by mean AUC, ours beside the paper's ordering. The ordering
 * is read from the external set where every run predicted it (the only AUC the source cannot
 * explain), else from the protocol's test set, and the sentence says which.
 */
export function armOrdering(results: readonly DiagnosisResult[]) {
  const lines: string[] = [];
  for (const model of [...new Set(results.map((r) => r.config.model))]) {
    const mine = [...groups(results)].filter(([k]) => k.startsWith(`${model}|`));
    const external = mine.every(([, runs]) => hasExternal(runs));
    const ours = mine
      .map(([k, runs]) => ({ arm: PAPER_TABLE5_KEY[k.split("|")[1]] ?? k.split("|")[1], auc: meanSd(runs.map((r) => (external ? r.metrics.external!.atHalf.auc : r.metrics.test.auc))).mean }))
      .sort((a, b) => b.auc - a.auc);
    const paper = Object.entries((PAPER_TABLE5 as Record<string, Record<string, { auc: number }>>)[model] ?? {})
      .map(([arm, v]) => ({ arm, auc: v.auc / 100 }))
      .sort((a, b) => b.auc - a.auc);
    const fmt = (xs: { arm: string; auc: number }[], names?: Record<string, string>) => xs.map((x) => `${names?.[x.arm] ?? x.arm} (AUC ${pct(x.auc)})`).join(" > ");
    if (!paper.length) continue;
    // An ordering is only read where the intervals allow it: every arm's external interval holding 50 means none can be.
    const chance = external && mine.every(([, runs]) => { const [lo, hi] = seedMeanBootstrap(runs, "auc", 1000, 0, "external"); return lo <= 0.5 && 0.5 <= hi; });
    lines.push(
      `${modelLabel(model, results.filter((r) => r.config.model === model))} — ours on the ${external ? "external set" : "protocol test set (no external predictions)"}: ${fmt(ours, PAPER_ARM_NAMES)}; paper (its test set): ${fmt(paper, PAPER_ARM_NAMES)}.` +
        (chance ? " Every arm's external interval includes 50 (chance): on data where the source cannot give the label away, no arm is shown to beat another, and none to detect COVID-19." : ""),
    );
  }
  return { "text/plain": lines.join("\n"), "text/html": `<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>` };
}

/**
 * Each arm's models beside the shortcut baseline of the same arm (test AUC, seed means): how much of
 * a model's separation the non-anatomical cues alone already give. Worded from the numbers.
 */
export function shortcutComparison(results: readonly DiagnosisResult[]) {
  const g = groups(results);
  const auc = (runs: readonly DiagnosisResult[]) => meanSd(runs.map((r) => r.metrics.test.auc)).mean;
  const lines: string[] = [];
  for (const arm of [...new Set(results.map((r) => r.config.positives))]) {
    const base = g.get(`shortcut|${arm}`);
    if (!base) continue;
    const b = auc(base);
    const models = [...g].filter(([k]) => k.endsWith(`|${arm}`) && !k.startsWith("shortcut|"));
    const parts = models.map(([k, runs]) => `${MODEL_NAMES_PRETTY[k.split("|")[0]] ?? k.split("|")[0]} ${pct(auc(runs))} (${auc(runs) - b >= 0 ? "+" : ""}${pct(auc(runs) - b)})`);
    const verdict =
      b >= 0.9 ? "the cues alone nearly separate this test set: a high model AUC here says little about lungs"
        : b >= 0.7 ? "the cues carry part of the label: read the models' margin over the baseline"
          : "the cues alone carry little of the label";
    const ext = (runs: readonly DiagnosisResult[]) => (hasExternal(runs) ? meanSd(runs.map((r) => r.metrics.external!.atHalf.auc)).mean : NaN);
    const extParts = hasExternal(base) ? ` On the external set (one hospital): shortcut ${pct(ext(base))}; ${models.map(([k, runs]) => `${MODEL_NAMES_PRETTY[k.split("|")[0]] ?? k.split("|")[0]} ${pct(ext(runs))}`).join(", ")}.` : "";
    lines.push(`${PAPER_ARM_NAMES[arm] ?? arm}: shortcut baseline AUC ${pct(b)}; ${parts.join(", ")} — ${verdict}.${extParts}`);
  }
  return { "text/plain": lines.join("\n"), "text/html": `<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>` };
}
