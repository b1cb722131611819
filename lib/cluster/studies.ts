/**
 * The grids of the studies, registered from the code the notebooks run: Study I's entries are
 * studyOneCells (the cells runStudyOneGrid trains) at defaultRunDir (where the notebook looks).
 * Studies II and CSSL register theirs here when they land (CSSL: `pretrain` entries, and
 * fine-tuning entries with dependsOn naming them).
 */
import * as path from "path";
import type { ProtocolName } from "../protocols";
import { studyOneCells, defaultRunDir, builtModelName } from "../studies/study1";
import { getProfile } from "../training/profiles";
import { DEFAULT_RUNS_ROOT, GridEntry, registerGrid } from "./grid";

registerGrid({
  study: "study1",
  description: "Study I (Table 5): models × positive arms × seeds, each one `covid-ct train`",
  notebook: "02",
  entries(req) {
    const profile = getProfile(req.profile);
    const cells = studyOneCells({ profile: req.profile, protocol: req.protocol as ProtocolName, seeds: req.seeds, epochs: req.epochs });
    const root = path.resolve(req.runsRoot ?? DEFAULT_RUNS_ROOT);
    return cells.map((c): GridEntry => {
      // The notebook's directory, moved under the requested runs root (same relative layout).
      const rel = path.relative(DEFAULT_RUNS_ROOT, defaultRunDir(c));
      const built = builtModelName(c, profile);
      return {
        study: "study1",
        id: path.basename(rel),
        command: "train",
        args: [
          "--model", c.model, "--positives", c.positives, "--profile", c.profile, "--protocol", c.protocol ?? "official", "--seed", String(c.seed),
          ...(c.epochs !== undefined ? ["--epochs", String(c.epochs)] : []),
        ],
        runDir: path.join(root, rel),
        dependsOn: [],
        config: {
          study: "study1", protocol: c.protocol ?? "official", profile: c.profile, model: c.model, modelBuilt: built, arm: c.positives,
          init: profile.imagenet ? "imagenet" : "random", seed: c.seed, epochs: c.epochs ?? profile.epochs,
        },
      };
    });
  },
});
