/**
 * What `covid-ct predict` scores: each INPUT is an image file, a DICOM file, or a folder (walked
 * recursively, names in natural order: its image files are slices; the DICOM files directly inside
 * one folder form a series, one per Series Instance UID; an Enhanced CT file is a series of its
 * own frames). A DICOM slice is turned into HU, lung-windowed to 8 bits (lib/data/dicom.ts) and
 * written as a PNG under the output folder: that PNG is what the common road scores and what the
 * gallery shows. Every bad input becomes one error line naming the file; the others are still
 * scored. What an export folder also holds (DICOMDIR, SR, PR, SEG, RTSTRUCT, LOCALIZER scouts, …)
 * is skipped and counted by kind.
 *
 * Memory: each slice is decoded, written to its PNG under a temporary name and its HU dropped at
 * once; only the header facts of a series are held while it is sorted, then the PNGs are renamed
 * into series order. A 600-slice series holds one slice's pixels at a time, not 600.
 */
import * as fs from "fs";
import * as path from "path";
import sharp from "sharp";
import { decodeRaw, imageSize } from "./decode";
import { DicomError, DicomHeader, DicomSkip, DicomSlice, initDicomCodecs, isDicomFile, LUNG_WINDOW, mixedGeometry, openDicom, seriesSpacing, sortSeries, windowHu } from "./dicom";
import { resolveSourceRoot, SourceName } from "./sources";
import { SOURCES } from "./source-names";
import { writeFileAtomic } from "../util/fs";
import { ScanGeometry, scanGeometry } from "./geometry";
import { NiftiError, NiftiVolume, readNiftiVolume } from "./nifti";

/** NIfTI-1 volumes by name (.nii, .nii.gz); the reader checks the header. */
const NIFTI_NAME = /\.nii(\.gz)?$/i;


/** Image files of a folder walk, by extension (what sharp decodes). */
export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif"] as const;
/** Smallest side scored: below it there is no chest to crop (a 1×1 file is an icon, not a slice). */
export const MIN_SIDE = 32;
/** Largest image scored: 25 megapixels (5,000 × 5,000), far above any CT slice or paper figure; larger files are refused before decoding. */
export const MAX_PIXELS = 25_000_000;

/** One slice to score. */
export interface SliceInput {
  /** The file the road reads (the PNG written from a DICOM slice). */
  file: string;
  /** What the user gave: the image, or the DICOM file. */
  input: string;
  /** Which source's road: a file under a known data root takes that source's, anything else COVID-CT's (no turn, the chest crop). */
  source: SourceName;
  /** Series name (DICOM series only) and the slice's position in the sorted series (0-based). */
  series?: string;
  index?: number;
  /** The frame of a multi-frame (Enhanced CT) DICOM file, or the slice of a NIfTI volume, 0-based. */
  frame?: number;
}

export interface SeriesInput {
  name: string;
  folder: string;
  slices: SliceInput[];
  order: "position" | "instance number" | "file name";
  transferSyntax: string;
  /** Voxel spacing in mm: [row spacing, column spacing, slice spacing] (dicom.ts seriesSpacing); absent without Pixel Spacing. */
  spacing?: [number, number, number];
  /** Where the scan lies in the patient (sides, head end, voxel size): the zones and volumes need it. */
  geometry: ScanGeometry;
}

export interface InputError {
  file: string;
  message: string;
}

export interface CollectedInputs {
  slices: SliceInput[];
  series: SeriesInput[];
  errors: InputError[];
  /** Files in folders that are neither images nor DICOM (not scored, not errors). */
  skipped: string[];
  /** Inputs given twice (or inside another INPUT folder): scored once, not errors. */
  repeated: string[];
  /** DICOM files that are no CT slice to score (DICOMDIR, SR, PR, SEG, RTSTRUCT, LOCALIZER, …): how many of each kind. */
  skippedDicom: Record<string, number>;
}

