/**
 * Lesion U-Net variants on the radiologists' infection masks (notebook 05), side by side in one
 * process: input size, width, epochs, loss, crop scale → validation Dice (what chooses), then the
 * held-out MedSeg test and test-block Dice, slice sensitivity and the seconds each took. Every
 * variant is a full lesion run under runs/bench/lesions/<name>/ (reused when finished), so the
 * numbers are the ones a run writes. Knobs a variant does not name are quick's. SEED (default 1).
 *
 *   [SEED=n] node dist/bench/lesion-unet.js [name=size:width:epochs[:loss:minScale:input] ...]   (loss: dice+bce | dice | bce; input: clahe (default) | none)
 */
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { benchArgs } from "./segmenter-args";
import { getLesionProfile, LESION_AUGMENT } from "../lib/lesions/profiles";
import { trainLesionSegmenter } from "../lib/lesions/segmenter";

const LOSSES = ["dice+bce", "dice", "bce"] as const;
const args = process.argv.slice(2);
function parseVariants() {
  const q = getLesionProfile("quick");
  return (args.length ? args : [`q=${q.inputSize}:${q.width}:${q.epochs}`]).map((a) => {
    const [name, spec] = a.split("=");
    if (!name || !spec || !/^[\w.+-]+$/.test(name)) throw new Error(`'${a}': write a variant as name=size:width:epochs[:loss:minScale:input], name of letters, digits, . _ - +`);
    const [size, w, e, loss, minScale, input] = spec.split(":");
    if (input && input !== "clahe" && input !== "none") throw new Error(`'${a}': input '${input}' is not clahe or none`);
    const nums = [size, w, e, ...(minScale ? [minScale] : [])];
    const bad = nums.find((x) => x === undefined || !Number.isFinite(Number(x)) || x === "");
    if (bad !== undefined) throw new Error(`'${a}': '${bad ?? ""}' is not a number`);
    if (loss && !(LOSSES as readonly string[]).includes(loss)) throw new Error(`'${a}': loss '${loss}' is not one of ${LOSSES.join(", ")}`);
    return { name, inputSize: Number(size), width: Number(w), epochs: Number(e), loss: (loss || "dice+bce") as (typeof LOSSES)[number], minScale: minScale ? Number(minScale) : LESION_AUGMENT.minScale, plain: input === "none" };
  });
}

const { variants, seed } = benchArgs(parseVariants);

(async () => {
  const rows: string[] = [];
  for (const v of variants) {
    const t = Date.now();
    const r = await trainLesionSegmenter({
      profile: "quick",
      seed,
      out: path.join(PROJECT_ROOT, "runs", "bench", "lesions", v.name),
      profileOverrides: { inputSize: v.inputSize, width: v.width, epochs: v.epochs, schedule: { lr: 3e-3, periodEpochs: v.epochs }, loss: { kind: v.loss }, augment: { ...LESION_AUGMENT, minScale: v.minScale }, ...(v.plain ? { input: { kind: "none" as const } } : {}) },
      log: (m) => process.stderr.write(`[${v.name}] ${m}\n`),
    });
    const m = r.metrics;
    const f = (x: number) => x.toFixed(4);
    const row = [v.name, `${v.inputSize}²${v.plain ? " (no CLAHE)" : ""}`, v.width, v.epochs, v.loss, v.minScale, m.threshold, f(m.val.pooled.dice), f(m.medsegTest.pooled.dice), f(m.medsegTest.perImage.dice), f(m.expertTest.pooled.dice), m.medsegTest.detection.sensitivity.toFixed(3), m.lesionFree.specificity.toFixed(3), m.seconds.train.toFixed(0), r.reused ? "reused" : ((Date.now() - t) / 1000).toFixed(0)].join(" | ");
    rows.push(`| ${row} |`);
    process.stdout.write(`| ${row} |\n`);
  }
  process.stdout.write(["", "| variant | input | width | epochs | loss | min crop | threshold | val Dice (chooses) | MedSeg test Dice pooled | per slice | test blocks Dice | slice sensitivity | LUNA lesion-free | train s | total s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", ...rows].join("\n") + "\n");
})().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : e}\n`);
  process.exit(1);
});
