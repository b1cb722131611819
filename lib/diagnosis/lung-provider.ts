/**
 * The lung masks Study II's runs use (Fig. 4A): the residual U-Net of the profile (lib/lungs),
 * trained once on the radiologists' lung masks of covid19-ct-seg-lungs and reused by every run. Its weight hash
 * identifies the masks: it goes into every run's checksums and every aligned-mask cache key, so a
 * retrained segmenter never reuses a run or a mask made with another.
 */
import * as fs from "fs";
import * as path from "path";
import { ensureLungSegmenter, LungMetrics } from "../lungs/segmenter";
import { ProfileName } from "../training/profiles";
import { LungMaskProvider, LungMaskQuality } from "./masks";

/** The segmenter run's measurements as the quality table's rows (the experts' own masks first, as the reference). */
function qualityOf(m: LungMetrics): Record<string, LungMaskQuality> {
  return {
    "radiologists' lung masks (test blocks: the reference)": { expertDice: 1, medsegCoverage: NaN, chestWall: m.chestWall.expertTest.experts.share, lungShare: m.lungShare.expertTest.experts },
    "classical extractor (baseline)": { expertDice: m.expertTest.classical.pooled.dice, medsegCoverage: m.medsegCoverage.classical.pooled.coverage, chestWall: m.chestWall.medseg.classical.share, lungShare: m.lungShare.medseg.classical },
    "residual U-Net (used by the runs)": { expertDice: m.expertTest.unet.pooled.dice, medsegCoverage: m.medsegCoverage.unet.pooled.coverage, chestWall: m.chestWall.medseg.unet.share, lungShare: m.lungShare.medseg.unet },
  };
}

/** How the run's masks are predicted, in words (runs before ensembleLastEpoch/testTimeFlip: the selected epoch alone). */
function predictionNote(m: LungMetrics): string {
  const p = m.prediction;
  if (!p || (p.members.length === 1 && !p.flip)) return ` (epoch ${m.bestEpoch + 1}, selected on validation Dice)`;
  const epochs = p.members.length > 1 ? `mean of epoch ${m.bestEpoch + 1} (selected on validation Dice) and the last, epoch ${p.lastEpoch + 1}` : `epoch ${m.bestEpoch + 1} (selected on validation Dice)`;
  const flip = p.flip ? (p.members.length > 1 ? ", each also predicting the mirrored slice" : ", also predicting the mirrored slice") : "";
  return ` (${epochs}${flip}; threshold ${m.threshold})`;
}

const providers = new Map<string, Promise<LungMaskProvider>>();

/** The lung-mask provider of a profile's Study II runs: its U-Net (trained on first use), memoised per process. */
export function studyLungMasks(profile: ProfileName, log: (m: string) => void = () => undefined): Promise<LungMaskProvider> {
  if (!providers.has(profile)) {
    const p = (async (): Promise<LungMaskProvider> => {
      const seg = await ensureLungSegmenter({ profile, log });
      const metrics = JSON.parse(fs.readFileSync(path.join(seg.runDir, "metrics.json"), "utf8")) as LungMetrics;
      return {
        id: `resunet:${seg.modelSha256.slice(0, 16)}`,
        description: `residual U-Net, ${path.relative(process.cwd(), seg.runDir) || seg.runDir}${predictionNote(metrics)}`,
        quality: qualityOf(metrics),
        perSlice: metrics.expertTest.perSlice,
        maskFor: (file, source) => seg.maskFor(file, source),
        masksFor: (items, onProgress) => seg.masksFor(items, onProgress),
      };
    })();
    providers.set(profile, p.catch((e) => { providers.delete(profile); throw e; }));
  }
  return providers.get(profile)!;
}
