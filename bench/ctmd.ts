/**
 * A patient's chest CT (issue 30), measured on real whole-chest series: the sample of COVID-CT-MD
 * (Afshar et al., Scientific Data 2021; github ShahinSHH/COVID-CT-MD, folder `Sample data/`:
 * Siemens SOMATOM Scope, 2 mm slices, 512², every slice JPEG Lossless), read as the archive
 * exported them (no conversion), scored with `covid-ct predict --score lesion-burden`.
 *
 *   COVIDCT_CTMD=/path/to/COVID-CT-MD node dist/bench/ctmd.js [--nifti] [--only dev|held-back]
 *   COVIDCT_CTMD=… node dist/bench/ctmd.js --sweep none:none,10:none,10:70   # lung rules REACH:GAS (aeration reach in mm, gas mean gray), development series only
 *
 * Development series: normal002, P002, cap002 (every choice of lib/lesions/scan.ts was made on
 * these). Held back: normal001, P001, cap001, reported once at the end.
 *
 * For each series: the call and the volumetric burden, the zones, slice lesion calls against the
 * radiologists' slice labels (Slice-level-labels-updated-1.npy; rows from Index.csv; slices in
 * Slice Location order, as the dataset's README says), left/right agreement with the lobe labels
 * (Lobe-level-labels-updated-1.npy: 0 LLL, 1 LUL, 2 RLL, 3 RML, 4 RUL), and the lung found on the
 * slices below both lung bases (read by eye: BELOW_BASES). With --nifti, each series is also converted
 * by dcm2niix and the volume's burden compared with the series'.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import sharp from "sharp";
import { collectInputs } from "../lib/data/inputs";
import { AERATED_REACH_MM, GAS_GRAY_MAX, scanScore } from "../lib/lesions/scan";
import { predict, PredictResult } from "../lib/predict/predict";
import { zonesCell } from "../lib/predict/rows";

interface Case {
  id: string;
  folder: string;
  set: "dev" | "held-back";
  truth: "normal" | "COVID-19" | "CAP";
  /** Row of the label arrays (Index.csv), where the radiologists labelled the series. */
  labelRow?: number;
}

const CASES: Case[] = [
  { id: "normal002", folder: "Sample data/Normal subjects/normal002", set: "dev", truth: "normal" },
  { id: "P002", folder: "Sample data/COVID-19 subjects/P002", set: "dev", truth: "COVID-19", labelRow: 1 },
  { id: "cap002", folder: "Sample data/Cap subjects/cap002", set: "dev", truth: "CAP", labelRow: 56 },
  { id: "normal001", folder: "Sample data/Normal subjects/normal001", set: "held-back", truth: "normal" },
  { id: "P001", folder: "Sample data/COVID-19 subjects/P001", set: "held-back", truth: "COVID-19", labelRow: 0 },
  { id: "cap001", folder: "Sample data/Cap subjects/cap001", set: "held-back", truth: "CAP", labelRow: 55 },
];

/**
 * Slices (1-based, in series order: inferior first) below both lung bases, read by eye at full
 * resolution in a lung window (level −600, width 1500) on the 2 mm slices: everything under the
 * lowest slice that shows any lung (normal001 12, normal002 15, P002 9, cap001 16), less one more
 * slice where that slice was faint. P001 and cap002 start inside the lungs.
 */
const BELOW_BASES: Record<string, number> = { normal001: 11, normal002: 14, P001: 0, P002: 7, cap001: 14, cap002: 0 };

