/** Lesions beyond the paper (notebook 05): the lesion segmenter, the lesion statistics and the lesion scores. */
export * from "./profiles";
export * from "./segmenter";
export * from "./burden";
export * from "./score";
