/**
 * The radiologists' (and Inf-Net's pseudo) masks a segmenter learns from and is measured against,
 * read upright like their slices.
 */
import { decodeRaw } from "../data/decode";
import { orientPixels } from "../data/orientation";
import { lesionMaskFolder, maskFileBeside, SourceName } from "../data/sources";
import { UprightSlice } from "./slices";

/** A 0/255 mask file as 0/1, upright like its image (pseudo lesions hold grey values: threshold 128). */
export async function uprightMaskFile(file: string, s: UprightSlice): Promise<Uint8Array> {
  const raw = await decodeRaw(file, 1);
  if (raw.height !== s.fileHeight || raw.width !== s.fileWidth) throw new Error(`${file}: ${raw.height}×${raw.width}, its image ${s.fileHeight}×${s.fileWidth}`);
  const bin = new Uint8Array(raw.data.length);
  for (let i = 0; i < bin.length; i++) bin[i] = raw.data[i] >= 128 ? 1 : 0;
  return orientPixels(bin, raw.height, raw.width, 1, s.orientation).data;
}

/** The radiologists' lung mask of an expert slice, upright (null for other sources). */
export function expertLungMask(it: { path: string; source: SourceName }, s: UprightSlice): Promise<Uint8Array> | null {
  return it.source === "covid19-ct-seg-lungs" ? uprightMaskFile(maskFileBeside(it.path, "lungs", it.source, "lung mask"), s) : null;
}

/** The lesion mask of an expert, MedSeg or COVID-Seg slice, upright like its image (null for other sources). */
export function lesionMask(it: { path: string; source: SourceName }, s: UprightSlice): Promise<Uint8Array> | null {
  const folder = lesionMaskFolder(it.source);
  return folder ? uprightMaskFile(maskFileBeside(it.path, folder, it.source, "lesion mask"), s) : null;
}
