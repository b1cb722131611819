/** Lung masks for Study II: the classical extractor (pseudo labels); the U-Net lives in lib/models/unet.ts. */
export * from "./classical";
export * from "./input";
