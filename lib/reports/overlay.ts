/** Masks drawn over gray slices for the notebooks' galleries (notebooks 03 and 05). */
import sharp from "sharp";

/** A gray image with masks drawn over it (lung: blue outline-ish tint, lesion: red, prediction: yellow) as a PNG data URI. */
export async function overlayPng(gray: Uint8Array, size: number, layers: { mask: ArrayLike<number>; size: number; rgb: [number, number, number]; alpha?: number }[], outSize = 180, format: "png" | "jpeg" = "png"): Promise<string> {
  const rgb = Buffer.alloc(size * size * 3);
  for (let i = 0; i < size * size; i++) for (let c = 0; c < 3; c++) rgb[3 * i + c] = gray[i];
  for (const l of layers) {
    const a = l.alpha ?? 0.45;
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
      const v = l.mask[Math.floor((y * l.size) / size) * l.size + Math.floor((x * l.size) / size)];
      if (v < 0.5) continue;
      const i = y * size + x;
      for (let c = 0; c < 3; c++) rgb[3 * i + c] = Math.round((1 - a) * rgb[3 * i + c] + a * l.rgb[c]);
    }
  }
  const img = sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).resize(outSize, outSize);
  // JPEG for pages with hundreds of thumbnails (covid-ct predict's gallery): about a sixth of the PNG's size.
  const buf = format === "jpeg" ? await img.jpeg({ quality: 82 }).toBuffer() : await img.png().toBuffer();
  return `data:image/${format};base64,${buf.toString("base64")}`;
}
