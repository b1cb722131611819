/**
 * Decoders for the compressed DICOM transfer syntaxes lib/data/dicom.ts reads. Each turns one
 * frame's compressed bytes into its stored values (8 or 16 bits a sample, one sample a pixel);
 * dicom.ts then applies Bits Stored, Pixel Representation and the rescale exactly as for
 * uncompressed pixel data.
 *
 *   JPEG Lossless (.4.57, .4.70)   jpeg-lossless-decoder-js (pure JS; rii-mango, Mango's decoder)
 *   JPEG-LS (.4.80, .4.81)         @cornerstonejs/codec-charls (CharLS compiled to wasm)
 *   JPEG 2000 (.4.90, .4.91)       @cornerstonejs/codec-openjpeg (OpenJPEG compiled to wasm)
 *   JPEG Baseline 8-bit (.4.50)    @cornerstonejs/codec-libjpeg-turbo-8bit (libjpeg-turbo, wasm)
 *   RLE Lossless (.5)              here (DICOM PS3.5 Annex G: PackBits per byte plane)
 *
 * All of them install from the npm registry alone (no native build, no network at run time: each
 * wasm file ships inside its package and is read from node_modules). The wasm decoders need an
 * asynchronous start: `await initDicomCodecs()` once (about 0.1 s) before reading such a file.
 */

/** jpeg-lossless-decoder-js's Decoder, as used here (the package names a .d.ts it does not ship). */
interface JpegLosslessDecoderLike {
  decode(buffer: ArrayBuffer, offset: number, length: number, numBytes: number): Uint8Array | Uint16Array;
  xDim: number;
  yDim: number;
  numComp: number;
  frame: { precision: number };
}
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { Decoder: JpegLosslessDecoder } = require("jpeg-lossless-decoder-js") as { Decoder: new () => JpegLosslessDecoderLike };

/** Stored values of one frame, one sample a pixel. */
export type StoredValues = Uint8Array | Uint16Array | Int16Array;

/** What the header says a frame is: the decoders check the stream against it. */
export interface FrameShape {
  rows: number;
  columns: number;
  bitsAllocated: number;
}

/** A frame that could not be decoded: the message says why (dicom.ts adds the file). */
export class CodecError extends Error {}

/** The wasm codecs' common shape (Emscripten classes around CharLS, OpenJPEG, libjpeg-turbo). */
interface WasmDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  getDecodedBuffer(): Uint8Array;
  decode(): void;
  getFrameInfo(): { width: number; height: number; bitsPerSample: number; componentCount: number; isSigned?: boolean };
  delete(): void;
}
interface WasmModule {
  [cls: string]: unknown;
}

const WASM = {
  charls: { pkg: "@cornerstonejs/codec-charls/decodewasmjs", cls: "JpegLSDecoder", name: "JPEG-LS (CharLS)" },
  openjpeg: { pkg: "@cornerstonejs/codec-openjpeg/decodewasmjs", cls: "J2KDecoder", name: "JPEG 2000 (OpenJPEG)" },
  libjpegturbo: { pkg: "@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs", cls: "JPEGDecoder", name: "JPEG baseline (libjpeg-turbo)" },
} as const;
type WasmName = keyof typeof WASM;

const loaded: Partial<Record<WasmName, WasmModule>> = {};
let starting: Promise<void> | null = null;

/**
 * Start the wasm decoders (JPEG-LS, JPEG 2000, JPEG baseline). Call it once before reading DICOM
 * files that may be compressed; later calls return at once. JPEG Lossless and RLE need no start.
 */
export function initDicomCodecs(): Promise<void> {
  starting ??= (async () => {
    for (const name of Object.keys(WASM) as WasmName[]) {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const factory = require(WASM[name].pkg) as (m?: object) => Promise<WasmModule>;
      // print/printErr: OpenJPEG writes [INFO] lines for every frame; errors still come back as exceptions.
      loaded[name] = await factory({ print: () => undefined, printErr: () => undefined });
    }
  })().catch((e) => {
    starting = null;
    throw e;
  });
  return starting;
}

/** True once initDicomCodecs() has finished. */
export function dicomCodecsReady(): boolean {
  return (Object.keys(WASM) as WasmName[]).every((n) => loaded[n]);
}

