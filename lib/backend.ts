/**
 * Backend selection: the best tfjs backend that actually loads on this machine.
 *
 * Order: tfjs-node-gpu (CUDA) → WebGPU (tfjs-backend-webgpu over Dawn, Vulkan on Linux) →
 * tfjs-node (libtensorflow CPU) → wasm (XNNPACK) → cpu (pure JS).
 * `COVIDCT_BACKEND` (node-gpu | webgpu | node | wasm | cpu) forces one; a forced backend that cannot
 * load is an error, never a silent fallback.
 *
 * A backend counts as available only when its tfjs backend registers and initialises, not when a
 * `require` succeeds: an npm override alias can put plain @tensorflow/tfjs under the
 * @tensorflow/tfjs-node name, and that require succeeds without any native backend behind it.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { prepareWasm, WasmSetup } from "./wasm";

export type BackendChoice = "node-gpu" | "webgpu" | "node" | "wasm" | "cpu";
export const BACKEND_ORDER: readonly BackendChoice[] = ["node-gpu", "webgpu", "node", "wasm", "cpu"];

export interface BackendAttempt {
  choice: BackendChoice;
  ok: boolean;
  /** Why it was not used (module missing, native addon failed, no backend registered, …). */
  reason?: string;
}

export interface BackendInfo {
  /** Which of our choices is active. */
  choice: BackendChoice;
  /** tfjs backend name as registered in the engine ("tensorflow", "wasm", "cpu"). */
  tfBackend: string;
  /** npm package that provides it, with its installed version. */
  package: string;
  packageVersion: string;
  tfjsVersion: string;
  /** True for tfjs-node-gpu with a CUDA device behind it, and for WebGPU on a hardware adapter. */
  gpu: boolean;
  /** wasm only: threads and SIMD actually in use. */
  wasm?: WasmSetup;
  /** webgpu only: the adapter Dawn chose, and the Dawn package behind it. */
  webgpu?: WebgpuAdapterInfo;
  attempts: BackendAttempt[];
}

const PACKAGES: Record<BackendChoice, string> = {
  "node-gpu": "@tensorflow/tfjs-node-gpu",
  webgpu: "@tensorflow/tfjs-backend-webgpu",
  node: "@tensorflow/tfjs-node",
  wasm: "@tensorflow/tfjs-backend-wasm",
  cpu: "@tensorflow/tfjs-backend-cpu",
};

let active: BackendInfo | undefined;

/** Installed version of a package, read from its package.json (undefined when absent). */
export function packageVersion(pkg: string): string | undefined {
  try {
    const p = require.resolve(`${pkg}/package.json`);
    return JSON.parse(fs.readFileSync(p, "utf8")).version;
  } catch {
    return undefined;
  }
}

function errText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split("\n")[0].slice(0, 300);
}

async function tryNative(choice: "node-gpu" | "node"): Promise<BackendAttempt> {
  const pkg = PACKAGES[choice];
  const before = new Set(Object.keys(tf.engine().registryFactory));
  try {
    require(pkg);
  } catch (e) {
    return { choice, ok: false, reason: `require('${pkg}') failed: ${errText(e)}` };
  }
  // Both native packages register the backend "tensorflow". If nothing new registered, the
  // module was an alias or stub (e.g. plain tfjs) and there is no native backend.
  const registered = "tensorflow" in tf.engine().registryFactory;
  if (!registered) {
    return { choice, ok: false, reason: `${pkg} loaded but registered no 'tensorflow' backend (alias or stub?)` };
  }
  if (before.has("tensorflow") && choice === "node") {
    // Already registered by node-gpu in this process: fine, the same backend.
  }
  try {
    const ok = await tf.setBackend("tensorflow");
    if (!ok) return { choice, ok: false, reason: `tf.setBackend('tensorflow') returned false` };
    await tf.ready();
  } catch (e) {
    return { choice, ok: false, reason: `backend 'tensorflow' failed to initialise: ${errText(e)}` };
  }
  return { choice, ok: true };
}

async function tryWasm(): Promise<{ attempt: BackendAttempt; setup?: WasmSetup }> {
  try {
    const setup = await prepareWasm();
    const ok = await tf.setBackend("wasm");
    if (!ok) return { attempt: { choice: "wasm", ok: false, reason: "tf.setBackend('wasm') returned false" } };
    await tf.ready();
    return { attempt: { choice: "wasm", ok: true }, setup };
  } catch (e) {
    return { attempt: { choice: "wasm", ok: false, reason: errText(e) } };
  }
}

