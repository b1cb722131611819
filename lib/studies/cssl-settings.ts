import type { ProfileName } from "../training/profiles";

/**
 * CSSL fine-tuning input size per profile, where it differs from the profile's: the `quick` MoCo
 * pretrains at 112² (lib/ssl/pretrain.ts PRETRAIN_PROFILES.quick), so Table 7's quick heads read
 * frozen maps of the same size (3×3 at 112²; Table 6's quick rows use 224²). Applied by the run
 * to every `study: "cssl"` config (recorded in its profile).
 */
export const CSSL_INPUT_SIZE: Partial<Record<ProfileName, number>> = { quick: 112 };
