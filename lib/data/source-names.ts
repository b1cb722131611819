/** The image sources' names (no I/O: the CLI lists them without loading the readers). */
export const SOURCES = ["covid-ct", "covid19-ct-seg", "luna16", "medseg", "sars-cov-2-ct-scan", "covid19-ct-seg-lungs"] as const;
export type SourceName = (typeof SOURCES)[number];

export function isSourceName(x: unknown): x is SourceName {
  return typeof x === "string" && (SOURCES as readonly string[]).includes(x);
}
