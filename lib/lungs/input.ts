/**
 * The lung mask as a model input channel (Study II, Fig. 4A): the mask must go through exactly the
 * chest crop and resize of its image, so that channel 4 lies on channels 1–3. The mask is computed
 * on the full-resolution slice (the extractor needs the whole body to tell outside air from lung),
 * then cropped with the image's own crop box and resized with the same fit.
 */
import sharp from "sharp";
import { decodeRaw } from "../data/decode";
import { PreprocessOptions, PreprocessedImage, normalisePreprocessOptions, preprocessPixels } from "../data/preprocess";
import { orientPixels } from "../data/orientation";
import { LungExtractorOptions, LungMask, extractLungs } from "./classical";

export interface ImageWithLungMask {
  image: PreprocessedImage;
  /** size × size, 1 = lung, aligned with `image`. */
  mask: Uint8Array;
  /** The extractor's result at source resolution (components, fallback, …). */
  lungs: Omit<LungMask, "mask">;
}

/** Resize a 0/1 mask with the preprocessing's crop box and fit (bilinear, then ≥ 0.5). */
export async function alignMask(mask: Uint8Array, height: number, width: number, image: PreprocessedImage, fit: "fill" | "contain"): Promise<Uint8Array> {
  if (mask.length !== height * width) throw new Error(`alignMask: ${mask.length} pixels for ${height}×${width}`);
  const box = image.crop?.box ?? { top: 0, left: 0, height, width };
  const bytes = Buffer.alloc(mask.length);
  for (let i = 0; i < mask.length; i++) bytes[i] = mask[i] ? 255 : 0;
  let img = sharp(bytes, { raw: { width, height, channels: 1 } });
  if (box.width !== width || box.height !== height) img = img.extract(box);
  // Bilinear + threshold at half: the mask edge lands where the image's (bilinear) edge does.
  const out = await img.resize(image.size, image.size, { fit, background: "#000000", kernel: "linear" }).toColourspace("b-w").raw().toBuffer();
  const m = new Uint8Array(image.size * image.size);
  for (let i = 0; i < m.length; i++) m[i] = out[i] >= 128 ? 1 : 0;
  return m;
}

/** Preprocess an image (preprocessImage's crop and resize) and its classical lung mask, aligned. */
export async function preprocessWithLungMask(file: string, options: PreprocessOptions = {}, lungOptions: LungExtractorOptions = {}): Promise<ImageWithLungMask> {
  const o = normalisePreprocessOptions(options);
  const gray = await decodeRaw(file, 1);
  const raw = o.channels === 1 ? gray : await decodeRaw(file, 3);
  const image = await preprocessPixels(raw.data, raw.height, raw.width, o.channels, o, file);
  // preprocessPixels turns the slice to the common orientation before its crop, so the crop box is
  // in oriented pixels: extract the lungs from the same oriented slice (the extractor does not care
  // about orientation) so that the mask and the box agree.
  const g = o.orientation ? orientPixels(gray.data, gray.height, gray.width, 1, o.orientation) : gray;
  const { mask: full, ...lungs } = extractLungs(g.data, g.height, g.width, lungOptions);
  const mask = await alignMask(full, g.height, g.width, image, o.fit);
  return { image, mask, lungs };
}
