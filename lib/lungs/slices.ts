/**
 * The lung segmenter's own post-processing and pseudo labels, over the slice road every segmenter
 * shares (lib/segmenter/slices.ts, re-exported here). The classical pseudo mask is computed on the
 * upright slice (its posteriorReach step needs "down" to be the back) and cached on disk, since the
 * extractor costs ~40 ms a slice and every run and metric needs it again.
 */
import { cacheKey, contentHash, DiskCache } from "../data/cache";
import { maskToPng, probabilitiesToMask, readMaskPng, UprightSlice } from "../segmenter/slices";
import { bodyHull, extractLungs, fillHoles, LUNG_DEFAULTS, LungExtractorOptions } from "./classical";

export * from "../segmenter/slices";

/** Bump when the classical masks change for the same options (old cache entries are then ignored). */
export const CLASSICAL_CACHE_VERSION = 1;

/**
 * The U-Net's mask of an upright slice at its full size: probabilities resized and thresholded,
 * then (cutToBody, default true) cut to the classical body hull, since outside air is never lung,
 * and (fill, default true) with its holes filled.
 */
export async function unetMask(prob: ArrayLike<number>, side: number, s: UprightSlice, cutToBody = true, threshold = 0.5, fill = true): Promise<Uint8Array> {
  let m = await probabilitiesToMask(prob, side, s.height, s.width, threshold);
  const body = cutToBody ? bodyHull(s.gray, s.height, s.width) : null;
  if (body) for (let i = 0; i < m.length; i++) m[i] &= body[i];
  // A lung has no holes: a hole in the mask is a lesion the U-Net left out (MedSeg lesion coverage
  // +0.009 and Dice against the radiologists +0.001 on the quick run).
  if (fill) m = fillHoles(m, s.height, s.width);
  return m;
}

/**
 * The classical pseudo lung mask of an upright slice (upright pixels), cached on disk by (image
 * content, orientation, extractor options).
 */
export async function classicalMask(file: string, s: UprightSlice, options: LungExtractorOptions = {}, cache: DiskCache | null = new DiskCache()): Promise<Uint8Array> {
  const opts = { ...LUNG_DEFAULTS, ...options };
  const key = cacheKey("lung-classical", CLASSICAL_CACHE_VERSION, contentHash(file), s.orientation, opts);
  const hit = cache?.get("lung-classical", key);
  if (hit) {
    const m = await readMaskPng(hit);
    if (m && m.height === s.height && m.width === s.width) return m.data;
  }
  const m = extractLungs(s.gray, s.height, s.width, opts).mask;
  cache?.put("lung-classical", key, await maskToPng(m, s.height, s.width));
  return m;
}
