/**
 * The studies that share the diagnosis run, and the positive training sets ("arms") each one
 * trains on (Table 5's rows; Tables 6 and 7 add Combination).
 */
import type { ProtocolName } from "../protocols";

/**
 * Positive training sets per protocol (Table 5's rows).
 *   official: covid-ct-all (191), covid-ct-118 (a seeded 118 of them per run seed), original-ct (50 MedSeg slices)
 *   paper:    covid-ct-349, covid-ct-118, covid-seg (118 COVID-Seg slices of the 12 training volumes)
 */
export const ARMS = {
  official: ["covid-ct-all", "covid-ct-118", "original-ct"],
  paper: ["covid-seg", "covid-ct-349", "covid-ct-118"],
} as const;
export const POSITIVE_ARMS = ARMS.official;
/**
 * Study II's and CSSL's "Combination" (Table 6): COVID-CT-349 + the 118 COVID-Seg slices as
 * positives; paper protocol only.
 */
export const COMBINATION_ARM = "combination" as const;
export type PositiveArm = (typeof ARMS)[ProtocolName][number] | typeof COMBINATION_ARM;
/** The studies that share this run: Table 5, Table 6, Table 7. */
export const STUDY_NAMES = ["study1", "study2", "cssl"] as const;
export type StudyName = (typeof STUDY_NAMES)[number];
/** Arms of a study under a protocol: Study I's Table 5 arms; Studies II and CSSL add Combination (paper protocol only). */
export function armsOf(protocol: ProtocolName, study: StudyName = "study1"): readonly PositiveArm[] {
  if (study === "study1") return ARMS[protocol];
  return protocol === "paper" ? ["covid-ct-349", "covid-seg", "covid-ct-118", COMBINATION_ARM] : [];
}
