/** Public API of the covid-ct library; notebooks import it as `covid-ct`. */
export * from "./config";
export * from "./backend";
export { runNotebook, reproduce, listNotebooks, resolveNotebook, parameterEnvName, PARAMETER_ENV_PREFIX } from "./notebook/runner";
export type { RunNotebookOptions, RunNotebookResult, ReproduceOptions, ReproduceResult, FailedCell, NotebookParameters } from "./notebook/runner";
export * from "./data";
export * from "./audit";
export * from "./models";
export * from "./evaluation";
export * from "./plots";
export * from "./paper";
export * from "./manifest";
export * as datasetReport from "./reports/dataset";
export * as study1 from "./studies/study1";
export * as study1Report from "./reports/study1";
export * as profiles from "./training/profiles";
export { notebookProgress, cliProgress } from "./training/progress";
export * from "./gradcam";
export * as lungs from "./lungs";
