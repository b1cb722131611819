/** Data layer: release layout, metadata, decoding, preprocessing, caching, integrity, statistics. */
export * from "./dataset";
export * from "./metadata";
export * from "./decode";
export * from "./preprocess";
export * from "./cache";
export * from "./checksums";
export * from "./stats";
export * from "./harmonise";
