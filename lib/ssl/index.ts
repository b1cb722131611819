/** CSSL: MoCo self-supervised pretraining on CT (encoders, momentum, queue, InfoNCE, augmentation, kNN probe). */
export * from "./augment";
export * from "./moco";
export * from "./probe";
export * from "./pretrain";
