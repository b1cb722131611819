/**
 * Notebook 04 (CSSL): Table 7 beside the paper, the MoCo pretraining curves, the label-free probe
 * before and after pretraining, ROC curves, and a 2-D PCA of validation features per encoder.
 */
import * as path from "path";
import { meanSd } from "../evaluation";
import { preprocessFor, findWeightsDir, weightsChecksum, buildModel, featureExtractors, loadImagenetWeights, ModelName } from "../models";
import { PAPER_TABLE7 } from "../paper";
import { Figure, tableBundle } from "../plots";
import { PretrainEpoch, PRETRAIN_PROFILES, PretrainResult, loadPretrainedBackbone } from "../ssl/pretrain";
import { CsslResults, CSSL_FINETUNE, CSSL_INPUT_SIZE, notRunReason, TABLE7_ROWS } from "../studies/cssl";
import { Example } from "../data/examples";
import { computeFeatures } from "../diagnosis/inputs";
import { DiagnosisResult } from "../diagnosis/results";
import { StudyProfile } from "../training/profiles";
import { escapeHtml } from "../util/html";
import { EXTERNAL_NOTE, externalAtValCell, externalAucCell, externalCallRateCell, rocFigureOf, seedMeanBootstrap } from "./runs";

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");
type Finished = Extract<PretrainResult, { interrupted: false }>;

/** Paper vs our pretraining and fine-tuning settings for a profile. */
export function csslProtocolTable(p: StudyProfile) {
  const paper = PRETRAIN_PROFILES.paper;
  const ours = PRETRAIN_PROFILES[p.name];
  const m = (x: typeof paper) => `queue ${x.moco.queueSize}, momentum ${x.moco.momentum}, T ${x.moco.temperature}, SGD lr ${x.moco.lr} (cosine), batch ${x.moco.batchSize}`;
  const size = CSSL_INPUT_SIZE[p.name] ?? p.inputSize;
  const rows = [
    ["MoCo", "He et al. 2019; queue 512, m 0.999, SGD 0.015 / 0.9 / 1e-4, batch 128", `v2 (MLP head, T 0.2: the paper's augmentation is v2's); ${m(ours)}`],
    ["pretraining images", "the training CT images", `the paper protocol's training images (COVID-CT, COVID-Seg, LUNA; no validation/test image)${ours.maxImages ? `, a seeded ${ours.maxImages} of them` : ""}`],
    ["what trains", "the whole DenseNet-169", ours.moco.frozenUntil ? `the last dense block + final BN + projection head (layers up to ${ours.moco.frozenUntil} frozen, inference mode)` : "the whole network"],
    ["views", "random resized crop 0.2, flip, colour jitter 0.4/0.4/0.4/0.1, blur, grayscale", `${ours.moco.inputSize}² crops of ${ours.loadSize}² chest crops; brightness/contrast jitter (saturation, hue and grayscale are no-ops on gray CT), flip, blur`],
    ["epochs", "not stated", String(ours.epochs)],
    ["random init", "a random DenseNet-169, fine-tuned", p.strategy === "frozen-features" ? "one random DenseNet-169 (seed 1), frozen, for every seed — as each MoCo encoder is pretrained once; the seeds vary the heads" : "a random DenseNet-169 per seed, fine-tuned"],
    ["fine-tuning", "Study II best model (lung mask + lesion, Combination), as Study II", `the same model under profile '${p.name}'${p.strategy === "frozen-features" ? ` — FROZEN backbone, heads on its ${size}² feature maps (Table 6's quick rows use ${p.inputSize}²)` : ""}`],
  ];
  return tableBundle(["setting", "paper", `ours (profile '${p.name}')`], rows, { caption: "Pretraining and fine-tuning: paper vs ours" });
}

/** MoCo loss and top-1 positive-key accuracy per epoch, one line pair per pretraining run. */
export function pretrainingCurves(pre: CsslResults["pretraining"]): Figure {
  const data: Record<string, unknown>[] = [];
  for (const [init, r] of Object.entries(pre) as [string, Finished][]) {
    const h = r.history.filter((e: PretrainEpoch) => e.epoch > 0);
    data.push({ type: "scatter", mode: "lines+markers", name: `loss (from ${init})`, x: h.map((e) => e.epoch), y: h.map((e) => e.loss) });
    data.push({ type: "scatter", mode: "lines+markers", name: `top-1 positive key (from ${init})`, x: h.map((e) => e.epoch), y: h.map((e) => e.accuracy), yaxis: "y2", line: { dash: "dot" } });
  }
  return {
    data,
    layout: { title: { text: "MoCo pretraining: InfoNCE loss and positive-key accuracy" }, xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "loss" } }, yaxis2: { title: { text: "top-1 accuracy" }, overlaying: "y", side: "right", range: [0, 1] }, height: 400 },
  };
}

