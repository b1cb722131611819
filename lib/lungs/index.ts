/** Lung masks for Study II: the classical extractor (pseudo labels) and the residual U-Net segmenter trained on them. */
export * from "./classical";
export * from "./input";
export * from "./profiles";
export * from "./slices";
export * from "./segmenter";
