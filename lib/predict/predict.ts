/**
 * `covid-ct predict`: score CT slices and DICOM series from outside any protocol with a finished
 * diagnosis run (`--run`) or with a lesion score (`--score lesion-burden | lesion-logistic`), and
 * say why: the lung mask, the lesions where a lesion model exists, and a gallery of what the model saw.
 *
 * Outputs (`--out`): predictions.csv, gallery.html, manifest.json (config, backend, input checksums,
 * git revision) and, for DICOM inputs, slices/ (the lung-windowed PNGs that were scored). The folder
 * is built beside `--out` and renamed into place at the end: an interrupted call leaves nothing half
 * written.
 */
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../backend";
import { redirectCacheWrites } from "../config";
import { Example, loadGrayImages } from "../data/examples";
import { LUNG_WINDOW } from "../data/dicom";
import { alignToExample } from "../diagnosis/masks";
import { FinishedRun, predictWithRun, readFinishedRun } from "../diagnosis/predict";
import { lesionStatistics, LesionStatistics } from "../lesions/burden";
import { LesionScoreName, runLesionScores, scorePredictions } from "../lesions/score";
import { makeManifest, writeManifest } from "../manifest";
import { LOCK_FILE, RunDirError, isInside, readRunManifest } from "../runs/dir";
import { checkOutFolder, realPathOf } from "../runs/out";
import { acquireRunLock, RunLock } from "../runs/lock";
import { MaskResult, Segmenter } from "../segmenter/engine";
import { ProfileName } from "../training/profiles";
import { sha256File, writeFileAtomic } from "../util/fs";
import { GallerySlice, writeGallery } from "./gallery";
import { collectInputs, InputError } from "../data/inputs";
import { predictionsCsv, SeriesRow, SliceRow } from "./rows";
import { AERATED_GRAY_MAX, AERATED_REACH_MM, LUNG_COMPONENT_MIN, MIN_LUNG_BODY_SHARE, ScanScore, scanScore, SERIES_BURDEN_THRESHOLD } from "../lesions/scan";
import { bodyHull } from "../lungs/classical";
import { decodeRaw } from "../data/decode";
import { uprightSlice, toFileOrientation } from "../segmenter/slices";

/** Grad-CAM is drawn for this many slices by default (the highest probabilities first): each costs a backbone pass and a gradient. */
export const GRADCAM_SLICES = 24;
/** A series' gallery shows this many slices: those with the most lesion voxels. */
export const GALLERY_DRIVERS = 8;


export const PREDICT_KIND = "predict";

export interface PredictOptions {
  inputs: string[];
  out: string;
  /** A finished diagnosis run, or: */
  run?: string;
  /** a lesion score (its lung and lesion segmenters and threshold are the profile's). */
  score?: LesionScoreName;
  /** Profile of the lesion score and of the segmenters with --score (a --run uses its own profile). */
  profile?: ProfileName;
  force?: boolean;
  /** Grad-CAM for the n highest-probability slices (Study I image runs; default GRADCAM_SLICES, 0 = none). */
  gradcam?: number;
  log?: (m: string) => void;
  /**
   * Called with a function that puts --out back as it was (lock released, scratch removed, a folder
   * it created removed) once predict starts writing, and with null when it is done: a caller that
   * stops the process (the CLI, on a signal) calls it first. Signals are the caller's business.
   */
  onUndo?: (undo: (() => void) | null) => void;
}

export interface PredictResult {
  /** Each series' scan score (lungs cleaned in 3D, per-slice and per-side counts, zones), by series name. */
  scans: Record<string, ScanScore>;
  out: string;
  model: string;
  threshold: number;
  slices: SliceRow[];
  series: SeriesRow[];
  errors: InputError[];
  skipped: string[];
  /** DICOM files that are no CT slice (DICOMDIR, SR, PR, SEG, RTSTRUCT, LOCALIZER, …), counted by kind. */
  skippedDicom: Record<string, number>;
  seconds: number;
  /** Slices scored per second, lung masks (and lesions) included, after the inputs were read. */
  slicesPerSecond: number;
}

/** Names predict writes into --out (everything else there is the user's and is never touched). */
const OUTPUTS = ["predictions.csv", "gallery.html", "slices", "manifest.json"] as const;
const PARTIAL_PREFIX = ".partial-";
const ownEntry = (n: string) => n === LOCK_FILE || n.startsWith(PARTIAL_PREFIX);

