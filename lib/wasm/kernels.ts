/**
 * Replacement training kernels for the tfjs wasm backend.
 *
 * Each replacement composes fast stock wasm kernels (XNNPACK convolution, XNNPACK fully-connected
 * matmul, transpose, pad, strided slice) at the TensorInfo level, i.e. without engine overhead:
 *
 *  - Conv2DBackpropFilter (missing in stock wasm): 1×1 filters as one matmul Xsᵀ·dY; every other
 *    filter as one forward XNNPACK convolution of xᵀ [Ci,H,W,N] with dYᵀ [Ho,Wo,N,Co] dilated
 *    by the stride (batch and channel roles swapped), giving [Ci,kh,kw,Co].
 *  - Conv2DBackpropInput: a forward convolution of dY with the filter rotated by 180° and in/out
 *    channels swapped; for stride s > 1, dY is first spread with zeros (s−1 between samples);
 *    for 1×1 filters the convolution runs first and the result is spread (no work on zeros).
 *  - BatchMatMul with transposed operands: explicit transpose, then the XNNPACK matmul
 *    (the stock kernel falls back to a scalar triple loop whenever an operand is transposed).
 *  - Tile: a broadcasting add onto zeros of the tiled shape (XNNPACK broadcasting), where the
 *    tiled rank stays ≤ 6.
 *  - Slice: the stock kernel copies the whole input out of the heap (readSync) for every slice;
 *    this one reads it in place.
 *  - Identity and same-dtype Cast: share the buffer (reference count) instead of copying it.
 *
 * Everything else falls back to the stock kernel captured at registration.
 */
import * as tf from "@tensorflow/tfjs";
import { backend_util, util } from "@tensorflow/tfjs";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
type TI = tf.TensorInfo;
type DataId = object;

/** The parts of tfjs-backend-wasm's BackendWasm used here. */
export interface WasmBackendLike {
  wasm: Any;
  dataIdMap: { get(dataId: DataId): { id: number; memoryOffset: number; shape: number[]; dtype: string; refCount: number }; delete(dataId: DataId): void; has(dataId: DataId): boolean };
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number): TI;
  disposeData(dataId: DataId, force?: boolean): boolean;
  incRef(dataId: DataId): void;
  typedArrayFromHeap(t: TI): Float32Array | Int32Array | Uint8Array;
}

const REPLACED = ["Conv2DBackpropFilter", "Conv2DBackpropInput", "BatchMatMul", "Tile", "Slice", "Identity", "Cast"] as const;
const USED = ["BatchMatMul", "Transpose", "Conv2D", "PadV2", "StridedSlice", "Add", "Fill", "Concat", "Tile", "Slice", "Conv2DBackpropInput", "Reshape", "Identity", "Cast"] as const;

/** Stock kernel configs, captured before replacement. */
const stock: Record<string, tf.KernelConfig> = {};
let registered: string[] = [];

/** Knobs for experiments (bench/kernels.ts). */
export const tuning = { filterGradVia: "auto" as "auto" | "conv" | "taps" };

function captureStock(): void {
  for (const name of USED) {
    if (stock[name]) continue;
    const k = tf.getKernel(name, "wasm");
    if (k) stock[name] = k;
  }
}

function run(name: string, b: WasmBackendLike, inputs: Record<string, TI> | TI[], attrs: Record<string, unknown> = {}): TI {
  // Kernels replaced here run their stock version; others (e.g. Transpose, replaced by ./simd)
  // run whatever is registered now.
  const k = (REPLACED as readonly string[]).includes(name) ? stock[name] : (tf.getKernel(name, "wasm") ?? stock[name]);
  if (!k) throw new Error(`wasm kernel ${name} is not registered`);
  return k.kernelFunc({ inputs: inputs as Any, backend: b as Any, attrs: attrs as Any }) as TI;
}

// ---- TensorInfo helpers (all results are owned by the caller: release with free()) ----

