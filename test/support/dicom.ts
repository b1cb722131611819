/**
 * Synthetic DICOM files for the tests, written with dcmjs (a second, independent DICOM
 * implementation: the reader under test is dicom-parser's).
 */
import * as fs from "fs";
import * as path from "path";
// eslint-disable-next-line @typescript-eslint/no-var-requires
const dcmjs = require("dcmjs");

export interface SyntheticSlice {
  /** Stored values, rows × columns, row-major (signed 16 bit). */
  stored: Int16Array;
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
  /** Image Orientation (Patient): row then column direction cosines (1\0\0\0\1\0 unless told). */
  orientation?: [number, number, number, number, number, number];
  /** Pixel Spacing (0028,0030), mm: [between rows, between columns]. */
  pixelSpacing?: [number, number];
  /** Slice Thickness (0018,0050), mm. */
  sliceThickness?: number;
}

let uid = 0;
const newUid = () => `2.25.${Date.now()}${process.pid}${++uid}`;

/** Write one synthetic CT slice (explicit VR little endian unless told) and return its path. */
export function writeDicom(file: string, s: SyntheticSlice): string {
  const sop = newUid();
  const dataset: Record<string, unknown> = {
    SOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
    SOPInstanceUID: sop,
    Modality: s.modality ?? "CT",
    SeriesInstanceUID: s.seriesUid ?? "2.25.1",
    StudyInstanceUID: "2.25.2",
    Rows: s.rows,
    Columns: s.columns,
    SamplesPerPixel: 1,
    PhotometricInterpretation: "MONOCHROME2",
    BitsAllocated: 16,
    BitsStored: 16,
    HighBit: 15,
    PixelRepresentation: 1,
    RescaleSlope: String(s.slope ?? 1),
    RescaleIntercept: String(s.intercept ?? 0),
    ...(s.instanceNumber !== undefined ? { InstanceNumber: String(s.instanceNumber) } : {}),
    ...(s.z !== undefined || s.position ? { ImagePositionPatient: (s.position ?? [0, 0, s.z!]).map(String), ImageOrientationPatient: (s.orientation ?? [1, 0, 0, 0, 1, 0]).map(String) } : {}),
    ...(s.pixelSpacing ? { PixelSpacing: s.pixelSpacing.map(String) } : {}),
    ...(s.sliceThickness !== undefined ? { SliceThickness: String(s.sliceThickness) } : {}),
    ...(s.noPixels ? {} : { PixelData: [s.stored.buffer.slice(s.stored.byteOffset, s.stored.byteOffset + s.stored.byteLength)] }),
    _vrMap: { PixelData: "OW" },
  };
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
    MediaStorageSOPInstanceUID: sop,
    TransferSyntaxUID: s.transferSyntax ?? "1.2.840.10008.1.2.1",
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
