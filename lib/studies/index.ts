/**
 * The paper's three experiments as rows and grids over the one diagnosis run (lib/diagnosis):
 *   study1.ts   Study I, Table 5: models × positive training sets × seeds
 *   study2.ts   Study II, Table 6 and Fig. 4: the 11 rows (arm × lung mask × lesion branch)
 *   cssl.ts     CSSL, Table 7: random / ImageNet / ImageNet + MoCo (and random + MoCo) inits
 */
export * as study1 from "./study1";
export * as study2 from "./study2";
export * as cssl from "./cssl";