function free(b: WasmBackendLike, ...ts: (TI | undefined)[]): void {
  for (const t of ts) if (t) b.disposeData(t.dataId);
}
function reshape(b: WasmBackendLike, x: TI, shape: number[]): TI {
  b.incRef(x.dataId);
  return { dataId: x.dataId, shape, dtype: x.dtype };
}
function transpose(b: WasmBackendLike, x: TI, perm: number[]): TI {
  return run("Transpose", b, { x }, { perm });
}
/** 2-D matmul a[M,K]·b[K,N] on the XNNPACK path (no transposes, batch 1). */
function matmul2d(b: WasmBackendLike, a: TI, w: TI): TI {
  const M = a.shape[0], K = a.shape[1], N = w.shape[1];
  const a3 = reshape(b, a, [1, M, K]);
  const w3 = reshape(b, w, [1, K, N]);
  const out = run("BatchMatMul", b, { a: a3, b: w3 }, { transposeA: false, transposeB: false });
  free(b, a3, w3);
  const o = reshape(b, out, [M, N]);
  free(b, out);
  return o;
}
function pad(b: WasmBackendLike, x: TI, paddings: [number, number][]): TI {
  if (paddings.every(([p, q]) => p === 0 && q === 0)) return reshape(b, x, x.shape.slice());
  return run("PadV2", b, { x }, { paddings, constantValue: 0 });
}
/**
 * x[b0:e0:s0, b1:e1:s1, …] for positive strides. Rank-4 with a unit stride on the last axis (all
 * uses here) copies contiguous channel runs in JS: the stock StridedSlice kernel takes ~40 ns per
 * element (230 ms to subsample a [8,56,56,256] activation by 2).
 */
function stridedSlice(b: WasmBackendLike, x: TI, begin: number[], end: number[], strides: number[]): TI {
  if (x.shape.length !== 4 || strides[3] !== 1 || x.dtype === "string") {
    return run("StridedSlice", b, { x }, { begin, end, strides, beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0 });
  }
  const size = [0, 1, 2, 3].map((i) => Math.max(0, Math.ceil((end[i] - begin[i]) / strides[i])));
  const out = b.makeOutput(size, x.dtype);
  const src = b.typedArrayFromHeap(x);
  const dst = b.typedArrayFromHeap(out);
  const [, H, W, C] = x.shape;
  const run_ = size[3];
  let o = 0;
  for (let n = 0; n < size[0]; n++) {
    const nOff = (begin[0] + n * strides[0]) * H;
    for (let h = 0; h < size[1]; h++) {
      const hOff = (nOff + begin[1] + h * strides[1]) * W;
      for (let w = 0; w < size[2]; w++) {
        const off = (hOff + begin[2] + w * strides[2]) * C + begin[3];
        dst.set(src.subarray(off, off + run_), o);
        o += run_;
      }
    }
  }
  return out;
}
function add(b: WasmBackendLike, x: TI, y: TI): TI {
  return run("Add", b, { a: x, b: y });
}
function conv2d(b: WasmBackendLike, x: TI, filter: TI, strides: [number, number], padding: [[number, number], [number, number], [number, number], [number, number]]): TI {
  return run("Conv2D", b, { x, filter }, { strides, pad: padding, dataFormat: "NHWC", dilations: [1, 1], dimRoundingMode: undefined });
}
function toNHWC(b: WasmBackendLike, x: TI): TI {
  return transpose(b, x, [0, 2, 3, 1]);
}
function toNCHW(b: WasmBackendLike, x: TI): TI {
  return transpose(b, x, [0, 3, 1, 2]);
}

// ---- Conv2DBackpropFilter ----

/**
 * dW for 1×1 filters without padding: dW[Ci, Co] = Xsᵀ · dY with Xs = x[:, ::s, ::s, :] as
 * [N·Ho·Wo, Ci] (one transpose, one XNNPACK matmul).
 */
