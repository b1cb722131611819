/**
 * The CSSL ablation (paper Section 4, "Experimental settings", Table 7): the best Study II model —
 * DenseNet-169 with the lung mask as input and the ASPP lesion branch, trained on Combination under
 * the paper protocol — initialised three ways: randomly, from ImageNet (transfer learning, TL), and
 * from ImageNet followed by MoCo contrastive self-supervised pretraining on the protocol's training
 * CT images (TL + CSSL); plus MoCo from a random init (CSSL without TL, beyond the paper).
 *
 * A Table 7 row is a cell of the one diagnosis run (lib/diagnosis, runDiagnosis) with study "cssl" and an
 * `init`; the MoCo rows' init is `checkpoint:<pretraining run>` (lib/ssl/pretrain.ts), so their
 * fine-tuning depends on that run (grid: dependsOn; Slurm: afterok).
 */
import * as path from "path";
import { Example } from "../data/examples";
import { protocolExamples, selectProtocol } from "../protocols";
import { builtPretrainModel, defaultPretrainDir, getPretrainProfile, PretrainConfig, PretrainInit, PretrainResult, runPretraining } from "../ssl/pretrain";
import { getProfile, ProfileName } from "../training/profiles";
import { DiagnosisConfig, DiagnosisHooks, STUDY_INPUT_SIZE } from "../diagnosis/config";
import { DiagnosisResult, finished } from "../diagnosis/results";
import { runDiagnosis } from "../diagnosis/run";

/** Study II's best model, the one Table 7 fine-tunes. */
export const CSSL_FINETUNE: Pick<DiagnosisConfig, "model" | "positives" | "lungMask" | "lesionMask" | "protocol"> = {
  model: "densenet169",
  positives: "combination",
  lungMask: true,
  lesionMask: true,
  protocol: "paper",
};

/** One row of Table 7: a plain init, or MoCo pretraining from an init. */
export interface TableSevenRow {
  /** PAPER_TABLE7 key ("random", "imagenet", "imagenet+moco") or "random+moco" (beyond the paper). */
  key: string;
  label: string;
  /** Plain initialisation of the fine-tuned backbone … */
  init?: "random" | "imagenet";
  /** … or the MoCo encoder pretrained from this init. */
  pretrainFrom?: PretrainInit;
}

export const TABLE7_ROWS: readonly TableSevenRow[] = [
  { key: "random", label: "random init", init: "random" },
  { key: "imagenet", label: "ImageNet (TL)", init: "imagenet" },
  { key: "imagenet+moco", label: "ImageNet + MoCo (TL + CSSL)", pretrainFrom: "imagenet" },
  { key: "random+moco", label: "random + MoCo (CSSL without TL; not in the paper)", pretrainFrom: "random" },
];

/** CSSL fine-tuning input size per profile, where it differs from the profile's (see STUDY_INPUT_SIZE). */
export const CSSL_INPUT_SIZE = STUDY_INPUT_SIZE.cssl ?? {};

/** The pretraining run of a MoCo row (one per init; seed 1: a pretraining serves every fine-tuning seed). */
export function pretrainConfigOf(init: PretrainInit, profile: ProfileName, o: { force?: boolean; epochs?: number } = {}): PretrainConfig {
  // A profile of tiny stand-ins (smoke) has no ImageNet weights: both MoCo rows share its random-init pretraining.
  const built = builtPretrainModel({ model: "densenet169", init }, getPretrainProfile(profile));
  return { method: "moco", model: "densenet169", init: built.init, protocol: "paper", profile, seed: 1, ...(o.force ? { force: true } : {}) };
}

export interface Table7Grid {
  profile: ProfileName;
  seeds?: readonly number[];
  force?: boolean;
  /** Override the fine-tuning epochs. */
  epochs?: number;
  rows?: readonly TableSevenRow[];
}

