/**
 * Post-processing of a finished lung run's U-Net probabilities (issue 16, MedSeg lesion coverage):
 * threshold × closing radius (whole mask or each lung apart), scored on the validation blocks
 * (Dice and lesion coverage against the radiologists), the test blocks and MedSeg. The model is
 * run once per set; only the masks are rebuilt per variant. With several runs (same input size),
 * their probabilities are averaged first: an ensemble. TTA=flip also averages each model's
 * prediction of the mirrored slice (mirrored back): test-time augmentation. RUN_DIR@last takes that
 * run's last-epoch model (model-last/, else checkpoints/last) instead of its selected one. Members
 * and flip come from the command line only, not from the runs' profiles: a quick run with
 * ensembleLastEpoch and testTimeFlip is reproduced by TTA=flip … RUN RUN@last.
 *
 *   [TTA=flip] node dist/bench/lung-post.js RUN_DIR[@last] [RUN_DIR[@last] ...]
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../lib/backend";
import { DiskCache } from "../lib/data/cache";
import { connectedComponents } from "../lib/data/preprocess";
import { maskOverlap, MaskOverlap, summariseSegmentation } from "../lib/evaluation";
import { closeMask, fillHoles } from "../lib/lungs/classical";
import { LungProfile } from "../lib/lungs/profiles";
import { chestWallCounts, Evaluated, evaluatedSet, loadLayersModel, LungSets, lungSets, MODEL_DIR, MODEL_LAST_DIR } from "../lib/lungs/segmenter";
import { loadModel } from "../lib/training/checkpoint";
import { LungInputNormalisation, probabilitiesToMask } from "../lib/lungs/slices";

type Mode = "none" | "whole" | "perLung";

async function post(e: Evaluated, side: number, t: number, rFrac: number, mode: Mode): Promise<Uint8Array> {
  const { height: h, width: w } = e.s;
  let m = await probabilitiesToMask(e.prob, side, h, w, t);
  if (e.body) for (let i = 0; i < m.length; i++) m[i] &= e.body[i];
  const r = rFrac * Math.max(h, w);
  if (mode === "whole" && r > 0) m = closeMask(m, h, w, r);
  if (mode === "perLung" && r > 0) {
    const { labels, areas } = connectedComponents(m, h, w);
    const out = new Uint8Array(m.length);
    for (let k = 1; k < areas.length; k++) {
      if (areas[k] < 0.002 * h * w) { for (let i = 0; i < m.length; i++) if (labels[i] === k) out[i] = 1; continue; }
      const one = new Uint8Array(m.length);
      for (let i = 0; i < m.length; i++) one[i] = labels[i] === k ? 1 : 0;
      const c = closeMask(one, h, w, r);
      for (let i = 0; i < m.length; i++) out[i] |= c[i];
    }
    m = out;
  }
  if (e.body) for (let i = 0; i < m.length; i++) m[i] &= e.body[i];
  return fillHoles(m, h, w);
}

(async () => {
  await initBackend();
  const runDirs = process.argv.slice(2);
  const tta = process.env.TTA ?? "none";
  if (tta !== "none" && tta !== "flip") throw new Error(`TTA=${tta}: use TTA=flip or leave it unset`);
  if (!runDirs.length) throw new Error("usage: node dist/bench/lung-post.js RUN_DIR [RUN_DIR ...]");
  const cache = new DiskCache();
  const models: tf.LayersModel[] = [];
  let side = 0, norm: LungInputNormalisation = { kind: "none" }, sets: LungSets | undefined;
  for (const member of runDirs) {
    // RUN_DIR@last: that run's last-epoch model instead of its selected one (a snapshot ensemble).
    const last = member.endsWith("@last");
    const runDir = last ? member.slice(0, -"@last".length) : member;
    const manifestFile = path.join(runDir, "manifest.json");
    if (!fs.existsSync(manifestFile) || !fs.existsSync(path.join(runDir, MODEL_DIR, "model.json"))) {
      throw new Error(`'${runDir || member}' is not a finished lung run (no manifest.json or ${MODEL_DIR}/model.json): pass a directory that trainLungSegmenter or bench/lung-unet.ts wrote, e.g. runs/bench/lungs/<name>`);
    }
    const manifest = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
    const profile = manifest.config.profile as LungProfile;
    if (side && profile.inputSize !== side) throw new Error(`${runDir}: input ${profile.inputSize}², the first run's is ${side}²; an ensemble needs one size`);
    const input: LungInputNormalisation = manifest.config.input ?? { kind: "none" };
    if (!sets) {
      side = profile.inputSize;
      norm = input;
      sets = await lungSets(profile);
    } else if (JSON.stringify(input) !== JSON.stringify(norm)) throw new Error(`${runDir}: input normalisation ${JSON.stringify(input)}, the first run's is ${JSON.stringify(norm)}; an ensemble needs one`);
    const lastDir = path.join(runDir, MODEL_LAST_DIR);
    models.push(!last ? await loadLayersModel(path.join(runDir, MODEL_DIR)) : fs.existsSync(path.join(lastDir, "model.json")) ? await loadLayersModel(lastDir) : await loadModel(path.join(runDir, "checkpoints", "last")));
  }
  const ev: Record<string, Evaluated[]> = {};
  for (const k of ["val", "test", "medseg"] as const) ev[k] = await evaluatedSet({ models, flip: tta === "flip" }, sets![k], side, cache, norm);
  models.forEach((m) => m.dispose());
  const rows: string[] = [];
  for (const t of [0.3, 0.4, 0.5]) {
    for (const [mode, rs] of [["none", [0]], ["whole", [0.01, 0.02, 0.03]], ["perLung", [0.01, 0.02, 0.03, 0.045, 0.06, 0.08]]] as [Mode, number[]][]) {
      for (const r of rs) {
        const cells: string[] = [];
        for (const k of ["val", "test", "medseg"] as const) {
          const dice: MaskOverlap[] = [], cov: MaskOverlap[] = [];
          let dense = 0, area = 0;
          for (const e of ev[k]) {
            const m = await post(e, side, t, r, mode);
            if (e.expert) dice.push(maskOverlap(m, e.expert));
            if (e.lesion) cov.push(maskOverlap(m, e.lesion));
            const c = chestWallCounts(e.s.gray, m, e.body, e.lesion);
            dense += c.dense;
            area += c.mask;
          }
          const d = dice.length ? summariseSegmentation(dice).pooled.dice.toFixed(4) : "–";
          const cv = cov.length ? summariseSegmentation(cov).pooled.coverage.toFixed(4) : "–";
          cells.push(k === "medseg" ? `${cv} | ${(dense / area).toFixed(3)}` : `${d} | ${cv}`);
        }
        const row = `| ${t} | ${mode} | ${r} | ${cells.join(" | ")} |`;
        rows.push(row);
        process.stdout.write(row + "\n");
      }
    }
  }
  process.stdout.write(["", runDirs.join(" + ") + (tta === "flip" ? " (TTA: flip)" : ""), "| threshold | closing | radius (× side) | val Dice | val lesion cov. | test Dice | test lesion cov. | MedSeg cov. | MedSeg chest wall |", "|---|---|---|---|---|---|---|---|---|", ...rows].join("\n") + "\n");
})().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : e}\n`);
  process.exit(1);
});