function filterGrad1x1(b: WasmBackendLike, x: TI, dy: TI, sh: number, sw: number, Ho: number, Wo: number): TI {
  const [N, , , Ci] = x.shape;
  const Co = dy.shape[3];
  const K = N * Ho * Wo;
  const xs = sh === 1 && sw === 1 && x.shape[1] === Ho && x.shape[2] === Wo ? reshape(b, x, x.shape.slice()) : stridedSlice(b, x, [0, 0, 0, 0], [N, (Ho - 1) * sh + 1, (Wo - 1) * sw + 1, Ci], [1, sh, sw, 1]);
  const x2 = reshape(b, xs, [K, Ci]);
  free(b, xs);
  const dy2 = reshape(b, dy, [K, Co]);
  let out: TI;
  // XNNPACK packs the right operand (a transposing copy): give it the one with fewer channels.
  if (Co <= Ci) {
    const xT = transpose(b, x2, [1, 0]);
    const dw = matmul2d(b, xT, dy2); // [Ci, Co]
    free(b, xT);
    out = reshape(b, dw, [1, 1, Ci, Co]);
    free(b, dw);
  } else {
    const dyT = transpose(b, dy2, [1, 0]);
    const dwT = matmul2d(b, dyT, x2); // [Co, Ci]
    free(b, dyT);
    const dw = transpose(b, dwT, [1, 0]);
    free(b, dwT);
    out = reshape(b, dw, [1, 1, Ci, Co]);
    free(b, dw);
  }
  free(b, x2, dy2);
  return out;
}

/**
 * dW for any filter as one forward XNNPACK convolution with the roles of batch and channels
 * swapped: input xᵀ [Ci, H, W, N] (batch Ci, channels N), filter dYᵀ [Ho, Wo, N, Co] dilated by
 * the stride, output [Ci, kh, kw, Co]:
 *   out[c,i,j,o] = Σ_{a,b,n} x[n, i + s·a − p, j + s·b − p, c] · dy[n, a, b, o] = dW[i, j, c, o].
 */
function filterGradConv(b: WasmBackendLike, x: TI, dy: TI, kh: number, kw: number, sh: number, sw: number, top: number, left: number): TI {
  const [N, H, W, Ci] = x.shape;
  const [, Ho, Wo, Co] = dy.shape;
  // Rows/columns of x past the last one the forward conv read are not used: crop them (the
  // padding below would otherwise be negative).
  const needH = (Ho - 1) * sh + kh - top;
  const needW = (Wo - 1) * sw + kw - left;
  let xc = x;
  if (H > needH || W > needW) xc = stridedSlice(b, x, [0, 0, 0, 0], [N, Math.min(H, needH), Math.min(W, needW), Ci], [1, 1, 1, 1]);
  const [, Hc, Wc] = xc.shape;
  const xT = transpose(b, xc, [3, 1, 2, 0]); // [Ci, Hc, Wc, N]
  if (xc !== x) free(b, xc);
  const dyT = transpose(b, dy, [1, 2, 0, 3]); // [Ho, Wo, N, Co]
  const bottom = needH - Hc;
  const right = needW - Wc;
  const y = run("Conv2D", b, { x: xT, filter: dyT }, { strides: [1, 1], pad: [[0, 0], [top, bottom], [left, right], [0, 0]], dataFormat: "NHWC", dilations: [sh, sw], dimRoundingMode: undefined });
  free(b, xT, dyT);
  if (y.shape[1] !== kh || y.shape[2] !== kw) throw new Error(`Conv2DBackpropFilter: internal shape error ${y.shape} for ${kh}x${kw}`);
  const out = transpose(b, y, [1, 2, 0, 3]); // [kh, kw, Ci, Co]
  free(b, y);
  return out;
}

/**
 * dW by filter taps: dW[t]ᵀ = dYᵀ · X_t with X_t the strided window of tap t of the padded x as
 * [N·Ho·Wo, Ci] (copied in JS) — one XNNPACK matmul per tap sharing the transposed dY.
 */
