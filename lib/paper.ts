/**
 * The paper's reported numbers, in one place, so every table can print them beside ours.
 * Yang, He, Zhao, Zhang, Zhang, Xie. "COVID-CT-Dataset: A CT Image Dataset about COVID-19".
 * arXiv:2003.13865 (2020).
 */

/** Section 2 / Table 1 row for COVID-CT and Figure 2. */
export const PAPER_DATASET = {
  covidImages: 349,
  covidPatients: 216,
  noncovidImages: 397,
  /** "Of the 216 patients, 169 have age information and 137 have gender information." */
  withAge: 169,
  withGender: 137,
  male: 86,
  female: 51,
  /** Image sizes of the COVID images as reported (pixels). */
  height: { min: 153, mean: 491, max: 1853 },
  width: { min: 124, mean: 383, max: 1485 },
} as const;

/** The official split (the paper's data-split table), images per class. */
export const PAPER_SPLIT = {
  train: { covid: 191, noncovid: 234 },
  val: { covid: 60, noncovid: 58 },
  test: { covid: 98, noncovid: 105 },
} as const;

/** Table 5 (Study I), percentages: accuracy / F1 / AUC. */
export const PAPER_TABLE5 = {
  densenet169: {
    "original-ct": { accuracy: 69.8, f1: 61.1, auc: 86.9 },
    "covid-ct-all": { accuracy: 79.5, f1: 76.0, auc: 90.1 },
    "covid-ct-118": { accuracy: 57.8, f1: 36.3, auc: 75.2 },
  },
  resnet50: {
    "original-ct": { accuracy: 66.3, f1: 58.1, auc: 80.6 },
    "covid-ct-all": { accuracy: 77.4, f1: 74.6, auc: 86.4 },
    "covid-ct-118": { accuracy: 60.4, f1: 42.6, auc: 74.1 },
  },
} as const;

/** The paper's names for our arms (its COVID-Seg arm is replaced by original CTs from MedSeg). */
export const PAPER_ARM_NAMES: Record<string, string> = {
  "original-ct": "COVID-Seg (118 original CTs)",
  "covid-ct-all": "COVID-CT-349",
  "covid-ct-118": "COVID-CT-118",
};
