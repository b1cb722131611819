/**
 * Evaluation protocols: named, versioned, seeded definitions of which image is in which split and
 * class (the paper's Tables 2–4). A protocol's membership is written to `protocol.json`; its hash
 * (over name, version, seed, ids, patients and removals — not paths, which differ by machine)
 * is what runs record, so a protocol change invalidates reused runs.
 *
 * `official` — the COVID-CT release's own split (Data-split/), COVID-CT images only, as Study I uses
 *   it today. Unlisted files are in no split.
 *
 * `paper` — Tables 2–4 rebuilt from what exists here (PAPER_PROTOCOL_VERSION fixes the rules):
 *   train.covid    all 349 COVID-CT COVID images (pool `covid-ct-349`), plus 118 COVID-Seg slices of
 *                  the 12 training volumes (pool `covid-seg-118`): the paper's 467 positives, from
 *                  which the Study I arms choose; pool `covid-ct-118` is a seeded 118 of the 349.
 *   train.noncovid all 397 released NonCOVID images plus 36 LUNA slices (both slices of 18 series)
 *                  → 433; the paper's 463 also held Radiopaedia images we do not have.
 *   val            88 COVID-Seg slices of 4 volumes + 48 LUNA slices (24 series). The paper's 16
 *                  Radiopaedia negatives do not exist here.
 *   test           173 COVID-Seg slices of 4 other volumes + 164 LUNA slices (82 series). The paper's
 *                  4 Radiopaedia negatives do not exist here.
 *   Left over: 1 LUNA series (2 slices) and the COVID-Seg slices not drawn.
 *   COVID-Seg volumes: a volume is in one split only; the two Radiopaedia cases stored as two series
 *   each (case 10: 85902_1 + 85902_3, case 29: 86490_1 + 86491_1) are one patient and move together.
 *   The 20 volumes (13–207 slices) cannot give 173/88/118 by whole volumes, so 4/4/12 volumes are
 *   drawn (seeded, first draw whose volumes can give the count) such that every volume gives at
 *   most half its slices; the split's count is shared among its volumes in proportion to their
 *   size, and each volume's share is taken evenly spaced along its slice numbers (no two adjacent).
 *   LUNA: the 125 series are shuffled (seeded); series whose slices the cross-source audit finds
 *   among the released NonCOVID images are used in training already, so they go to the training
 *   share first; then test 82, val 24, train 18 series.
 *   Cross-source matches steer the draw at patient level: a COVID-Seg volume with a slice that a
 *   COVID-CT COVID figure near-duplicates (e.g. Radiopaedia case 10 is in kjr-21-e25's figures) is
 *   met in training already, so its unit is never drawn for val/test; likewise for LUNA series
 *   matched by a NonCOVID image (see above). Matches across classes steer nothing (checked by eye:
 *   NonCOVID 81%2.jpg ↔ coronacases_org_006 at distance 4 are different patients).
 *   Measured at the default threshold 5 (protocol v1): 38 COVID-CT ↔ COVID-Seg pairs, mostly
 *   kjr-21-e25-p1-6/-12 ↔ 30-odd slices of Radiopaedia case 10 (distance 2–5; by eye the same
 *   lesions at matching levels: a published figure of that case; bmj.m606-p4-22%5 ↔
 *   coronacases_org_008 slice 8 at distance 5 is by eye a false match), and 1 COVID-CT ↔ LUNA pair,
 *   NonCOVID 996.png ↔ series …308183340111270052562662456038 (distance 5), which by eye are
 *   different patients: none of the 397 NonCOVID images is one of our LUNA slices. Steering a series
 *   into training on such a false match costs nothing; removals err on the side of a cleaner test.
 *   Removed: any val/test image with a near-duplicate (view pHash, lib/protocols/audit.ts) in the
 *   training set is taken out of evaluation and listed in `removed`.
 *
 * `external` (both protocols) — the São Paulo "SARS-CoV-2 CT-scan dataset" subset (source
 *   `sars-cov-2-ct-scan`: 157 COVID + 154 non-COVID slices, both classes from one hospital, scanned
 *   and exported alike), all of it. It exists because under `paper` every class comes from its own
 *   sources, so "which dataset is this slice from" predicts the label; on the external set it
 *   cannot. It is an evaluation set only: never trained on, never used for a checkpoint, a
 *   threshold or pretraining, and never in `splits` (checked when building). It has no patient
 *   ids (patient = the slice's id), so its intervals are per slice and optimistic. It has its own
 *   hash (`external.hash`): the protocol's `hash` covers splits, removals and pools only, exactly
 *   as before the external set existed, so finished runs keyed on it stay valid. A missing root
 *   gives empty lists and a note; the protocol still builds.
 */
