/**
 * Lung U-Net variants on the radiologists' masks (issue 16), side by side in one process: input
 * size, width and pseudo labels → held-out Dice against the experts (test blocks), MedSeg lesion
 * coverage, chest-wall share, and the seconds each took. Every variant is a full lung run under
 * runs/bench/lungs/<name>/ (reused when finished), so the numbers are the ones a run writes.
 * Every knob a variant does not name is quick's (since 2026-12-07 that includes the test-time flip
 * and the last epoch averaged in). SEED (default 1) seeds every variant.
 *
 *   [SEED=n] node dist/bench/lung-unet.js [name=size:width:epochs:pseudo:copies:kind:minScale:chestCrops:slack ...]   (kind: none | lesions | blobs; minScale: the crop's smallest area share, default LUNG_AUGMENT's; chestCrops: chest-crop copies, slack: their smallest reach towards the body)
 */
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { benchArgs } from "./segmenter-args";
import { LUNG_AUGMENT } from "../lib/lungs/profiles";
import { trainLungSegmenter } from "../lib/lungs/segmenter";

const args = process.argv.slice(2);
function parseVariants() {
  return (args.length ? args : ["s96w8=96:8:40:0:0", "s96w8c=96:8:40:0:1:blobs", "s96w8L=96:8:40:0:1:lesions", "s96w8p=96:8:40:150:0"]).map((a) => {
    const [name, spec] = a.split("=");
    if (!name || !spec || !/^[\w.-]+$/.test(name)) throw new Error(`'${a}': write a variant as name=size:width:epochs[:pseudo:copies:kind:minScale:chestCrops:slack], name of letters, digits, . _ -`);
    const bad = spec.split(":").find((x, i) => i !== 5 && x !== "" && !Number.isFinite(Number(x)));
    if (bad !== undefined) throw new Error(`'${a}': '${bad}' is not a number`);
    const [size, w, e, p, copies, kind, minScale, chest, slack] = spec.split(":");
    const [inputSize, width, epochs, pseudoLabels, consolidationCopies] = [size, w, e, p, copies].map((x) => Number(x ?? 0) || 0);
    return { name, inputSize, width, epochs, pseudoLabels, consolidationCopies, consolidation: (kind ?? (consolidationCopies ? "blobs" : "none")) as "none" | "lesions" | "blobs", minScale: minScale ? Number(minScale) : LUNG_AUGMENT.minScale, chestCropCopies: Number(chest ?? 0) || 0, chestCropSlack: Number(slack ?? 0) || 0 };
  });
}

const { variants, seed } = benchArgs(parseVariants);

(async () => {
  const rows: string[] = [];
  for (const v of variants) {
    const t = Date.now();
    const r = await trainLungSegmenter({
      profile: "quick",
      seed,
      out: path.join(PROJECT_ROOT, "runs", "bench", "lungs", v.name),
      profileOverrides: { inputSize: v.inputSize, width: v.width, epochs: v.epochs, schedule: { lr: 3e-3, periodEpochs: v.epochs }, pseudoLabels: v.pseudoLabels, consolidationCopies: v.consolidationCopies, consolidation: v.consolidation, augment: { ...LUNG_AUGMENT, minScale: v.minScale }, ...(v.chestCropCopies ? { chestCropCopies: v.chestCropCopies, chestCropSlack: v.chestCropSlack } : {}) },
      log: (m) => process.stderr.write(`[${v.name}] ${m}\n`),
    });
    const m = r.metrics;
    const row = [v.name, `${v.inputSize}² crop ≥ ${v.minScale}${v.chestCropCopies ? `, ${v.chestCropCopies} chest crop(s) ≥ ${v.chestCropSlack}` : ""}`, v.width, v.epochs, v.pseudoLabels, `${v.consolidationCopies} ${v.consolidation}`, m.threshold, m.expertTest.unet.pooled.dice.toFixed(4), m.expertTest.unet.perImage.dice.toFixed(4), m.expertTest.classical.pooled.dice.toFixed(4), m.medsegCoverage.unet.pooled.coverage.toFixed(4), m.chestWall.medseg.unet.share.toFixed(3), m.chestWall.expertTest.experts.share.toFixed(3), m.seconds.train.toFixed(0), r.reused ? "reused" : ((Date.now() - t) / 1000).toFixed(0)].join(" | ");
    rows.push(`| ${row} |`);
    process.stdout.write(`| ${row} |\n`);
  }
  process.stdout.write(["", "| variant | input | width | epochs | pseudo | consolidation | threshold | Dice pooled | Dice per slice | classical Dice | MedSeg coverage | chest-wall MedSeg | chest-wall experts | train s | total s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", ...rows].join("\n") + "\n");
})().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : e}\n`);
  process.exit(1);
});
