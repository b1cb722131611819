/**
 * Backend selection: the best tfjs backend that actually loads on this machine.
 *
 * Order: tfjs-node-gpu (CUDA) → tfjs-node (libtensorflow CPU) → wasm (XNNPACK) → cpu (pure JS).
 * `COVIDCT_BACKEND` (node-gpu | node | wasm | cpu) forces one; a forced backend that cannot load is
 * an error, never a silent fallback.
 *
 * A backend counts as available only when its tfjs backend registers and initialises, not when a
 * `require` succeeds: an npm override alias can put plain @tensorflow/tfjs under the
 * @tensorflow/tfjs-node name, and that require succeeds without any native backend behind it.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "fs";
import * as path from "path";
import { prepareWasm, WasmSetup } from "./wasm";

export type BackendChoice = "node-gpu" | "node" | "wasm" | "cpu";
export const BACKEND_ORDER: readonly BackendChoice[] = ["node-gpu", "node", "wasm", "cpu"];

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
  /** True only for tfjs-node-gpu with a CUDA device behind it. */
  gpu: boolean;
  /** wasm only: threads and SIMD actually in use. */
  wasm?: WasmSetup;
  attempts: BackendAttempt[];
}

const PACKAGES: Record<BackendChoice, string> = {
  "node-gpu": "@tensorflow/tfjs-node-gpu",
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
  for (const choice of order) {
    let a: BackendAttempt;
    if (choice === "node-gpu" || choice === "node") a = await tryNative(choice);
    else if (choice === "wasm") {
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
        gpu: choice === "node-gpu" && gpuVisible(),
        wasm: choice === "wasm" ? wasm : undefined,
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
  if (b.wasm) s += `, ${b.wasm.threads} thread(s), SIMD ${b.wasm.simd ? "on" : "off"}`;
  const skipped = b.attempts.filter((a) => !a.ok);
  if (skipped.length) s += `; skipped: ${skipped.map((a) => a.choice).join(", ")}`;
  return s;
}
