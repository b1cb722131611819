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

/**
 * The paper's names for our arms. Under the official split, original-ct (50 MedSeg slices) and
 * covid-ct-all (191 images) stand in for COVID-Seg and COVID-CT-349; the paper protocol has the
 * paper's own three sets.
 */
export const PAPER_ARM_NAMES: Record<string, string> = {
  "original-ct": "COVID-Seg (118 original CTs)",
  "covid-ct-all": "COVID-CT-349",
  "covid-ct-118": "COVID-CT-118",
  "covid-seg": "COVID-Seg",
  "covid-ct-349": "COVID-CT-349",
  combination: "Combination (COVID-CT-349 + COVID-Seg)",
};

/** Table 5 key (PAPER_TABLE5) of each arm of either protocol. */
export const PAPER_TABLE5_KEY: Record<string, "original-ct" | "covid-ct-all" | "covid-ct-118"> = {
  "original-ct": "original-ct",
  "covid-ct-all": "covid-ct-all",
  "covid-ct-118": "covid-ct-118",
  "covid-seg": "original-ct",
  "covid-ct-349": "covid-ct-all",
};

/**
 * Tables 2–4 (the paper's evaluation protocol on original CTs): images (and patients where the
 * paper gives them) per split, class and source. null: not stated. The Radiopaedia negatives do
 * not exist in our data; the rest of the 463 training negatives beyond COVID-CT's 397 and LUNA's
 * 36 are not itemised here.
 */
export interface PaperProtocolRow {
  split: "train" | "val" | "test";
  cls: "covid" | "noncovid";
  /** Our source name, or "radiopaedia" (absent here) / "all" (the paper's total of the class). */
  source: "covid-ct" | "covid19-ct-seg" | "luna16" | "radiopaedia" | "all";
  images: number;
  patients: number | null;
}

export const PAPER_PROTOCOL_TABLES: readonly PaperProtocolRow[] = [
  // Table 2: training set. Positives: COVID-CT-349 and COVID-Seg (118 slices of 12 volumes) = 467.
  { split: "train", cls: "covid", source: "covid-ct", images: 349, patients: 216 },
  { split: "train", cls: "covid", source: "covid19-ct-seg", images: 118, patients: 12 },
  { split: "train", cls: "covid", source: "all", images: 467, patients: null },
  { split: "train", cls: "noncovid", source: "luna16", images: 36, patients: null },
  { split: "train", cls: "noncovid", source: "all", images: 463, patients: null },
  // Table 4: validation set.
  { split: "val", cls: "covid", source: "covid19-ct-seg", images: 88, patients: 4 },
  { split: "val", cls: "noncovid", source: "luna16", images: 48, patients: 38 },
  { split: "val", cls: "noncovid", source: "radiopaedia", images: 16, patients: null },
  // Table 3: test set.
  { split: "test", cls: "covid", source: "covid19-ct-seg", images: 173, patients: 4 },
  { split: "test", cls: "noncovid", source: "luna16", images: 164, patients: 19 },
  { split: "test", cls: "noncovid", source: "radiopaedia", images: 4, patients: null },
];

/** One row of Table 6 / Table 7: accuracy / F1 / AUC in %. */
export interface PaperScores {
  accuracy: number;
  f1: number;
  auc: number;
}

/**
 * Table 6 (Study II, DenseNet-169, paper protocol), keyed `<arm>|<variant>` (variant: "", "lung",
 * "lesion", "lung-lesion"). Rows without a mask repeat Table 5's DenseNet-169 rows.
 */
export const PAPER_TABLE6: Record<string, PaperScores> = {
  "covid-ct-349|": { accuracy: 79.5, f1: 76.0, auc: 90.1 },
  "covid-ct-349|lung": { accuracy: 85.0, f1: 85.9, auc: 92.8 },
  "covid-seg|": { accuracy: 69.8, f1: 61.1, auc: 86.9 },
  "covid-seg|lung": { accuracy: 68.0, f1: 74.8, auc: 85.8 },
  "covid-seg|lesion": { accuracy: 72.4, f1: 77.5, auc: 95.0 },
  "covid-ct-118|": { accuracy: 57.8, f1: 36.3, auc: 75.2 },
  "covid-ct-118|lung": { accuracy: 73.3, f1: 66.4, auc: 86.2 },
  "combination|": { accuracy: 74.5, f1: 70.1, auc: 89.8 },
  "combination|lung": { accuracy: 86.2, f1: 87.2, auc: 97.6 },
  "combination|lesion": { accuracy: 83.3, f1: 84.6, auc: 94.8 },
  "combination|lung-lesion": { accuracy: 87.1, f1: 88.1, auc: 95.2 },
};

/** Table 7 (CSSL): the best Study II model (lung + lesion, Combination) per initialisation. */
export const PAPER_TABLE7: Record<string, PaperScores> = {
  random: { accuracy: 83.0, f1: 83.2, auc: 94.1 },
  imagenet: { accuracy: 87.1, f1: 88.1, auc: 95.2 },
  "imagenet+moco": { accuracy: 89.1, f1: 89.6, auc: 98.1 },
};