// ---------------------------------------------------------------------------------------------
// WebGPU: @tensorflow/tfjs-backend-webgpu over Dawn for Node (the npm package `webgpu`).

/** What Dawn reports about the adapter it chose (GPUAdapterInfo and a few limits). */
export interface WebgpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software (CPU) adapter such as SwiftShader or lavapipe. */
  isFallbackAdapter: boolean;
  /** Adapter limits that bound tensor sizes on this backend (bytes). */
  maxBufferSize?: number;
  maxStorageBufferBindingSize?: number;
  features: string[];
  /** The Dawn package and version that found it, e.g. "webgpu@0.6.2". */
  dawnPackage: string;
}

/** The API of the `webgpu` package (dawn.node): `create(flags)` returns a GPU (navigator.gpu). */
interface DawnModule {
  create(flags: string[]): DawnGpu;
  globals: Record<string, unknown>;
}
interface DawnAdapter {
  info?: Record<string, unknown>;
  isFallbackAdapter?: boolean;
  limits?: Record<string, number>;
  features?: Iterable<string>;
}
interface DawnGpu {
  requestAdapter(opts?: { powerPreference?: string }): Promise<DawnAdapter | null>;
}

/**
 * The module that provides Dawn: the `webgpu` package, or `COVIDCT_WEBGPU_MODULE` (a path to a
 * module with the same `create`/`globals` API: a locally built dawn.node wrapper, or the tests'
 * fake adapter).
 */
function dawnModulePath(): string {
  const override = process.env.COVIDCT_WEBGPU_MODULE;
  if (override) return path.resolve(override);
  return require.resolve("webgpu");
}

function dawnPackageName(): string {
  if (process.env.COVIDCT_WEBGPU_MODULE) return `COVIDCT_WEBGPU_MODULE=${process.env.COVIDCT_WEBGPU_MODULE}`;
  return `webgpu@${packageVersion("webgpu") ?? "unknown"}`;
}

/** Load the Dawn module: `webgpu` is an ES module; Node ≥ 20.19 can require() it, older 20.x import() it. */
async function loadDawn(file: string): Promise<DawnModule> {
  try {
    return require(file) as DawnModule;
  } catch (e) {
    if ((e as { code?: string }).code !== "ERR_REQUIRE_ESM") throw e;
    // A real dynamic import (TypeScript would turn `import()` into require under CommonJS).
    const dynImport = new Function("u", "return import(u)") as (u: string) => Promise<DawnModule>;
    return dynImport(require("url").pathToFileURL(file).href);
  }
}

/** Adapter description as one phrase: "NVIDIA H200 (nvidia, hopper)". */
export function describeAdapter(a: WebgpuAdapterInfo): string {
  const name = a.description || a.device || "unnamed adapter";
  const more = [a.vendor, a.architecture].filter(Boolean).join(", ");
  return `'${name}'${more ? ` (${more})` : ""}${a.isFallbackAdapter ? " [software]" : ""}`;
}

/** A CPU implementation of Vulkan/WebGPU: never faster than wasm here, so never chosen automatically. */
export function isSoftwareAdapter(a: WebgpuAdapterInfo): boolean {
  return a.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|software/i.test(`${a.description} ${a.device} ${a.architecture}`);
}

