/** Public API of the covid-ct library; notebooks import it as `covid-ct`. */
export * from "./config";
export * from "./backend";
