/**
 * The examples of one run: the protocol's negatives, validation and test sets, the arm's positives,
 * and the MedSeg test slices (original CTs, all COVID) every run also predicts.
 */
import * as path from "path";
import seedrandom from "seedrandom";
import { resolveDataRoot, resolveMedsegRoot } from "../config";
import { CLASS_DIR, ImageClass, openDataset, Split, splitListRel } from "../data/dataset";
import { Example } from "../data/examples";
import { listMedsegSlices } from "../data/sources";
import { Protocol, protocolExamples, protocolExternalExamples, ProtocolSelection, selectProtocol } from "../protocols";
import { sampleWithoutReplacement } from "../util/random";
import { armsOf, COMBINATION_ARM, PositiveArm } from "./arms";

export interface DiagnosisData {
  train: Example[];
  val: Example[];
  test: Example[];
  /** MedSeg test slices: original CTs, all COVID (domain-shift check). */
  medsegTest: Example[];
  /**
   * The protocol's external set (São Paulo, both classes from one hospital): predicted by every
   * run, never trained on, never used for a checkpoint or a threshold. Empty when its root is absent.
   */
  external: Example[];
  /** The protocol the sets come from. */
  protocol: Protocol;
}

/** MedSeg slices as examples (all COVID), carrying their source so they are turned upright like every source. */
function medsegExamples(part: "train" | "test", root: string): Example[] {
  return listMedsegSlices(part, root).map((m) => ({ id: m.id, path: m.path, label: 1 as const, source: "medseg" as const }));
}

/**
 * Refuse a split that cannot give an honest result: a file listed twice (in one list or in two
 * splits), or a split/class with no image (0 training positives; a test set with one class has no
 * AUC; validation with one class cannot select a checkpoint).
 */
function checkSplit(ds: ReturnType<typeof openDataset>): void {
  if (ds.multiListed.length) {
    const lines = ds.multiListed.slice(0, 10).map((m) => `  ${CLASS_DIR[m.cls]}/${m.file}: listed in ${m.splits.join(" and ")}`);
    throw new Error(
      `${ds.multiListed.length} image(s) are listed more than once in ${ds.root}/Data-split:\n${lines.join("\n")}\n` +
        "Each image must be in exactly one split list, once. Fix the lists (\`npx covid-ct audit\` shows every case).",
    );
  }
  for (const split of ["train", "val", "test"] as Split[]) {
    for (const cls of ["covid", "noncovid"] as ImageClass[]) {
      if (ds.bySplit(split, cls).length === 0) {
        throw new Error(
          `${path.join(ds.root, splitListRel(cls, split))} lists no image of ${CLASS_DIR[cls]}: the ${split} set would have no ${cls} example ` +
            `(${split === "train" ? "nothing to learn the class from" : "its AUC and the checkpoint selection are undefined"}). Restore the list (\`npx covid-ct verify-data\`).`,
        );
      }
    }
  }
}

/** Options of diagnosisData: data roots, the protocol's seed, and the smoke profile's cap per class and split. */
export interface DiagnosisDataOptions extends ProtocolSelection {
  medsegRoot?: string;
  limitPerClass?: number;
}

/**
 * The examples of one arm under a protocol. Negatives, validation and test are the protocol's; the
 * positives are the arm's (official: all 191 / a seeded 118 per run seed / the 50 MedSeg training
 * slices; paper: the protocol's pools covid-ct-349 / covid-ct-118 / covid-seg-118). The MedSeg test
 * slices (original CTs, all COVID) are the domain-shift check of every run.
 * `limitPerClass` (smoke profile) caps every class and split.
 */
export async function diagnosisData(arm: PositiveArm, seed: number, o: DiagnosisDataOptions = {}): Promise<DiagnosisData> {
  const protocol = o.protocol ?? "official";
  if (!armsOf(protocol).includes(arm) && !armsOf(protocol, "study2").includes(arm)) throw new Error(`Arm '${arm}' does not exist under the ${protocol} protocol. Use one of: ${[...new Set([...armsOf(protocol), ...armsOf(protocol, "study2")])].join(", ")}.`);
  if (protocol === "official") checkSplit(openDataset(resolveDataRoot(o.dataRoot).dir));
  const p = await selectProtocol(o);
  const medseg = resolveMedsegRoot(o.medsegRoot).dir;
  const ex = (split: Split, cls: ImageClass): Example[] => protocolExamples(p, split, cls);
  for (const split of ["train", "val", "test"] as Split[]) for (const cls of ["covid", "noncovid"] as ImageClass[]) {
    if (ex(split, cls).length === 0) throw new Error(`The ${protocol} protocol has no ${cls} image in ${split}: check its data roots (\`npx covid-ct protocol ${protocol}\`).`);
  }
  const rng = seedrandom(`study1:${arm}:${seed}`);
  const pool = (name: string) => {
    const ids = new Set(p.pools[name] ?? []);
    return ex("train", "covid").filter((e) => ids.has(e.id));
  };
  let positives: Example[];
  if (arm === "covid-ct-all") positives = ex("train", "covid");
  else if (arm === "covid-ct-118" && protocol === "official") positives = sampleWithoutReplacement(ex("train", "covid"), 118, rng);
  else if (arm === "original-ct") positives = medsegExamples("train", medseg);
  else if (arm === COMBINATION_ARM) positives = [...pool("covid-ct-349"), ...pool("covid-seg-118")];
  else positives = pool(arm === "covid-seg" ? "covid-seg-118" : arm);
  if (positives.length === 0) throw new Error(`Arm '${arm}' has no positive training image under the ${protocol} protocol.`);
  const lim = o.limitPerClass;
  const pick = (xs: Example[]) => sampleWithoutReplacement(xs, lim, rng);
  return {
    train: [...pick(positives), ...pick(ex("train", "noncovid"))],
    val: [...pick(ex("val", "covid")), ...pick(ex("val", "noncovid"))],
    test: [...pick(ex("test", "covid")), ...pick(ex("test", "noncovid"))],
    medsegTest: pick(medsegExamples("test", medseg)),
    // Whole under every profile (one prediction per external image; no draw, so the sets above are
    // drawn exactly as before the external set existed).
    external: protocolExternalExamples(p),
    protocol: p,
  };
}