import * as crypto from "crypto";
import * as path from "path";
import seedrandom from "seedrandom";
import { DEFAULT_PHASH_THRESHOLD, hammingHex } from "../audit";
import * as fs from "fs";
import { resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveSarsRoot } from "../config";
import { ImageClass, Split } from "../data/dataset";
import { SourceImage, SourceName, listCovidCt, listCovidSeg, listLuna, listSarsCov2 } from "../data/sources";
import { Example, loadPreprocessed } from "../data/examples";
import { fitHarmoniser, Harmoniser, HarmoniseName } from "../data/harmonise";
import { writeJsonAtomic } from "../util/fs";
import { CrossSourcePair, HashOptions, ProtocolLeak, crossSourcePairs, hashImages, pairCounts, protocolLeaks } from "./audit";

export * from "./audit";

export const PROTOCOL_NAMES = ["official", "paper"] as const;
export type ProtocolName = (typeof PROTOCOL_NAMES)[number];

export function isProtocolName(x: unknown): x is ProtocolName {
  return typeof x === "string" && (PROTOCOL_NAMES as readonly string[]).includes(x);
}

/** Bump when the rules of `official` change (the membership changes with them). */
export const OFFICIAL_PROTOCOL_VERSION = 1;
/** Bump when the rules of `paper` change: volume draw, slice spacing, LUNA shares, removal. */
export const PAPER_PROTOCOL_VERSION = 1;
/** Default seed of the paper protocol's draws. */
export const DEFAULT_PROTOCOL_SEED = 1;

/** The paper's Tables 2–4 sizes that `paper` rebuilds (Radiopaedia negatives excluded: absent here). */
export const PAPER_TARGETS = {
  covidCt: 349,
  covidCt118: 118,
  trainVolumes: 12, valVolumes: 4, testVolumes: 4,
  trainCovidSeg: 118, valCovidSeg: 88, testCovidSeg: 173,
  trainLunaSeries: 18, valLunaSeries: 24, testLunaSeries: 82,
  lunaSlicesPerSeries: 2,
} as const;

export interface ProtocolImage {
  /** The id runs write to predictions.csv. */
  id: string;
  source: SourceName;
  /** Volume / series / source paper + patient. */
  patient: string;
  /** Image file (absolute). */
  path: string;
}

export type ProtocolSplits = Record<Split, Record<ImageClass, ProtocolImage[]>>;

/** The source of every protocol's external evaluation set. */
export const EXTERNAL_SOURCE = "sars-cov-2-ct-scan" as const;

/**
 * The external evaluation set (see the module header): evaluated only, never trained on. Its
 * images' `patient` is the slice's own id (the dataset has no patient ids).
 */
export interface ExternalSet {
  covid: ProtocolImage[];
  noncovid: ProtocolImage[];
  /** SHA-256 of the set's membership (externalHash); not part of the protocol's `hash`. */
  hash: string;
  source: typeof EXTERNAL_SOURCE;
}

