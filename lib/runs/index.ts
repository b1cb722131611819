/** The run layer: run directories (safety, ownership, lock, reuse/resume/replace) and predictions. */
export * from "./dir";
export * from "./lock";
export * from "./open";
export * from "./predictions";
// Manifests (config, backend, checksums, git revision) are part of every run directory and result.
export { gitInfo, makeManifest, saveResult, writeManifest } from "../manifest";
export type { GitInfo, RunManifest } from "../manifest";
