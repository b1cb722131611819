/**
 * Run manifests: what produced a result, written beside every result so it can be reproduced
 * (config, backend, data and weight checksums, git revision, seed, versions, timings).
 */
import { execFileSync } from "child_process";
import * as os from "os";
import * as path from "path";
import { activeBackend, BackendInfo } from "./backend";
import { PROJECT_ROOT } from "./config";
import { sha256File, writeJsonAtomic } from "./util/fs";

export interface GitInfo {
  revision: string | null;
  /** True when tracked files differ from the revision (results may not match it exactly). */
  dirty: boolean | null;
}

export interface RunManifest {
  kind: string;
  createdAt: string;
  git: GitInfo;
  backend: Pick<BackendInfo, "choice" | "tfBackend" | "package" | "packageVersion" | "tfjsVersion" | "gpu" | "wasm" | "webgpu"> | null;
  node: string;
  platform: string;
  cpus: number;
  config: unknown;
  /** Named checksums of inputs, e.g. { "data/covid-ct.sha256": "…", "weights/densenet169": "…" }. */
  checksums: Record<string, string>;
  seed?: number;
  extra?: Record<string, unknown>;
}

/** Git revision of the project checkout (null outside a git checkout). */
export function gitInfo(cwd: string = PROJECT_ROOT): GitInfo {
  try {
    const revision = execFileSync("git", ["rev-parse", "HEAD"], { cwd, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
    const status = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd, stdio: ["ignore", "pipe", "ignore"] }).toString();
    return { revision, dirty: status.trim().length > 0 };
  } catch {
    return { revision: null, dirty: null };
  }
}

export function makeManifest(kind: string, config: unknown, checksums: Record<string, string> = {}, seed?: number, extra?: Record<string, unknown>): RunManifest {
  const b = activeBackend();
  return {
    kind,
    createdAt: new Date().toISOString(),
    git: gitInfo(),
    backend: b ? { choice: b.choice, tfBackend: b.tfBackend, package: b.package, packageVersion: b.packageVersion, tfjsVersion: b.tfjsVersion, gpu: b.gpu, wasm: b.wasm, ...(b.webgpu ? { webgpu: b.webgpu } : {}) } : null,
    node: process.version,
    platform: `${os.platform()}-${os.arch()}`,
    cpus: os.cpus().length,
    config,
    checksums,
    ...(seed !== undefined ? { seed } : {}),
    ...(extra ? { extra } : {}),
  };
}

/** Write manifest.json into dir (atomically) and return its path. */
export function writeManifest(dir: string, m: RunManifest): string {
  const file = path.join(dir, "manifest.json");
  writeJsonAtomic(file, m);
  return file;
}

/**
 * Save a result (JSON) with its manifest beside it: dir/<name>.json + dir/manifest.json.
 * Used by notebooks for everything they compute that is not a training run.
 */
export function saveResult(dir: string, name: string, value: unknown, m: RunManifest): { result: string; manifest: string } {
  const result = path.join(dir, `${name}.json`);
  writeJsonAtomic(result, value);
  return { result, manifest: writeManifest(dir, m) };
}

/** SHA-256 of the committed dataset manifest (identifies which release a result was computed on). */
export function sha256OfManifest(): string {
  return sha256File(path.join(PROJECT_ROOT, "data", "covid-ct.sha256"));
}