export interface Protocol {
  name: ProtocolName;
  version: number;
  seed: number;
  /** SHA-256 of the membership (see protocolHash). */
  hash: string;
  splits: ProtocolSplits;
  /** Evaluation images taken out (near-duplicate of a training image), with why and from where. */
  removed: { id: string; reason: string; split: Split; cls: ImageClass }[];
  /** Named positive training pools (paper: covid-ct-349, covid-ct-118, covid-seg-118): ids. */
  pools: Record<string, string[]>;
  /** What differs from the paper and what is left over. */
  notes: string[];
  /** Cross-source near-duplicates found while building (null: the audit was not run). */
  crossSource: { threshold: number; pairs: CrossSourcePair[]; counts: Record<string, number>; unreadable: { id: string; error: string }[] } | null;
  /** The external evaluation set (both protocols; empty lists when its root is absent). Not in `hash`. */
  external: ExternalSet;
}

export interface ProtocolOptions {
  /** Seed of the paper protocol's draws (default DEFAULT_PROTOCOL_SEED). */
  seed?: number;
  dataRoot?: string;
  covidSegRoot?: string;
  lunaRoot?: string;
  /** Root of the external set (default: COVIDCT_SARS → data/… → ../shared/…). */
  sarsRoot?: string;
  /**
   * Run the cross-source audit and remove evaluation images with a near-duplicate in training
   * (default true for `paper`; `official` never removes). Off only for tests of the draw itself.
   */
  dedupe?: boolean;
  /** pHash Hamming threshold for near-duplicates (default DEFAULT_PHASH_THRESHOLD). */
  threshold?: number;
  hash?: HashOptions;
}

const member = (i: SourceImage): ProtocolImage => ({ id: i.id, source: i.source, patient: i.patient, path: i.path });
const emptySplits = (): ProtocolSplits => ({ train: { covid: [], noncovid: [] }, val: { covid: [], noncovid: [] }, test: { covid: [], noncovid: [] } });

/**
 * Hash of a membership: name, version, seed, then per split and class the sorted (id, source,
 * patient) triples, then the removals. Paths are left out (they depend on the data roots).
 */
export function protocolHash(p: Pick<Protocol, "name" | "version" | "seed" | "splits" | "removed" | "pools">): string {
  const canon = {
    name: p.name, version: p.version, seed: p.seed,
    splits: (["train", "val", "test"] as Split[]).map((s) =>
      (["covid", "noncovid"] as ImageClass[]).map((c) => p.splits[s][c].map((m) => [m.id, m.source, m.patient]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))),
    ),
    removed: [...p.removed].sort((a, b) => (a.id < b.id ? -1 : 1)),
    pools: Object.keys(p.pools).sort().map((k) => [k, [...p.pools[k]].sort()]),
  };
  return crypto.createHash("sha256").update(JSON.stringify(canon)).digest("hex");
}

