/**
 * One orientation for every source: the radiological convention of COVID-CT figures and LUNA16
 * slices (patient's front at the top, spine at the bottom, patient's left on the image's right).
 *
 * The slices prepared by Inf-Net (COVID-Seg and MedSeg) are stored turned by 90°; left as they are,
 * a classifier can tell them from LUNA by orientation alone. Each source gets a fixed transform
 * (lib/data/sources.ts says which, after looking at its images):
 *   identity     covid-ct, luna16
 *   rotate90ccw  COVID-Seg `coronacases_*` volumes (spine on the left, heart on the right)
 *   transpose    COVID-Seg `radiopaedia_*` volumes and MedSeg (spine on the right, heart on the left):
 *                a mirror about the main diagonal, i.e. 90° clockwise then a left–right flip
 * Pure array code on 8-bit pixels, so it runs before the chest crop and before any tensor exists.
 *
 * `uprightMeasure` is the check: a documented image measure that says whether a slice is upright.
 */

export const ORIENTATIONS = ["identity", "rotate90ccw", "rotate90cw", "rotate180", "transpose"] as const;
export type Orientation = (typeof ORIENTATIONS)[number];

export function isOrientation(x: unknown): x is Orientation {
  return typeof x === "string" && (ORIENTATIONS as readonly string[]).includes(x);
}

/** Output (height, width) of a transform. */
export function orientedSize(o: Orientation, height: number, width: number): { height: number; width: number } {
  return o === "identity" || o === "rotate180" ? { height, width } : { height: width, width: height };
}

/**
 * Re-orient interleaved 8-bit pixels (row-major, `channels` per pixel). Returns a new buffer
 * (the input itself for identity).
 */
export function orientPixels(
  pixels: Uint8Array,
  height: number,
  width: number,
  channels: number,
  o: Orientation,
): { data: Uint8Array; height: number; width: number } {
  if (o === "identity") return { data: pixels, height, width };
  const { height: H, width: W } = orientedSize(o, height, width);
  const out = new Uint8Array(pixels.length);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      // Source pixel (sx, sy) of output pixel (x, y).
      let sx: number, sy: number;
      if (o === "rotate90ccw") { sx = width - 1 - y; sy = x; }       // source left column → output bottom row
      else if (o === "rotate90cw") { sx = y; sy = height - 1 - x; }   // source right column → output bottom row
      else if (o === "rotate180") { sx = width - 1 - x; sy = height - 1 - y; }
      else { sx = y; sy = x; }                                       // transpose
      const s = (sy * width + sx) * channels, d = (y * W + x) * channels;
      for (let c = 0; c < channels; c++) out[d + c] = pixels[s + c];
    }
  }
  return { data: out, height: H, width: W };
}
