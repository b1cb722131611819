/**
 * The training engine (paper Sections 3–4, "Experimental settings"): one loop for every task.
 *   loop.ts          trainModel (epochs, validation-AUC checkpoint selection, resume), classification task
 *   multitask.ts     Study II's classifier + lesion loss (Fig. 4B/4C)   segmentation.ts  the U-Net's task
 *   accumulate.ts    micro-batched gradient steps                        checkpoint.ts    saved model/optimizer/loop state
 *   schedule.ts      cosine learning rate                                augment.ts       the paper's augmentation (paired for masks)
 *   profiles.ts      paper | quick | smoke settings                      progress.ts      CLI bars and notebook progress
 */
export * from "./loop";
export * from "./multitask";
export * from "./segmentation";
export * from "./accumulate";
export * from "./checkpoint";
export * from "./schedule";
export * from "./augment";
export * from "./profiles";
export * from "./progress";
