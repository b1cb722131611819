/**
 * Custom wasm kernels for the per-channel passes of batch normalisation and for Adam, running
 * hand-written WebAssembly SIMD (kernels.wat, compiled into binary.ts) directly on the tfjs wasm
 * heap: the module imports the backend's memory, so no data is copied. One pass per kernel,
 * single-threaded (memory-bound), f64 accumulation for the channel sums.
 *
 * Registered for backend 'wasm' under our own kernel names (they exist nowhere else):
 *   CovidBnStats {x}              → [mean, variance]   per channel (last axis), biased variance
 *   CovidBnBwdSums {dy, x, mean}  → [Σdy, Σdy·(x−mean)] per channel
 *   CovidChannelAffine {x, k, b}  → x·k + b            (k, b per channel)
 *   CovidChannelAffine2 {dy, x, k, a, b} → dy·k + x·a + b
 * and replaces, for float32, the stock Relu, Sum over all axes but the last, and Transpose (2-D
 * and batched 2-D permutations after merging axes: 4×4 SIMD tiles; the stock kernel is a generic
 * index loop ~2× slower).
 *   CovidReluGrad {dy, x}         → x > 0 ? dy : 0
 *   CovidAdam {p, m, v, g} attrs {beta1, beta2, lr, epsilon, c1, c2} → [p', m', v'] (tfjs Adam formula)
 */
import * as tf from "@tensorflow/tfjs";
import { SIMD_KERNELS_WASM } from "./binary";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
type TI = tf.TensorInfo;
/** The WebAssembly API (not in the ES2022 lib typings this project compiles against). */
const WA: Any = (globalThis as Any).WebAssembly;
interface WasmMemory {
  buffer: ArrayBuffer | SharedArrayBuffer;
}

interface Exports {
  stats(x: number, M: number, C: number, s1: number, s2: number): void;
  dot_sums(dy: number, x: number, M: number, C: number, s1: number, s2: number): void;
  affine(x: number, y: number, M: number, C: number, k: number, b: number): void;
  affine2(dy: number, x: number, out: number, M: number, C: number, k: number, a: number, b: number): void;
  colsum(x: number, M: number, C: number, s1: number): void;
  relu(x: number, y: number, n: number): void;
  transpose(src: number, dst: number, K: number, R: number, C: number): void;
  relu_grad(dy: number, x: number, out: number, n: number): void;
  adam(p: number, m: number, v: number, g: number, po: number, mo: number, vo: number, n: number, b1: number, b2: number, lr: number, eps: number, c1: number, c2: number): void;
}

export const SIMD_KERNEL_NAMES = ["CovidBnStats", "CovidBnBwdSums", "CovidChannelAffine", "CovidChannelAffine2", "CovidAdam", "CovidReluGrad"] as const;
/** Stock wasm kernels replaced (float32 cases) by SIMD ones: Relu, and Sum over all axes but the last. */
export const SIMD_REPLACED = ["Relu", "Sum", "Transpose"] as const;

const instances = new WeakMap<object, { exports: Exports; memory: WasmMemory } | null>();
let registered = false;

function memoryOf(backend: Any): WasmMemory | undefined {
  const w = backend?.wasm;
  const m = w?.wasmMemory ?? w?.asm?.memory;
  return WA && m instanceof WA.Memory ? m : undefined;
}

function instanceFor(backend: Any): { exports: Exports; memory: WasmMemory } | null {
  let inst = instances.get(backend);
  if (inst !== undefined) return inst;
  inst = null;
  const memory = memoryOf(backend);
  if (memory) {
    try {
      const shared = typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
      const bytes = Buffer.from(shared ? SIMD_KERNELS_WASM.shared : SIMD_KERNELS_WASM.plain, "base64");
      const mod = new WA.Module(bytes);
      const instance = new WA.Instance(mod, { env: { memory } });
      inst = { exports: instance.exports as unknown as Exports, memory };
    } catch {
      inst = null;
    }
  }
  instances.set(backend, inst);
  return inst;
}

/** True when the SIMD kernels can run on this (wasm) backend instance. */
export function simdKernelsAvailable(backend?: Any): boolean {
  const b = backend ?? (tf.engine() as Any).registry?.wasm;
  return registered && !!b && tf.getBackend() === "wasm" && instanceFor(b) !== null;
}

