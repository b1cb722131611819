/**
 * The options every run command shares (`train`, `pretrain`, `lungs`, `grid`, and `protocol` for
 * --seed), declared and validated here once: an empty value, a negative seed or an unknown name is
 * refused while the command line is parsed, before anything is read or written.
 */
import { Option } from "commander";
import { HARMONISE_NAMES } from "./data/harmonise";
import { PROFILE_NAMES } from "./training/profiles";
import { parseInteger, requireNonEmpty, requireOneOf } from "./util/checks";

/** A parser for an integer flag: '1.5', 'abc', '' and out-of-range values are errors. */
export function intArg(flag: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => parseInteger(flag, v, min, max);
}

/** A parser for a name from a fixed list. */
export function oneOf(flag: string, names: readonly string[]) {
  return (v: string): string => requireOneOf(flag, v, names);
}

/** A parser for a path: '' and blanks are errors (they would silently mean the default or the current folder). */
export function nonEmpty(flag: string, hint = "") {
  return (v: string): string => requireNonEmpty(flag, v, hint);
}

export const PROTOCOLS = ["official", "paper"] as const;

/** The shared options; each command picks what it takes and says what the option means for it. */
export const runOptions = {
  out: (what: string) => new Option("--out <dir>", what).argParser(nonEmpty("--out", "a folder")),
  resume: () => new Option("--resume", "continue an interrupted run from its last checkpoint (the configuration must match the stored one)"),
  force: () => new Option("--force", "replace the run directory's run (only a run directory of covid-ct; the old run survives until the new one finishes)"),
  data: () => new Option("--data <dir>", "COVID-CT release root (else $COVIDCT_DATA, data/covid-ct, ../shared/datasets/covid-ct)").argParser(nonEmpty("--data", "the COVID-CT release folder")),
  weights: () => new Option("--weights <dir>", "pretrained weights root").argParser(nonEmpty("--weights", "a folder holding <set>/model.json")),
  seed: (what: string, byDefault: number | undefined = 1) => {
    const o = new Option("--seed <n>", `${what} (integer ≥ 0)`).argParser(intArg("--seed", 0));
    return byDefault === undefined ? o : o.default(byDefault);
  },
  epochs: (what = "override the profile's epoch count (integer ≥ 1)") => new Option("--epochs <n>", what).argParser(intArg("--epochs", 1, 100000)),
  profile: (what = "paper | quick | smoke (see README, Profiles)") => new Option("--profile <name>", what).argParser(oneOf("--profile", PROFILE_NAMES)).default("quick"),
  harmonise: (what = "make the sources look alike first: none | body-histogram (body grey levels matched to the training images' mean; README, Harmonisation, measured)") =>
    new Option("--harmonise <name>", what).argParser(oneOf("--harmonise", HARMONISE_NAMES)).default("none"),
  protocol: (what: string, byDefault?: (typeof PROTOCOLS)[number]) => {
    const o = new Option("--protocol <name>", what).argParser(oneOf("--protocol", PROTOCOLS));
    return byDefault === undefined ? o : o.default(byDefault);
  },
};

/** --resume and --force together: refused, whichever command. */
export function checkResumeForce(o: { resume?: boolean; force?: boolean }): void {
  if (o.resume && o.force) throw new Error("--resume and --force contradict each other: --resume continues the stored run, --force replaces it. Use one.");
}
