import { strict as assert } from "assert";
import { maskOverlap, segmentationMetrics, summariseSegmentation } from "../lib/evaluation";

const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) < eps, `${a} ≠ ${b}`);

describe("evaluation: segmentation metrics (hand cases)", () => {
  // 4×4 masks: pred covers a 2×3 block, ref a 2×2 block overlapping it in 2 pixels.
  const pred = [1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  const ref = [0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0];

  it("Dice, IoU and coverage of overlapping masks", () => {
    const m = segmentationMetrics(pred, ref);
    assert.deepEqual([m.intersection, m.predArea, m.refArea, m.n], [2, 6, 4, 16]);
    close(m.dice, (2 * 2) / (6 + 4));
    close(m.iou, 2 / 8);
    close(m.coverage, 2 / 4);
    // Coverage is not symmetric; Dice and IoU are.
    const r = segmentationMetrics(ref, pred);
    close(r.coverage, 2 / 6);
    close(r.dice, m.dice);
  });

  it("empty-mask conventions: both empty → 1, one empty → 0, empty reference → coverage NaN", () => {
    const zero = new Array(16).fill(0);
    const both = segmentationMetrics(zero, zero);
    assert.equal(both.dice, 1);
    assert.equal(both.iou, 1);
    assert.ok(Number.isNaN(both.coverage));
    const missed = segmentationMetrics(zero, ref);
    assert.equal(missed.dice, 0);
    assert.equal(missed.coverage, 0);
    const spurious = segmentationMetrics(pred, zero);
    assert.equal(spurious.dice, 0);
    assert.ok(Number.isNaN(spurious.coverage));
  });

  it("thresholds: probabilities at 0.5 by default, 8-bit masks at 128", () => {
    const probs = [0.49, 0.5, 0.9, 0.1];
    const m = segmentationMetrics(probs, [0, 1, 1, 1]);
    assert.equal(m.predArea, 2);
    assert.equal(m.intersection, 2);
    const bytes = segmentationMetrics([127, 128, 255, 0], [0, 200, 255, 100], { predThreshold: 128, refThreshold: 128 });
    assert.deepEqual([bytes.predArea, bytes.refArea, bytes.intersection], [2, 2, 2]);
  });

  it("pooled sums counts before dividing; per-image averages ratios and skips undefined coverage", () => {
    const a = maskOverlap(pred, ref); // I 2, P 6, R 4
    const b = maskOverlap([1, 1, 0, 0], [1, 1, 1, 1]); // I 2, P 2, R 4
    const c = maskOverlap([0, 0, 1, 0], [0, 0, 0, 0]); // no reference
    const s = summariseSegmentation([a, b, c]);
    assert.equal(s.n, 3);
    assert.equal(s.nWithReference, 2);
    close(s.pooled.coverage, (2 + 2) / (4 + 4));
    close(s.pooled.dice, (2 * 4) / (6 + 4 + 2 + 4 + 1 + 0));
    close(s.perImage.coverage.mean, (0.5 + 0.5) / 2);
    assert.equal(s.perImage.coverage.n, 2);
    close(s.perImage.dice.mean, (0.4 + 2 / 3 + 0) / 3);
  });

  it("rejects masks of different sizes and NaN pixels, naming the problem", () => {
    assert.throws(() => maskOverlap([1, 0], [1, 0, 0]), /2 pixels, reference 3/);
    assert.throws(() => maskOverlap([1, NaN], [1, 0]), /NaN at pixel 1/);
  });
});
