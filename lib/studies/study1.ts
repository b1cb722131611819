/**
 * Study I (paper Section 3, Table 5): is CT extracted from papers useful for training?
 * DenseNet-169 / ResNet-50 from ImageNet, and the shortcut baseline beside them, each trained on one
 * of three positive training sets (arms, lib/diagnosis/arms.ts) with the protocol's negatives,
 * validation and test sets. Every cell is one diagnosis run (lib/diagnosis).
 *
 * Arms: official protocol covid-ct-all (191; paper: COVID-CT-349), covid-ct-118, original-ct (50
 * MedSeg slices; paper: COVID-Seg); paper protocol covid-seg, covid-ct-349, covid-ct-118.
 */
import { armsOf, PositiveArm } from "../diagnosis/arms";
import type { HarmoniseName } from "../data/harmonise";
import { DiagnosisConfig, DiagnosisHooks, DiagnosisModel } from "../diagnosis/config";
import { DiagnosisResult } from "../diagnosis/results";
import { CellHooks, runCells } from "../diagnosis/run";
import type { ProtocolName } from "../protocols";
import { getProfile, ProfileName } from "../training/profiles";

/** Table 5's models, and the shortcut baseline trained and tested beside them. */
export const STUDY1_MODELS = ["densenet169", "resnet50", "shortcut"] as const;

export interface Table5Grid {
  profile: ProfileName;
  protocol?: ProtocolName;
  models?: readonly DiagnosisModel[];
  arms?: readonly PositiveArm[];
  /** Default: the profile's seeds. */
  seeds?: readonly number[];
  force?: boolean;
  epochs?: number;
  dataRoot?: string;
  medsegRoot?: string;
  weightsRoot?: string;
  /** Harmonisation of every cell (default none; lib/data/harmonise.ts): harmonised runs have their own directories. */
  harmonise?: HarmoniseName;
}

/** Every cell of Table 5 (models × arms × seeds) as run configs: the one list the notebook, the CLI and a cluster see. */
export function table5Cells(g: Table5Grid): DiagnosisConfig[] {
  const p = getProfile(g.profile);
  const models = g.models ?? STUDY1_MODELS;
  const arms = g.arms ?? armsOf(g.protocol ?? "official");
  const seeds = g.seeds ?? p.seeds;
  const cells: DiagnosisConfig[] = [];
  for (const model of models) for (const positives of arms) for (const seed of seeds) {
    cells.push({ model, positives, profile: g.profile, protocol: g.protocol ?? "official", seed, force: g.force, epochs: g.epochs, dataRoot: g.dataRoot, medsegRoot: g.medsegRoot, weightsRoot: g.weightsRoot, ...(g.harmonise && g.harmonise !== "none" ? { harmonise: g.harmonise } : {}) });
  }
  return cells;
}

/** Every cell of Table 5, reusing finished runs. */
export async function runTable5(g: Table5Grid, hooks: CellHooks = {}): Promise<DiagnosisResult[]> {
  return runCells(table5Cells(g), hooks);
}