function offset(backend: Any, t: TI): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset;
}

function need(backend: Any): { exports: Exports; memory: WasmMemory } {
  const inst = instanceFor(backend);
  if (!inst) throw new Error("SIMD kernels unavailable on this wasm backend");
  return inst;
}

function channels(t: TI): { M: number; C: number } {
  const C = t.shape[t.shape.length - 1] ?? 1;
  const n = t.shape.reduce((a, b) => a * b, 1);
  return { M: C === 0 ? 0 : n / C, C };
}

function checkF32(...ts: TI[]): void {
  for (const t of ts) if (t.dtype !== "float32") throw new Error(`SIMD kernel: float32 only, got ${t.dtype}`);
}

/**
 * Round a heap address up to 16 bytes. Heap addresses reach 4 GiB: `&` would make those above
 * 2 GiB negative, so use arithmetic.
 */
export function align16(addr: number): number {
  return Math.ceil(addr / 16) * 16;
}

/** Run `f` with a zeroed f64 scratch of 2·C doubles; returns the two halves as plain arrays. */
function withSums(backend: Any, inst: { memory: WasmMemory }, C: number, f: (s1: number, s2: number) => void): [Float64Array, Float64Array] {
  const bytes = 16 * C + 16;
  const raw = backend.wasm._malloc(bytes) >>> 0;
  const base = align16(raw);
  try {
    new Float64Array(inst.memory.buffer, base, 2 * C).fill(0);
    f(base, base + 8 * C);
    const all = new Float64Array(inst.memory.buffer, base, 2 * C);
    return [all.slice(0, C), all.slice(C, 2 * C)];
  } finally {
    backend.wasm._free(raw);
  }
}

function vectorOut(backend: Any, inst: { memory: WasmMemory }, values: ArrayLike<number>): TI {
  const out = backend.makeOutput([values.length], "float32");
  new Float32Array(inst.memory.buffer, offset(backend, out), values.length).set(values as ArrayLike<number>);
  return out;
}

function bnStats(args: { inputs: Any; backend: Any }): TI[] {
  const b = args.backend;
  const { x } = args.inputs as { x: TI };
  checkF32(x);
  const inst = need(b);
  const { M, C } = channels(x);
  const [s1, s2] = withSums(b, inst, C, (p, q) => inst.exports.stats(offset(b, x), M, C, p, q));
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    mean[c] = s1[c] / M;
    variance[c] = Math.max(0, s2[c] / M - mean[c] * mean[c]);
  }
  return [vectorOut(b, inst, mean), vectorOut(b, inst, variance)];
}

function bnBwdSums(args: { inputs: Any; backend: Any }): TI[] {
  const b = args.backend;
  const { dy, x, mean } = args.inputs as { dy: TI; x: TI; mean: TI };
  checkF32(dy, x, mean);
  const inst = need(b);
  const { M, C } = channels(x);
  const [s1, s2] = withSums(b, inst, C, (p, q) => inst.exports.dot_sums(offset(b, dy), offset(b, x), M, C, p, q));
  const mu = new Float32Array(inst.memory.buffer, offset(b, mean), C);
  const centred = new Float64Array(C);
  for (let c = 0; c < C; c++) centred[c] = s2[c] - mu[c] * s1[c];
  return [vectorOut(b, inst, s1), vectorOut(b, inst, centred)];
}

function channelAffine(args: { inputs: Any; backend: Any }): TI {
  const b = args.backend;
  const { x, k, b: bias } = args.inputs as { x: TI; k: TI; b: TI };
  checkF32(x, k, bias);
  const inst = need(b);
  const { M, C } = channels(x);
  const out = b.makeOutput(x.shape.slice(), "float32");
  inst.exports.affine(offset(b, x), offset(b, out), M, C, offset(b, k), offset(b, bias));
  return out;
}

