/** The residual U-Net segmenter engine (one road for every target: lungs, lesions) and its mask writer. */
export * from "./engine";
export * from "./reference";
export { writeMasks, maskPathFor } from "./write";
export type { MaskWriter, WriteMasksOptions, WriteMasksResult } from "./write";
export * from "./slices";