/** The source whose data root holds the file (its orientation and crop apply), else covid-ct. */
export function sourceOfFile(file: string): SourceName {
  const abs = path.resolve(file);
  for (const s of SOURCES) {
    let root: string;
    try {
      root = resolveSourceRoot(s).dir;
    } catch {
      continue;
    }
    const rel = path.relative(root, abs);
    if (rel && !rel.startsWith("..") && !path.isAbsolute(rel)) return s;
  }
  return "covid-ct";
}

const isImageName = (f: string) => (IMAGE_EXTENSIONS as readonly string[]).includes(path.extname(f).toLowerCase());

/** Check that an image file decodes whole and has a size we score; the error says which rule failed. */
export async function checkImage(file: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new Error("cannot be read (a broken link, or no permission)");
  }
  if (!st.isFile()) throw new Error("not a regular file (a pipe, socket or device)");
  if (st.size === 0) throw new Error("empty file (0 bytes)");
  let size: { height: number; width: number };
  try {
    size = await imageSize(file);
  } catch {
    throw new Error(`not an image sharp can read (${IMAGE_EXTENSIONS.join(" ")}, or a DICOM file)`);
  }
  checkSize(size.height, size.width);
  try {
    await decodeRaw(file, 1);
  } catch {
    throw new Error("the image data is truncated or corrupt");
  }
}

/** The size rules of every slice, images and DICOM alike. */
function checkSize(height: number, width: number): void {
  if (height * width > MAX_PIXELS) throw new Error(`${width}×${height} is over the ${MAX_PIXELS / 1e6}-megapixel limit: downscale it first`);
  if (Math.min(height, width) < MIN_SIDE) throw new Error(`${width}×${height} is too small: a CT slice needs at least ${MIN_SIDE}×${MIN_SIDE} pixels`);
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^_+|_+$/g, "") || "series";
}

/** Write a DICOM slice as the lung-windowed 8-bit PNG the road reads. */
async function dicomPng(s: Pick<DicomSlice, "hu" | "rows" | "columns">, file: string): Promise<void> {
  const png = await sharp(Buffer.from(windowHu(s.hu, LUNG_WINDOW)), { raw: { width: s.columns, height: s.rows, channels: 1 } }).png().toBuffer();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, png);
}

/**
 * Every INPUT's slices and series. DICOM slices are written as PNG under `workDir`. Nothing is
 * thrown for a bad file: it becomes an InputError; an INPUT that does not exist is one too.
 */
