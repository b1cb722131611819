/** The run layer: run directories (safety, ownership, lock, reuse/resume/replace) and predictions. */
export * from "./dir";
export * from "./lock";
export * from "./open";
export * from "./predictions";