function filterGradTaps(b: WasmBackendLike, x: TI, dy: TI, kh: number, kw: number, sh: number, sw: number, top: number, left: number): TI {
  const [N, H, W, Ci] = x.shape;
  const [, Ho, Wo, Co] = dy.shape;
  const K = N * Ho * Wo;
  const padB = Math.max(0, (Ho - 1) * sh + kh - H - top);
  const padR = Math.max(0, (Wo - 1) * sw + kw - W - left);
  const xp = pad(b, x, [[0, 0], [top, padB], [left, padR], [0, 0]]);
  const dy2 = reshape(b, dy, [K, Co]);
  const dyT = transpose(b, dy2, [1, 0]);
  free(b, dy2);
  const taps: TI[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const xt4 = stridedSlice(b, xp, [0, i, j, 0], [N, i + (Ho - 1) * sh + 1, j + (Wo - 1) * sw + 1, Ci], [1, sh, sw, 1]);
      const xt = reshape(b, xt4, [K, Ci]);
      free(b, xt4);
      const p = matmul2d(b, dyT, xt); // [Co, Ci]
      free(b, xt);
      taps.push(reshape(b, p, [1, Co, Ci]));
      free(b, p);
    }
  }
  free(b, xp, dyT);
  const stacked = taps.length === 1 ? reshape(b, taps[0], [1, Co, Ci]) : run("Concat", b, taps, { axis: 0 });
  free(b, ...taps);
  const t = transpose(b, stacked, [0, 2, 1]); // [T, Ci, Co]
  free(b, stacked);
  const out = reshape(b, t, [kh, kw, Ci, Co]);
  free(b, t);
  return out;
}

function conv2DBackpropFilter(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { x: x0, dy: dy0 } = args.inputs as { x: TI; dy: TI };
  const { strides, pad: padAttr, dataFormat, dimRoundingMode, filterShape } = args.attrs;
  const nchw = dataFormat === "NCHW";
  const x = nchw ? toNHWC(b, x0) : x0;
  const dy = nchw ? toNHWC(b, dy0) : dy0;
  try {
    const ci = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filterShape, strides, 1, padAttr, dimRoundingMode, false, "channelsLast");
    const { outHeight: Ho, outWidth: Wo, filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = ci;
    if (kh === 1 && kw === 1 && padInfo.top === 0 && padInfo.left === 0 && tuning.filterGradVia === "auto") return filterGrad1x1(b, x, dy, sh, sw, Ho, Wo);
    if (tuning.filterGradVia === "taps") return filterGradTaps(b, x, dy, kh, kw, sh, sw, padInfo.top, padInfo.left);
    return filterGradConv(b, x, dy, kh, kw, sh, sw, padInfo.top, padInfo.left);
  } finally {
    if (nchw) free(b, x, dy);
  }
}

// ---- Conv2DBackpropInput ----

/**
 * Filter [kh,kw,Ci,Co] rotated by 180° in space: tap t = a·kw+b moves to T−1−t, each tap a
 * contiguous Ci·Co block (the stock Reverse kernel is ~10× slower than these block copies).
 */
function rotateTaps(b: WasmBackendLike, filter: TI): TI {
  const [kh, kw, ci, co] = filter.shape;
  const T = kh * kw;
  const block = ci * co;
  const out = b.makeOutput(filter.shape.slice(), filter.dtype);
  const src = b.typedArrayFromHeap(filter);
  const dst = b.typedArrayFromHeap(out);
  for (let t = 0; t < T; t++) dst.set(src.subarray(t * block, (t + 1) * block), (T - 1 - t) * block);
  return out;
}

/** Spread x [N,H,W,C] to [N,H·sh,W·sw,C] with x at (sh·i, sw·j) and zeros elsewhere. */
function spread(b: WasmBackendLike, x: TI, sh: number, sw: number): TI {
  const [N, H, W, C] = x.shape;
  let cur = reshape(b, x, [N * H * W, 1, C]);
  if (sw > 1) {
    const p = pad(b, cur, [[0, 0], [0, sw - 1], [0, 0]]);
    free(b, cur);
    cur = p;
  }
  const r = reshape(b, cur, [N * H, 1, W * sw * C]);
  free(b, cur);
  cur = r;
  if (sh > 1) {
    const p = pad(b, cur, [[0, 0], [0, sh - 1], [0, 0]]);
    free(b, cur);
    cur = p;
  }
  const out = reshape(b, cur, [N, H * sh, W * sw, C]);
  free(b, cur);
  return out;
}