/** The label-free k-NN probe (train → validation of the protocol) on the init weights and after pretraining, said in words. */
export function probeTable(pre: CsslResults["pretraining"]) {
  const rows: (string | number)[][] = [];
  const lines: string[] = [];
  for (const [init, r] of Object.entries(pre) as [string, Finished][]) {
    const a = r.metrics.probe.initial, b = r.metrics.probe.final;
    rows.push([`from ${init}`, pct(a.auc), pct(b.auc), `${b.auc - a.auc >= 0 ? "+" : ""}${pct(b.auc - a.auc)}`, pct(a.accuracy), pct(b.accuracy), `${a.nTrain} → ${a.nVal}`]);
    const d = b.auc - a.auc;
    lines.push(
      a.auc >= 0.99
        ? `From ${init}: the probe is at its ceiling before pretraining (AUC ${pct(a.auc)} → ${pct(b.auc)}): validation classes come from different sources, which even these features separate, so this probe cannot show a gain; the loss and positive-key accuracy are the evidence of learning here.`
        : Math.abs(d) < 0.01
        ? `From ${init}: the probe barely moves (AUC ${pct(a.auc)} → ${pct(b.auc)}): at this scale MoCo did not measurably change what the features separate.`
        : d > 0
          ? `From ${init}: pretraining raised the probe's AUC by ${pct(d)} points (${pct(a.auc)} → ${pct(b.auc)}).`
          : `From ${init}: pretraining LOWERED the probe's AUC by ${pct(-d)} points (${pct(a.auc)} → ${pct(b.auc)}): at this scale MoCo hurt what the features separate.`,
    );
  }
  const t = tableBundle(["pretraining", "probe AUC before", "after", "change", "probe acc before", "after", "images (memory → queries)"], rows, {
    caption: "Label-free check of the representation: k-NN probe on frozen pooled features, the protocol's training images → its validation images",
  });
  return { "text/html": `${t["text/html"]}<ul>${lines.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`, "text/plain": `${t["text/plain"]}\n${lines.join("\n")}` };
}

function byRow(runs: CsslResults["runs"]): Map<string, DiagnosisResult[]> {
  const m = new Map<string, DiagnosisResult[]>();
  for (const { row, result } of runs) {
    if (!m.has(row.key)) m.set(row.key, []);
    m.get(row.key)!.push(result);
  }
  return m;
}

/**
 * Table 7: the paper's values beside ours (mean ± sd over seeds [95 % bootstrap CI of that mean]);
 * with `shortcut` (runShortcutBaselines on Combination), the cue baseline as a last row: what the
 * same test and external sets give to a model that sees no anatomy.
 */
export function table7(res: CsslResults, opts: { shortcut?: readonly DiagnosisResult[] } = {}) {
  const g = byRow(res.runs);
  const prof = res.runs[0]?.result.config.profile ?? opts.shortcut?.[0]?.config.profile ?? "quick";
  const cells = (runs: readonly DiagnosisResult[]) => {
    const cell = (metric: "accuracy" | "f1" | "auc") => {
      const ms = meanSd(runs.map((r) => r.metrics.test[metric]));
      const [lo, hi] = seedMeanBootstrap(runs, metric);
      return `${pct(ms.mean)} ± ${runs.length > 1 ? pct(ms.sd) : "–"} [${pct(lo)}, ${pct(hi)}]`;
    };
    return [cell("accuracy"), cell("f1"), cell("auc"), externalAucCell(runs), externalAtValCell(runs), externalCallRateCell(runs)];
  };
  const rows = TABLE7_ROWS.map((row) => {
    const runs = g.get(row.key) ?? [];
    const p = PAPER_TABLE7[row.key];
    return [row.label, p ? `${p.accuracy} / ${p.f1} / ${p.auc}` : "– (not in the paper)", ...(runs.length ? cells(runs) : [notRunReason(row, prof) ?? "not run", "", "", "", "", ""]), runs.length];
  });
  const shortcut = (opts.shortcut ?? []).filter((r) => r.config.model === "shortcut" && r.config.positives === CSSL_FINETUNE.positives && (r.config.protocol ?? "official") === CSSL_FINETUNE.protocol && r.config.profile === prof);
  if (shortcut.length) rows.push(["Shortcut baseline (file cues, no anatomy)", "– (not in the paper)", ...cells(shortcut), shortcut.length]);
  return tableBundle(["initialisation", "paper Acc / F1 / AUC", "ours Acc", "ours F1", "ours AUC", "external AUC", "external Acc / F1 @ val. threshold", "external called COVID", "seeds"], rows, {
    caption: `Table 7 — CSSL ablation: DenseNet-169, lung mask + lesion branch, Combination, paper protocol, profile '${prof}' (test set, threshold 0.5); external set beside it`,
    note: `The paper's numbers are single runs with full fine-tuning at 480²; ours follow the settings table above. The MoCo encoders are pretrained once (seed 1) and fine-tuned with every seed. ${EXTERNAL_NOTE} ${
      shortcut.length
        ? "The last row is the shortcut baseline trained on the same Combination set: a logistic regression on file size, framing and grey levels, blind to anatomy. Where a row's test AUC is no better than it, the test set is separated by source."
        : "Pass the shortcut baseline (study2.runShortcutBaselines with arms [\"combination\"]) to show what file cues alone reach here."
    }`,
  });
}