/** --out under the run layer's rules (lib/runs/out.ts) for predict's outputs. Returns the real absolute path. */
export function checkPredictOut(raw: string, force = false): string {
  return checkOutFolder(raw, { kind: PREDICT_KIND, force, ownEntry, command: "covid-ct predict" });
}

async function loadSegmenters(profile: ProfileName, wantLesions: "required" | "if-finished", log: (m: string) => void): Promise<{ lungs: Segmenter; lesions: Segmenter | null }> {
  const { ensureLungSegmenter } = await import("../lungs/segmenter");
  const { defaultLesionRunDir, ensureLesionSegmenter, loadLesionSegmenter } = await import("../lesions/segmenter");
  const lungs = await ensureLungSegmenter({ profile, seed: 1, log });
  let lesions: Segmenter | null = null;
  if (wantLesions === "required") lesions = await ensureLesionSegmenter({ profile, seed: 1, log });
  else {
    const dir = defaultLesionRunDir(profile, 1);
    if (fs.existsSync(path.join(dir, "metrics.json")) && readRunManifest(dir)?.kind === "lesions") lesions = await loadLesionSegmenter(dir);
    else log(`no finished lesion segmenter for profile ${profile} (${path.relative(process.cwd(), dir)}): lesion_burden stays empty (covid-ct lesions trains one)`);
  }
  return { lungs, lesions };
}

/**
 * Grad-CAM overlays (lib/gradcam.ts) of the n highest-probability slices, for runs whose model sees
 * the image alone (Study I: no lung-mask channel, lesion branch, lung probe or harmonisation, and
 * not the cue baseline); the note says which slices got one, or why none did.
 */
async function gradCams(run: FinishedRun | null, views: readonly Uint8Array[], probs: readonly number[], n: number, log: (m: string) => void): Promise<{ maps: Map<number, string>; note: string }> {
  const maps = new Map<number, string>();
  if (!run) return { maps, note: "Grad-CAM: none (a lesion score has no image classifier; its evidence is the lesion mask)." };
  const c = run.config;
  const why = run.modelBuilt === "shortcut" ? "the cue baseline sees no image" : c.lungMask || c.lesionMask ? "the run's model takes the lung mask or has a lesion branch" : c.lungProbe ? "the run sees blanked images (lung probe)" : c.harmonise ? "the run sees harmonised images" : null;
  if (why) return { maps, note: `Grad-CAM: none (${why}).` };
  if (n === 0 || views.length === 0) return { maps, note: "Grad-CAM: none (--gradcam 0)." };
  const tf = await import("@tensorflow/tfjs");
  const { loadRunModel } = await import("../diagnosis/results");
  const { gradCam, camOverlayPng } = await import("../gradcam");
  const { toModelInput } = await import("../models/input");
  const order = probs.map((p, i) => ({ p, i })).sort((a, b) => b.p - a.p || a.i - b.i).slice(0, n);
  log(`Grad-CAM of the ${order.length} highest-probability slice(s)`);
  const { built, pre, profile } = await loadRunModel(run.runDir, c.weightsRoot);
  try {
    for (const { i } of order) {
      const side = profile.inputSize;
      const x = tf.tidy(() => toModelInput(tf.tensor4d(Float32Array.from(views[i], (v) => v / 255), [1, side, side, 1]), pre));
      const cam = gradCam(built, x, 1);
      x.dispose();
      maps.set(i, await camOverlayPng(views[i], cam, { outSize: 160 }));
    }
  } finally {
    built.model.dispose();
  }
  return { maps, note: `Grad-CAM (warm = where the COVID-19 score's gradient points) on the ${order.length} highest-probability slice(s)${order.length < probs.length ? ` of ${probs.length} (--gradcam sets how many)` : ""}.` };
}

