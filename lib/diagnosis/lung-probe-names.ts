/**
 * The lung probes' names and sizes (lib/diagnosis/lung-probe.ts applies them): a module without
 * tfjs, so the CLI can list them without loading a backend.
 */
import type { ProfileName } from "../training/profiles";

export const LUNG_PROBES = ["whole-image", "lungs-only", "lungs-removed"] as const;
export type LungProbe = (typeof LUNG_PROBES)[number];

export function isLungProbe(x: unknown): x is LungProbe {
  return typeof x === "string" && (LUNG_PROBES as readonly string[]).includes(x);
}

/** Whether a probe blanks with the lung masks (the whole-image reference needs no U-Net). */
export function probeUsesLungs(p: LungProbe): boolean {
  return p !== "whole-image";
}

/**
 * Input side of the probes per profile, where it differs from the profile's. The probes compare
 * their rows with each other, so all three share one size. `quick`: 112², as CSSL's fine-tuning
 * (STUDY_INPUT_SIZE): each probe extracts DenseNet-169 features of ~1,700 blanked images, and at
 * 224² that took 6 min 20 s a probe on 2 cores (189 vs 47 ms an image at 224² vs 112², measured
 * side by side on wasm).
 */
export const LUNG_PROBE_INPUT_SIZE: Partial<Record<ProfileName, number>> = { quick: 112 };