function checkShape(width: number, height: number, components: number, bits: number, shape: FrameShape, codec: string): void {
  if (components !== 1) throw new CodecError(`the ${codec} stream has ${components} components: a CT slice has 1 (gray)`);
  if (width !== shape.columns || height !== shape.rows) throw new CodecError(`the ${codec} stream is ${width}×${height} but the header says Columns × Rows ${shape.columns}×${shape.rows}: the header does not match the pixels`);
  if (bits > shape.bitsAllocated) throw new CodecError(`the ${codec} stream has ${bits} bits a sample but Bits Allocated is ${shape.bitsAllocated}: the header does not match the pixels`);
}

function why(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === "string") return e;
  // Emscripten throws a C++ exception as a number (a pointer): there is no message to give.
  return typeof e === "number" ? "the decoder stopped on a bad stream" : String(e);
}

function wasmDecode(name: WasmName, data: Uint8Array, shape: FrameShape): StoredValues {
  const m = loaded[name];
  if (!m) throw new Error(`the ${WASM[name].name} decoder is not started: call \`await initDicomCodecs()\` (lib/data/dicom-codecs.ts) before reading compressed DICOM`);
  const Cls = m[WASM[name].cls] as new () => WasmDecoder;
  const dec = new Cls();
  try {
    let info: ReturnType<WasmDecoder["getFrameInfo"]>;
    try {
      dec.getEncodedBuffer(data.length).set(data);
      dec.decode();
      info = dec.getFrameInfo();
    } catch (e) {
      throw new CodecError(`the ${WASM[name].name} stream could not be decoded (${why(e)}): the file may be truncated or corrupt`);
    }
    if (!info.width || !info.height || !info.componentCount) throw new CodecError(`the ${WASM[name].name} stream could not be decoded (no image in it): the file may be truncated or corrupt`);
    checkShape(info.width, info.height, info.componentCount, info.bitsPerSample, shape, WASM[name].name);
    // The decoded buffer lives in the module's memory and is freed by delete(): copy it out.
    const bytes = dec.getDecodedBuffer().slice();
    const n = shape.rows * shape.columns;
    const wide = info.bitsPerSample > 8;
    if (bytes.length < n * (wide ? 2 : 1)) throw new CodecError(`the ${WASM[name].name} stream decoded to ${bytes.length} bytes, ${n} pixels need ${n * (wide ? 2 : 1)}`);
    if (!wide) return bytes.subarray(0, n);
    return info.isSigned ? new Int16Array(bytes.buffer, 0, n) : new Uint16Array(bytes.buffer, 0, n);
  } finally {
    dec.delete();
  }
}

/** Zero bytes put between the entropy-coded data and EOI (see jpegLossless). */
const EOI_PAD = 8;

/**
 * The frame with EOI_PAD zero bytes before its End Of Image marker (FFD9). jpeg-lossless-decoder-js
 * 2.1.2 returns the last pixel as 0 when that pixel's Huffman code ends in the byte before EOI
 * (its getHuffmanValue sees the marker within reach and stops; getn has a last-pixel guard,
 * getHuffmanValue none): seen with DCMTK's predictors 5 and 6 on 12-bit data. The decoder stops at
 * the last pixel, so bytes after it are never read as pixels; padding keeps the marker out of reach.
 */
function padBeforeEoi(data: Uint8Array): Uint8Array {
  let end = data.length;
  while (end > 2 && data[end - 1] === 0) end--; // fragments are padded to even length
  if (end < 2 || data[end - 2] !== 0xff || data[end - 1] !== 0xd9) return data;
  const out = new Uint8Array(end + EOI_PAD);
  out.set(data.subarray(0, end - 2));
  out[end - 2 + EOI_PAD] = 0xff;
  out[end - 1 + EOI_PAD] = 0xd9;
  return out;
}

/** JPEG Lossless, Process 14 (any predictor: .4.57; first-order: .4.70). */
function jpegLossless(data: Uint8Array, shape: FrameShape): StoredValues {
  const dec = new JpegLosslessDecoder();
  let out: Uint8Array | Uint16Array;
  try {
    const padded = padBeforeEoi(data);
    out = dec.decode(padded.buffer as ArrayBuffer, padded.byteOffset, padded.length, shape.bitsAllocated / 8);
  } catch (e) {
    throw new CodecError(`the JPEG Lossless stream could not be decoded (${why(e)}): the file may be truncated or corrupt`);
  }
  checkShape(dec.xDim, dec.yDim, dec.numComp, dec.frame.precision, shape, "JPEG Lossless");
  return out;
}

