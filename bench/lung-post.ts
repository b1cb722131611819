/**
 * Post-processing of a finished lung run's U-Net probabilities (issue 16, MedSeg lesion coverage):
 * threshold × closing radius (whole mask or each lung apart), scored on the validation blocks
 * (Dice and lesion coverage against the radiologists), the test blocks and MedSeg. The model is
 * run once per set; only the masks are rebuilt per variant. With several runs (same input size),
 * their probabilities are averaged first: an ensemble.
 *
 *   node dist/bench/lung-post.js RUN_DIR [RUN_DIR ...]
 */
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../lib/backend";
import { DiskCache } from "../lib/data/cache";
import { connectedComponents } from "../lib/data/preprocess";
import { maskOverlap, MaskOverlap, summariseSegmentation } from "../lib/evaluation";
import { closeMask, fillHoles } from "../lib/lungs/classical";
import { LungProfile } from "../lib/lungs/profiles";
import { chestWallCounts, Evaluated, evaluatedSet, loadLayersModel, lungSets, MODEL_DIR } from "../lib/lungs/segmenter";
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
  if (!runDirs.length) throw new Error("usage: node dist/bench/lung-post.js RUN_DIR [RUN_DIR ...]");
  const cache = new DiskCache();
  const ev: Record<string, Evaluated[]> = {};
  let side = 0;
  for (const runDir of runDirs) {
    const manifestFile = path.join(runDir, "manifest.json");
    if (!fs.existsSync(manifestFile) || !fs.existsSync(path.join(runDir, MODEL_DIR, "model.json"))) {
      throw new Error(`${runDir} is not a finished lung run (no manifest.json or ${MODEL_DIR}/model.json): pass a directory that trainLungSegmenter or bench/lung-unet.ts wrote, e.g. runs/bench/lungs/<name>`);
    }
    const manifest = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
    const profile = manifest.config.profile as LungProfile;
    const norm: LungInputNormalisation = manifest.config.input ?? { kind: "none" };
    if (side && profile.inputSize !== side) throw new Error(`${runDir}: input ${profile.inputSize}², the first run's is ${side}²; an ensemble needs one size`);
    side = profile.inputSize;
    const sets = await lungSets(profile);
    const model = await loadLayersModel(path.join(runDir, MODEL_DIR));
    for (const k of ["val", "test", "medseg"] as const) {
      const e = await evaluatedSet(model, sets[k], side, cache, norm);
      if (!ev[k]) ev[k] = e;
      else e.forEach((x, i) => {
        if (x.item.id !== ev[k][i].item.id) throw new Error(`${runDir}: ${k} sets differ`);
        for (let j = 0; j < x.prob.length; j++) ev[k][i].prob[j] += x.prob[j];
      });
    }
    model.dispose();
  }
  for (const k of Object.keys(ev)) for (const e of ev[k]) for (let j = 0; j < e.prob.length; j++) e.prob[j] /= runDirs.length;
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
  process.stdout.write(["", runDirs.join(" + "), "| threshold | closing | radius (× side) | val Dice | val lesion cov. | test Dice | test lesion cov. | MedSeg cov. | MedSeg chest wall |", "|---|---|---|---|---|---|---|---|---|", ...rows].join("\n") + "\n");
})().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.message : e}\n`);
  process.exit(1);
});