/** Crop or zero-pad the bottom/right of x [N,h,w,C] to [N,H,W,C]. */
function fitTo(b: WasmBackendLike, x: TI, H: number, W: number): TI {
  const [N, h, w, C] = x.shape;
  if (h === H && w === W) return x;
  let cur = x;
  if (h > H || w > W) {
    const s = stridedSlice(b, cur, [0, 0, 0, 0], [N, Math.min(h, H), Math.min(w, W), C], [1, 1, 1, 1]);
    free(b, cur);
    cur = s;
  }
  const [, h2, w2] = cur.shape;
  if (h2 < H || w2 < W) {
    const p = pad(b, cur, [[0, 0], [0, H - h2], [0, W - w2], [0, 0]]);
    free(b, cur);
    cur = p;
  }
  return cur;
}

/** Per-axis plan of one phase r of a strided input gradient (see inputGradPhases). */
function phasePlan(r: number, s: number, k: number, p: number, outLen: number, dyLen: number): { taps: number[]; len: number; top: number; bottom: number; cropTop: number; cropBottom: number } {
  const len = Math.max(0, Math.ceil((outLen - r) / s));
  const a0 = (((r + p) % s) + s) % s;
  const T = a0 < k ? Math.ceil((k - a0) / s) : 0;
  const e = Math.floor((r + p) / s);
  // dx_r[q] = Σ_u dy[q + e − (T−1) + u] · W[a0 + s·(T−1−u)]
  const taps = Array.from({ length: T }, (_, u) => a0 + s * (T - 1 - u));
  let top = T - 1 - e;
  let bottom = len + T - 1 - top - dyLen;
  let cropTop = 0;
  let cropBottom = 0;
  if (top < 0) {
    cropTop = -top;
    top = 0;
  }
  if (bottom < 0) {
    cropBottom = -bottom;
    bottom = 0;
  }
  return { taps, len, top, bottom, cropTop, cropBottom };
}

/**
 * Input gradient for stride s > 1 without the s²-fold work on inserted zeros: output phase
 * (rh, rw) — the rows ≡ rh and columns ≡ rw (mod s) of dx — is a stride-1 convolution of dY with
 * the sub-filter of the taps that reach it (rotated, in/out channels swapped). The phases are
 * written interleaved into dx.
 */