/** One RLE segment (PackBits, PS3.5 G.3.1) into exactly `n` bytes. */
function unpackBits(src: Uint8Array, start: number, end: number, out: Uint8Array): void {
  let i = start, o = 0;
  const n = out.length;
  while (o < n && i < end) {
    const h = src[i++];
    if (h < 128) {
      // A literal run of h + 1 bytes.
      const len = Math.min(h + 1, end - i, n - o);
      out.set(src.subarray(i, i + len), o);
      i += h + 1;
      o += len;
    } else if (h > 128) {
      // One byte repeated 257 − h times.
      if (i >= end) break;
      const len = Math.min(257 - h, n - o);
      out.fill(src[i++], o, o + len);
      o += len;
    } // 128 is a no-op.
  }
  if (o < n) throw new CodecError(`an RLE segment decoded to ${o} bytes, ${n} are needed: the file may be truncated or corrupt`);
}

/**
 * RLE Lossless (PS3.5 Annex G): a 64-byte header (the number of segments, then 15 offsets), then
 * one PackBits segment per byte plane, most significant byte first.
 */
export function decodeRle(data: Uint8Array, shape: FrameShape): StoredValues {
  const n = shape.rows * shape.columns;
  const planes = shape.bitsAllocated / 8;
  if (data.length < 64) throw new CodecError(`the RLE frame is ${data.length} bytes, shorter than its 64-byte header: the file is truncated`);
  const head = new DataView(data.buffer, data.byteOffset, 64);
  const segments = head.getUint32(0, true);
  if (segments !== planes) throw new CodecError(`the RLE frame has ${segments} segments, Bits Allocated ${shape.bitsAllocated} with 1 sample needs ${planes}`);
  const offsets = Array.from({ length: segments }, (_, k) => head.getUint32(4 + 4 * k, true));
  const plane = offsets.map((off, k) => {
    const end = k + 1 < segments ? offsets[k + 1] : data.length;
    if (off < 64 || off > end || end > data.length) throw new CodecError(`the RLE segment offsets (${offsets.join(", ")}) do not fit the ${data.length}-byte frame: the file may be corrupt`);
    const out = new Uint8Array(n);
    unpackBits(data, off, end, out);
    return out;
  });
  if (planes === 1) return plane[0];
  const v = new Uint16Array(n);
  for (let i = 0; i < n; i++) v[i] = (plane[0][i] << 8) | plane[1][i];
  return v;
}

/** Names and decoders of the compressed transfer syntaxes read. */
export const DECODERS: Record<string, { name: string; decode: (data: Uint8Array, shape: FrameShape) => StoredValues; wasm?: WasmName }> = {
  "1.2.840.10008.1.2.4.50": { name: "JPEG Baseline (Process 1)", decode: (d, s) => wasmDecode("libjpegturbo", d, s), wasm: "libjpegturbo" },
  "1.2.840.10008.1.2.4.57": { name: "JPEG Lossless, Non-Hierarchical (Process 14)", decode: jpegLossless },
  "1.2.840.10008.1.2.4.70": { name: "JPEG Lossless, First-Order Prediction (Process 14, SV1)", decode: jpegLossless },
  "1.2.840.10008.1.2.4.80": { name: "JPEG-LS Lossless", decode: (d, s) => wasmDecode("charls", d, s), wasm: "charls" },
  "1.2.840.10008.1.2.4.81": { name: "JPEG-LS Near-Lossless", decode: (d, s) => wasmDecode("charls", d, s), wasm: "charls" },
  "1.2.840.10008.1.2.4.90": { name: "JPEG 2000 Lossless", decode: (d, s) => wasmDecode("openjpeg", d, s), wasm: "openjpeg" },
  "1.2.840.10008.1.2.4.91": { name: "JPEG 2000", decode: (d, s) => wasmDecode("openjpeg", d, s), wasm: "openjpeg" },
  "1.2.840.10008.1.2.5": { name: "RLE Lossless", decode: decodeRle },
};

/** Names of compressed transfer syntaxes not read, for the refusal. */
export const NOT_DECODED: Record<string, string> = {
  "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
  "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000 Lossless",
  "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000 with RPCL Options Lossless",
  "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
};

/** JPEG-family syntaxes: a multi-frame file without an offset table can have one built from the JPEG markers. */
export const JPEG_FAMILY = new Set(["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"]);
