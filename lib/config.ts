/**
 * Where the project finds its data and weights. Every entry point (CLI, notebooks, tests) resolves
 * roots through here so the order is the same everywhere:
 *   explicit flag (--data) → env (COVIDCT_DATA, COVIDCT_MEDSEG, COVIDCT_COVIDSEG, COVIDCT_LUNA, COVIDCT_SARS, COVIDCT_SEGLUNGS)
 *   → <project>/data/<set> if present → ../shared/datasets/<set> beside the project if present
 *   → <project>/data/covid-ct (the place `covid-ct fetch-data` fills).
 */
import * as fs from "fs";
import * as path from "path";

/** Root of this repository (the folder holding package.json), from source or from dist/. */
export const PROJECT_ROOT: string = (() => {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, "package.json");
    if (fs.existsSync(p) && JSON.parse(fs.readFileSync(p, "utf8")).name === "covid-ct") return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`covid-ct: cannot find the project root above ${__dirname}`);
})();

export type RootSource = "flag" | "env" | "project" | "shared" | "default";
export interface ResolvedRoot {
  dir: string;
  source: RootSource;
}

/**
 * An empty flag or variable is an error, never "use the default": `--data ''` or `COVIDCT_DATA=''`
 * usually means a script lost its value, and falling back to another copy would hide that.
 */
function resolveRoot(flag: string | undefined, envName: string, projectRel: string, sharedRel: string, flagName = "the data root"): ResolvedRoot {
  if (flag !== undefined) {
    if (flag.trim() === "") throw new Error(`${flagName} is empty ('${flag}'): give the folder, or leave it out to use ${envName} or the default.`);
    return { dir: path.resolve(flag), source: "flag" };
  }
  const env = process.env[envName];
  if (env !== undefined) {
    if (env.trim() === "") throw new Error(`${envName} is set but empty ('${env}'): set it to the folder, or unset it (\`unset ${envName}\`) to use the default.`);
    return { dir: path.resolve(env), source: "env" };
  }
  const project = path.join(PROJECT_ROOT, projectRel);
  if (fs.existsSync(project) && fs.readdirSync(project).length > 0) return { dir: project, source: "project" };
  const shared = path.resolve(PROJECT_ROOT, "..", "shared", sharedRel);
  if (fs.existsSync(shared)) return { dir: shared, source: "shared" };
  return { dir: project, source: "default" };
}

/** COVID-CT release root (contains Images-processed/, Data-split/, COVID-CT-MetaInfo.xlsx). */
export function resolveDataRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_DATA", path.join("data", "covid-ct"), path.join("datasets", "covid-ct"), "--data");
}

/** MedSeg COVID-19 slices with infection masks (train/, test/). */
export function resolveMedsegRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_MEDSEG", path.join("data", "medseg-covid19"), path.join("datasets", "medseg-covid19"));
}

/** The paper's COVID-Seg: slices of the 20 COVID-19-CT-Seg volumes (images/, pseudo-infection/). */
export function resolveCovidSegRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_COVIDSEG", path.join("data", "covid19-ct-seg-slices"), path.join("datasets", "covid19-ct-seg-slices"));
}

/** LUNA16 slices, 2 per series (`<series UID>.mhd_<z>.png`). */
export function resolveLunaRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_LUNA", path.join("data", "luna16-slices"), path.join("datasets", "luna16-slices"));
}

/**
 * The São Paulo "SARS-CoV-2 CT-scan dataset" subset (COVID/, non-COVID/): the external test set of
 * both protocols. Never trained on; no patient ids.
 */
export function resolveSarsRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_SARS", path.join("data", "sars-cov-2-ct-scan"), path.join("datasets", "sars-cov-2-ct-scan"));
}

/**
 * Radiologists' lung and infection masks on 162 COVID-19-CT-Seg slices (images/, lungs/, infection/,
 * slices.csv with volume blocks): what the lung U-Net learns from and is measured against.
 */
export function resolveSegLungsRoot(flag?: string): ResolvedRoot {
  return resolveRoot(flag, "COVIDCT_SEGLUNGS", path.join("data", "covid19-ct-seg-lungs"), path.join("datasets", "covid19-ct-seg-lungs"));
}

/* Pretrained weights are located per weight set by models/weights.ts weightsSearchPath. */

/** Cache for preprocessed images and features (safe to delete). */
export function cacheDir(): string {
  return process.env.COVIDCT_CACHE ? path.resolve(process.env.COVIDCT_CACHE) : path.join(PROJECT_ROOT, ".cache");
}

let cacheWrites: string | null = null;

/**
 * Send new entries of the cache under cacheDir() to `dir` instead (reads look there first, then in
 * cacheDir()); null restores the default. `covid-ct predict` points it into its output folder's
 * scratch space, so scoring a user's files reads the project's cache but writes nothing outside --out.
 */
export function redirectCacheWrites(dir: string | null): void {
  cacheWrites = dir === null ? null : path.resolve(dir);
}

/** Where new entries of cacheDir()'s cache go now (see redirectCacheWrites), or null for cacheDir() itself. */
export function cacheWriteDir(): string | null {
  return cacheWrites;
}
