/**
 * Harmonisation, measured (README "Harmonisation, measured"): the same Table 5 cells and source
 * probes without and with a harmonisation (lib/data/harmonise.ts), side by side, and a gallery of
 * what the harmonisation does to each source's images.
 */
import sharp from "sharp";
import { Example, loadPreprocessed } from "../data/examples";
import { Harmoniser, harmoniseImage } from "../data/harmonise";
import type { DiagnosisResult } from "../diagnosis/results";
import type { SourceProbeResult } from "../diagnosis/source-probe";
import { meanSd } from "../evaluation";
import { tableBundle } from "../plots";
import { EXTERNAL_NOTE, externalAucCell, seedMeanBootstrap } from "./runs";

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : "–");

/** Protocol-test AUC of a group: mean ± sd over seeds [95 % bootstrap CI of the seed mean], in %. */
function testAucCell(runs: readonly DiagnosisResult[]): string {
  const ms = meanSd(runs.map((r) => r.metrics.test.auc));
  const [lo, hi] = seedMeanBootstrap(runs, "auc");
  return `${pct(ms.mean)} ± ${runs.length > 1 ? pct(ms.sd) : "–"} [${pct(lo)}, ${pct(hi)}]`;
}

function byCell(results: readonly DiagnosisResult[]): Map<string, DiagnosisResult[]> {
  const g = new Map<string, DiagnosisResult[]>();
  for (const r of results) {
    const k = `${r.modelBuilt}|${r.config.positives}`;
    g.set(k, [...(g.get(k) ?? []), r]);
  }
  return g;
}

/** Table 5 cells (model × arm, seeds pooled) without and with the harmonisation: protocol test and external AUC. */
export function harmoniseTable(none: readonly DiagnosisResult[], harmonised: readonly DiagnosisResult[], name: string) {
  const a = byCell(none), b = byCell(harmonised);
  const rows = [...a].map(([k, runs]) => {
    const [model, arm] = k.split("|");
    const h = b.get(k);
    return [model, arm, testAucCell(runs), h ? testAucCell(h) : "–", externalAucCell(runs), h ? externalAucCell(h) : "–", runs.length];
  });
  return tableBundle(["model", "positive training set", "test AUC, none", `test AUC, ${name}`, "external AUC, none", `external AUC, ${name}`, "seeds"], rows, {
    caption: `Harmonisation (${name}) vs none: Table 5 cells, paper protocol (mean ± sd over seeds [95 % bootstrap CI of that mean], %)`,
    note: `Same protocol, arms, seeds and schedule; only the images' grey levels differ. ${EXTERNAL_NOTE}`,
  });
}

/** The source probes without and with the harmonisation (AUC on held-out patients [95 % CI], %). */
export function harmoniseProbeTable(none: readonly SourceProbeResult[], harmonised: readonly SourceProbeResult[], name: string) {
  const cell = (r?: SourceProbeResult) => (r ? `${pct(r.auc)} [${pct(r.ci95[0])}, ${pct(r.ci95[1])}]` : "–");
  const rows = none.map((r) => [r.label, cell(r), cell(harmonised.find((h) => h.key === r.key))]);
  return tableBundle(["sources told apart (training images)", "AUC, none", `AUC, ${name}`], rows, {
    caption: `Source probe (frozen DenseNet-169 features, 5 patient folds) without and with harmonisation (${name})`,
    note: "50 = the network cannot see the source; 100 = it sees it perfectly.",
  });
}

/**
 * PNG of a grid: one row per example, the preprocessed gray image as cached, then harmonised
 * (each tile `tile` pixels). For looking, not for measuring.
 */
export async function harmoniseGallery(examples: readonly Example[], h: Harmoniser, tile = 160): Promise<Buffer> {
  const imgs = await loadPreprocessed(examples, h.size);
  const tiles: { input: Buffer; top: number; left: number }[] = [];
  for (let i = 0; i < imgs.length; i++) {
    for (const [j, px] of [imgs[i].data, harmoniseImage(imgs[i], h)].entries()) {
      const input = await sharp(Buffer.from(px), { raw: { width: h.size, height: h.size, channels: 1 } }).resize(tile, tile).png().toBuffer();
      tiles.push({ input, top: i * tile, left: j * tile });
    }
  }
  return sharp({ create: { width: 2 * tile, height: imgs.length * tile, channels: 3, background: "#000" } }).composite(tiles).png().toBuffer();
}