function adapterInfo(a: DawnAdapter): WebgpuAdapterInfo {
  const i = (a.info ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" ? v : "");
  let features: string[] = [];
  try {
    features = [...(a.features ?? [])].map(String).sort();
  } catch {
    /* not iterable: leave empty */
  }
  return {
    vendor: str(i.vendor),
    architecture: str(i.architecture),
    device: str(i.device),
    description: str(i.description),
    isFallbackAdapter: !!(i.isFallbackAdapter ?? a.isFallbackAdapter),
    maxBufferSize: a.limits?.maxBufferSize,
    maxStorageBufferBindingSize: a.limits?.maxStorageBufferBindingSize,
    features,
    dawnPackage: dawnPackageName(),
  };
}

/**
 * Ask Dawn for an adapter in a child process. Dawn prints its reasons (e.g. "Couldn't load Vulkan:
 * libvulkan.so.1: cannot open shared object file") straight to the process's stderr, from native
 * code; in a child they are captured for the reason instead of landing in every notebook's output,
 * and a driver that crashes takes down the child, not the caller.
 */
async function probeAdapter(file: string): Promise<{ adapter?: WebgpuAdapterInfo; reason?: string }> {
  const script = `
const file = process.argv[1];
const out = (o) => { process.stdout.write(JSON.stringify(o) + "\\n"); process.exit(0); };
(async () => {
  let m;
  try { m = require(file); } catch (e) {
    if (e && e.code === "ERR_REQUIRE_ESM") m = await import(require("url").pathToFileURL(file).href);
    else return out({ error: "require('webgpu') failed: " + String(e && e.message || e).split("\\n")[0] });
  }
  const gpu = m.create([]);
  const a = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!a) return out({ adapter: null });
  const i = a.info || {};
  let features = [];
  try { features = [...(a.features || [])].map(String); } catch {}
  out({ adapter: { info: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description, isFallbackAdapter: i.isFallbackAdapter },
    isFallbackAdapter: a.isFallbackAdapter, limits: { maxBufferSize: a.limits && a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits && a.limits.maxStorageBufferBindingSize }, features } });
})().catch((e) => out({ error: String(e && e.message || e).split("\\n")[0] }));
`;
  const { execFile } = await import("child_process");
  const r = await new Promise<{ stdout: string; stderr: string; error: (Error & { signal?: string; code?: unknown; killed?: boolean }) | null }>((resolve) => {
    execFile(process.execPath, ["-e", script, file], { timeout: 60_000, maxBuffer: 4 << 20, encoding: "utf8" }, (error, stdout, stderr) =>
      resolve({ stdout: String(stdout), stderr: String(stderr), error: error as never }),
    );
  });
  const dawnSaid = dawnMessages(r.stderr);
  const line = r.stdout.trim().split("\n").pop() ?? "";
  let parsed: { adapter?: DawnAdapter | null; error?: string } | undefined;
  try {
    parsed = line ? JSON.parse(line) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!parsed) {
    const how = r.error?.killed ? "timed out after 60 s" : r.error?.signal ? `crashed (${r.error.signal})` : `exited with ${r.error?.code ?? "no answer"}`;
    return { reason: `Dawn's adapter probe ${how}${dawnSaid ? `: ${dawnSaid}` : ""}` };
  }
  if (parsed.error) return { reason: `${parsed.error}${dawnSaid ? ` (Dawn: ${dawnSaid})` : ""}` };
  if (!parsed.adapter) return { reason: `Dawn found no GPU adapter (${vulkanDetail(dawnSaid)})` };
  return { adapter: adapterInfo(parsed.adapter) };
}

/** Dawn's own warnings from stderr as one line: source locations dropped, "- While …" lines joined. */
function dawnMessages(stderr: string): string {
  const msgs: string[] = [];
  for (const raw of stderr.split("\n")) {
    const l = raw.trim();
    if (!l || l.startsWith("at ")) continue;
    if (l.startsWith("- ") && msgs.length) msgs[msgs.length - 1] += ` (${l.slice(2).replace(/^While/, "while")})`;
    else msgs.push(l.replace(/^Warning:\s*/, ""));
  }
  return [...new Set(msgs)].join("; ").slice(0, 400);
}

/** Why Vulkan (Dawn's backend on Linux) offered no adapter: Dawn's words, else what we can see. */
function vulkanDetail(dawnSaid: string): string {
  if (dawnSaid) return dawnSaid.startsWith("Couldn't load Vulkan: ") ? dawnSaid.replace(/^Couldn't load Vulkan: /, "Vulkan: ") : `Dawn: ${dawnSaid}`;
  if (process.platform !== "linux") return `no adapter on ${process.platform}`;
  const manifests = vulkanDriverManifests();
  return manifests.length
    ? `Vulkan: loader present, driver manifest(s) ${manifests.slice(0, 3).join(", ")}, but no device offered`
    : "Vulkan: loader present, but no driver manifest (icd.d/*.json) found: no Vulkan driver installed";
}

function vulkanDriverManifests(): string[] {
  const env = process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES;
  if (env) return env.split(":").filter((f) => fs.existsSync(f));
  const dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"];
  const out: string[] = [];
  for (const d of dirs) {
    try {
      for (const f of fs.readdirSync(d)) if (f.endsWith(".json")) out.push(path.join(d, f));
    } catch {
      /* no such folder */
    }
  }
  return out;
}

/** Globals this process got from Dawn, to take back after a failed attempt. */
interface InstalledGlobals {
  added: string[];
  hadNavigator: boolean;
  previousGpu: unknown;
}

function installDawnGlobals(dawn: DawnModule, gpu: DawnGpu): InstalledGlobals {
  const g = globalThis as Record<string, unknown>;
  const added: string[] = [];
  for (const [k, v] of Object.entries(dawn.globals ?? {})) {
    if (!(k in g)) {
      g[k] = v;
      added.push(k);
    }
  }
  const hadNavigator = "navigator" in g && g.navigator !== undefined;
  if (!hadNavigator) g.navigator = {};
  const nav = g.navigator as Record<string, unknown>;
  const previousGpu = nav.gpu;
  try {
    nav.gpu = gpu;
  } catch {
    // Node ≥ 21's navigator has no writable gpu slot: define one.
    Object.defineProperty(nav, "gpu", { value: gpu, configurable: true, writable: true });
  }
  return { added, hadNavigator, previousGpu };
}

function removeDawnGlobals(s: InstalledGlobals): void {
  const g = globalThis as Record<string, unknown>;
  for (const k of s.added) delete g[k];
  if (!s.hadNavigator) delete g.navigator;
  else {
    const nav = g.navigator as Record<string, unknown>;
    if (s.previousGpu === undefined) delete nav.gpu;
    else nav.gpu = s.previousGpu;
  }
}

/**
 * Try WebGPU: ask Dawn (in a child) for an adapter; only when it has one, create the GPU here,
 * install `navigator.gpu` and Dawn's GPU* globals (tfjs-backend-webgpu registers its backend at
 * load time only when `navigator.gpu` exists), load the tfjs backend and initialise it. On any
 * failure the 'webgpu' registration and the globals are removed again, so the engine is as before
 * and the next backend in the order loads as if WebGPU had never been tried.
 */
async function tryWebgpu(opts: { forced: boolean }): Promise<{ attempt: BackendAttempt; adapter?: WebgpuAdapterInfo }> {
  const fail = (reason: string) => ({ attempt: { choice: "webgpu" as const, ok: false, reason } });
  let file: string;
  try {
    file = dawnModulePath();
  } catch (e) {
    return fail(`require('webgpu') failed: ${errText(e)} (optional dependency not installed?)`);
  }
  if (!process.env.COVIDCT_WEBGPU_MODULE) {
    try {
      require.resolve(`${PACKAGES.webgpu}/package.json`);
    } catch (e) {
      return fail(`require('${PACKAGES.webgpu}') failed: ${errText(e)} (optional dependency not installed?)`);
    }
  }
  const probe = await probeAdapter(file);
  if (!probe.adapter) return fail(probe.reason ?? "Dawn found no GPU adapter");
  if (!opts.forced && isSoftwareAdapter(probe.adapter)) {
    return fail(`Dawn's only adapter is a software one, ${describeAdapter(probe.adapter)}: slower than wasm, so not used automatically (COVIDCT_BACKEND=webgpu forces it)`);
  }

  const registeredBefore = "webgpu" in tf.engine().registryFactory;
  let installed: InstalledGlobals | undefined;
  const undo = () => {
    if (!registeredBefore && "webgpu" in tf.engine().registryFactory) {
      try {
        tf.removeBackend("webgpu");
      } catch {
        /* already gone */
      }
    }
    if (installed) removeDawnGlobals(installed);
  };
  try {
    const dawn = await loadDawn(file);
    const gpu = dawn.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return fail("Dawn found a GPU adapter in its probe but none in this process");
    const info = adapterInfo(adapter);
    installed = installDawnGlobals(dawn, gpu);
    require(PACKAGES.webgpu);
    if (!("webgpu" in tf.engine().registryFactory)) {
      undo();
      return fail(`${PACKAGES.webgpu} loaded but registered no 'webgpu' backend (was it loaded before navigator.gpu existed?)`);
    }
    const ok = await tf.setBackend("webgpu");
    if (!ok) {
      undo();
      return fail(`backend 'webgpu' failed to initialise on ${describeAdapter(info)} (tf.setBackend returned false; see the warning above)`);
    }
    await tf.ready();
    return { attempt: { choice: "webgpu", ok: true }, adapter: info };
  } catch (e) {
    undo();
    return fail(`backend 'webgpu' failed to initialise: ${errText(e)}`);
  }
}

async function tryCpu(): Promise<BackendAttempt> {
  try {
    const ok = await tf.setBackend("cpu");
    await tf.ready();
    return ok ? { choice: "cpu", ok: true } : { choice: "cpu", ok: false, reason: "setBackend('cpu') returned false" };
  } catch (e) {
    return { choice: "cpu", ok: false, reason: errText(e) };
  }
}

function parseChoice(value: string | undefined): BackendChoice | undefined {
  if (value === undefined || value === "" || value === "auto") return undefined;
  const v = value.toLowerCase();
  const alias: Record<string, BackendChoice> = {
    "node-gpu": "node-gpu", gpu: "node-gpu", "tfjs-node-gpu": "node-gpu",
    webgpu: "webgpu", dawn: "webgpu", "tfjs-backend-webgpu": "webgpu",
    node: "node", tensorflow: "node", "tfjs-node": "node",
    wasm: "wasm", cpu: "cpu",
  };
  const c = alias[v];
  if (!c) {
    throw new Error(`COVIDCT_BACKEND='${value}' is not a backend. Use one of: ${BACKEND_ORDER.join(", ")} (or unset it for automatic choice).`);
  }
  return c;
}

/**
 * Initialise tfjs on the best available backend (or the one forced by `prefer` /
 * `COVIDCT_BACKEND`) and return what was chosen. Idempotent: later calls return the first result
 * unless `force` is set.
 */
export async function initBackend(opts: { prefer?: BackendChoice | string; force?: boolean } = {}): Promise<BackendInfo> {
  if (active && !opts.force) return active;
  const forced = parseChoice(opts.prefer ?? process.env.COVIDCT_BACKEND);
  const order = forced ? [forced] : BACKEND_ORDER;
  const attempts: BackendAttempt[] = [];
  let wasm: WasmSetup | undefined;
  let webgpu: WebgpuAdapterInfo | undefined;
  for (const choice of order) {
    let a: BackendAttempt;
    if (choice === "node-gpu" || choice === "node") a = await tryNative(choice);
    else if (choice === "webgpu") {
      const r = await tryWebgpu({ forced: forced === "webgpu" });
      a = r.attempt;
      webgpu = r.adapter;
    } else if (choice === "wasm") {
      const r = await tryWasm();
      a = r.attempt;
      wasm = r.setup;
    } else a = await tryCpu();
    attempts.push(a);
    if (a.ok) {
      const pkg = PACKAGES[choice];
      active = {
        choice,
        tfBackend: tf.getBackend(),
        package: pkg,
        packageVersion: packageVersion(pkg) ?? "unknown",
        tfjsVersion: tf.version.tfjs,
        gpu: (choice === "node-gpu" && gpuVisible()) || (choice === "webgpu" && !!webgpu && !isSoftwareAdapter(webgpu)),
        wasm: choice === "wasm" ? wasm : undefined,
        webgpu: choice === "webgpu" ? webgpu : undefined,
        attempts,
      };
      return active;
    }
  }
  const detail = attempts.map((a) => `  ${a.choice}: ${a.reason}`).join("\n");
  throw new Error(
    forced
      ? `The backend forced by COVIDCT_BACKEND=${forced} could not be loaded:\n${detail}\nUnset COVIDCT_BACKEND to fall back automatically, or see environment.md for what it needs.`
      : `No tfjs backend could be loaded:\n${detail}\nRun 'npm ci' in the project root; see environment.md.`,
  );
}

/** The backend chosen by initBackend, or undefined before it ran. */
export function activeBackend(): BackendInfo | undefined {
  return active;
}

function gpuVisible(): boolean {
  // tfjs-node-gpu falls back to CPU kernels when CUDA is missing; a device file is the cheap check.
  try {
    return fs.existsSync("/dev/nvidia0") || fs.existsSync(path.join("/proc", "driver", "nvidia"));
  } catch {
    return false;
  }
}

/** One line for logs and the first output of every notebook. */
export function describeBackend(b: BackendInfo): string {
  let s = `tfjs ${b.tfjsVersion} on backend '${b.tfBackend}' (${b.package}@${b.packageVersion})`;
  if (b.choice === "node-gpu") s += b.gpu ? ", CUDA GPU" : ", no CUDA device visible";
  if (b.webgpu) s += `, adapter ${describeAdapter(b.webgpu)} (Dawn: ${b.webgpu.dawnPackage})`;
  if (b.wasm) s += `, ${b.wasm.threads} thread(s), SIMD ${b.wasm.simd ? "on" : "off"}`;
  const skipped = b.attempts.filter((a) => !a.ok);
  if (skipped.length) s += `; skipped: ${skipped.map((a) => a.choice).join(", ")}`;
  return s;
}
