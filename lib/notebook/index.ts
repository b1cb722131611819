/** Headless tslab notebook runner: kernel client, nbformat I/O, HTML export, runner. */
export * from "./nbformat";
export * from "./kernel";
export * from "./html";
export * from "./runner";
