/**
 * Masks of Study II, brought onto the model's input: a lesion or lung mask is drawn on the image
 * file as it is stored (its own height × width and orientation); the model sees the image turned to
 * the common orientation, chest-cropped and resized. A mask must go through exactly that road, or
 * channel 4 (lung) and the lesion target do not lie on the image.
 *
 * Lesion masks (Study II, Fig. 4B — needed for training only):
 *   covid19-ct-seg  `pseudo-infection/<slice>.png`: Inf-Net's semi-supervised PSEUDO labels (8-bit, ≥ 128 = lesion)
 *   medseg          `<part>/infection/<N>.png`: radiologists' masks (0/255) — the honest test of a lesion output
 *   covid19-ct-seg-lungs  `infection/<NNNN>.png`: radiologists' masks (figures only: the lung segmenter's source)
 *   covid-ct, luna  none (COVID-CT figures have no masks; a non-COVID slice has no COVID lesion: see lesionTargetOf)
 */
import { cacheKey, contentHash, DiskCache, mapLimit, preprocessCached, PREPROCESS_VERSION } from "../data/cache";
import { decodeRaw } from "../data/decode";
import { orientPixels } from "../data/orientation";
import { normalisePreprocessOptions } from "../data/preprocess";
import { lesionMaskFolder, maskFileBeside, sourceOrientation } from "../data/sources";
import { alignMask } from "../lungs/input";
import { Example, examplePreprocess } from "../data/examples";

/** A binary mask (0/1) at its image file's own size and orientation. */
export interface FullMask {
  data: Uint8Array;
  height: number;
  width: number;
}

/** Where a lung mask of an image comes from (the U-Net run, or the classical extractor in tests). */
export interface LungMaskProvider {
  /** Identifies the masks (e.g. the U-Net's weight hash): part of every cache key built on them. */
  readonly id: string;
  /** What made the masks, in words (e.g. "residual U-Net, runs/lungs/…"). */
  readonly description?: string;
  /** Measured quality, by mask family ("classical", "unet"): the segmenter run's metrics. */
  readonly quality?: Record<string, LungMaskQuality>;
  /** Per held-out slice Dice against the radiologists (the segmenter run's test blocks). */
  readonly perSlice?: readonly { id: string; dice: number; iou: number }[];
  maskFor(file: string, source: NonNullable<Example["source"]>): Promise<FullMask>;
  /** maskFor over many files at once (batched predictions; optional). */
  masksFor?(items: readonly { file: string; source: NonNullable<Example["source"]> }[], onProgress?: (done: number, total: number) => void): Promise<FullMask[]>;
}

/** How good a family of lung masks is (lib/lungs measures it); NaN where not measured. */
export interface LungMaskQuality {
  /** Dice against the radiologists' lung masks on the held-out test blocks (pooled). */
  expertDice: number;
  /** Share of the radiologists' lesion pixels of the MedSeg slices inside the lung masks (pooled). */
  medsegCoverage: number;
  /** Chest-wall check: share of mask pixels that are dense non-lesion tissue (MedSeg; the experts' row: their own test slices). */
  chestWall: number;
  /** Mean share of the image inside the lung mask (MedSeg; the experts' row: their test slices). */
  lungShare: number;
}

/** The lesion mask file of an example, or null when its source has none. */
export function lesionMaskFile(e: Pick<Example, "path" | "source">): string | null {
  const source = e.source ?? "covid-ct";
  const folder = lesionMaskFolder(source);
  return folder ? maskFileBeside(e.path, folder, source, "lesion mask") : null;
}

/** Kind of lesion label an example carries: expert (MedSeg), pseudo (COVID-Seg), none. */
export function lesionLabelKind(e: Pick<Example, "source">): "expert" | "pseudo" | "none" {
  const folder = lesionMaskFolder(e.source ?? "covid-ct");
  return folder === "infection" ? "expert" : folder === "pseudo-infection" ? "pseudo" : "none";
}

/** Read a mask PNG as 0/1 (≥ 128 = 1: the pseudo masks hold some intermediate values). */
export async function readMaskFile(file: string): Promise<FullMask> {
  const m = await decodeRaw(file, 1);
  const data = new Uint8Array(m.height * m.width);
  for (let i = 0; i < data.length; i++) data[i] = m.data[i] >= 128 ? 1 : 0;
  return { data, height: m.height, width: m.width };
}