/** Hash of an external set's membership: source, then per class the sorted (id, patient) pairs. */
export function externalHash(e: Pick<ExternalSet, "covid" | "noncovid" | "source">): string {
  const canon = {
    source: e.source,
    covid: e.covid.map((m) => [m.id, m.source, m.patient]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    noncovid: e.noncovid.map((m) => [m.id, m.source, m.patient]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  };
  return crypto.createHash("sha256").update(JSON.stringify(canon)).digest("hex");
}

/**
 * The external set of a protocol: every image of the sars-cov-2-ct-scan root, or empty lists and a
 * note when the root does not exist. Refuses to attach it if any of its ids or files is in a split.
 */
export function buildExternalSet(splits: ProtocolSplits, sarsRoot?: string): { external: ExternalSet; note: string } {
  const root = resolveSarsRoot(sarsRoot);
  const images = fs.existsSync(root.dir) ? listSarsCov2(root.dir) : null;
  const covid = (images ?? []).filter((i) => i.cls === "covid").map(member);
  const noncovid = (images ?? []).filter((i) => i.cls === "noncovid").map(member);
  const inSplits = new Set<string>();
  for (const s of ["train", "val", "test"] as Split[]) for (const c of ["covid", "noncovid"] as ImageClass[]) for (const m of splits[s][c]) inSplits.add(m.id).add(path.resolve(m.path));
  const clash = [...covid, ...noncovid].filter((m) => inSplits.has(m.id) || inSplits.has(path.resolve(m.path)));
  if (clash.length > 0) throw new Error(`external set: ${clash.length} of its images are in the protocol's splits (${clash.slice(0, 3).map((m) => m.id).join(", ")}); the external set is never trained or validated on.`);
  const external: ExternalSet = { covid, noncovid, source: EXTERNAL_SOURCE, hash: "" };
  external.hash = externalHash(external);
  const note = images
    ? `External set (${EXTERNAL_SOURCE}, one hospital in São Paulo): ${covid.length} COVID + ${noncovid.length} non-COVID slices, evaluated only (never trained on, never used for a checkpoint, threshold or pretraining); no patient ids, so its intervals are per slice (optimistic).`
    : `External set (${EXTERNAL_SOURCE}) absent: ${root.dir} does not exist (set COVIDCT_SARS, see README "Data and weights"); external lists are empty.`;
  return { external, note };
}

/** Seeded Fisher–Yates. */
function shuffle<T>(xs: readonly T[], rng: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A volume's patient unit: Radiopaedia cases stored as two series share one. */
export function covidSegUnit(volume: string): string {
  const m = volume.match(/^radiopaedia_org_covid-19-pneumonia-(\d+)_/);
  return m ? `radiopaedia-case-${m[1]}` : volume;
}

/** At most half a volume's slices, so evenly spaced picks are never adjacent. */
const volumeCap = (n: number) => Math.floor(n / 2);

/** Share `total` among volumes in proportion to size, each at most its cap (largest remainders). */
export function allocateSlices(sizes: readonly number[], total: number): number[] {
  const caps = sizes.map(volumeCap);
  if (caps.reduce((a, b) => a + b, 0) < total) throw new Error(`allocateSlices: volumes of ${sizes.join(", ")} slices cannot give ${total} non-adjacent slices`);
  const sum = sizes.reduce((a, b) => a + b, 0);
  const alloc = sizes.map((n, i) => Math.min(caps[i], Math.floor((total * n) / sum)));
  let left = total - alloc.reduce((a, b) => a + b, 0);
  while (left > 0) {
    // Give the next slice to the volume that is sampled most sparsely and still has room.
    let best = -1;
    for (let i = 0; i < sizes.length; i++) if (alloc[i] < caps[i] && (best < 0 || sizes[i] / (alloc[i] + 1) > sizes[best] / (alloc[best] + 1))) best = i;
    alloc[best]++;
    left--;
  }
  return alloc;
}

/** `count` indices of 0..n-1 spread evenly (centres of equal strata); gaps ≥ 2 when count ≤ n/2. */
export function spreadIndices(n: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.floor(((i + 0.5) * n) / count));
}

/** Seeded draw of test/val/train volumes able to give the slice counts (see module header). */
export function drawVolumes(volumes: Map<string, number>, rng: () => number, trainOnly: ReadonlySet<string> = new Set()): Record<Split, string[]> {
  const T = PAPER_TARGETS;
  const units = new Map<string, string[]>();
  for (const v of [...volumes.keys()].sort()) units.set(covidSegUnit(v), [...(units.get(covidSegUnit(v)) ?? []), v]);
  const need: [Split, number, number][] = [["test", T.testVolumes, T.testCovidSeg], ["val", T.valVolumes, T.valCovidSeg]];
  const capOf = (vs: string[]) => vs.reduce((a, v) => a + volumeCap(volumes.get(v)!), 0);
  for (let attempt = 0; attempt < 10000; attempt++) {
    const order = shuffle([...units.keys()].sort(), rng);
    const out: Record<Split, string[]> = { train: [], val: [], test: [] };
    const used = new Set<string>();
    let ok = true;
    for (const [split, nVol] of need) {
      for (const u of order) {
        if (used.has(u)) continue;
        const vs = units.get(u)!;
        if (vs.some((v) => trainOnly.has(v))) continue; // already met in training (a COVID-CT figure of it)
        if (out[split].length + vs.length > nVol) continue;
        out[split].push(...vs);
        used.add(u);
        if (out[split].length === nVol) break;
      }
      if (out[split].length !== nVol) ok = false;
    }
    for (const u of order) if (!used.has(u)) out.train.push(...units.get(u)!);
    if (!ok || out.train.length !== T.trainVolumes) continue;
    if (capOf(out.test) < T.testCovidSeg || capOf(out.val) < T.valCovidSeg || capOf(out.train) < T.trainCovidSeg) continue;
    for (const s of ["train", "val", "test"] as Split[]) out[s].sort();
    return out;
  }
  throw new Error(`paper protocol: no draw of ${T.testVolumes}/${T.valVolumes}/${T.trainVolumes} COVID-Seg volumes gives ${T.testCovidSeg}/${T.valCovidSeg}/${T.trainCovidSeg} non-adjacent slices (volumes: ${volumes.size})`);
}

/** Slices drawn from the volumes of one split: `total`, shared by size, evenly spaced. */
function drawSlices(byVolume: Map<string, SourceImage[]>, vols: string[], total: number): SourceImage[] {
  const alloc = allocateSlices(vols.map((v) => byVolume.get(v)!.length), total);
  return vols.flatMap((v, i) => {
    const slices = byVolume.get(v)!; // sorted by slice number
    return spreadIndices(slices.length, alloc[i]).map((k) => slices[k]);
  });
}

async function officialProtocol(o: ProtocolOptions): Promise<Protocol> {
  const cct = await listCovidCt(resolveDataRoot(o.dataRoot).dir);
  const splits = emptySplits();
  for (const i of cct) if (i.officialSplit) splits[i.officialSplit][i.cls].push(member(i));
  const unlisted = cct.filter((i) => !i.officialSplit).length;
  const { external, note } = buildExternalSet(splits, o.sarsRoot);
  const p = {
    name: "official" as const, version: OFFICIAL_PROTOCOL_VERSION, seed: 0, splits, removed: [], pools: {},
    notes: [`The COVID-CT release's Data-split lists; ${unlisted} image file(s) in no list are in no split.`, note], crossSource: null,
  };
  // The hash covers the membership of the splits only (as before the external set existed).
  return { ...p, hash: protocolHash(p), external };
}

async function paperProtocol(o: ProtocolOptions): Promise<Protocol> {
  const T = PAPER_TARGETS;
  const seed = o.seed ?? DEFAULT_PROTOCOL_SEED;
  const threshold = o.threshold ?? DEFAULT_PHASH_THRESHOLD;
  const rng = seedrandom(`protocol:paper:v${PAPER_PROTOCOL_VERSION}:seed${seed}`);
  const cct = await listCovidCt(resolveDataRoot(o.dataRoot).dir);
  const seg = listCovidSeg(resolveCovidSegRoot(o.covidSegRoot).dir);
  const luna = listLuna(resolveLunaRoot(o.lunaRoot).dir);
  const cctCovid = cct.filter((i) => i.cls === "covid");
  const cctNon = cct.filter((i) => i.cls === "noncovid");

  // Cross-source audit first: LUNA series already among the NonCOVID images belong to training.
  let crossSource: Protocol["crossSource"] = null;
  let hashes = new Map<string, string>();
  if (o.dedupe !== false) {
    const all = [...cct, ...seg, ...luna];
    const hashed = await hashImages(all, o.hash);
    hashes = hashed.hashes;
    const unreadable = hashed.unreadable;
    const pairs = crossSourcePairs(all, hashes, threshold);
    crossSource = { threshold, pairs, counts: pairCounts(pairs), unreadable };
  }

  // COVID-Seg: volumes, then slices.
  const byVolume = new Map<string, SourceImage[]>();
  for (const s of seg) byVolume.set(s.patient, [...(byVolume.get(s.patient) ?? []), s]);
  const segIds = new Map(seg.map((x) => [x.id, x]));
  const segSeen = new Set<string>();
  for (const pr of crossSource?.pairs ?? []) {
    const [x, y] = pr.aSource === "covid19-ct-seg" ? [pr.a, pr.b] : [pr.b, pr.a];
    if ((pr.aSource === "covid19-ct-seg") !== (pr.bSource === "covid19-ct-seg") && y.startsWith("covid-ct/covid/")) segSeen.add(segIds.get(x)!.patient);
  }
  const vols = drawVolumes(new Map([...byVolume].map(([v, xs]) => [v, xs.length])), rng, segSeen);
  const segTrain = drawSlices(byVolume, vols.train, T.trainCovidSeg);
  const segVal = drawSlices(byVolume, vols.val, T.valCovidSeg);
  const segTest = drawSlices(byVolume, vols.test, T.testCovidSeg);

  // LUNA: series shuffled; series seen in the NonCOVID folder go to the training share first.
  const bySeries = new Map<string, SourceImage[]>();
  for (const l of luna) bySeries.set(l.patient, [...(bySeries.get(l.patient) ?? []), l]);
  const lunaIds = new Map(luna.map((l) => [l.id, l]));
  const seenInNonCovid = new Set<string>();
  for (const pr of crossSource?.pairs ?? []) {
    const [x, y] = pr.aSource === "luna16" ? [pr.a, pr.b] : [pr.b, pr.a];
    if ((pr.aSource === "luna16") !== (pr.bSource === "luna16") && y.startsWith("covid-ct/noncovid/")) seenInNonCovid.add(lunaIds.get(x)!.patient);
  }
  const full = [...bySeries.keys()].sort().filter((s) => bySeries.get(s)!.length >= T.lunaSlicesPerSeries);
  const shuffled = shuffle(full, rng);
  const first = shuffled.filter((s) => seenInNonCovid.has(s)).slice(0, T.trainLunaSeries);
  const rest = shuffled.filter((s) => !first.includes(s));
  const trainSeries = [...first, ...rest.slice(0, T.trainLunaSeries - first.length)];
  const others = rest.slice(T.trainLunaSeries - first.length);
  const testSeries = others.slice(0, T.testLunaSeries);
  const valSeries = others.slice(T.testLunaSeries, T.testLunaSeries + T.valLunaSeries);
  const leftSeries = others.slice(T.testLunaSeries + T.valLunaSeries);
  if (testSeries.length < T.testLunaSeries || valSeries.length < T.valLunaSeries) {
    throw new Error(`paper protocol: LUNA root has ${full.length} series with ${T.lunaSlicesPerSeries} slices; it needs ${T.trainLunaSeries + T.valLunaSeries + T.testLunaSeries} (set COVIDCT_LUNA to the full luna16-slices folder)`);
  }
  const lunaOf = (ss: string[]) => ss.sort().flatMap((s) => bySeries.get(s)!.slice(0, T.lunaSlicesPerSeries));

  const splits = emptySplits();
  splits.train.covid = [...cctCovid, ...segTrain].map(member);
  splits.train.noncovid = [...cctNon, ...lunaOf(trainSeries)].map(member);
  splits.val.covid = segVal.map(member);
  splits.val.noncovid = lunaOf(valSeries).map(member);
  splits.test.covid = segTest.map(member);
  splits.test.noncovid = lunaOf(testSeries).map(member);

  // Remove evaluation images with a near-duplicate anywhere in training.
  const removed: Protocol["removed"] = [];
  if (crossSource) {
    const train = [...splits.train.covid, ...splits.train.noncovid].filter((m) => hashes.has(m.id));
    for (const s of ["val", "test"] as Split[]) {
      for (const c of ["covid", "noncovid"] as ImageClass[]) {
        splits[s][c] = splits[s][c].filter((m) => {
          const h = hashes.get(m.id);
          if (!h) return true;
          let best: { id: string; d: number } | null = null;
          for (const t of train) {
            const d = hammingHex(h, hashes.get(t.id)!);
            if (d <= threshold && (!best || d < best.d)) best = { id: t.id, d };
          }
          if (best) removed.push({ id: m.id, reason: `near-duplicate of training image ${best.id} (pHash distance ${best.d} ≤ ${threshold})`, split: s, cls: c });
          return !best;
        });
      }
    }
  }

  const covid118 = shuffle(cctCovid.map((i) => i.id).sort(), seedrandom(`protocol:paper:v${PAPER_PROTOCOL_VERSION}:seed${seed}:covid-ct-118`)).slice(0, T.covidCt118);
  const leftSlices = leftSeries.reduce((n, s) => n + bySeries.get(s)!.length, 0);
  const notes = [
    `COVID-Seg volumes — train: ${vols.train.length}, val: ${vols.val.join(", ")}; test: ${vols.test.join(", ")}.`,
    `LUNA series — train ${trainSeries.length} (${first.length} of them seen among the released NonCOVID images), val ${valSeries.length}, test ${testSeries.length}; left over: ${leftSeries.length} series (${leftSlices} slices).`,
    `COVID-Seg volumes matched by a COVID-CT COVID figure (kept in training, never evaluated): ${[...segSeen].sort().join(", ") || "none"}${crossSource ? "" : " (audit not run)"}.`,
    `${seenInNonCovid.size} LUNA series have a slice that the cross-source audit matches to a released NonCOVID image${crossSource ? "" : " (audit not run)"}.`,
    "The paper's Radiopaedia negatives (16 validation, 4 test) do not exist here: val/test negatives are LUNA slices only, and the negative training set is 433, not 463.",
    `COVID-Seg slices not drawn: ${seg.length - segTrain.length - segVal.length - segTest.length}.`,
  ];
  const pools = {
    "covid-ct-349": cctCovid.map((i) => i.id),
    "covid-ct-118": covid118,
    "covid-seg-118": segTrain.map((i) => i.id),
  };
  const { external, note } = buildExternalSet(splits, o.sarsRoot);
  notes.push(note);
  const p = { name: "paper" as const, version: PAPER_PROTOCOL_VERSION, seed, splits, removed, pools, notes, crossSource };
  // The hash covers splits, removals and pools only (as before the external set existed).
  return { ...p, hash: protocolHash(p), external };
}

/** Build a protocol's membership. */
export async function buildProtocol(name: ProtocolName, opts: ProtocolOptions = {}): Promise<Protocol> {
  if (!isProtocolName(name)) throw new Error(`Unknown protocol ${JSON.stringify(name)}: use one of ${PROTOCOL_NAMES.join(", ")}`);
  return name === "official" ? officialProtocol(opts) : paperProtocol(opts);
}

/** Image counts per split and class (and per source). */
export function protocolCounts(p: Protocol): Record<Split, Record<ImageClass, { images: number; patients: number; bySource: Partial<Record<SourceName, { images: number; patients: number }>> }>> {
  const out = {} as ReturnType<typeof protocolCounts>;
  for (const s of ["train", "val", "test"] as Split[]) {
    out[s] = {} as (typeof out)[Split];
    for (const c of ["covid", "noncovid"] as ImageClass[]) {
      const ms = p.splits[s][c];
      const bySource: Partial<Record<SourceName, { images: number; patients: number }>> = {};
      for (const src of new Set(ms.map((m) => m.source))) {
        const xs = ms.filter((m) => m.source === src);
        bySource[src] = { images: xs.length, patients: new Set(xs.map((m) => m.patient)).size };
      }
      out[s][c] = { images: ms.length, patients: new Set(ms.map((m) => `${m.source}:${m.patient}`)).size, bySource };
    }
  }
  return out;
}

/** The membership as the CLI prints it and runs store it (`protocol.json`). */
export function protocolJson(p: Protocol): Record<string, unknown> {
  return {
    name: p.name, version: p.version, seed: p.seed, hash: p.hash, splits: p.splits, removed: p.removed, pools: p.pools, notes: p.notes,
    external: { source: p.external.source, hash: p.external.hash, covid: p.external.covid, noncovid: p.external.noncovid },
    crossSource: p.crossSource ? { threshold: p.crossSource.threshold, counts: p.crossSource.counts, pairs: p.crossSource.pairs, unreadable: p.crossSource.unreadable } : null,
  };
}

/** Write `protocol.json` atomically to the path the caller gives. */
export function writeProtocol(p: Protocol, file: string): string {
  const abs = path.resolve(file);
  writeJsonAtomic(abs, protocolJson(p));
  return abs;
}

/** Leaks of a protocol: patients (by source) in more than one split. */
export function protocolLeaksOf(p: Protocol): ProtocolLeak[] {
  return protocolLeaks(p.splits);
}

/**
 * A split of a protocol as Examples for the input pipelines (label 1 = COVID), each carrying its
 * source so preprocessing applies that source's orientation and crop.
 */
export function protocolExamples(p: Pick<Protocol, "splits">, split: Split, cls?: ImageClass): Example[] {
  const classes: ImageClass[] = cls ? [cls] : ["covid", "noncovid"];
  return classes.flatMap((c) => p.splits[split][c].map((m) => ({ id: m.id, path: m.path, label: (c === "covid" ? 1 : 0) as 0 | 1, source: m.source })));
}

/**
 * The protocol's external set as Examples (label 1 = COVID, source sars-cov-2-ct-scan): for
 * prediction only, never for training, validation, threshold choice or pretraining.
 */
export function protocolExternalExamples(p: Protocol, cls?: ImageClass): Example[] {
  const classes: ImageClass[] = cls ? [cls] : ["covid", "noncovid"];
  return classes.flatMap((c) => p.external[c].map((m) => ({ id: m.id, path: m.path, label: (c === "covid" ? 1 : 0) as 0 | 1, source: m.source })));
}

const harmoniserMemo = new Map<string, Promise<Harmoniser | null>>();

/**
 * The protocol's harmonisation (lib/data/harmonise.ts) at an input size, fitted on its training
 * images only — every source and class of `train`, never val, test, removed or external images —
 * so no evaluation image shapes the reference. "none" gives null. Memoised per protocol hash.
 */
export function protocolHarmoniser(p: Pick<Protocol, "hash" | "splits">, name: HarmoniseName, size: number): Promise<Harmoniser | null> {
  if (name === "none") return Promise.resolve(null);
  const key = JSON.stringify([p.hash, name, size]);
  if (!harmoniserMemo.has(key)) {
    harmoniserMemo.set(key, loadPreprocessed(protocolExamples(p, "train"), size).then((imgs) => fitHarmoniser(name, imgs)).catch((e) => { harmoniserMemo.delete(key); throw e; }));
  }
  return harmoniserMemo.get(key)!;
}

/** Which protocol a run is evaluated under: its name, the seed of its draws and the data roots. */
export interface ProtocolSelection {
  /** "official" (default) or "paper". */
  protocol?: ProtocolName;
  /** Seed of the paper protocol's draws (default: the protocol's default). */
  protocolSeed?: number;
  dataRoot?: string;
  covidSegRoot?: string;
  lunaRoot?: string;
  /** Root of the external set (default: COVIDCT_SARS → data/… → ../shared/…). */
  sarsRoot?: string;
}

// A grid builds the same paper protocol for every cell: build it once per process (it hashes
// ~2,700 images; cached on disk, still ~1.5 s). Its sources are read-only data.
const protocolMemo = new Map<string, Promise<Protocol>>();

/** The protocol a run is evaluated under (the paper protocol memoised per seed and roots). */
export function selectProtocol(o: ProtocolSelection = {}): Promise<Protocol> {
  const name = o.protocol ?? "official";
  // The external root is resolved here so the memo key follows it (and COVIDCT_SARS).
  const opts = { seed: o.protocolSeed, dataRoot: resolveDataRoot(o.dataRoot).dir, covidSegRoot: o.covidSegRoot, lunaRoot: o.lunaRoot, sarsRoot: resolveSarsRoot(o.sarsRoot).dir };
  if (name === "official") return buildProtocol(name, opts); // cheap, and follows edits of the split lists
  const key = JSON.stringify([name, opts]);
  if (!protocolMemo.has(key)) protocolMemo.set(key, buildProtocol(name, opts).catch((e) => { protocolMemo.delete(key); throw e; }));
  return protocolMemo.get(key)!;
}
