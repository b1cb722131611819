/**
 * A scan's score (lib/lesions/scan.ts) on synthetic stacks whose answers are known by construction:
 * lungs kept or removed in 3D, the volumetric burden, the six zones and their grades, volumes in mm³,
 * and which image side is the patient's right.
 */
import { strict as assert } from "assert";
import { AERATED_GRAY_MAX, chungGrade, GAS_GRAY_MAX, keep3dComponents, LUNG_COMPONENT_MIN, scanGeometry, scanScore, ZONES } from "../lib/lesions/scan";

const H = 20, W = 30;
/** A 0/1 slice with the rectangle [y0, y1) × [x0, x1) set. */
function rect(y0: number, y1: number, x0: number, x1: number, into = new Uint8Array(H * W)): Uint8Array {
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) into[y * W + x] = 1;
  return into;
}
const count = (m: Uint8Array) => m.reduce((a, v) => a + v, 0);

describe("a scan's score (lungs in 3D, volumetric burden, zones)", () => {
  it("grades a zone's share on the chest CT severity scale: 0 none, 1 < 5 %, 2 5–25 %, 3 26–50 %, 4 51–75 %, 5 > 75 %", () => {
    assert.deepEqual([0, 0.001, 0.049, 0.05, 0.25, 0.26, 0.5, 0.51, 0.75, 0.76, 1].map(chungGrade), [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
  });

  it("keeps the lung volume and what touches it through adjacent slices; removes gas that never connects to it", () => {
    // Lung: slices 3–9. Bowel gas: slices 0–1 at another place (never overlaps the lung). A blob on
    // slice 2 that overlaps the lung on slice 3 belongs to it.
    const masks = Array.from({ length: 10 }, (_, z) => (z >= 3 ? rect(5, 15, 5, 12) : new Uint8Array(H * W)));
    rect(0, 3, 20, 23, masks[0]);
    rect(0, 3, 20, 23, masks[1]);
    rect(10, 12, 6, 8, masks[2]);
    const before = masks.map(count);
    const removed = keep3dComponents(masks, H, W, (size, largest) => size >= LUNG_COMPONENT_MIN * largest);
    assert.deepEqual(removed, [9, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(masks.map(count), before.map((b, z) => b - removed[z]));
    assert.equal(count(masks[2]), 4, "the blob touching the lung stays");
    // Two lungs that never touch are both kept (each is a large share of the largest).
    const two = Array.from({ length: 6 }, () => rect(5, 15, 18, 26, rect(5, 15, 2, 10)));
    assert.deepEqual(keep3dComponents(two, H, W, (size, largest) => size >= LUNG_COMPONENT_MIN * largest), [0, 0, 0, 0, 0, 0]);
  });

  it("the volumetric burden, the zones of each lung (thirds of its own extent, from the head) and the volumes", () => {
    // 9 slices, inferior → superior. Right lung (image left, x 2–9) on slices 0–8, left lung (image
    // right, x 18–25) on slices 3–8. Lesion: the whole of the right lung on slices 0–2 (its lower
    // third), and 8 pixels of the left lung on slice 8 (its upper third: slices 7–8), plus a lesion
    // outside the lungs that must not count.
    const slices = Array.from({ length: 9 }, (_, z) => {
      const lung = rect(5, 15, 2, 10);
      if (z >= 3) rect(5, 15, 18, 26, lung);
      const lesion = new Uint8Array(H * W);
      if (z <= 2) rect(5, 15, 2, 10, lesion);
      if (z === 8) rect(5, 6, 18, 26, lesion);
      rect(0, 2, 12, 16, lesion); // outside the lung
      return { lung, lesion };
    });
    const g = scanGeometry({ orientation: [1, 0, 0, 0, 1, 0], position: [0, 0, -100] }, { position: [0, 0, -84] }, [0.5, 0.5, 2]);
    assert.deepEqual(g, { spacing: [0.5, 0.5, 2], rightOnImageLeft: true, superiorLast: true });
    const s = scanScore(slices, H, W, g);
    const lungVoxels = 9 * 80 + 6 * 80, lesionVoxels = 3 * 80 + 8;
    assert.equal(s.lungVoxels, lungVoxels);
    assert.equal(s.lesionVoxels, lesionVoxels);
    assert.equal(s.burden, lesionVoxels / lungVoxels);
    assert.equal(s.lungMm3, lungVoxels * 0.5);
    assert.equal(s.lesionMm3, lesionVoxels * 0.5);
    assert.deepEqual(s.extent, { right: [0, 8], left: [3, 8] });
    const z = Object.fromEntries(s.zones.map((x) => [x.zone, x]));
    assert.deepEqual(s.zones.map((x) => x.zone), [...ZONES]);
    assert.deepEqual([z["right lower"].share, z["right middle"].share, z["right upper"].share], [1, 0, 0]);
    assert.equal(z["left upper"].lungVoxels, 2 * 80);
    assert.equal(z["left upper"].share, 8 / 160);
    assert.deepEqual(s.zones.map((x) => x.grade), [0, 0, 5, 2, 0, 0]);
    assert.equal(s.severity, 7);
    assert.ok(s.patientSides);
    // The same scan seen with the patient's right on the image's right (row cosine −x): the sides swap.
    const mirrored = scanScore(slices.map((x) => ({ lung: x.lung.slice(), lesion: x.lesion.slice() })), H, W, scanGeometry({ orientation: [-1, 0, 0, 0, 1, 0], position: [0, 0, -100] }, { position: [0, 0, -84] }));
    assert.deepEqual(mirrored.zones.map((x) => x.grade), [2, 0, 0, 0, 0, 5]);
    assert.equal(mirrored.lungMm3, null);
    // Slices sorted head → foot: "upper" is now the first slices.
    const flipped = scanScore(slices.map((x) => ({ lung: x.lung.slice(), lesion: x.lesion.slice() })), H, W, { rightOnImageLeft: true, superiorLast: false });
    assert.deepEqual(flipped.zones.map((x) => x.grade), [5, 0, 0, 0, 0, 2]);
    // No orientation: sides and ends are the image's, and the score says so.
    assert.equal(scanScore(slices.map((x) => ({ lung: x.lung.slice(), lesion: x.lesion.slice() })), H, W, scanGeometry({}, {})).patientSides, false);
  });

  it("lung holds air: a dense 'lung' far from aerated lung (liver under the base) and gas under the diaphragm are removed before the 3D labelling; consolidation beside aerated lung stays", () => {
    // Slices 0–2: the U-Net's "lung" over the liver (dense, gray 238), joined in x, y to the real
    // lung above; on slice 2 also a gas bubble (gray 55) right under the lung of slice 3. Slices
    // 3–8: aerated lung (gray 85) with a consolidation (gray 220) at its edge, 2 px wide.
    const gray = (z: number) => {
      const g = new Uint8Array(H * W).fill(200);
      for (let y = 5; y < 15; y++) for (let x = 2; x < 12; x++) g[y * W + x] = z >= 3 ? (x >= 10 ? 220 : 85) : 238;
      if (z === 2) for (let y = 6; y < 9; y++) for (let x = 4; x < 7; x++) g[y * W + x] = 55;
      return g;
    };
    const slices = Array.from({ length: 9 }, (_, z) => ({ lung: rect(5, 15, 2, 12), lesion: z >= 3 ? rect(5, 15, 10, 12) : new Uint8Array(H * W), gray: gray(z) }));
    assert.ok(85 <= AERATED_GRAY_MAX && 55 <= GAS_GRAY_MAX && 85 > GAS_GRAY_MAX);
    const s = scanScore(slices, H, W, { spacing: [1, 1, 2], rightOnImageLeft: true, superiorLast: true }, { aeratedReachMm: 3 });
    assert.deepEqual(s.perSlice.map((p) => p.lungPixels), [0, 0, 0, 100, 100, 100, 100, 100, 100], "liver and gas gone, lung and its consolidation kept");
    assert.deepEqual(s.perSlice.map((p) => p.removedLungPixels), [100, 100, 100, 0, 0, 0, 0, 0, 0]);
    assert.equal(s.burden, 20 / 100);
    // With a reach shorter than the consolidation is wide, its far side goes: the rule is a distance.
    const tight = scanScore(slices.map((x) => ({ ...x, lung: rect(5, 15, 2, 12), lesion: x.lesion.slice() })), H, W, { spacing: [1, 1, 2], rightOnImageLeft: true, superiorLast: true }, { aeratedReachMm: 1 });
    assert.equal(tight.perSlice[3].lungPixels, 90);
    // Without the gray pixels (plain images, no series) neither rule applies.
    const plain = scanScore(slices.map((x) => ({ lung: rect(5, 15, 2, 12), lesion: x.lesion.slice() })), H, W, { rightOnImageLeft: null, superiorLast: null });
    assert.equal(plain.lungVoxels, 9 * 100);
  });

  it("refuses slices of different sizes in one scan, by slice", () => {
    assert.throws(() => scanScore([{ lung: new Uint8Array(H * W), lesion: new Uint8Array(H * W) }, { lung: new Uint8Array(10), lesion: new Uint8Array(10) }], H, W, { rightOnImageLeft: null, superiorLast: null }), /slice 2 has masks of 10 and 10 pixels/);
  });
});