/**
 * A full-size mask of example e brought onto e's preprocessed image at `size`: turned like the image,
 * cropped with the image's own chest-crop box, resized with the same fit. Throws when the mask's
 * size differs from the image's (a mask of another image).
 */
export async function alignToExample(e: Example, size: number, mask: FullMask): Promise<Uint8Array> {
  const opts = examplePreprocess(e, size);
  const image = await preprocessCached(e.path, opts);
  if (image.source.height * image.source.width !== mask.height * mask.width) {
    throw new Error(`A mask of ${mask.width}×${mask.height} cannot belong to ${e.path} (${image.source.width}×${image.source.height} once turned upright).`);
  }
  const o = sourceOrientation(e.source ?? "covid-ct", e.path);
  const oriented = orientPixels(mask.data, mask.height, mask.width, 1, o);
  return alignMask(oriented.data, oriented.height, oriented.width, image, normalisePreprocessOptions(opts).fit);
}

/**
 * Aligned masks of many examples, cached on disk by (image content, mask identity, size):
 * `kind` names the mask family ("lesion", or "lung:<provider id>"); `load` gives the full mask of an
 * example or null (no mask: the result is null too).
 */
export async function alignedMasks(
  examples: readonly Example[],
  size: number,
  kind: string,
  load: (e: Example) => Promise<FullMask | null> | FullMask | null,
): Promise<(Uint8Array | null)[]> {
  const cache = new DiskCache();
  return mapLimit(examples, 4, async (e) => {
    const key = cacheKey("aligned-mask", PREPROCESS_VERSION, contentHash(e.path), kind, examplePreprocess(e, size));
    const hit = cache.get("aligned-masks", key);
    if (hit && hit.length === size * size) return new Uint8Array(hit);
    if (hit && hit.length === 0) return null;
    const full = await load(e);
    if (!full) {
      cache.put("aligned-masks", key, new Uint8Array(0));
      return null;
    }
    const m = await alignToExample(e, size, full);
    cache.put("aligned-masks", key, m);
    return m;
  });
}

/** Lesion masks of examples at `size` (null where the source has none). */
export function lesionMasks(examples: readonly Example[], size: number): Promise<(Uint8Array | null)[]> {
  return alignedMasks(examples, size, "lesion", async (e) => {
    const f = lesionMaskFile(e);
    return f ? readMaskFile(f) : null;
  });
}

/** Lung masks of examples at `size` from a provider (every example gets one). */
export async function lungMasks(examples: readonly Example[], size: number, provider: LungMaskProvider): Promise<Uint8Array[]> {
  const kind = `lung:${provider.id}`;
  if (provider.masksFor) {
    // Full masks of the examples not aligned yet, predicted in batches (the provider caches them).
    const cache = new DiskCache();
    const todo = examples.filter((e) => !cache.get("aligned-masks", cacheKey("aligned-mask", PREPROCESS_VERSION, contentHash(e.path), kind, examplePreprocess(e, size))));
    if (todo.length) await provider.masksFor(todo.map((e) => ({ file: e.path, source: e.source ?? "covid-ct" })));
  }
  const out = await alignedMasks(examples, size, kind, (e) => provider.maskFor(e.path, e.source ?? "covid-ct"));
  return out.map((m, i) => {
    if (!m) throw new Error(`No lung mask for ${examples[i].path}`);
    return m;
  });
}

/**
 * The lesion target of an example in a multi-task run, and whether it is a true label:
 *   a lesion mask file      → that mask, hasMask 1 (COVID-Seg pseudo, MedSeg expert)
 *   a non-COVID image       → an empty mask, hasMask 1 (no COVID-19 lesion: a true label)
 *   a COVID image, no mask  → empty, hasMask 0 (COVID-CT figures: no segmentation loss)
 */
export function lesionTargetOf(e: Example, mask: Uint8Array | null, size: number): { mask: Uint8Array; hasMask: 0 | 1 } {
  if (mask) return { mask, hasMask: 1 };
  return { mask: new Uint8Array(size * size), hasMask: e.label === 0 ? 1 : 0 };
}

/** The radiologists' lung masks of covid19-ct-seg-lungs examples at `size` (null for other sources). */
export function expertLungMasks(examples: readonly Example[], size: number): Promise<(Uint8Array | null)[]> {
  return alignedMasks(examples, size, "expert-lung", async (e) => {
    if (e.source !== "covid19-ct-seg-lungs") return null;
    const f = maskFileBeside(e.path, "lungs", e.source, "lung mask");
    return readMaskFile(f);
  });
}
