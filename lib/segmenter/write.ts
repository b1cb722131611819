/**
 * `covid-ct lungs` and `covid-ct lesions`: a segmenter's binary mask of every image of one source, written as gray PNG
 * (0/255, the image's own width and height and orientation) at the image's path relative to its
 * data root with the extension .png. Each file is written atomically; the output folder is checked
 * like a run directory (never the project, a data root or a folder holding other files).
 */
import * as fs from "fs";
import * as path from "path";
import { listCovidCt, listCovidSeg, listLuna, listMedsegSlices, listSarsCov2, listSegLungs, resolveSourceRoot, SourceImage, SourceName } from "../data/sources";
import { checkOutputDir, checkRunDirPath } from "../runs/dir";
import { ProfileName } from "../training/profiles";
import { writeFileAtomic } from "../util/fs";
import { Segmenter } from "./engine";
import { maskToPng } from "./slices";

/** What `covid-ct <target>` writes with: the target's default run and how to train-or-load it (lungs: lib/lungs/segmenter, lesions: lib/lesions/segmenter). */
export interface MaskWriter {
  what: string;
  defaultRunDir(profile: ProfileName, seed: number): string;
  ensure(o: { profile: ProfileName; seed?: number; out: string; log: (m: string) => void; force?: boolean }): Promise<Segmenter>;
}

export interface WriteMasksOptions {
  source: SourceName;
  out: string;
  profile: ProfileName;
  seed?: number;
  /** Only the first n images of the source (sorted as its reader lists them). */
  limit?: number;
  /** Segmenter run directory (default runs/<target>/expert/<profile>/resunet-seed<seed>). */
  segmenterRun?: string;
  /** Train the segmenter again even when a finished run is there (e.g. one made before the profile changed). */
  retrainSegmenter?: boolean;
  /** The source's data root (default: as lib/config.ts resolves it). */
  root?: string;
  log?: (m: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export interface WriteMasksResult<M = unknown> {
  count: number;
  out: string;
  segmenterRun: string;
  trained: boolean;
  metrics: M | null;
  seconds: number;
}

async function listSource(source: SourceName, root: string): Promise<SourceImage[]> {
  switch (source) {
    case "covid-ct": return listCovidCt(root);
    case "covid19-ct-seg": return listCovidSeg(root);
    case "luna16": return listLuna(root);
    case "medseg": return [...listMedsegSlices("train", root), ...listMedsegSlices("test", root)];
    case "sars-cov-2-ct-scan": return listSarsCov2(root);
    case "covid19-ct-seg-lungs": return listSegLungs(root);
  }
}

/** Where an image's mask goes: its path relative to the data root, extension .png. */
export function maskPathFor(out: string, root: string, image: string): string {
  const rel = path.relative(root, image);
  if (rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`${image} is not under its data root ${root}`);
  return path.join(out, rel.replace(/\.[^./\\]+$/, "") + ".png");
}

export async function writeMasks<M = unknown>(w: MaskWriter, o: WriteMasksOptions): Promise<WriteMasksResult<M>> {
  const t0 = Date.now();
  const log = o.log ?? (() => undefined);
  const root = path.resolve(o.root ?? resolveSourceRoot(o.source).dir);
  const images = (await listSource(o.source, root)).slice(0, o.limit ?? Infinity);
  if (images.length === 0) throw new Error(`No images of ${o.source} under ${root}: nothing to mask, nothing written. Point the source's root at its images (\`npx covid-ct verify-data --source ${o.source}\`).`);
  // The output folder may only hold what this command writes for this source (its top-level folders or files).
  const tops = new Set(images.map((i) => path.relative(root, i.path).split(path.sep)[0].replace(/\.[^./\\]+$/, ".png")));
  checkRunDirPath(o.out, { flag: "--out", protect: [root] });
  const out = checkOutputDir(o.out, "--out", (n) => tops.has(n) || n.startsWith("."));
  const runDir = path.resolve(o.segmenterRun ?? w.defaultRunDir(o.profile, o.seed ?? 1));
  const finished = fs.existsSync(path.join(runDir, "metrics.json")) && !o.retrainSegmenter;
  if (!finished) log(`no finished ${w.what} segmenter at ${runDir}: training it first (profile ${o.profile})`);
  const seg = await w.ensure({ profile: o.profile, seed: o.seed, out: runDir, log, force: o.retrainSegmenter });
  try {
    let done = 0;
    const batch = 64;
    for (let i = 0; i < images.length; i += batch) {
      const chunk = images.slice(i, i + batch);
      const masks = await seg.masksFor(chunk.map((c) => ({ file: c.path, source: c.source })));
      for (let k = 0; k < chunk.length; k++) {
        const m = masks[k];
        writeFileAtomic(maskPathFor(out, root, chunk[k].path), await maskToPng(m.data, m.height, m.width));
        o.onProgress?.(++done, images.length);
      }
    }
  } finally {
    seg.dispose();
  }
  const mf = path.join(runDir, "metrics.json");
  return { count: images.length, out, segmenterRun: runDir, trained: !finished, metrics: fs.existsSync(mf) ? JSON.parse(fs.readFileSync(mf, "utf8")) : null, seconds: (Date.now() - t0) / 1000 };
}

