/**
 * The lung masks Study II's runs use (Fig. 4A): one provider per profile, identified by a hash that
 * goes into every run's checksums, so a retrained segmenter never reuses a run made with other masks.
 */
import { createHash } from "crypto";
import { extractLungsFromFile, LUNG_DEFAULTS } from "../lungs/classical";
import { ProfileName } from "../training/profiles";
import { LungMaskProvider } from "./masks";

/** The classical extractor's masks (lib/lungs/classical.ts) as a provider. */
export function classicalLungMasks(): LungMaskProvider {
  const id = `classical:${createHash("sha256").update(JSON.stringify(LUNG_DEFAULTS)).digest("hex").slice(0, 16)}`;
  return {
    id,
    async maskFor(file) {
      const m = await extractLungsFromFile(file);
      return { data: m.mask, height: m.height, width: m.width };
    },
  };
}

/** The lung-mask provider of a profile's Study II runs. */
export async function studyLungMasks(profile: ProfileName, log: (m: string) => void = () => undefined): Promise<LungMaskProvider> {
  void profile;
  log("lung masks: classical extractor");
  return classicalLungMasks();
}
