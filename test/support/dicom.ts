/**
 * Synthetic DICOM files for the tests, written with dcmjs (a second, independent DICOM
 * implementation: the reader under test is dicom-parser's).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
// eslint-disable-next-line @typescript-eslint/no-var-requires
const dcmjs = require("dcmjs");

export interface SyntheticSlice {
  /** Stored values, rows × columns, row-major (16 bit, signed unless `unsigned`; a Uint8Array for 8 bit). */
  stored: Int16Array | Uint16Array | Uint8Array;
  rows: number;
  columns: number;
  /** Rescale Slope as written (a number, or any string to test bad values). */
  slope?: number | string;
  intercept?: number;
  modality?: string;
  /** Leave the pixel data out (a header-only file). */
  noPixels?: boolean;
  transferSyntax?: string;
  seriesUid?: string;
  instanceNumber?: number;
  /** z of Image Position (Patient), mm (axial slices). */
  z?: number;
  /** Image Position (Patient), mm: overrides z. */
  position?: [number, number, number];
  /** Leave out Rescale Slope and Intercept (a CT slice must have them). */
  noRescale?: boolean;
  /** Bits Stored (Bits Allocated is 8 for a Uint8Array, else 16); Pixel Representation 0 when `unsigned`. */
  bitsStored?: number;
  unsigned?: boolean;
  /** Image Orientation (Patient) (with `z`; default axial 1\0\0\0\1\0). */
  orientation?: number[];
  /** Pixel Spacing, mm: [row spacing, column spacing]. */
  pixelSpacing?: [number, number];
  sliceThickness?: number;
  /** Image Type values (e.g. ORIGINAL\PRIMARY\LOCALIZER). */
  imageType?: string[];
  /** SOP Class UID (default CT Image Storage). */
  sopClassUid?: string;
}

let uid = 0;
const newUid = () => `2.25.${Date.now()}${process.pid}${++uid}`;

/** Write one synthetic CT slice (explicit VR little endian unless told) and return its path. */
export function writeDicom(file: string, s: SyntheticSlice): string {
  const sop = newUid();
  const sopClass = s.sopClassUid ?? "1.2.840.10008.5.1.4.1.1.2";
  const bits = s.stored instanceof Uint8Array ? 8 : 16;
  const stored = s.bitsStored ?? bits;
  const dataset: Record<string, unknown> = {
    SOPClassUID: sopClass,
    SOPInstanceUID: sop,
    Modality: s.modality ?? "CT",
    SeriesInstanceUID: s.seriesUid ?? "2.25.1",
    StudyInstanceUID: "2.25.2",
    // What a DICOMDIR needs of each file (dcmmkdir refuses files without them).
    PatientName: "Phantom^Test",
    PatientID: "1",
    StudyDate: "20200101",
    StudyTime: "120000",
    StudyID: "1",
    SeriesNumber: "1",
    Rows: s.rows,
    Columns: s.columns,
    SamplesPerPixel: 1,
    PhotometricInterpretation: "MONOCHROME2",
    BitsAllocated: bits,
    BitsStored: stored,
    HighBit: stored - 1,
    PixelRepresentation: s.unsigned || bits === 8 ? 0 : 1,
    ...(s.noRescale ? {} : { RescaleSlope: String(s.slope ?? 1), RescaleIntercept: String(s.intercept ?? 0) }),
    ...(s.instanceNumber !== undefined ? { InstanceNumber: String(s.instanceNumber) } : {}),
    ...(s.z !== undefined || s.position ? { ImagePositionPatient: (s.position ?? [0, 0, s.z!]).map(String), ImageOrientationPatient: (s.orientation ?? [1, 0, 0, 0, 1, 0]).map(String) } : {}),
    ...(s.pixelSpacing ? { PixelSpacing: s.pixelSpacing.map(String) } : {}),
    ...(s.sliceThickness !== undefined ? { SliceThickness: String(s.sliceThickness) } : {}),
    ...(s.imageType ? { ImageType: s.imageType } : {}),
    ...(s.noPixels ? {} : { PixelData: [s.stored.buffer.slice(s.stored.byteOffset, s.stored.byteOffset + s.stored.byteLength)] }),
    _vrMap: { PixelData: bits === 8 ? "OB" : "OW" },
  };
  return writePart10(file, dataset, sopClass, sop, s.transferSyntax ?? "1.2.840.10008.1.2.1");
}

/** Write a naturalised dcmjs dataset as a Part 10 file with its file meta header. */
function writePart10(file: string, dataset: Record<string, unknown>, sopClass: string, sop: string, transferSyntax: string): string {
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClass,
    MediaStorageSOPInstanceUID: sop,
    TransferSyntaxUID: transferSyntax,
    ImplementationClassUID: "2.25.3",
  };
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, Buffer.from(dict.write()));
  return file;
}

