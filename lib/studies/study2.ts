/**
 * Study II (paper Section 4, Fig. 4, Table 6): lung masks at the input, lesion masks at the output.
 * DenseNet-169 under the paper protocol; each row of Table 6 is a positive training set (arm) and a
 * variant: image only, + lung mask (Fig. 4A), + lesion mask (Fig. 4B), + both (Fig. 4C).
 *
 * A row is a cell of the one diagnosis run (lib/diagnosis, runDiagnosis) with `lungMask` / `lesionMask`.
 * Rows without a mask on Study I's arms ARE Study I's DenseNet-169 runs (the paper's Table 6 repeats
 * Table 5 there): the grid points at Study I's run directories, so notebook 02's runs are reused.
 */
import { resolveMedsegRoot } from "../config";
import { listMedsegSlices, listSegLungs } from "../data/sources";
import { lesionMaskFile, readMaskFile } from "../diagnosis/masks";
import { expertSplit } from "../lungs/segmenter";
import { PaperScores, PAPER_TABLE6 } from "../paper";
import { Example } from "../data/examples";
import { protocolExamples, protocolExternalExamples, selectProtocol } from "../protocols";
import { getProfile, ProfileName } from "../training/profiles";
import { armsOf, PositiveArm } from "../diagnosis/arms";
import { DiagnosisConfig, DiagnosisHooks, SHORTCUT_MODEL, variantName } from "../diagnosis/config";
import { LUNG_PROBES, LungProbe } from "../diagnosis/lung-probe";
import { DiagnosisResult } from "../diagnosis/results";
import { CellHooks, runCells } from "../diagnosis/run";

/** One row of Table 6. */
export interface TableSixRow {
  arm: PositiveArm;
  lungMask: boolean;
  lesionMask: boolean;
}

/** The 11 rows of Table 6, in the paper's order. */
export const TABLE6_ROWS: readonly TableSixRow[] = [
  { arm: "covid-ct-349", lungMask: false, lesionMask: false },
  { arm: "covid-ct-349", lungMask: true, lesionMask: false },
  { arm: "covid-seg", lungMask: false, lesionMask: false },
  { arm: "covid-seg", lungMask: true, lesionMask: false },
  { arm: "covid-seg", lungMask: false, lesionMask: true },
  { arm: "covid-ct-118", lungMask: false, lesionMask: false },
  { arm: "covid-ct-118", lungMask: true, lesionMask: false },
  { arm: "combination", lungMask: false, lesionMask: false },
  { arm: "combination", lungMask: true, lesionMask: false },
  { arm: "combination", lungMask: false, lesionMask: true },
  { arm: "combination", lungMask: true, lesionMask: true },
];

/** Study II's backbone (the paper: DenseNet-169 from ImageNet). */
export const STUDY2_MODEL = "densenet169" as const;

/** Variant flags from a name: "", "none", "lung", "lesion", "lung-lesion" / "lung+lesion". */
export function parseVariant(v: string): { lungMask: boolean; lesionMask: boolean } {
  const norm = v.replace("+", "-");
  const table: Record<string, { lungMask: boolean; lesionMask: boolean }> = {
    "": { lungMask: false, lesionMask: false },
    none: { lungMask: false, lesionMask: false },
    lung: { lungMask: true, lesionMask: false },
    lesion: { lungMask: false, lesionMask: true },
    "lung-lesion": { lungMask: true, lesionMask: true },
  };
  const r = table[norm];
  if (!r) throw new Error(`Unknown variant '${v}'. Use one of: none, lung, lesion, lung+lesion (see README, "Study II").`);
  return r;
}

export function rowKey(r: { arm: string; lungMask?: boolean; lesionMask?: boolean }): string {
  return `${r.arm}|${variantName(r)}`;
}

export function paperRowSix(r: TableSixRow): PaperScores {
  return PAPER_TABLE6[rowKey(r)];
}

export interface Table6Grid {
  profile: ProfileName;
  seeds?: readonly number[];
  epochs?: number;
  force?: boolean;
  /** Restrict to these rows (default all 11). */
  rows?: readonly TableSixRow[];
  /** Study I's image-only runs are listed too (default true; the cluster grid leaves them to Study I's grid). */
  includeStudyOne?: boolean;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
}

/** The run config of one row and seed: Study I's own run where the row is an image-only Study I arm. */
export function table6Cell(r: TableSixRow, seed: number, g: Omit<Table6Grid, "rows" | "seeds">): DiagnosisConfig {
  const studyOne = !r.lungMask && !r.lesionMask && (armsOf("paper") as readonly string[]).includes(r.arm);
  return {
    study: studyOne ? "study1" : "study2",
    model: STUDY2_MODEL,
    positives: r.arm,
    profile: g.profile,
    protocol: "paper",
    seed,
    ...(r.lungMask ? { lungMask: true } : {}),
    ...(r.lesionMask ? { lesionMask: true } : {}),
    force: g.force,
    epochs: g.epochs,
    dataRoot: g.dataRoot,
    medsegRoot: g.medsegRoot,
    weightsRoot: g.weightsRoot,
  };
}

/** Every cell of Table 6 (rows × seeds) as run configs. */
export function table6Cells(g: Table6Grid): DiagnosisConfig[] {
  const seeds = g.seeds ?? getProfile(g.profile).seeds;
  const cells: DiagnosisConfig[] = [];
  for (const r of g.rows ?? TABLE6_ROWS) for (const seed of seeds) {
    const c = table6Cell(r, seed, g);
    if (c.study === "study1" && g.includeStudyOne === false) continue;
    cells.push(c);
  }
  return cells;
}

/** Every cell of Table 6, reusing finished runs (Study I's among them). */
export async function runTable6(g: Table6Grid, hooks: CellHooks = {}): Promise<DiagnosisResult[]> {
  return runCells(table6Cells(g), hooks);
}