function channelAffine2(args: { inputs: Any; backend: Any }): TI {
  const b = args.backend;
  const { dy, x, k, a, b: bias } = args.inputs as { dy: TI; x: TI; k: TI; a: TI; b: TI };
  checkF32(dy, x, k, a, bias);
  const inst = need(b);
  const { M, C } = channels(x);
  const out = b.makeOutput(x.shape.slice(), "float32");
  inst.exports.affine2(offset(b, dy), offset(b, x), offset(b, out), M, C, offset(b, k), offset(b, a), offset(b, bias));
  return out;
}

function adam(args: { inputs: Any; backend: Any; attrs: Any }): TI[] {
  const b = args.backend;
  const { p, m, v, g } = args.inputs as { p: TI; m: TI; v: TI; g: TI };
  checkF32(p, m, v, g);
  const { beta1, beta2, lr, epsilon, c1, c2 } = args.attrs as Record<string, number>;
  const inst = need(b);
  const n = p.shape.reduce((x, y) => x * y, 1);
  const po = b.makeOutput(p.shape.slice(), "float32");
  const mo = b.makeOutput(p.shape.slice(), "float32");
  const vo = b.makeOutput(p.shape.slice(), "float32");
  inst.exports.adam(offset(b, p), offset(b, m), offset(b, v), offset(b, g), offset(b, po), offset(b, mo), offset(b, vo), n, beta1, beta2, lr, epsilon, c1, c2);
  return [po, mo, vo];
}

function reluGrad(args: { inputs: Any; backend: Any }): TI {
  const b = args.backend;
  const { dy, x } = args.inputs as { dy: TI; x: TI };
  checkF32(dy, x);
  const inst = need(b);
  const n = x.shape.reduce((p, q) => p * q, 1);
  const out = b.makeOutput(x.shape.slice(), "float32");
  inst.exports.relu_grad(offset(b, dy), offset(b, x), offset(b, out), n);
  return out;
}

const stockKernels: Record<string, tf.KernelConfig> = {};

function relu(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend;
  const { x } = args.inputs as { x: TI };
  const inst = instanceFor(b);
  if (!inst || x.dtype !== "float32") return stockKernels.Relu.kernelFunc(args as Any) as TI;
  const n = x.shape.reduce((p, q) => p * q, 1);
  const out = b.makeOutput(x.shape.slice(), "float32");
  inst.exports.relu(offset(b, x), offset(b, out), n);
  return out;
}

/** Sum over every axis but the last (bias gradients) in one SIMD pass; anything else: stock. */
function sum(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend;
  const { x } = args.inputs as { x: TI };
  const rank = x.shape.length;
  const inst = instanceFor(b);
  const axes = tf.util.parseAxisParam(args.attrs.axis, x.shape).slice().sort((p, q) => p - q);
  const leading = rank >= 2 && axes.length === rank - 1 && axes.every((a, i) => a === i);
  if (!inst || x.dtype !== "float32" || !leading) return stockKernels.Sum.kernelFunc(args as Any) as TI;
  const { M, C } = channels(x);
  const raw = b.wasm._malloc(8 * C + 16) >>> 0;
  const base = align16(raw);
  try {
    new Float64Array(inst.memory.buffer, base, C).fill(0);
    inst.exports.colsum(offset(b, x), M, C, base);
    const sums = new Float64Array(inst.memory.buffer, base, C).slice();
    const out = vectorOut(b, inst, sums);
    if (args.attrs.keepDims) out.shape = [...new Array(rank - 1).fill(1), C];
    return out;
  } finally {
    b.wasm._free(raw);
  }
}

/**
 * Reduce a permutation: drop unit axes, merge input axes that stay adjacent and in order.
 * Returns the reduced input shape and permutation.
 */
export function reducePermutation(shape: number[], perm: number[]): { shape: number[]; perm: number[] } {
  const keep = shape.map((d, i) => (d !== 1 ? i : -1)).filter((i) => i >= 0);
  const p = perm.filter((a) => shape[a] !== 1);
  // Runs of consecutive input axes in output order.
  const groups: number[][] = [];
  for (const a of p) {
    const last = groups[groups.length - 1];
    if (last && last[last.length - 1] + 1 === a && keep.includes(a)) last.push(a);
    else groups.push([a]);
  }
  const byInput = groups.slice().sort((g, h) => g[0] - h[0]);
  return {
    shape: byInput.map((g) => g.reduce((q, a) => q * shape[a], 1)),
    perm: groups.map((g) => byInput.indexOf(g)),
  };
}