/** Score the inputs and write predictions.csv, gallery.html and manifest.json into --out. */
export async function predict(o: PredictOptions): Promise<PredictResult> {
  const log = o.log ?? (() => undefined);
  const t0 = Date.now();
  if (!!o.run === !!o.score) throw new Error(o.run ? "--run and --score contradict each other: score with a diagnosis run or with a lesion score, not both." : "Give --run <finished diagnosis run> or --score lesion-burden.");
  if (o.inputs.length === 0) throw new Error("No INPUT given: name image files, DICOM files, NIfTI volumes or folders to score.");
  // Everything is checked before anything is written.
  // An input inside --out (or --out inside an input folder) first: the most specific refusal.
  const outReal = o.out.trim() === "" ? "" : realPathOf(o.out);
  for (const input of outReal ? o.inputs : []) {
    if (input.trim() === "" || !fs.existsSync(input)) continue;
    const real = realPathOf(input);
    if (isInside(real, outReal)) throw new RunDirError(`INPUT ${input} is inside --out ${o.out}: the output would replace what it scores. Copy the files elsewhere or choose another --out.`);
    if (fs.statSync(real).isDirectory() && isInside(outReal, real)) throw new RunDirError(`--out ${o.out} is inside the INPUT folder ${input}: the folder walk would read the output. Choose an --out outside it.`);
  }
  const out = checkPredictOut(o.out, o.force);
  const run: FinishedRun | null = o.run ? readFinishedRun(o.run) : null;
  const profile: ProfileName = run ? run.profile.name : o.profile ?? "quick";
  // The folder is ours while we work: created if needed, locked (a second predict into it is
  // refused), scratch inside it; on any failure or signal it goes back to how it was.
  let created: string | null = null;
  for (let p = out; !fs.existsSync(p); p = path.dirname(p)) created = p;
  fs.mkdirSync(out, { recursive: true });
  let lock: RunLock;
  try {
    lock = acquireRunLock(out);
  } catch (e) {
    if (created) fs.rmSync(created, { recursive: true, force: true });
    if (e instanceof RunDirError) throw new RunDirError(`--out ${o.out}: ${e.message.replace(/^Run directory /, "")}`);
    throw e;
  }
  for (const n of fs.readdirSync(out)) if (n.startsWith(PARTIAL_PREFIX)) fs.rmSync(path.join(out, n), { recursive: true, force: true });
  const work = path.join(out, `${PARTIAL_PREFIX}${process.pid}`);
  const undo = () => {
    redirectCacheWrites(null);
    fs.rmSync(work, { recursive: true, force: true });
    lock.release();
    if (created && fs.existsSync(out) && fs.readdirSync(out).length === 0) fs.rmSync(created, { recursive: true, force: true });
  };
  // The caller (the CLI, on SIGINT/SIGTERM) can put --out back as it was while we work.
  o.onUndo?.(undo);
  fs.mkdirSync(work, { recursive: true });
  // The user's files go into no cache outside --out (the project's cache is still read).
  redirectCacheWrites(path.join(work, "cache"));
  let segs: { lungs: Segmenter; lesions: Segmenter | null } | null = null;
  try {
    const collected = await collectInputs(o.inputs, path.join(work, "slices"));
    for (const e of collected.errors) log(`${e.file}: ${e.message}`);
    if (collected.repeated.length) log(`given more than once (or inside another INPUT folder), scored once: ${collected.repeated.join(", ")}`);
    if (collected.skipped.length) log(`skipped ${collected.skipped.length} file(s) that are neither images nor DICOM (e.g. ${collected.skipped[0]})`);
    const skippedDicom = Object.entries(collected.skippedDicom);
    if (skippedDicom.length) log(`skipped ${skippedDicom.reduce((a, [, n]) => a + n, 0)} DICOM file(s) that are no CT slice: ${skippedDicom.map(([why, n]) => `${n} ${why}`).join(", ")}`);
    const slices = collected.slices;
    const examples: Example[] = slices.map((s) => ({ id: s.frame !== undefined ? `${s.input}#frame${s.frame + 1}` : s.input, path: s.file, label: 0, source: s.source }));
    await initBackend();
    const t1 = Date.now();
    // A series is scored as a scan by its lesion burden, so a lesion segmenter is needed then too.
    segs = await loadSegmenters(profile, o.score || collected.series.length ? "required" : "if-finished", log);
    const items = slices.map((s) => ({ file: s.file, source: s.source }));
    log(`lung masks of ${slices.length} slice(s)${segs.lesions ? " and their lesions" : ""}`);
    const lung: MaskResult[] = slices.length ? await segs.lungs.masksFor(items) : [];
    const lesion: MaskResult[] | null = segs.lesions && slices.length ? await segs.lesions.masksFor(items) : null;
    log(`masks: ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    const tm = Date.now();
    // Series: the lungs cleaned in 3D (lung masks changed in place), then the scan's score.
    const inSeries = new Map<string, number[]>();
    slices.forEach((s, i) => {
      if (s.series === undefined) return;
      const list = inSeries.get(s.series);
      if (list) list.push(i);
      else inSeries.set(s.series, [i]);
    });
    const flags: string[] = slices.map(() => "");
    const scans = new Map<string, ReturnType<typeof scanScore>>();
    for (const se of collected.series) {
      const idx = inSeries.get(se.name) ?? [];
      const { height, width } = lung[idx[0]];
      // The lung-window pixels the masks were made from (the aeration rule: lung holds air).
      const gray = await Promise.all(idx.map((i) => decodeRaw(slices[i].file, 1).then((r) => r.data)));
      scans.set(se.name, scanScore(idx.map((i, k) => ({ lung: lung[i].data, lesion: lesion![i].data, gray: gray[k] })), height, width, se.geometry));
      for (const i of idx) if (!lung[i].data.some((v) => v)) flags[i] = "no lung (3D)";
    }
    // Single slices: a slice whose lungs are a small share of its body gives no burden.
    for (let i = 0; i < slices.length; i++) {
      if (slices[i].series !== undefined || !lesion) continue;
      const u = await uprightSlice(slices[i].file, slices[i].source);
      const body = bodyHull(u.gray, u.height, u.width);
      const bodyPixels = body ? toFileOrientation(body, u).reduce((a, v) => a + v, 0) : u.height * u.width;
      const lungPixels = lung[i].data.reduce((a, v) => a + v, 0);
      if (lungPixels < MIN_LUNG_BODY_SHARE * bodyPixels) flags[i] = `lungs ${(100 * lungPixels / Math.max(1, bodyPixels)).toFixed(1)} % of the body (< ${100 * MIN_LUNG_BODY_SHARE} %)`;
    }
    const stats: (LesionStatistics | null)[] = slices.map((_, i) => (lesion && !flags[i] ? lesionStatistics(lung[i].data, lesion[i].data, lung[i].height, lung[i].width) : null));
    let probs: (number | null)[];
    let threshold: number;
    let model: string;
    if (run) {
      log(`scoring ${slices.length} slice(s) with ${run.label}`);
      probs = await predictWithRun(run, examples, log);
      threshold = run.threshold;
      model = run.label;
    } else {
      const scores = await runLesionScores({ profile, log });
      const s = scores[o.score!];
      threshold = s.metrics.testAtValThreshold.threshold;
      const scored = stats.flatMap((st, i) => (st ? [{ i, st }] : []));
      const p = scorePredictions(o.score!, scored.map(({ i, st }) => ({ set: "external" as const, id: examples[i].id, label: 0, stats: st })), s.metrics.model).map((r) => r.probability);
      probs = slices.map(() => null);
      scored.forEach(({ i }, k) => (probs[i] = p[k]));
      model = `${o.score} (${path.relative(process.cwd(), s.runDir)})`;
    }
    const t2 = Date.now();
    log(`scores: ${((t2 - tm) / 1000).toFixed(1)} s`);
    const rel = (f: string) => path.relative(work, f);
    const sliceRows: SliceRow[] = slices.map((s, i) => ({
      input: examples[i].id,
      scored: s.file !== s.input ? rel(s.file) : "",
      series: s.series ?? "",
      index: s.index ?? null,
      probability: probs[i],
      covid: probs[i] !== null && probs[i]! >= threshold,
      lungShare: lung[i].data.reduce((a, v) => a + v, 0) / lung[i].data.length,
      lesionBurden: stats[i]?.burden ?? null,
      flag: flags[i],
    }));
    const seriesRows: SeriesRow[] = collected.series.map((se) => {
      const idx = inSeries.get(se.name) ?? [];
      const sc = scans.get(se.name)!;
      // The slice that drives the call: the most lesion voxels (the first of equals).
      let driver = 0;
      sc.perSlice.forEach((p, k) => p.lesionPixels > sc.perSlice[driver].lesionPixels && (driver = k));
      return {
        series: se.name,
        folder: se.folder,
        slices: idx.length,
        burden: sc.burden,
        covid: sc.burden >= SERIES_BURDEN_THRESHOLD,
        threshold: SERIES_BURDEN_THRESHOLD,
        lungMl: sc.lungMm3 === null ? null : sc.lungMm3 / 1000,
        lesionMl: sc.lesionMm3 === null ? null : sc.lesionMm3 / 1000,
        zones: sc.zones,
        severity: sc.severity,
        patientSides: sc.patientSides,
        lungSlices: sc.perSlice.filter((p) => p.lungPixels > 0).length,
        lungRemovedSlices: sc.perSlice.filter((p) => p.lungPixels === 0 && p.removedLungPixels > 0).length,
        drivenBy: { index: driver + 1, input: sliceRows[idx[driver]].input },
        order: se.order,
      };
    });
    const result: PredictResult = {
      scans: Object.fromEntries(scans),
      out,
      model,
      threshold,
      slices: sliceRows,
      series: seriesRows,
      errors: collected.errors,
      skipped: collected.skipped,
      skippedDicom: collected.skippedDicom,
      seconds: 0,
      slicesPerSecond: slices.length / Math.max(1e-3, (t2 - t1) / 1000),
    };
    writeFileAtomic(path.join(work, "predictions.csv"), predictionsCsv(result));
    const viewSize = run?.profile.inputSize ?? 224;
    // Shown in the gallery: every single slice, and each series' slices that drive its call.
    const drivers = new Map<string, number[]>();
    for (const se of collected.series) {
      const idx = inSeries.get(se.name) ?? [];
      const per = scans.get(se.name)!.perSlice;
      const top = per.map((p, k) => ({ k, v: p.lesionPixels })).filter((x) => x.v > 0).sort((x, y) => y.v - x.v || x.k - y.k).slice(0, GALLERY_DRIVERS);
      drivers.set(se.name, top.map((x) => idx[x.k]).sort((x, y) => x - y));
    }
    const shown = [...slices.keys()].filter((i) => slices[i].series === undefined || drivers.get(slices[i].series!)!.includes(i));
    const views = await loadGrayImages(shown.map((i) => examples[i]), viewSize);
    const cams = await gradCams(run, views, shown.map((i) => probs[i] ?? 0), o.gradcam ?? GRADCAM_SLICES, log);
    const gallerySlice = new Map<number, GallerySlice>();
    for (const [k, i] of shown.entries()) gallerySlice.set(i, {
      row: sliceRows[i],
      view: views[k],
      cam: cams.maps.get(k) ?? null,
      lung: await alignToExample(examples[i], viewSize, lung[i]),
      lesion: lesion ? await alignToExample(examples[i], viewSize, lesion[i]) : null,
    });
    await writeGallery(path.join(work, "gallery.html"), {
      title: `covid-ct predict: ${model}`,
      model,
      threshold,
      viewSize,
      window: `DICOM slices in a lung window (level ${LUNG_WINDOW.level} HU, width ${LUNG_WINDOW.width} HU)`,
      gradcam: cams.note,
      slices: shown.filter((i) => slices[i].series === undefined).map((i) => gallerySlice.get(i)!),
      scans: collected.series.map((se, k) => {
        const sc = scans.get(se.name)!;
        const sp = se.geometry.spacing;
        return { row: seriesRows[k], perSlice: sc.perSlice, pixelMm2: sp ? sp[0] * sp[1] : null, extent: sc.extent, superiorLast: se.geometry.superiorLast, shown: drivers.get(se.name)!.map((i) => gallerySlice.get(i)!) };
      }),
      errors: collected.errors,
    });
    const checksums = Object.fromEntries([...new Set(slices.map((s) => s.input))].map((f) => [`input/${f}`, sha256File(f)]));
    writeManifest(work, makeManifest(PREDICT_KIND, {
      inputs: o.inputs,
      run: run?.runDir ?? null,
      score: o.score ?? null,
      profile,
      threshold,
      seriesRule: { volumetricBurdenThreshold: SERIES_BURDEN_THRESHOLD, lungComponentMin: LUNG_COMPONENT_MIN, aeratedReachMm: AERATED_REACH_MM, aeratedGrayMax: AERATED_GRAY_MAX, minLungBodyShare: MIN_LUNG_BODY_SHARE },
      dicomWindow: LUNG_WINDOW,
      segmenters: { lungs: segs.lungs.runDir, lesions: segs.lesions?.runDir ?? null },
    }, { ...checksums, ...(run ? { [`run/${run.label}`]: sha256File(path.join(run.runDir, "checkpoints", "best", "model.bin")) } : {}) }));
    // Into place: an earlier output's files (allowed by --force) go only now that the new ones are
    // whole; each file is renamed in, the manifest last. Nothing else in --out is touched.
    for (const n of OUTPUTS) fs.rmSync(path.join(out, n), { recursive: true, force: true });
    for (const n of OUTPUTS) if (fs.existsSync(path.join(work, n))) fs.renameSync(path.join(work, n), path.join(out, n));
    result.seconds = (Date.now() - t0) / 1000;
    return result;
  } finally {
    segs?.lungs.dispose();
    segs?.lesions?.dispose();
    o.onUndo?.(null);
    undo();
  }
}
