/**
 * wasm backend setup for Node (issue "Fast CNN training on CPU-only machines").
 *
 * `prepareWasm()` is called by lib/backend.ts before `tf.setBackend("wasm")`. It
 *  1. replaces the stock 'wasm' backend factory with one that loads the threaded-SIMD binary in
 *     Node (stock tfjs-backend-wasm 4.22 never enables threads in Node), with three workarounds:
 *       - the pthread worker script is written to a file and handed to emscripten as a path (the
 *         stock loader hands a blob: URL, which Node's worker_threads cannot open);
 *       - the main script is handed to the workers as a file path, not a Blob;
 *       - `os.cpus()` is widened while the module initialises, because the C++ side caps XNNPACK's
 *         pool at `emscripten_num_logical_cores() / 2` (1 thread on a 2-core machine);
 *     falling back to the stock single-threaded SIMD loader if any of that fails;
 *  2. registers the replacement training kernels of ./kernels (conv filter/input gradients,
 *     transposed matmul, Tile, Slice, Identity/Cast) and, for training-mode BatchNormalization
 *     layers on wasm, the fused op of ./batchnorm, whose passes (and Adam's update, ./adam) run
 *     as hand-written SIMD kernels on the wasm heap (./simd);
 *  3. makes a wasm heap allocation failure throw a clear error instead of writing to address 0.
 *
 * Environment: COVIDCT_WASM_THREADS=n (default: number of cores, at most 8),
 * COVIDCT_WASM_KERNELS=stock (keep the stock kernels; for A/B benchmarks).
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as os from "os";
// The mutable module object (the `import *` namespace has getter-only properties).
const osModule: { cpus: () => os.CpuInfo[] } = require("os");
import * as path from "path";
import { registerTrainingKernels, registeredKernelNames } from "./kernels";
import { installFusedBatchNorm } from "./batchnorm";
import { installFusedAdam } from "./adam";
import { installFusedReluGrad } from "./relu";
import { registerSimdKernels, simdKernelsAvailable } from "./simd";

export interface WasmSetup {
  threads: number;
  simd: boolean;
  /** Names of the replacement training kernels registered for 'wasm'. */
  kernels: string[];
  /** How the module was loaded: "threaded-simd" (our loader) or "stock" (package loader). */
  loader?: "threaded-simd" | "stock";
  /** Why the threaded loader was not used, when it was not. */
  fallbackReason?: string;
}

export interface PrepareWasmOptions {
  /** XNNPACK threads (default: COVIDCT_WASM_THREADS or the number of cores, capped at 8). */
  threads?: number;
  /** Register the replacement kernels (default true unless COVIDCT_WASM_KERNELS=stock). */
  kernels?: boolean;
}

/** Largest wasm heap (wasm32 with memory growth): 4 GiB. */
export const WASM_HEAP_LIMIT_BYTES = 4 * 1024 ** 3;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let prepared: WasmSetup | undefined;
let loaderInfo: { loader: "threaded-simd" | "stock"; fallbackReason?: string } = { loader: "stock" };
let wantedThreads = 1;
let fusedBn = false;
let fusedAdam = false;
let fusedRelu = false;

function wasmPackageRoot(): string {
  return path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"));
}

function defaultThreads(): number {
  const env = process.env.COVIDCT_WASM_THREADS;
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1) throw new Error(`COVIDCT_WASM_THREADS='${env}' is not a positive integer`);
    return Math.min(n, 8);
  }
  return Math.max(1, Math.min(os.cpus().length, 8));
}

/** Write the pthread worker script next to the OS temp dir (once per version) and return its path. */
function workerScriptPath(root: string): string {
  const version = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).version as string;
  const src: string = require(path.join(root, "wasm-out", "tfjs-backend-wasm-threaded-simd.worker.js")).wasmWorkerContents;
  // The contents come from a template literal in which "\n" inside string literals became real
  // newlines; escape them back, as the stock loader does before making its Blob.
  const text = src.replace(/\n/g, "\\n");
  const dir = path.join(os.tmpdir(), `covidct-tfjs-wasm-${version}-${process.getuid ? process.getuid() : 0}`);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "tfjs-backend-wasm-threaded-simd.worker.js");
  if (!fs.existsSync(file) || fs.readFileSync(file, "utf8") !== text) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  }
  return file;
}