/** ROC curves of the Table 7 rows (seed-averaged probabilities). */
export function rocFigureSeven(res: CsslResults, set: "test" | "external" = "test"): Figure {
  const g = byRow(res.runs);
  return rocFigureOf("Table 7 rows", TABLE7_ROWS.filter((r) => g.has(r.key)).map((r) => ({ name: r.label, runs: g.get(r.key)! })), set);
}

/** Top-2 principal components of row vectors (power iteration with deflation), and each row's coordinates. */
export function pca2(xs: readonly Float32Array[]): number[][] {
  const n = xs.length, d = xs[0].length;
  const mean = new Float64Array(d);
  for (const x of xs) for (let k = 0; k < d; k++) mean[k] += x[k] / n;
  const c = xs.map((x) => Float64Array.from(x, (v, k) => v - mean[k]));
  const comps: Float64Array[] = [];
  for (let j = 0; j < 2; j++) {
    let v = Float64Array.from({ length: d }, (_, k) => Math.sin(k + 1 + j));
    for (let it = 0; it < 60; it++) {
      const w = new Float64Array(d);
      for (const r of c) {
        let s = 0;
        for (let k = 0; k < d; k++) s += r[k] * v[k];
        for (let k = 0; k < d; k++) w[k] += s * r[k];
      }
      for (const u of comps) { let s = 0; for (let k = 0; k < d; k++) s += w[k] * u[k]; for (let k = 0; k < d; k++) w[k] -= s * u[k]; }
      const norm = Math.sqrt(w.reduce((a, x) => a + x * x, 0)) || 1;
      v = w.map((x) => x / norm);
    }
    comps.push(v);
  }
  return c.map((r) => comps.map((u) => r.reduce((a, x, k) => a + x * u[k], 0)));
}

/**
 * 2-D PCA of the pooled features of the validation images under ImageNet weights and under each MoCo
 * encoder (coloured by class, marker by source): does pretraining reorganise the space by class, or by source?
 */
export async function embeddingFigure(res: CsslResults, examples: readonly Example[], profile: StudyProfile): Promise<Figure> {
  const size = CSSL_INPUT_SIZE[profile.name] ?? profile.inputSize;
  type Encoder = { name: string; model: ModelName; key: string; load: (m: import("@tensorflow/tfjs").LayersModel) => Promise<unknown> };
  // Tiny stand-ins (smoke) have no ImageNet weights: only their MoCo encoders are shown.
  const encoders: Encoder[] = profile.tinyModels ? [] : [{ name: "ImageNet", model: "densenet169", key: weightsChecksum(findWeightsDir("densenet169")).sha256, load: (m) => loadImagenetWeights(m, "densenet169") }];
  const seen = new Set<string>();
  for (const [init, r] of Object.entries(res.pretraining) as [string, Finished][]) {
    if (seen.has(r.runDir)) continue;
    seen.add(r.runDir);
    encoders.push({ name: `MoCo from ${r.modelBuilt === "densenet169" ? init : `${init} (${r.modelBuilt})`}`, model: r.modelBuilt, key: weightsChecksum(path.join(r.runDir, "encoder")).sha256, load: (m) => loadPretrainedBackbone(m, r.runDir) });
  }
  const data: Record<string, unknown>[] = [];
  const axes: Record<string, unknown> = {};
  for (let i = 0; i < encoders.length; i++) {
    const e = encoders[i];
    const built = buildModel(e.model, { inputSize: size, includeHead: false });
    await e.load(built.model);
    // Same keys as the fine-tuning runs' feature pass: a cache hit after the runs.
    const f = (await computeFeatures(featureExtractors(built, ["pooled"]), examples, { model: e.model, weightsSha256: e.key, size }, preprocessFor(e.model))).map((v) => v[0]);
    built.model.dispose();
    const xy = pca2(f);
    const ax = i === 0 ? "" : String(i + 1);
    for (const label of [1, 0]) for (const src of [...new Set(examples.map((x) => x.source ?? "covid-ct"))]) {
      const idx = examples.map((x, k) => (x.label === label && (x.source ?? "covid-ct") === src ? k : -1)).filter((k) => k >= 0);
      if (!idx.length) continue;
      data.push({ type: "scatter", mode: "markers", name: `${e.name}: ${label ? "COVID" : "NonCOVID"} (${src})`, x: idx.map((k) => xy[k][0]), y: idx.map((k) => xy[k][1]), xaxis: `x${ax}`, yaxis: `y${ax}`, marker: { size: 5, color: label ? "#d62728" : "#1f77b4", symbol: src === "luna16" ? "circle" : "diamond" } });
    }
    axes[`xaxis${ax}`] = { domain: [i / encoders.length + 0.02, (i + 1) / encoders.length - 0.02], title: { text: `${e.name}: PC1` } };
    axes[`yaxis${ax}`] = { anchor: `x${ax}`, title: { text: i === 0 ? "PC2" : "" } };
  }
  return { data, layout: { title: { text: `Validation images in 2-D (PCA of pooled features at ${size}²), per encoder` }, height: 420, showlegend: false, ...axes } };
}
