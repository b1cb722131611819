/**
 * Lung probes (beyond the paper; issue 16): where in the image does a diagnosis model find its
 * signal? The image-only classifier is trained and tested on images with one part blanked:
 *   lungs-only     everything outside the lung mask set to LUNG_PROBE_CONSTANT;
 *   lungs-removed  the lungs set to LUNG_PROBE_CONSTANT.
 * The two are exact complements: each pixel keeps its value in one of them and holds the constant
 * in the other. If "lungs removed" still separates a test set's classes, that test set can be
 * solved without looking at a lung (source, framing, body, scanner): it cannot measure COVID-19.
 */
import { Example } from "../data/examples";
import { ImageFilter } from "./inputs";
import { LungMaskProvider, lungMasks } from "./masks";

export const LUNG_PROBES = ["lungs-only", "lungs-removed"] as const;
export type LungProbe = (typeof LUNG_PROBES)[number];

export function isLungProbe(x: unknown): x is LungProbe {
  return typeof x === "string" && (LUNG_PROBES as readonly string[]).includes(x);
}

/** The gray value blanked pixels take: 0, the black of air (outside the body, inside the lungs on a lung window). */
export const LUNG_PROBE_CONSTANT = 0;

/** One image with the probe applied (gray bytes and a 0/1 mask of the same size). */
export function applyLungProbe(gray: Uint8Array, mask: Uint8Array, probe: LungProbe, constant = LUNG_PROBE_CONSTANT): Uint8Array {
  if (gray.length !== mask.length) throw new Error(`applyLungProbe: ${gray.length} pixels but a mask of ${mask.length}`);
  const keepLung = probe === "lungs-only";
  const out = new Uint8Array(gray.length);
  for (let i = 0; i < gray.length; i++) out[i] = (mask[i] ? keepLung : !keepLung) ? gray[i] : constant;
  return out;
}

/** The probe as an image filter of the diagnosis inputs: the lung masks come from the run's provider, aligned at `size`. */
export function lungProbeFilter(probe: LungProbe, provider: LungMaskProvider, size: number): ImageFilter {
  return {
    id: `lung-probe:${probe}:${provider.id}:${LUNG_PROBE_CONSTANT}`,
    apply: async (images: Uint8Array[], examples: readonly Example[]) => {
      const masks = await lungMasks(examples, size, provider);
      return images.map((g, i) => applyLungProbe(g, masks[i], probe));
    },
  };
}