/** Instantiate the threaded-SIMD emscripten module in Node with `threads` XNNPACK threads. */
async function loadThreadedModule(threads: number): Promise<Any> {
  const root = wasmPackageRoot();
  const mainScript = path.join(root, "wasm-out", "tfjs-backend-wasm-threaded-simd.js");
  const wasmBinary = path.join(root, "dist", "tfjs-backend-wasm-threaded-simd.wasm");
  const worker = workerScriptPath(root);
  const factory: (cfg: Any) => Promise<Any> = require(mainScript);
  const cfg = {
    locateFile: (p: string, prefix: string) =>
      p.endsWith(".worker.js") ? worker : p.endsWith(".wasm") ? wasmBinary : prefix + p,
    mainScriptUrlOrBlob: mainScript,
  };
  // The C++ global `num_cores = emscripten_num_logical_cores() / 2` is computed while the module
  // initialises and caps the XNNPACK pool; report 2×threads cores for that moment only.
  const realCpus = osModule.cpus;
  const cpus = realCpus();
  osModule.cpus = () => {
    const r = cpus.slice();
    while (r.length < 2 * threads) r.push(cpus[0]);
    return r;
  };
  let module: Any;
  try {
    module = await factory(cfg);
  } finally {
    osModule.cpus = realCpus;
  }
  module.tfjs = {
    init: module.cwrap("init", null, []),
    initWithThreadsCount: module.cwrap("init_with_threads_count", null, ["number"]),
    getThreadsCount: module.cwrap("get_threads_count", "number", []),
    registerTensor: module.cwrap("register_tensor", null, ["number", "number", "number"]),
    disposeData: module.cwrap("dispose_data", null, ["number"]),
    dispose: module.cwrap("dispose", null, []),
  };
  return module;
}

/** Let the process exit while XNNPACK's pool threads idle (emscripten ref()s running workers). */
function unrefWorkers(module: Any): void {
  const pt = module?.PThread;
  if (!pt) return;
  for (const w of [...(pt.runningWorkers ?? []), ...(pt.unusedWorkers ?? [])]) {
    if (w && typeof w.unref === "function") w.unref();
  }
}

/**
 * Bytes that JS-side allocations (tensors, kernel scratch) may hold at once. The rest of the 4 GiB
 * heap is left to allocations inside the wasm module (XNNPACK packed weights, indirection
 * buffers): when those fail the threaded module does not report an error — it stalls. Measured:
 * DenseNet-169 at 224², one pass of 12 examples, hung in Conv2DBackpropInput with the heap at
 * 4.00 GiB.
 */
export const wasmHeapGuard = { limitBytes: WASM_HEAP_LIMIT_BYTES - 512 * 2 ** 20, allocatedBytes: 0, peakBytes: 0 };

/** Throw a clear error instead of letting the wasm heap run out (see wasmHeapGuard). */
function guardAllocations(backend: Any): void {
  if (backend.__covidctGuarded) return;
  backend.__covidctGuarded = true;
  const wasm = backend.wasm;
  // Emscripten's _malloc/_free start as stubs that, on first call, replace themselves on the
  // module with the raw exports — which would silently remove a wrapper. Resolve them first.
  wasm._free(wasm._malloc(16));
  const rawMalloc = wasm._malloc;
  const rawFree = wasm._free;
  const sizes = new Map<number, number>();
  wasm._malloc = (n: number) => {
    if (n > 0 && wasmHeapGuard.allocatedBytes + n > wasmHeapGuard.limitBytes) {
      throw new WasmHeapExhaustedError(
        `wasm heap exhausted: allocating ${(n / 2 ** 20).toFixed(1)} MiB would put tensors at ` +
          `${((wasmHeapGuard.allocatedBytes + n) / 2 ** 30).toFixed(2)} GiB, over the ${(wasmHeapGuard.limitBytes / 2 ** 30).toFixed(2)} GiB ` +
          `that the 4 GiB wasm heap can give them. Train with smaller micro-batches (lib/training/accumulate: trainStepAccumulated / planMicroBatch) or a smaller input size.`,
      );
    }
    const p = rawMalloc(n);
    if (n > 0 && (p === 0 || p === null)) {
      throw new WasmHeapExhaustedError(`wasm heap exhausted: could not allocate ${(n / 2 ** 20).toFixed(1)} MiB. Train with smaller micro-batches or a smaller input size.`);
    }
    const u = p >>> 0;
    sizes.set(u, n);
    wasmHeapGuard.allocatedBytes += n;
    if (wasmHeapGuard.allocatedBytes > wasmHeapGuard.peakBytes) wasmHeapGuard.peakBytes = wasmHeapGuard.allocatedBytes;
    return p;
  };
  wasm._free = (p: number) => {
    const u = p >>> 0;
    const n = sizes.get(u);
    if (n !== undefined) {
      sizes.delete(u);
      wasmHeapGuard.allocatedBytes -= n;
    }
    return rawFree(p);
  };
}

