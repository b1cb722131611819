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