function inputGradPhases(b: WasmBackendLike, dy: TI, filter: TI, H: number, W: number, sh: number, sw: number, pT: number, pL: number): TI {
  const [N, Ho, Wo, Co] = dy.shape;
  const [kh, kw, Ci] = filter.shape;
  const dx = b.makeOutput([N, H, W, Ci], "float32");
  const dxv = b.typedArrayFromHeap(dx);
  dxv.fill(0);
  const fv = b.typedArrayFromHeap(filter);
  const block = Ci * Co;
  for (let rh = 0; rh < sh; rh++) {
    const ph = phasePlan(rh, sh, kh, pT, H, Ho);
    if (ph.len === 0 || ph.taps.length === 0) continue;
    for (let rw = 0; rw < sw; rw++) {
      const pw = phasePlan(rw, sw, kw, pL, W, Wo);
      if (pw.len === 0 || pw.taps.length === 0) continue;
      // Sub-filter [Th, Tw, Ci, Co] from the taps of this phase, then [Th, Tw, Co, Ci].
      const sub = b.makeOutput([ph.taps.length, pw.taps.length, Ci, Co], "float32");
      const sv = b.typedArrayFromHeap(sub);
      let o = 0;
      for (const a of ph.taps) for (const c of pw.taps) {
        const t = a * kw + c;
        sv.set(fv.subarray(t * block, (t + 1) * block), o);
        o += block;
      }
      const subT = transpose(b, sub, [0, 1, 3, 2]);
      free(b, sub);
      const cropped = ph.cropTop || ph.cropBottom || pw.cropTop || pw.cropBottom;
      const src = cropped ? stridedSlice(b, dy, [0, ph.cropTop, pw.cropTop, 0], [N, Ho - ph.cropBottom, Wo - pw.cropBottom, Co], [1, 1, 1, 1]) : dy;
      const z = conv2d(b, src, subT, [1, 1], [[0, 0], [ph.top, ph.bottom], [pw.top, pw.bottom], [0, 0]]);
      if (cropped) free(b, src);
      free(b, subT);
      if (z.shape[1] !== ph.len || z.shape[2] !== pw.len) throw new Error(`Conv2DBackpropInput: phase shape ${z.shape} ≠ ${ph.len}×${pw.len}`);
      const zv = b.typedArrayFromHeap(z);
      for (let n = 0; n < N; n++) {
        for (let q = 0; q < ph.len; q++) {
          const rowZ = (n * ph.len + q) * pw.len;
          const rowX = (n * H + rh + sh * q) * W;
          for (let p = 0; p < pw.len; p++) {
            const src0 = (rowZ + p) * Ci;
            dxv.set(zv.subarray(src0, src0 + Ci), (rowX + rw + sw * p) * Ci);
          }
        }
      }
      free(b, z);
    }
  }
  return dx;
}

