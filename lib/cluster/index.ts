/** Grid backends (lib/cluster): grids as data, the local runner and the Slurm emitter. */
export * from "./grid";
export * from "./local";
export * from "./slurm";
import "./studies";
