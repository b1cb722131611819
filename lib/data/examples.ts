/**
 * Examples: an image file with its label and source, as every study, protocol and pretraining run
 * sees it; and their gray pixels after the shared preprocessing (orientation, chest crop, resize).
 */
import { mapLimit, preprocessCached } from "./cache";
import { Harmoniser, harmoniseImage } from "./harmonise";
import { PreprocessedImage, PreprocessOptions } from "./preprocess";
import { SourceName, sourcePreprocessing } from "./sources";

export interface Example {
  /** Stable id: `<source>/<class>/<file>`. */
  id: string;
  path: string;
  /** 1 = COVID, 0 = NonCOVID. */
  label: 0 | 1;
  /** Image source (default covid-ct): sets the orientation transform and crop (lib/data/sources.ts). */
  source?: SourceName;
}

/** Preprocessing options of an example: gray at `size`, plus its source's orientation and crop. */
export function examplePreprocess(e: Example, size: number): PreprocessOptions {
  return { size, channels: 1, ...sourcePreprocessing(e.source ?? "covid-ct", e.path) };
}

/** Preprocessed (cached) images of one size, with their crops. */
export function loadPreprocessed(examples: readonly Example[], size: number): Promise<PreprocessedImage[]> {
  return mapLimit(examples, 4, (e) => preprocessCached(e.path, examplePreprocess(e, size)));
}

/**
 * Gray images of one size, kept in memory as bytes (746 images at 224² ≈ 37 MB); harmonised when
 * a harmoniser is given (lib/data/harmonise.ts), else the cached pixels as they are.
 */
export async function loadGrayImages(examples: readonly Example[], size: number, harmonise?: Harmoniser | null): Promise<Uint8Array[]> {
  return mapLimit(examples, 4, async (e) => harmoniseImage(await preprocessCached(e.path, examplePreprocess(e, size)), harmonise));
}

/** What every source of examples carries: count, labels and ids, in the examples' order. */
export abstract class LabelledExamples {
  readonly size: number;
  readonly labels: number[];
  readonly ids: string[];
  constructor(examples: readonly Pick<Example, "id" | "label">[]) {
    this.size = examples.length;
    this.labels = examples.map((e) => e.label);
    this.ids = examples.map((e) => e.id);
  }
}
