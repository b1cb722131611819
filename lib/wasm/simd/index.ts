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
  adam(p: number, m: number, v: number, g: number, po: number, mo: number, vo: number, n: number, b1: number, b2: number, lr: number, eps: number, c1: number, c2: number): void;
}

export const SIMD_KERNEL_NAMES = ["CovidBnStats", "CovidBnBwdSums", "CovidChannelAffine", "CovidChannelAffine2", "CovidAdam"] as const;

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

/** Run `f` with a zeroed f64 scratch of 2·C doubles; returns the two halves as plain arrays. */
function withSums(backend: Any, inst: { memory: WasmMemory }, C: number, f: (s1: number, s2: number) => void): [Float64Array, Float64Array] {
  const bytes = 16 * C + 16;
  const raw = backend.wasm._malloc(bytes) >>> 0;
  const base = (raw + 15) & ~15;
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

/** Register the SIMD kernels for 'wasm' (idempotent). */
export function registerSimdKernels(): string[] {
  if (!registered) {
    const impls: Record<(typeof SIMD_KERNEL_NAMES)[number], Any> = {
      CovidBnStats: bnStats,
      CovidBnBwdSums: bnBwdSums,
      CovidChannelAffine: channelAffine,
      CovidChannelAffine2: channelAffine2,
      CovidAdam: adam,
    };
    for (const name of SIMD_KERNEL_NAMES) {
      if (tf.getKernel(name, "wasm")) tf.unregisterKernel(name, "wasm");
      tf.registerKernel({ kernelName: name, backendName: "wasm", kernelFunc: impls[name] });
    }
    registered = true;
  }
  return SIMD_KERNEL_NAMES.slice();
}