/**
 * A chest-like phantom in HU: air outside a body ellipse (soft tissue, +40), two lung ellipses
 * (−850) with a ground-glass patch (−500) in the right one. Returned as stored values for the
 * given intercept (slope 1).
 */
export function phantom(rows: number, columns: number, intercept: number, shift = 0): Int16Array {
  const out = new Int16Array(rows * columns);
  const inEllipse = (x: number, y: number, cx: number, cy: number, rx: number, ry: number) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;
  for (let y = 0; y < rows; y++) for (let x = 0; x < columns; x++) {
    const u = x / columns, v = y / rows;
    let hu = -1000;
    if (inEllipse(u, v, 0.5, 0.5, 0.45, 0.35)) hu = 40;
    if (inEllipse(u, v, 0.32, 0.48, 0.12, 0.22) || inEllipse(u, v, 0.68, 0.48, 0.12, 0.22)) hu = -850;
    if (inEllipse(u, v, 0.7 + shift, 0.5, 0.05, 0.06)) hu = -500;
    out[y * columns + x] = hu - intercept;
  }
  return out;
}

export interface SyntheticEnhancedCt {
  rows: number;
  columns: number;
  /** One frame's stored values (signed 16 bit) each. */
  frames: Int16Array[];
  /** z of each frame's Plane Position (Patient), mm. */
  z: number[];
  /** Each frame's Rescale Intercept (Pixel Value Transformation, per frame; slope 1). */
  intercepts: number[];
  pixelSpacing?: [number, number];
  sliceThickness?: number;
  seriesUid?: string;
  /** Leave the Pixel Value Transformation out everywhere (no rescale). */
  noRescale?: boolean;
}

/**
 * Write an Enhanced CT image (SOP class 1.2.840.10008.5.1.4.1.1.2.1): all frames in one file,
 * orientation and pixel measures in the Shared Functional Groups, position and rescale per frame.
 */
export function writeEnhancedCt(file: string, e: SyntheticEnhancedCt): string {
  const sop = newUid();
  const sopClass = "1.2.840.10008.5.1.4.1.1.2.1";
  const pixels = new Int16Array(e.rows * e.columns * e.frames.length);
  e.frames.forEach((f, k) => pixels.set(f, k * e.rows * e.columns));
  const dataset: Record<string, unknown> = {
    SOPClassUID: sopClass,
    SOPInstanceUID: sop,
    Modality: "CT",
    ImageType: ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"],
    SeriesInstanceUID: e.seriesUid ?? "2.25.11",
    StudyInstanceUID: "2.25.2",
    InstanceNumber: "1",
    NumberOfFrames: String(e.frames.length),
    Rows: e.rows,
    Columns: e.columns,
    SamplesPerPixel: 1,
    PhotometricInterpretation: "MONOCHROME2",
    BitsAllocated: 16,
    BitsStored: 16,
    HighBit: 15,
    PixelRepresentation: 1,
    SharedFunctionalGroupsSequence: [
      {
        PixelMeasuresSequence: [{ PixelSpacing: (e.pixelSpacing ?? [0.7, 0.7]).map(String), SliceThickness: String(e.sliceThickness ?? 2) }],
        PlaneOrientationSequence: [{ ImageOrientationPatient: ["1", "0", "0", "0", "1", "0"] }],
      },
    ],
    PerFrameFunctionalGroupsSequence: e.frames.map((_, k) => ({
      PlanePositionSequence: [{ ImagePositionPatient: ["0", "0", String(e.z[k])] }],
      ...(e.noRescale ? {} : { PixelValueTransformationSequence: [{ RescaleIntercept: String(e.intercepts[k]), RescaleSlope: "1", RescaleType: "HU" }] }),
      FrameContentSequence: [{ InStackPositionNumber: k + 1 }],
    })),
    PixelData: [pixels.buffer],
    _vrMap: { PixelData: "OW" },
  };
  return writePart10(file, dataset, sopClass, sop, "1.2.840.10008.1.2.1");
}

/** Write a non-image DICOM object (an SR, PR, SEG, RTSTRUCT, …): its SOP class and Modality, no pixels. */
export function writeObject(file: string, sopClassUid: string, modality: string): string {
  return writeDicom(file, { stored: new Int16Array(0), rows: 0, columns: 0, noPixels: true, sopClassUid, modality, noRescale: true });
}

/**
 * Run a DICOM tool of DCMTK or GDCM (an encoder independent of the decoders under test). A tool
 * that is not installed fails the test with what to install: CI installs them (.ci/run).
 */
export function dicomTool(tool: string, args: readonly string[], cwd?: string): void {
  const r = spawnSync(tool, args, { encoding: "utf8", cwd });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") {
    throw new Error(`${tool} is not installed: the DICOM codec tests need DCMTK and GDCM (apt-get install dcmtk libgdcm-tools; .ci/run installs them)`);
  }
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${tool} ${args.join(" ")} exited ${r.status}: ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`);
}
