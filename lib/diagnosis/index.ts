/**
 * The diagnosis run (data → model → training → predictions → metrics) that Studies I, II and CSSL
 * share; lib/studies only declares each study's rows and grids over it.
 *   arms.ts        the studies and their positive training sets
 *   config.ts      DiagnosisConfig, its checks, the recorded config, run directory names
 *   data.ts        the examples of a run under its protocol
 *   inputs.ts, mask-inputs.ts, masks.ts, lung-provider.ts   examples → tensors, lung/lesion masks
 *   prepare.ts     what is trained: shortcut cues, backbone or cached features, mask runs
 *   run.ts         runDiagnosis: validate, open the run directory, train, predict, write metrics
 *   results.ts     metrics from predictions, result types, evaluate, reload the selected model
 *   source-probe.ts  how visible is the source to the frozen network (beyond the paper)
 */
export * from "./arms";
export * from "./config";
export * from "./data";
export * from "./inputs";
export * from "./mask-inputs";
export * from "./masks";
export * from "./lung-provider";
export * from "./prepare";
export * from "./results";
export * from "./run";
export * from "./source-probe";