function conv2DBackpropInput(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { dy: dy0, filter } = args.inputs as { dy: TI; filter: TI };
  const { inputShape, strides, pad: padAttr, dataFormat, dimRoundingMode } = args.attrs;
  const nchw = dataFormat === "NCHW";
  const xShape: [number, number, number, number] = nchw ? [inputShape[0], inputShape[2], inputShape[3], inputShape[1]] : inputShape;
  const ci = backend_util.computeConv2DInfo(xShape, filter.shape as [number, number, number, number], strides, 1, padAttr, dimRoundingMode, false, "channelsLast");
  const { inHeight: H, inWidth: W, inChannels: Ci, outChannels: Co, filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = ci;
  const top = kh - 1 - padInfo.top;
  const left = kw - 1 - padInfo.left;
  if (top < 0 || left < 0 || !stock.Conv2D) {
    return stock.Conv2DBackpropInput.kernelFunc(args as Any) as TI;
  }
  const dy = nchw ? toNHWC(b, dy0) : dy0;
  try {
    // Filter [kh,kw,Ci,Co] → rotated 180° and transposed to [kh,kw,Co,Ci].
    let wT: TI;
    if (kh === 1 && kw === 1) wT = transpose(b, filter, [0, 1, 3, 2]);
    else {
      const rev = rotateTaps(b, filter);
      wT = transpose(b, rev, [0, 1, 3, 2]);
      free(b, rev);
    }
    let dx: TI;
    try {
      if (kh === 1 && kw === 1 && padInfo.top === 0 && padInfo.left === 0) {
        // 1×1: convolve first, then spread the (smaller) result.
        const z = conv2d(b, dy, wT, [1, 1], [[0, 0], [0, 0], [0, 0], [0, 0]]);
        if (sh === 1 && sw === 1) dx = fitTo(b, z, H, W);
        else {
          const s = spread(b, z, sh, sw);
          free(b, z);
          dx = fitTo(b, s, H, W);
        }
      } else if (sh > 1 || sw > 1) {
        dx = inputGradPhases(b, dy, filter, H, W, sh, sw, padInfo.top, padInfo.left);
      } else {
        const up = reshape(b, dy, dy.shape.slice());
        // Rows of `up` beyond what the output needs are dropped (trailing zeros or unused).
        const [, hu, wu] = up.shape;
        let bottom = H + kh - 1 - top - hu;
        let right = W + kw - 1 - left - wu;
        let src = up;
        if (bottom < 0 || right < 0) {
          src = stridedSlice(b, up, [0, 0, 0, 0], [up.shape[0], hu + Math.min(0, bottom), wu + Math.min(0, right), Co], [1, 1, 1, 1]);
          free(b, up);
          bottom = Math.max(0, bottom);
          right = Math.max(0, right);
        }
        dx = conv2d(b, src, wT, [1, 1], [[0, 0], [top, bottom], [left, right], [0, 0]]);
        free(b, src);
      }
    } finally {
      free(b, wT);
    }
    if (dx.shape[3] !== Ci) throw new Error(`Conv2DBackpropInput: internal shape error ${dx.shape}`);
    if (nchw) {
      const t = toNCHW(b, dx);
      free(b, dx);
      return t;
    }
    return dx;
  } finally {
    if (nchw) free(b, dy);
  }
}

// ---- BatchMatMul ----

function batchMatMul(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { a, b: w } = args.inputs as { a: TI; b: TI };
  const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
  if ((!transposeA && !transposeB) || a.dtype !== "float32" || w.dtype !== "float32") {
    return stock.BatchMatMul.kernelFunc(args as Any) as TI;
  }
  const swapLast = (t: TI): TI => {
    const r = t.shape.length;
    const perm = t.shape.map((_, i) => i);
    perm[r - 2] = r - 1;
    perm[r - 1] = r - 2;
    return transpose(b, t, perm);
  };
  const a2 = transposeA ? swapLast(a) : a;
  const w2 = transposeB ? swapLast(w) : w;
  try {
    return stock.BatchMatMul.kernelFunc({ inputs: { a: a2, b: w2 } as Any, backend: b as Any, attrs: { ...args.attrs, transposeA: false, transposeB: false } }) as TI;
  } finally {
    if (transposeA) free(b, a2);
    if (transposeB) free(b, w2);
  }
}

// ---- Tile ----

function tile(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { x } = args.inputs as { x: TI };
  const reps: number[] = args.attrs.reps;
  if (x.dtype !== "float32" || reps.every((r) => r === 1)) return stock.Tile.kernelFunc(args as Any) as TI;
  // out[.., r_i·d_i + k, ..] = x[.., k, ..]: view x as [1, d_0, 1, d_1, ...] broadcast to [r_0, d_0, r_1, d_1, ...],
  // leaving out unit dims and merging neighbouring axes that are not tiled.
  const inShape: number[] = [];
  const outShape: number[] = [];
  let runIn = 1; // product of neighbouring untiled axes
  let runRep = 1; // product of reps of neighbouring tiled unit axes
  const flushIn = () => {
    if (runIn !== 1) {
      inShape.push(runIn);
      outShape.push(runIn);
    }
    runIn = 1;
  };
  const flushRep = () => {
    if (runRep !== 1) {
      inShape.push(1);
      outShape.push(runRep);
    }
    runRep = 1;
  };
  for (let i = 0; i < x.shape.length; i++) {
    if (reps[i] === 1) {
      flushRep();
      runIn *= x.shape[i];
    } else if (x.shape[i] === 1) {
      flushIn();
      runRep *= reps[i];
    } else {
      flushIn();
      flushRep();
      inShape.push(1);
      outShape.push(reps[i]);
      runIn = x.shape[i];
    }
  }
  flushRep();
  flushIn();
  if (outShape.length > 6 || !stock.Add || !stock.Fill) return stock.Tile.kernelFunc(args as Any) as TI;
  const xr = reshape(b, x, inShape);
  const zeros = run("Fill", b, {}, { shape: outShape, value: 0, dtype: "float32" });
  const sum = add(b, xr, zeros);
  free(b, xr, zeros);
  const out = reshape(b, sum, x.shape.map((d, i) => d * reps[i]));
  free(b, sum);
  return out;
}

// ---- Slice ----

function slice(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { x } = args.inputs as { x: TI };
  if (x.dtype === "string") return stock.Slice.kernelFunc(args as Any) as TI;
  const [begin, size] = tf.slice_util.parseSliceParams(x as Any, args.attrs.begin, args.attrs.size);
  const out = b.makeOutput(size, x.dtype);
  if (util.sizeFromShape(size) === 0) return out;
  const xv = b.typedArrayFromHeap(x);
  const ov = b.typedArrayFromHeap(out);
  const rank = x.shape.length;
  const strides = util.computeStrides(x.shape);
  if (tf.slice_util.isSliceContinous(x.shape, begin, size)) {
    const off = tf.slice_util.computeFlatOffset(begin, strides);
    ov.set(xv.subarray(off, off + util.sizeFromShape(size)));
    return out;
  }
  // Merge trailing axes that are taken whole into one contiguous run.
  let inner = rank - 1;
  let run_ = size[inner];
  while (inner > 0 && size[inner] === x.shape[inner] && begin[inner] === 0) {
    inner--;
    run_ *= size[inner];
  }
  // Now axes [0, inner) are iterated; axis `inner` starts at begin[inner], a run of `run_` elements.
  const outer = size.slice(0, inner);
  const count = util.sizeFromShape(outer);
  const idx = new Array(inner).fill(0);
  let o = 0;
  const base = begin[inner] * (strides[inner] ?? 1);
  for (let n = 0; n < count; n++) {
    let off = base;
    for (let d = 0; d < inner; d++) off += (begin[d] + idx[d]) * strides[d];
    ov.set(xv.subarray(off, off + run_), o);
    o += run_;
    for (let d = inner - 1; d >= 0; d--) {
      if (++idx[d] < outer[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// ---- Identity / same-dtype Cast ----

/**
 * The stock wasm Identity (used by tf.clone, by the engine when it saves tensors for gradients, and
 * by same-dtype Cast, e.g. in the ReLU gradient) copies the whole tensor. Tensors are immutable,
 * so share the buffer instead (reference count), as the cpu backend and wasm Reshape do.
 */
function identity(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend as WasmBackendLike;
  const { x } = args.inputs as { x: TI };
  if (x.dtype === "string") return stock.Identity.kernelFunc(args as Any) as TI;
  b.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape.slice(), dtype: x.dtype };
}

function cast(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const { x } = args.inputs as { x: TI };
  if (x.dtype === args.attrs.dtype && x.dtype !== "string") return identity(args);
  return stock.Cast.kernelFunc(args as Any) as TI;
}

const IMPLS: Record<(typeof REPLACED)[number], (args: { inputs: Any; backend: Any; attrs: Any }) => TI> = {
  Conv2DBackpropFilter: conv2DBackpropFilter,
  Conv2DBackpropInput: conv2DBackpropInput,
  BatchMatMul: batchMatMul,
  Tile: tile,
  Slice: slice,
  Identity: identity,
  Cast: cast,
};

/**
 * Replace the stock wasm kernels with the fast training kernels (idempotent). Returns the names
 * registered. Must run after '@tensorflow/tfjs-backend-wasm' registered its kernels.
 */
export function registerTrainingKernels(): string[] {
  require("@tensorflow/tfjs-backend-wasm");
  captureStock();
  const backend = (tf.engine() as Any).registry?.wasm;
  for (const name of REPLACED) {
    if (registered.includes(name)) continue;
    const old = tf.getKernel(name, "wasm");
    const setupFunc = old?.setupFunc;
    if (old) tf.unregisterKernel(name, "wasm");
    tf.registerKernel({ kernelName: name, backendName: "wasm", kernelFunc: IMPLS[name] as Any, setupFunc });
    if (backend && setupFunc) setupFunc(backend); // backend already initialised: run stock setup now
    registered.push(name);
  }
  return registered.slice();
}

/** Restore the stock kernels (for A/B comparisons and tests). */
export function unregisterTrainingKernels(): void {
  for (const name of registered) {
    tf.unregisterKernel(name, "wasm");
    if (stock[name]) tf.registerKernel(stock[name]);
  }
  registered = [];
}

export function registeredKernelNames(): string[] {
  return registered.slice();
}
