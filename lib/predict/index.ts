/**
 * Score your own CT (`covid-ct predict`, README "Score your own CT"):
 *   ../data/inputs.ts  INPUT… → slices and DICOM series (DICOM read by data/dicom.ts), bad inputs
 *               as errors (re-exported here)
 *   predict.ts  scoring with a finished run (diagnosis/predict.ts: the run's own road) or a lesion
 *               score; lung masks, lesion burden, outputs written into --out
 *   rows.ts     predictions.csv's rows and the series rule
 *   gallery.ts  gallery.html: the slice as the model saw it, lungs, lesions, Grad-CAM
 */
export * from "../data/inputs";
export * from "./rows";
export * from "./predict";
export * from "./gallery";
