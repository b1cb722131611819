/**
 * The grids of the studies, registered from the code the notebooks run: each entry is a cell the
 * notebook's grid function trains (table5Cells, table6Cells) at the directory the notebook looks
 * in. CSSL registers `pretrain` entries and fine-tuning entries whose dependsOn names them.
 */
import * as path from "path";
import type { ProtocolName } from "../protocols";
import { builtModelName, defaultRunDir, DiagnosisConfig, effectiveInit, variantName } from "../diagnosis/config";
import { table5Cells } from "../studies/study1";
import { table6Cells } from "../studies/study2";
import { table7Cell, notRunReason, pretrainConfigOf, TABLE7_ROWS } from "../studies/cssl";
import { defaultPretrainDir } from "../ssl/pretrain";
import { getProfile } from "../training/profiles";
import { DEFAULT_RUNS_ROOT, GridEntry, GridRequest, registerGrid } from "./grid";

/** The grid entry of one diagnosis run: its `covid-ct train` command and where it writes. */
export function trainEntry(c: DiagnosisConfig, req: GridRequest, dependsOn: string[] = []): GridEntry {
  const profile = getProfile(c.profile);
  const root = path.resolve(req.runsRoot ?? DEFAULT_RUNS_ROOT);
  // The notebook's directory, moved under the requested runs root (same relative layout).
  const rel = path.relative(DEFAULT_RUNS_ROOT, defaultRunDir(c));
  const built = builtModelName(c, profile);
  const variant = variantName(c);
  return {
    study: c.study ?? "study1",
    id: path.basename(rel),
    command: "train",
    args: [
      "--model", c.model, "--positives", c.positives, "--profile", c.profile, "--protocol", c.protocol ?? "official", "--seed", String(c.seed),
      ...(c.study && c.study !== "study1" ? ["--study", c.study] : []),
      ...(variant ? ["--variant", variant.replace("-", "+")] : []),
      ...(c.init !== undefined ? ["--init", c.init] : []),
      ...(c.epochs !== undefined ? ["--epochs", String(c.epochs)] : []),
      ...(c.harmonise && c.harmonise !== "none" ? ["--harmonise", c.harmonise] : []),
    ],
    runDir: path.join(root, rel),
    dependsOn,
    config: {
      study: c.study ?? "study1", protocol: c.protocol ?? "official", profile: c.profile, model: c.model, modelBuilt: built, arm: c.positives,
      ...(variant ? { variant } : {}), init: effectiveInit(c, profile), seed: c.seed, epochs: c.epochs ?? profile.epochs, ...(c.harmonise && c.harmonise !== "none" ? { harmonise: c.harmonise } : {}),
    },
  };
}

/** Harmonisation is measured for Study I only (lung masks and MoCo encoders see unharmonised images). */
function refuseHarmonise(study: string, req: GridRequest): void {
  if (req.harmonise && req.harmonise !== "none") throw new Error(`--harmonise ${req.harmonise}: harmonisation is measured for Study I (study1) only, not ${study}.`);
}

registerGrid({
  study: "study1",
  description: "Study I (Table 5): models × positive arms × seeds, each one `covid-ct train`",
  notebook: "02",
  entries(req) {
    return table5Cells({ profile: req.profile, protocol: req.protocol as ProtocolName, seeds: req.seeds, epochs: req.epochs, harmonise: req.harmonise }).map((c) => trainEntry(c, req));
  },
});

registerGrid({
  study: "study2",
  description: "Study II (Table 6): DenseNet-169 × (arm, lung/lesion variant) × seeds under the paper protocol; the image-only rows of Study I's arms are Study I's runs (its grid)",
  notebook: "03",
  entries(req) {
    if (req.protocol !== "paper") throw new Error("Study II is measured under the paper protocol: use --protocol paper.");
    refuseHarmonise("study2", req);
    return table6Cells({ profile: req.profile, seeds: req.seeds, epochs: req.epochs, includeStudyOne: false }).map((c) => trainEntry(c, req));
  },
});

registerGrid({
  study: "cssl",
  description: "CSSL (Table 7): MoCo pretraining (`pretrain`, from ImageNet and from random) and the Study II best model fine-tuned per init × seeds; MoCo rows depend on their pretraining (afterok)",
  notebook: "04",
  entries(req) {
    if (req.protocol !== "paper") throw new Error("CSSL is measured under the paper protocol: use --protocol paper.");
    refuseHarmonise("cssl", req);
    const root = path.resolve(req.runsRoot ?? DEFAULT_RUNS_ROOT);
    const pre = new Map<string, GridEntry>();
    for (const row of TABLE7_ROWS) {
      if (!row.pretrainFrom || pre.has(row.pretrainFrom) || notRunReason(row, req.profile)) continue;
      const c = pretrainConfigOf(row.pretrainFrom, req.profile);
      const rel = path.relative(DEFAULT_RUNS_ROOT, defaultPretrainDir(c));
      // Under smoke both MoCo rows share one pretraining (tiny models: random init only).
      const same = [...pre.values()].find((e) => e.id === path.basename(rel));
      if (same) { pre.set(row.pretrainFrom, same); continue; }
      pre.set(row.pretrainFrom, {
        study: "cssl",
        id: path.basename(rel),
        command: "pretrain",
        args: ["--method", c.method, "--model", c.model, "--init", c.init, "--protocol", c.protocol ?? "paper", "--profile", c.profile, "--seed", String(c.seed)],
        runDir: path.join(root, rel),
        dependsOn: [],
        config: { study: "cssl", stage: "pretrain", protocol: "paper", profile: req.profile, model: c.model, method: c.method, init: c.init, seed: c.seed },
      });
    }
    const seeds = req.seeds ?? getProfile(req.profile).seeds;
    const fine = TABLE7_ROWS.filter((row) => !notRunReason(row, req.profile)).flatMap((row) =>
      seeds.map((seed) => {
        const p = row.pretrainFrom ? pre.get(row.pretrainFrom)! : undefined;
        const e = trainEntry(table7Cell(row, seed, { profile: req.profile, epochs: req.epochs }, p?.runDir), req, p ? [p.id] : []);
        return { ...e, config: { ...e.config, stage: "fine-tune", row: row.key } };
      }),
    );
    // Smoke: the two MoCo rows are one run (one shared pretraining): list it once.
    const unique = fine.filter((e, i) => fine.findIndex((f) => f.id === e.id) === i);
    return [...new Set(pre.values()), ...unique];
  },
});
