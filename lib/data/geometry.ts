/**
 * Where a series lies in the patient: which image side is the patient's right, which end is the
 * head, and the voxel size. DICOM's patient frame (LPS: +x the patient's left, +z the head) is the
 * frame every reader here reports in (NIfTI volumes are turned into it: lib/data/nifti.ts).
 */

/** Where the scan lies in the patient: which image side is the patient's right, which end the head. */
export interface ScanGeometry {
  /** Voxel size in mm (row spacing, column spacing, slice spacing) when the files say it. */
  spacing?: [number, number, number];
  /**
   * True when the patient's right is on the image's left (the radiological view of a standard axial
   * DICOM or NIfTI series); null when unknown (plain images): the zones are then named by image side.
   */
  rightOnImageLeft: boolean | null;
  /** True when the last slice is the most superior (slices sorted inferior → superior); null when unknown (the zones then count from the first slice). */
  superiorLast: boolean | null;
}

/**
 * A series' geometry from its first and last sorted slices (DICOM's patient frame, LPS: +x the
 * patient's left, +z the head). Unknown parts stay unknown (null), and the zones then name sides
 * and ends by the image.
 */
export function scanGeometry(first: { position?: readonly number[]; orientation?: readonly number[] }, last: { position?: readonly number[] }, spacing?: [number, number, number]): ScanGeometry {
  const o = first.orientation;
  // The row direction (increasing column): mostly +x means image right = the patient's left.
  const rightOnImageLeft = o && Math.abs(o[0]) >= 0.7 ? o[0] > 0 : null;
  const dz = first.position && last.position ? last.position[2] - first.position[2] : 0;
  return { spacing, rightOnImageLeft, superiorLast: dz === 0 ? null : dz > 0 };
}