function transposeKernel(args: { inputs: Any; backend: Any; attrs: Any }): TI {
  const b = args.backend;
  const { x } = args.inputs as { x: TI };
  const perm: number[] = args.attrs.perm;
  const inst = instanceFor(b);
  if (!inst || (x.dtype !== "float32" && x.dtype !== "int32")) return stockKernels.Transpose.kernelFunc(args as Any) as TI;
  const outShape = perm.map((a) => x.shape[a]);
  const r = reducePermutation(x.shape, perm);
  const n = x.shape.reduce((p, q) => p * q, 1);
  const isId = r.perm.every((a, i) => a === i);
  if (isId || n === 0) {
    b.incRef(x.dataId);
    return { dataId: x.dataId, shape: outShape, dtype: x.dtype };
  }
  let K = 1, R = 0, C = 0;
  if (r.perm.length === 2) [R, C] = r.shape;
  else if (r.perm.length === 3 && r.perm[0] === 0 && r.perm[1] === 2 && r.perm[2] === 1) [K, R, C] = r.shape;
  else if (r.perm.length === 3 && r.perm[0] === 1 && r.perm[1] === 0 && r.perm[2] === 2 && r.shape[2] >= 8) {
    // Swap the two outer axes, moving contiguous runs of shape[2] elements.
    const [A, B, D] = r.shape;
    const out = b.makeOutput(outShape, x.dtype);
    const src = b.typedArrayFromHeap(x);
    const dst = b.typedArrayFromHeap(out);
    for (let i = 0; i < A; i++) for (let j = 0; j < B; j++) dst.set(src.subarray((i * B + j) * D, (i * B + j + 1) * D), (j * A + i) * D);
    return out;
  } else if (r.perm.length === 3 && r.perm[0] === 2 && r.perm[1] === 1 && r.perm[2] === 0) {
    // [A,B,C] → [C,B,A] as [A,B,C] → [A,C,B] (batched) then [A, C·B] → [C·B, A].
    const [A, B, C2] = r.shape;
    const tmp = b.makeOutput([A, C2, B], x.dtype);
    const out = b.makeOutput(outShape, x.dtype);
    inst.exports.transpose(offset(b, x), offset(b, tmp), A, B, C2);
    inst.exports.transpose(offset(b, tmp), offset(b, out), 1, A, C2 * B);
    b.disposeData(tmp.dataId);
    return out;
  } else return stockKernels.Transpose.kernelFunc(args as Any) as TI;
  const out = b.makeOutput(outShape, x.dtype);
  inst.exports.transpose(offset(b, x), offset(b, out), K, R, C);
  return out;
}

/** Register the SIMD kernels for 'wasm' (idempotent). */
export function registerSimdKernels(): string[] {
  if (!registered) {
    const impls: Record<(typeof SIMD_KERNEL_NAMES)[number], Any> = {
      CovidBnStats: bnStats,
      CovidBnBwdSums: bnBwdSums,
      CovidChannelAffine: channelAffine,
      CovidChannelAffine2: channelAffine2,
      CovidAdam: adam,
      CovidReluGrad: reluGrad,
    };
    for (const name of SIMD_KERNEL_NAMES) {
      if (tf.getKernel(name, "wasm")) tf.unregisterKernel(name, "wasm");
      tf.registerKernel({ kernelName: name, backendName: "wasm", kernelFunc: impls[name] });
    }
    const replaced: Record<(typeof SIMD_REPLACED)[number], Any> = { Relu: relu, Sum: sum, Transpose: transposeKernel };
    const backend = (tf.engine() as Any).registry?.wasm;
    for (const name of SIMD_REPLACED) {
      const old = tf.getKernel(name, "wasm");
      if (!old) continue;
      stockKernels[name] = old;
      tf.unregisterKernel(name, "wasm");
      tf.registerKernel({ kernelName: name, backendName: "wasm", kernelFunc: replaced[name], setupFunc: old.setupFunc });
      if (backend && old.setupFunc) old.setupFunc(backend);
    }
    registered = true;
  }
  return [...SIMD_KERNEL_NAMES, ...SIMD_REPLACED];
}