export class WasmHeapExhaustedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WasmHeapExhaustedError";
  }
}

function installFactory(threads: number): void {
  const W: Any = require("@tensorflow/tfjs-backend-wasm");
  const engine: Any = tf.engine();
  const stock = engine.registryFactory?.wasm;
  if (!stock) throw new Error("@tensorflow/tfjs-backend-wasm did not register a 'wasm' backend");
  if (engine.registry?.wasm) return; // already initialised: leave it as it is
  if (stock.factory.__covidct) return;
  const stockFactory = stock.factory;
  const priority = stock.priority;
  const factory = async () => {
    if (typeof SharedArrayBuffer === "undefined") {
      loaderInfo = { loader: "stock", fallbackReason: "SharedArrayBuffer unavailable" };
      return stockFactory();
    }
    try {
      const module = await loadThreadedModule(threads);
      W.setThreadsCount(threads);
      const backend = new W.BackendWasm(module);
      unrefWorkers(module);
      guardAllocations(backend);
      loaderInfo = { loader: "threaded-simd" };
      tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
      return backend;
    } catch (e) {
      loaderInfo = { loader: "stock", fallbackReason: e instanceof Error ? e.message : String(e) };
      const b = await stockFactory();
      guardAllocations(b);
      return b;
    }
  };
  (factory as Any).__covidct = true;
  tf.removeBackend("wasm");
  tf.registerBackend("wasm", factory, priority);
}

/** Register the wasm backend (idempotent) and report how it is configured. */
export async function prepareWasm(opts: PrepareWasmOptions = {}): Promise<WasmSetup> {
  require("@tensorflow/tfjs-backend-wasm");
  wantedThreads = opts.threads ?? defaultThreads();
  installFactory(wantedThreads);
  const useKernels = opts.kernels ?? process.env.COVIDCT_WASM_KERNELS !== "stock";
  const kernels = useKernels ? registerTrainingKernels() : registeredKernelNames();
  if (useKernels) {
    registerSimdKernels();
    fusedBn = installFusedBatchNorm();
    fusedAdam = installFusedAdam();
    fusedRelu = installFusedReluGrad();
  }
  const simd = Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"));
  prepared = { threads: wantedThreads, simd, kernels };
  return describeWasm();
}

/**
 * The setup actually in effect. Before the backend is initialised `threads` is the number asked
 * for; afterwards it is what XNNPACK reports.
 */
export function describeWasm(): WasmSetup {
  const base = prepared ?? { threads: 1, simd: false, kernels: [] };
  let threads = base.threads;
  try {
    const W: Any = require("@tensorflow/tfjs-backend-wasm");
    if ((tf.engine() as Any).registry?.wasm) threads = W.getThreadsCount();
  } catch {
    /* not initialised */
  }
  const simd = simdKernelsAvailable();
  const kernels = registeredKernelNames().concat(
    fusedBn ? [`BatchNormalization (fused training op${simd ? ", SIMD" : ""})`] : [],
    fusedAdam && simd ? ["Adam (fused SIMD update)"] : [],
    simd ? ["Relu (SIMD)", "Sum over leading axes (SIMD)", "Transpose (SIMD)"] : [],
    fusedRelu && simd ? ["Relu gradient (fused SIMD)"] : [],
  );
  return { ...base, threads, kernels, loader: loaderInfo.loader, fallbackReason: loaderInfo.fallbackReason };
}

/** Bytes currently reserved by the wasm heap (0 when the backend is not initialised). */
export function wasmHeapBytes(): number {
  const b: Any = (tf.engine() as Any).registry?.wasm;
  return b?.wasm?.HEAPU8?.buffer?.byteLength ?? 0;
}

export { registerTrainingKernels, unregisterTrainingKernels, registeredKernelNames } from "./kernels";
export { fusedAdamOptions, installFusedAdam, uninstallFusedAdam } from "./adam";
export { simdKernelsAvailable, SIMD_KERNEL_NAMES } from "./simd";
export { fusedBatchNormOptions, fusedBatchNormTraining, installFusedBatchNorm, uninstallFusedBatchNorm } from "./batchnorm";
