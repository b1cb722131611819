/**
 * Lung probes (beyond the paper; issue 16): where in the image does a diagnosis model find its
 * signal? The image-only classifier is trained and tested on images with one part blanked:
 *   lungs-only     everything outside the lung mask set to LUNG_PROBE_CONSTANT;
 *   lungs-removed  the lungs set to LUNG_PROBE_CONSTANT;
 * beside its reference at the same input size:
 *   whole-image    nothing blanked.
 * The two blanking probes are exact complements: each pixel keeps its value in one of them and
 * holds the constant in the other. If "lungs removed" still separates a test set's classes, that
 * test set can be solved without looking at a lung (source, framing, body, scanner): it cannot
 * measure COVID-19.
 */
import { Example } from "../data/examples";
import { ImageFilter } from "./inputs";
import { LungMaskProvider, lungMasks } from "./masks";
import { LungProbe, probeUsesLungs } from "./lung-probe-names";

export { isLungProbe, LUNG_PROBE_INPUT_SIZE, LUNG_PROBES, LungProbe, probeUsesLungs } from "./lung-probe-names";

/** The gray value blanked pixels take: 0, the black of air (outside the body, inside the lungs on a lung window). */
export const LUNG_PROBE_CONSTANT = 0;

/** One image with the probe applied (gray bytes and a 0/1 mask of the same size); whole-image returns a copy. */
export function applyLungProbe(gray: Uint8Array, mask: Uint8Array, probe: LungProbe, constant = LUNG_PROBE_CONSTANT): Uint8Array {
  if (gray.length !== mask.length) throw new Error(`applyLungProbe: ${gray.length} pixels but a mask of ${mask.length}`);
  if (probe === "whole-image") return gray.slice();
  const keepLung = probe === "lungs-only";
  const out = new Uint8Array(gray.length);
  for (let i = 0; i < gray.length; i++) out[i] = (mask[i] ? keepLung : !keepLung) ? gray[i] : constant;
  return out;
}

/**
 * The probe as an image filter of the diagnosis inputs: the lung masks come from the run's
 * provider, aligned at `size`. The whole-image reference has none (undefined): its features are
 * the unfiltered ones, shared with every other run at that size.
 */
export function lungProbeFilter(probe: LungProbe, provider: LungMaskProvider | null, size: number): ImageFilter | undefined {
  if (!probeUsesLungs(probe)) return undefined;
  if (!provider) throw new Error(`lung probe '${probe}' needs lung masks, and the run has none`);
  return {
    id: `lung-probe:${probe}:${provider.id}:${LUNG_PROBE_CONSTANT}`,
    apply: async (images: Uint8Array[], examples: readonly Example[]) => {
      const masks = await lungMasks(examples, size, provider);
      return images.map((g, i) => applyLungProbe(g, masks[i], probe));
    },
  };
}