/** The training set of the lung probes: Combination, the arm where both positive sources meet the same negatives. */
export const LUNG_PROBE_ARM: PositiveArm = "combination";

/** The lung probes' run configs (beyond the paper): the image-only Combination classifier on blanked images, per probe and seed. */
export function lungProbeCells(g: Omit<Table6Grid, "rows" | "includeStudyOne"> & { probes?: readonly LungProbe[] }): DiagnosisConfig[] {
  const seeds = g.seeds ?? getProfile(g.profile).seeds;
  return (g.probes ?? LUNG_PROBES).flatMap((lungProbe) =>
    seeds.map((seed) => ({ ...table6Cell({ arm: LUNG_PROBE_ARM, lungMask: false, lesionMask: false }, seed, g), study: "study2" as const, lungProbe })),
  );
}

/** Both lung probes on Combination (finished runs reused). */
export async function runLungProbes(g: Omit<Table6Grid, "rows" | "includeStudyOne"> & { probes?: readonly LungProbe[] }, hooks: CellHooks = {}): Promise<DiagnosisResult[]> {
  return runCells(lungProbeCells(g), hooks);
}

/**
 * The shortcut baseline (file cues, no anatomy) on each arm of Table 6, or of `arms`: what the
 * protocol's test and the external set give to a model that cannot see a lung. Study I's arms are
 * Study I's own cue runs (notebook 02's, reused); Combination is a Study II cell of the same model.
 */
export function shortcutCells(g: Omit<Table6Grid, "rows" | "includeStudyOne"> & { arms?: readonly PositiveArm[] }): DiagnosisConfig[] {
  const seeds = g.seeds ?? getProfile(g.profile).seeds;
  const arms = g.arms ?? [...new Set(TABLE6_ROWS.map((r) => r.arm))];
  return arms.flatMap((arm) =>
    seeds.map((seed) => ({ ...table6Cell({ arm, lungMask: false, lesionMask: false }, seed, g), model: SHORTCUT_MODEL })),
  );
}

/** The shortcut baseline beside Table 6 (or Table 7: arms ["combination"]), finished runs reused. */
export async function runShortcutBaselines(g: Omit<Table6Grid, "rows" | "includeStudyOne"> & { arms?: readonly PositiveArm[] }, hooks: CellHooks = {}): Promise<DiagnosisResult[]> {
  return runCells(shortcutCells(g), hooks);
}

/** The 48 MedSeg test slices (original CTs, radiologists' lesion masks) as examples. */
export function medsegTestExamples(root?: string): Example[] {
  return listMedsegSlices("test", resolveMedsegRoot(root).dir).map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: "medseg" as const }));
}

/** Slices for Figure 3: COVID-Seg training slices (pseudo lesion labels), MedSeg test slices and the lung segmenter's expert TEST-block slices (radiologists' lung masks). */
export async function figureExamples(n = 4): Promise<Example[]> {
  const p = await selectProtocol({ protocol: "paper" });
  const seg = protocolExamples(p, "train", "covid").filter((e) => e.source === "covid19-ct-seg");
  const med = medsegTestExamples();
  const expert = expertTestExamples();
  const k = Math.ceil(n / 2);
  return [...spread(seg, k), ...spread(med, n - k), ...spread(expert, n)];
}

const spread = <T>(xs: readonly T[], m: number): T[] => Array.from({ length: Math.min(m, xs.length) }, (_, i) => xs[Math.floor(((i + 0.5) * xs.length) / m)]);

/** The lung segmenter's held-out slices (test blocks 3, 7, 12 of covid19-ct-seg-lungs) as examples. */
export function expertTestExamples(): Example[] {
  return expertSplit(listSegLungs()).test.map((x) => ({ id: x.id, path: x.path, label: 1 as const, source: x.source }));
}

/**
 * Slices of every source for the lung-mask gallery: COVID-CT figures (both classes), COVID-Seg,
 * LUNA, the São Paulo external set (both classes), and the MedSeg slices with the most lesion
 * (dense consolidation is where a threshold-based lung mask fails).
 */
export async function lungGalleryExamples(perSource = 3): Promise<{ group: string; examples: Example[] }[]> {
  const p = await selectProtocol({ protocol: "paper" });
  const all = (["train", "val", "test"] as const).flatMap((s) => protocolExamples(p, s));
  const of = (src: string, label?: 0 | 1) => all.filter((e) => e.source === src && (label === undefined || e.label === label));
  const medAll = [...listMedsegSlices("train"), ...listMedsegSlices("test")].map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: "medseg" as const }));
  const lesionArea = await Promise.all(medAll.map(async (e) => (await readMaskFile(lesionMaskFile(e)!)).data.reduce((a, b) => a + b, 0)));
  const dense = medAll.map((e, i) => ({ e, a: lesionArea[i] })).sort((x, y) => y.a - x.a).slice(0, perSource).map((x) => x.e);
  const ext = protocolExternalExamples(p);
  return [
    { group: "COVID-CT figures, COVID", examples: spread(of("covid-ct", 1), perSource) },
    { group: "COVID-CT figures, non-COVID", examples: spread(of("covid-ct", 0), perSource) },
    { group: "COVID-Seg slices", examples: spread(of("covid19-ct-seg"), perSource) },
    { group: "LUNA16 slices", examples: spread(of("luna16"), perSource) },
    { group: "São Paulo external set, COVID", examples: spread(ext.filter((e) => e.label === 1), perSource) },
    { group: "São Paulo external set, non-COVID", examples: spread(ext.filter((e) => e.label === 0), perSource) },
    { group: "MedSeg, most lesion (dense consolidation)", examples: dense },
  ];
}