export async function collectInputs(inputs: readonly string[], workDir: string): Promise<CollectedInputs> {
  const out: CollectedInputs = { slices: [], series: [], errors: [], skipped: [], repeated: [], skippedDicom: {} };
  // The wasm decoders (JPEG-LS, JPEG 2000, JPEG baseline) start once, about 0.1 s.
  await initDicomCodecs();
  const usedNames = new Set<string>();
  const uniqueName = (base: string) => {
    let n = safeName(base), k = 2;
    while (usedNames.has(n)) n = `${safeName(base)}-${k++}`;
    usedNames.add(n);
    return n;
  };
  const addImage = async (file: string) => {
    try {
      await checkImage(file);
      out.slices.push({ file, input: file, source: sourceOfFile(file) });
    } catch (e) {
      out.errors.push({ file, message: (e as Error).message });
    }
  };
  let tmpCount = 0;
  const tmpDir = path.join(workDir, ".decoding");
  /** A slice read and written: its header facts and the PNG under its temporary name. */
  type Written = DicomHeader & { png: string };
  const place = (from: string, to: string) => {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.renameSync(from, to);
  };
  const addSeries = (folder: string, base: string, group: Written[]) => {
    const mixed = mixedGeometry(group);
    if (mixed) {
      for (const w of group) fs.rmSync(w.png, { force: true });
      const who = (h: DicomHeader) => path.basename(h.file) + (h.frame !== undefined ? ` frame ${h.frame + 1}` : "");
      out.errors.push({ file: folder, message: `series ${group[0].seriesUid ?? "(no Series Instance UID)"} mixes ${mixed.what} ${mixed.values[0]} (${who(mixed.a)}) and ${mixed.values[1]} (${who(mixed.b)}): not one volume, not scored; split the series, or give the slices as files` });
      return;
    }
    // The models learned from axial slices: a coronal or sagittal reformat (slice normal far from
    // the head–foot axis) is not scored as a chest scan; it is skipped and counted.
    const o = group[0].orientation;
    if (o && Math.abs(o[0] * o[4] - o[1] * o[3]) < Math.cos((30 * Math.PI) / 180)) {
      for (const w of group) fs.rmSync(w.png, { force: true });
      const why = "a coronal or sagittal reformat series (slices not axial: only axial series are scored)";
      out.skippedDicom[why] = (out.skippedDicom[why] ?? 0) + group.length;
      return;
    }
    const name = uniqueName(base);
    const sorted = sortSeries(group);
    const slices: SliceInput[] = sorted.slices.map((w, i) => {
      const png = path.join(workDir, name, `${String(i + 1).padStart(4, "0")}.png`);
      place(w.png, png);
      return { file: png, input: w.file, source: "covid-ct" as const, series: name, index: i, ...(w.frame !== undefined ? { frame: w.frame } : {}) };
    });
    out.slices.push(...slices);
    const spacing = seriesSpacing(sorted.slices, sorted.by);
    out.series.push({ name, folder, slices, order: sorted.by, transferSyntax: group[0].transferSyntax, spacing, geometry: scanGeometry(sorted.slices[0], sorted.slices[sorted.slices.length - 1], spacing) });
  };
  /** A NIfTI volume: one series, its axial slices written one at a time (in the DICOM display: lib/data/nifti.ts). */
  const addNifti = async (file: string) => {
    let vol: NiftiVolume;
    try {
      vol = readNiftiVolume(file);
      checkSize(vol.rows, vol.columns);
    } catch (e) {
      out.errors.push({ file, message: e instanceof NiftiError ? e.message.slice(file.length + 2) : (e as Error).message });
      return;
    }
    const name = uniqueName(path.basename(file).replace(/\.nii(\.gz)?$/i, ""));
    const slices: SliceInput[] = [];
    try {
      for (let k = 0; k < vol.slices; k++) {
        const png = path.join(workDir, name, `${String(k + 1).padStart(4, "0")}.png`);
        await dicomPng({ hu: vol.sliceHu(k), rows: vol.rows, columns: vol.columns }, png);
        slices.push({ file: png, input: file, source: "covid-ct", series: name, index: k, frame: k });
      }
    } catch (e) {
      // A file that fails half way (truncated after its header was read): one error, nothing of it kept.
      fs.rmSync(path.join(workDir, name), { recursive: true, force: true });
      out.errors.push({ file, message: e instanceof NiftiError ? e.message.slice(file.length + 2) : `could not be read whole: ${(e as Error).message}` });
      return;
    }
    out.slices.push(...slices);
    // Slices come inferior → superior, the patient's right on the image's left (the axial DICOM view).
    out.series.push({ name, folder: file, slices, order: "position", transferSyntax: `NIfTI-1 (${vol.orientation})`, spacing: vol.spacing, geometry: { spacing: vol.spacing, rightOnImageLeft: true, superiorLast: vol.slices > 1 ? true : null } });
  };
  const addDicomGroup = async (folder: string, files: readonly string[], asSeries: boolean) => {
    // Each file's frames: decoded one at a time, written as PNG, HU dropped; only headers kept.
    const byFile: Written[][] = [];
    for (const f of files) {
      const written: Written[] = [];
      try {
        const st = fs.statSync(f);
        if (!st.isFile()) throw new Error("not a regular file (a pipe, socket or device)");
        const im = openDicom(f);
        checkSize(im.rows, im.columns);
        for (let i = 0; i < im.headers.length; i++) {
          const png = path.join(tmpDir, `${++tmpCount}.png`);
          await dicomPng(im.slice(i), png);
          written.push({ ...im.headers[i], png });
        }
        byFile.push(written);
      } catch (e) {
        for (const w of written) fs.rmSync(w.png, { force: true });
        if (e instanceof DicomSkip) out.skippedDicom[e.reason] = (out.skippedDicom[e.reason] ?? 0) + 1;
        else out.errors.push({ file: f, message: e instanceof DicomError ? e.message.slice(f.length + 2) : (e as Error).message });
      }
    }
    if (!asSeries) {
      // A file given by itself: one slice, or (an Enhanced CT file) a series of its frames.
      for (const written of byFile) {
        const file = written[0].file;
        if (written.length > 1) {
          addSeries(path.dirname(file), path.basename(file, path.extname(file)), written);
          continue;
        }
        const png = path.join(workDir, uniqueName(path.basename(file, path.extname(file))) + ".png");
        place(written[0].png, png);
        out.slices.push({ file: png, input: file, source: "covid-ct" });
      }
      return;
    }
    // One series per Series Instance UID (slices without one go with the folder's first group).
    const groups = new Map<string, Written[]>();
    for (const w of byFile.flat()) {
      const g = groups.get(w.seriesUid ?? "");
      if (g) g.push(w);
      else groups.set(w.seriesUid ?? "", [w]);
    }
    let k = 0;
    for (const [, group] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
      addSeries(folder, path.basename(path.resolve(folder)) + (groups.size > 1 ? `-series${++k}` : ""), group);
    }
  };
  // Folders already walked (real paths): a link to a folder is followed once, a link loop never.
  const walked = new Set<string>();
  const seenFiles = new Set<string>();
  const once = (f: string) => {
    let real: string;
    try {
      real = fs.realpathSync(f);
    } catch {
      return true;
    }
    if (seenFiles.has(real)) return false;
    seenFiles.add(real);
    return true;
  };
  const walk = async (dir: string) => {
    const real = fs.realpathSync(dir);
    if (walked.has(real)) return;
    walked.add(real);
    const entries = fs.readdirSync(dir).filter((n) => !n.startsWith(".")).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const dicoms: string[] = [];
    const folders: string[] = [];
    for (const name of entries) {
      const f = path.join(dir, name);
      let st: fs.Stats | null = null;
      try {
        st = fs.statSync(f); // follows links
      } catch {
        out.errors.push({ file: f, message: "cannot be read (a broken link, or no permission)" });
        continue;
      }
      if (st.isDirectory()) folders.push(f);
      else if (!once(f)) continue;
      else if (st.isFile() && isDicomFile(f)) dicoms.push(f);
      else if (NIFTI_NAME.test(name)) await addNifti(f);
      else if (isImageName(name)) await addImage(f);
      else if (/\.dcm$/i.test(name)) out.errors.push({ file: f, message: "named .dcm but not a DICOM Part 10 file (no DICM prefix): it may be empty or truncated" });
      else out.skipped.push(f);
    }
    if (dicoms.length) await addDicomGroup(dir, dicoms, true);
    for (const f of folders) await walk(f);
  };
  for (const input of inputs) {
    if (input.trim() === "") {
      out.errors.push({ file: "''", message: "an empty INPUT: give an image, a DICOM file, a NIfTI volume or a folder" });
      continue;
    }
    if (!fs.existsSync(input)) {
      out.errors.push({ file: input, message: "no such file or folder" });
      continue;
    }
    const st = fs.statSync(input);
    const before = out.slices.length + out.errors.length;
    const skippedBefore = Object.values(out.skippedDicom).reduce((a, v) => a + v, 0);
    if (st.isDirectory()) {
      if (walked.has(fs.realpathSync(input))) {
        out.repeated.push(input);
        continue;
      }
      await walk(input);
      const skippedNow = Object.values(out.skippedDicom).reduce((a, v) => a + v, 0) - skippedBefore;
      if (out.slices.length + out.errors.length === before) out.errors.push({ file: input, message: skippedNow ? `holds nothing to score: its ${skippedNow} DICOM object(s) were all skipped (listed in the log: not CT images, scouts or reformats)` : "holds no image or DICOM file to score" });
    } else if (!once(input)) out.repeated.push(input);
    else if (st.isFile() && isDicomFile(input)) await addDicomGroup(path.dirname(input), [input], false);
    else if (NIFTI_NAME.test(input)) await addNifti(input);
    else await addImage(input);
  }
  fs.rmSync(tmpDir, { recursive: true, force: true });
  return out;
}