/** The fine-tuning config of one Table 7 row and seed (`pretrainDir`: where its MoCo run is). */
export function table7Cell(r: TableSevenRow, seed: number, g: Pick<Table7Grid, "profile" | "epochs" | "force">, pretrainDir?: string): DiagnosisConfig {
  const init = r.pretrainFrom ? `checkpoint:${pretrainDir ?? defaultPretrainDir(pretrainConfigOf(r.pretrainFrom, g.profile))}` : r.init!;
  return { ...CSSL_FINETUNE, study: "cssl", profile: g.profile, seed, init, ...(g.epochs !== undefined ? { epochs: g.epochs } : {}), ...(g.force ? { force: true } : {}) };
}

/** Why a row cannot run under a profile (null: it can): tiny stand-in models have no ImageNet weights. */
export function notRunReason(row: TableSevenRow, profile: ProfileName): string | null {
  return getProfile(profile).tinyModels && (row.init === "imagenet" || row.pretrainFrom === "imagenet")
    ? `not run under '${profile}': its tiny stand-in model has no ImageNet weights`
    : null;
}

export function table7Cells(g: Table7Grid): { row: TableSevenRow; config: DiagnosisConfig }[] {
  const seeds = g.seeds ?? getProfile(g.profile).seeds;
  return (g.rows ?? TABLE7_ROWS).filter((row) => !notRunReason(row, g.profile)).flatMap((row) => seeds.map((seed) => ({ row, config: table7Cell(row, seed, g) })));
}

export interface CsslResults {
  /** Pretraining runs by init ("imagenet", "random"). */
  pretraining: Partial<Record<PretrainInit, Extract<PretrainResult, { interrupted: false }>>>;
  /** Fine-tuning runs with their row. */
  runs: { row: TableSevenRow; result: DiagnosisResult }[];
}

/** Pretrain (or reuse) the MoCo encoders, then fine-tune (or reuse) every Table 7 cell. */
export async function runTable7(g: Table7Grid, hooks: DiagnosisHooks & { onRun?: (what: string, i: number, n: number) => void } = {}): Promise<CsslResults> {
  const rows = (g.rows ?? TABLE7_ROWS).filter((r) => !notRunReason(r, g.profile));
  const inits = [...new Set(rows.map((r) => r.pretrainFrom).filter((x): x is PretrainInit => !!x))];
  const cells = table7Cells(g);
  const n = inits.length + cells.length;
  const pretraining: CsslResults["pretraining"] = {};
  let i = 0;
  const done = new Map<string, Extract<PretrainResult, { interrupted: false }>>();
  for (const init of inits) {
    hooks.onRun?.(`MoCo pretraining from ${init}`, i++, n);
    const c = pretrainConfigOf(init, g.profile, { force: g.force });
    const key = defaultPretrainDir(c);
    if (!done.has(key)) {
      const r = await runPretraining(c, { log: hooks.log });
      if (r.interrupted) throw new Error(`Pretraining ${r.runDir} stopped early; continue it with \`covid-ct pretrain … --resume\`.`);
      done.set(key, r);
    }
    pretraining[init] = done.get(key)!;
  }
  const runs: CsslResults["runs"] = [];
  for (const { row, config } of cells) {
    hooks.onRun?.(`fine-tuning, ${row.label}, seed ${config.seed}`, i++, n);
    runs.push({ row, result: finished(await runDiagnosis(config, hooks)) });
  }
  return { pretraining, runs };
}

/** The pretraining run directory a checkpoint init names (null for random / imagenet). */
export function checkpointDir(init: string | undefined): string | null {
  return init?.startsWith("checkpoint:") ? path.resolve(init.slice("checkpoint:".length)) : null;
}

/** The paper protocol's validation images (the embedding plot's points). */
export async function validationExamples(): Promise<Example[]> {
  const p = await selectProtocol({ protocol: "paper" });
  return [...protocolExamples(p, "val", "covid"), ...protocolExamples(p, "val", "noncovid")];
}
