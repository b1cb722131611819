/**
 * Tables and figures of the notebooks, from finished run directories (the paper's number beside ours):
 *   dataset.ts  notebook 01: Table 1, Figure 2 (age, gender), splits, audit, protocol tables
 *   study1.ts   notebook 02: Table 5, ROC and training curves, MedSeg check, Grad-CAM, shortcut baseline
 *   study2.ts   notebook 03: Table 6, lung-mask quality, Figure 3 (masks), lesion predictions
 *   harmonise.ts Table 5 cells and source probes without / with harmonisation, and its gallery
 *   cssl.ts     notebook 04: Table 7, pretraining curves, probe, ROC, embedding
 *   lesions.ts  notebook 05: lesion Dice, lesion galleries, "What transfers", external ROC, the orderings read on the external set
 *   runs.ts     what every table computes from runs: set predictions, seed-mean bootstrap, ROC
 */
export * as dataset from "./dataset";
export * as study1 from "./study1";
export * as study2 from "./study2";
export * as cssl from "./cssl";
export * as lesions from "./lesions";
export * as harmonise from "./harmonise";
export * from "./runs";
