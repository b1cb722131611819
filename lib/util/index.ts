/** Small helpers with no project imports: atomic writes, seeded draws, HTML escaping, value checks. */
export * from "./fs";
export * from "./random";
export * from "./html";
export * from "./checks";