/** A .npy file's array (little-endian int32 or float64, C order). */
function readNpy(file: string): { shape: number[]; data: Float64Array } {
  const b = fs.readFileSync(file);
  if (b.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${file}: not a .npy file`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = b.toString("latin1", major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']+)'/.exec(header)![1];
  if (/True/.test(/'fortran_order':\s*(\w+)/.exec(header)![1])) throw new Error(`${file}: Fortran order not supported`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  const n = shape.reduce((a, v) => a * v, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = descr === "<i4" ? b.readInt32LE(start + 4 * i) : descr === "<f8" ? b.readDoubleLE(start + 8 * i) : NaN;
  if (data.some(Number.isNaN)) throw new Error(`${file}: dtype ${descr} not supported`);
  return { shape, data };
}

const pct = (v: number, d = 2) => `${(100 * v).toFixed(d)} %`;
const frac = (a: number, b: number) => (b ? `${a}/${b} = ${(a / b).toFixed(3)}` : "–");

/**
 * The aeration rule's reach (AERATED_REACH_MM) on the development series: masks computed once (the
 * project's segmenters, cached), then the scan scored for each reach ("none" = no rule).
 */
async function sweep(root: string, variants: { reach: number | null; gas: number | null }[], slicesNpy: { data: Float64Array }, maxSlices: number): Promise<void> {
  const { ensureLungSegmenter } = await import("../lib/lungs/segmenter");
  const { ensureLesionSegmenter } = await import("../lib/lesions/segmenter");
  const lungs = await ensureLungSegmenter({ profile: "quick", seed: 1 });
  const lesions = await ensureLesionSegmenter({ profile: "quick", seed: 1 });
  console.log("| series | reach (mm) | gas gray ≤ | call @ current threshold | volumetric burden | lung below the bases (ml) | lung (ml) | slice sensitivity | slice specificity |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  for (const c of CASES.filter((x) => x.set === "dev")) {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "ctmd-sweep-"));
    const col = await collectInputs([path.join(root, c.folder)], work);
    const se = col.series[0];
    const items = se.slices.map((s) => ({ file: s.file, source: s.source }));
    const lung = await lungs.masksFor(items), lesion = await lesions.masksFor(items);
    const gray = await Promise.all(se.slices.map(async (s) => new Uint8Array(await sharp(s.file).greyscale().raw().toBuffer())));
    const { height, width } = lung[0];
    for (const { reach, gas } of variants) {
      const sc = scanScore(se.slices.map((_, k) => ({ lung: lung[k].data.slice(), lesion: lesion[k].data.slice(), gray: gray[k] })), height, width, se.geometry, { aeratedReachMm: reach, gasGrayMax: gas });
      const mm3 = sc.lungMm3! / Math.max(1, sc.lungVoxels);
      const below = sc.perSlice.slice(0, BELOW_BASES[c.id]).reduce((a, p) => a + p.lungPixels, 0) * mm3 / 1000;
      let tp = 0, fn = 0, tn = 0, fp = 0;
      if (c.labelRow !== undefined) for (let k = 0; k < sc.perSlice.length; k++) {
        const called = sc.perSlice[k].lesionPixels > 0, lab = slicesNpy.data[c.labelRow * maxSlices + k];
        if (lab) called ? tp++ : fn++;
        else called ? fp++ : tn++;
      }
      const { SERIES_BURDEN_THRESHOLD } = await import("../lib/lesions/scan");
      console.log(`| ${c.id} | ${reach ?? "none"} | ${gas ?? "none"} | ${sc.burden >= SERIES_BURDEN_THRESHOLD ? "called" : "no"} | ${pct(sc.burden, 3)} | ${below.toFixed(1)} | ${(sc.lungMm3! / 1000).toFixed(0)} | ${c.labelRow === undefined ? "–" : frac(tp, tp + fn)} | ${c.labelRow === undefined ? "–" : frac(tn, tn + fp)} |`);
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
  lungs.dispose();
  lesions.dispose();
}

async function main(): Promise<void> {
  const root = process.env.COVIDCT_CTMD;
  if (!root || !fs.existsSync(path.join(root, "Sample data"))) {
    console.error("Set COVIDCT_CTMD to a copy of the COVID-CT-MD repository (its 'Sample data' folder and the label .npy files).");
    process.exit(2);
  }
  const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1] : null;
  if (only !== null && only !== "dev" && only !== "held-back") {
    console.error(`--only '${only ?? ""}': give dev or held-back.`);
    process.exit(2);
  }
  const nifti = process.argv.includes("--nifti");
  const slicesNpy = readNpy(path.join(root, "Slice-level-labels-updated-1.npy"));
  const lobesNpy = readNpy(path.join(root, "Lobe-level-labels-updated-1.npy"));
  const [, maxSlices] = slicesNpy.shape;
  if (process.argv.includes("--sweep")) {
    // Variants REACH:GAS, e.g. none:none,0:70,10:70 (mm of the aeration rule; mean gray of the gas rule).
    const list = process.argv[process.argv.indexOf("--sweep") + 1] ?? `none:none,${AERATED_REACH_MM}:none,${AERATED_REACH_MM}:${GAS_GRAY_MAX}`;
    const num = (x: string) => {
      if (x === "none") return null;
      if (x.trim() === "" || !Number.isFinite(Number(x)) || Number(x) < 0) {
        console.error(`--sweep: '${x}' in '${list}' is not a number ≥ 0 or none: give variants REACH:GAS, e.g. none:none,10:70.`);
        process.exit(2);
      }
      return Number(x);
    };
    return sweep(root, list.split(",").map((v) => ({ reach: num(v.split(":")[0]), gas: num(v.split(":")[1] ?? "none") })), slicesNpy, maxSlices);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ctmd-bench-"));
  const results: { c: Case; r: PredictResult; seconds: number; niftiBurden?: number }[] = [];
  for (const c of CASES.filter((x) => !only || x.set === only)) {
    const t0 = Date.now();
    const r = await predict({ inputs: [path.join(root, c.folder)], out: path.join(tmp, c.id), score: "lesion-burden", profile: "quick", log: (m) => /\d+ s$|: /.test(m) && console.error(`  ${c.id}: ${m}`) });
    const seconds = (Date.now() - t0) / 1000;
    let niftiBurden: number | undefined;
    if (nifti) {
      const nd = path.join(tmp, `${c.id}-nifti`);
      fs.mkdirSync(nd);
      const d = spawnSync("dcm2niix", ["-z", "y", "-f", c.id, "-o", nd, path.join(root, c.folder)], { encoding: "utf8" });
      if (d.status !== 0) throw new Error(`dcm2niix failed on ${c.folder}: ${d.stderr}`);
      const vol = fs.readdirSync(nd).find((f) => f.endsWith(".nii.gz"))!;
      const rn = await predict({ inputs: [path.join(nd, vol)], out: path.join(tmp, `${c.id}-nifti-out`), score: "lesion-burden", profile: "quick" });
      niftiBurden = rn.series[0].burden;
    }
    results.push({ c, r, seconds, niftiBurden });
  }
  const lines: string[] = [];
  const out = (s = "") => lines.push(s);
  for (const set of ["dev", "held-back"] as const) {
    const rs = results.filter((x) => x.c.set === set);
    if (!rs.length) continue;
    out(`### ${set === "dev" ? "Development series (normal002, P002, cap002)" : "Held back (normal001, P001, cap001): reported once, nothing changed after"}`);
    out();
    out("| series | truth | slices | call | volumetric burden | lesion / lung (ml) | zones (grade, share) | severity | lung below the bases (ml) | slices without lung after 3D | time (s) |");
    out("|---|---|---|---|---|---|---|---|---|---|---|");
    for (const { c, r, seconds } of rs) {
      const s = r.series[0];
      const sc = r.scans[s.series];
      const sp = sc.lungMm3 !== null && sc.lungVoxels ? sc.lungMm3 / sc.lungVoxels : null;
      const below = sc.perSlice.slice(0, BELOW_BASES[c.id]).reduce((a, p) => a + p.lungPixels, 0);
      const zones = zonesCell(s).replace(/; /g, ", ");
      out(`| ${c.id} | ${c.truth} | ${s.slices} | ${s.covid ? "**COVID-19-like**" : "no"} | ${pct(s.burden)} | ${s.lesionMl?.toFixed(1)} / ${s.lungMl?.toFixed(0)} | ${zones} | ${s.severity}/30 | ${sp === null ? below + " px" : ((below * sp) / 1000).toFixed(2)} (${BELOW_BASES[c.id]} slices) | ${sc.perSlice.filter((p) => p.lungPixels === 0).length} | ${seconds.toFixed(1)} |`);
    }
    out();
    const labelled = rs.filter((x) => x.c.labelRow !== undefined);
    if (labelled.length) {
      out("Slice lesion calls (a slice is called when it holds any lesion voxel inside the kept lung) against the radiologists' slice labels; sides per slice against the lobe labels (left = LLL or LUL, right = RLL, RML or RUL):");
      out();
      out("| series | slices (labels) | sensitivity | specificity | right: sens / spec | left: sens / spec | sides involved (labels → ours) |");
      out("|---|---|---|---|---|---|---|");
      for (const { c, r } of labelled) {
        const sc = r.scans[r.series[0].series];
        const n = sc.perSlice.length;
        const lab = Array.from({ length: n }, (_, k) => slicesNpy.data[c.labelRow! * maxSlices + k]);
        const lobe = (k: number, j: number) => lobesNpy.data[(c.labelRow! * maxSlices + k) * 5 + j];
        let tp = 0, fn = 0, tn = 0, fp = 0;
        const side = { right: [0, 0, 0, 0], left: [0, 0, 0, 0] };
        let labRight = false, labLeft = false, ourRight = false, ourLeft = false;
        for (let k = 0; k < n; k++) {
          const called = sc.perSlice[k].lesionPixels > 0;
          if (lab[k]) called ? tp++ : fn++;
          else called ? fp++ : tn++;
          const lr = lobe(k, 2) || lobe(k, 3) || lobe(k, 4), ll = lobe(k, 0) || lobe(k, 1);
          labRight ||= !!lr;
          labLeft ||= !!ll;
          const or = sc.perSlice[k].right.lesion > 0, ol = sc.perSlice[k].left.lesion > 0;
          for (const [name, l, o] of [["right", lr, or], ["left", ll, ol]] as const) {
            const t = side[name];
            if (l) o ? t[0]++ : t[1]++;
            else o ? t[3]++ : t[2]++;
          }
        }
        const sideLine = (t: number[]) => `${frac(t[0], t[0] + t[1])} / ${frac(t[2], t[2] + t[3])}`;
        // A side counts as involved in our reading when its lesion volume is ≥ 1 % of its lung (zones' mean share above specks).
        const sideShare = (nm: "right" | "left") => {
          const l = sc.perSlice.reduce((a, p) => a + p[nm].lung, 0), e = sc.perSlice.reduce((a, p) => a + p[nm].lesion, 0);
          return l ? e / l : 0;
        };
        ourRight = sideShare("right") >= 0.01;
        ourLeft = sideShare("left") >= 0.01;
        const sides = (r: boolean, l: boolean) => [r ? "R" : "", l ? "L" : ""].filter(Boolean).join("+") || "none";
        out(`| ${c.id} | ${n} (${lab.filter(Boolean).length} infected) | ${frac(tp, tp + fn)} | ${frac(tn, tn + fp)} | ${sideLine(side.right)} | ${sideLine(side.left)} | ${sides(labRight, labLeft)} → ${sides(ourRight, ourLeft)} (R ${pct(sideShare("right"), 1)}, L ${pct(sideShare("left"), 1)}) |`);
      }
      out();
    }
    if (nifti) {
      out("dcm2niix NIfTI of each series (`dcm2niix -z y`), scored as a volume, against the DICOM series:");
      out();
      for (const { c, r, niftiBurden } of rs) out(`- ${c.id}: DICOM ${r.series[0].burden.toPrecision(9)}, NIfTI ${niftiBurden!.toPrecision(9)}, |difference| ${Math.abs(r.series[0].burden - niftiBurden!).toExponential(2)}`);
      out();
    }
  }
  console.log(lines.join("\n"));
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
