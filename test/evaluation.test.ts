import { strict as assert } from "assert";
import {
  auc,
  binaryMetrics,
  bootstrapCI,
  chooseThreshold,
  confusionMatrix,
  meanSd,
  metricFn,
  officialMetrics,
  quantile,
  rocAuc,
  rocCurve,
  trapezoidAuc,
} from "../lib/evaluation";

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} ≠ ${b}`);

describe("evaluation: threshold metrics (COVID = 1 = positive)", () => {
  // 4 COVID, 2 NonCOVID; at 0.5: TP 3 (0.9 0.8 0.7), FN 1 (0.2), FP 1 (0.6), TN 1 (0.1).
  const labels = [1, 1, 1, 1, 0, 0];
  const scores = [0.9, 0.8, 0.7, 0.2, 0.6, 0.1];

  it("matches the hand-computed confusion matrix and metrics", () => {
    assert.deepEqual(confusionMatrix(labels, scores), { tp: 3, fp: 1, tn: 1, fn: 1 });
    const m = binaryMetrics(labels, scores);
    close(m.accuracy, 4 / 6);
    close(m.precision, 3 / 4);
    close(m.recall, 3 / 4);
    close(m.f1, 3 / 4);
    close(m.specificity, 1 / 2);
    close(m.auc, 7 / 8); // pairs won: 0.9→2, 0.8→2, 0.7→2, 0.2→1 of 8
    assert.equal(m.aucDefined, true);
  });

  it("reports the official code's NonCOVID-positive convention from the same predictions", () => {
    const o = officialMetrics(labels, scores);
    assert.deepEqual([o.tp, o.fp, o.tn, o.fn], [1, 1, 3, 1]);
    close(o.precision, 1 / 2);
    close(o.recall, 1 / 2);
    close(o.f1, 1 / 2);
    close(o.specificity, 3 / 4);
    close(o.accuracy, 4 / 6);
    close(o.auc, 7 / 8);
  });

  it("predicts COVID at score == threshold (argmax tie → COVID, class index 0 officially)", () => {
    assert.deepEqual(confusionMatrix([1, 0], [0.5, 0.5], 0.5), { tp: 1, fp: 1, tn: 0, fn: 0 });
  });

  it("gives 0, not NaN, for 0/0 (no predicted positives)", () => {
    const m = binaryMetrics([1, 0, 0], [0.1, 0.2, 0.3]);
    assert.equal(m.precision, 0);
    assert.equal(m.recall, 0);
    assert.equal(m.f1, 0);
    close(m.specificity, 1);
  });

  it("rejects bad input", () => {
    assert.throws(() => binaryMetrics([1, 2], [0.1, 0.2]), /labels must be 0/);
    assert.throws(() => binaryMetrics([1, 0], [0.1]), /differ in length/);
    assert.throws(() => rocAuc([1, 0], [0.1, NaN]), /NaN/);
  });
});

describe("evaluation: AUC and ROC", () => {
  it("counts ties as 1/2 (Mann–Whitney) and equals the trapezoidal ROC area", () => {
    const l = [1, 1, 0, 0];
    const s = [0.7, 0.5, 0.5, 0.2];
    close(auc(l, s), 3.5 / 4);
    const roc = rocCurve(l, s);
    assert.deepEqual(roc, [
      { threshold: Infinity, fpr: 0, tpr: 0 },
      { threshold: 0.7, fpr: 0, tpr: 0.5 },
      { threshold: 0.5, fpr: 0.5, tpr: 1 },
      { threshold: 0.2, fpr: 1, tpr: 1 },
    ]);
    close(trapezoidAuc(roc), 0.875);
  });

  it("agrees with the trapezoidal area on random data with many ties", () => {
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
    const l = Array.from({ length: 300 }, () => (rnd() < 0.4 ? 1 : 0));
    const s = l.map((y) => Math.round((rnd() + 0.3 * y) * 10) / 10); // 14 distinct values
    close(auc(l, s), trapezoidAuc(rocCurve(l, s)), 1e-12);
    // Brute-force pair count.
    let won = 0;
    let pairs = 0;
    l.forEach((a, i) => l.forEach((b, j) => {
      if (a === 1 && b === 0) {
        pairs++;
        won += s[i] > s[j] ? 1 : s[i] === s[j] ? 0.5 : 0;
      }
    }));
    close(auc(l, s), won / pairs, 1e-12);
  });

  it("handles perfect, inverted and all-tied scores", () => {
    close(auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]), 1);
    close(auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]), 0);
    close(auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]), 0.5);
    assert.deepEqual(rocCurve([0, 1], [0.5, 0.5]).map((p) => [p.fpr, p.tpr]), [[0, 0], [1, 1]]);
  });

  it("flags a one-class sample instead of crashing", () => {
    const r = rocAuc([1, 1, 1], [0.2, 0.5, 0.9]);
    assert.equal(r.defined, false);
    assert.ok(Number.isNaN(r.auc));
    assert.match(r.reason!, /both classes/);
    const m = binaryMetrics([0, 0], [0.3, 0.7]);
    assert.equal(m.aucDefined, false);
    close(m.accuracy, 0.5);
    assert.ok(Number.isNaN(rocCurve([0, 0], [0.3, 0.7])[1].tpr));
  });
});

describe("evaluation: threshold choice", () => {
  const l = [0, 0, 1, 0, 1, 1];
  const s = [0.1, 0.2, 0.3, 0.35, 0.4, 0.8];

  it("maximises Youden's J; ties go to the threshold nearest 0.5", () => {
    // t=0.4: TPR 2/3, FPR 0; t=0.3: TPR 1, FPR 1/3 — both J = 2/3.
    const c = chooseThreshold(l, s);
    assert.equal(c.threshold, 0.4);
    close(c.value, 2 / 3, 1e-12);
  });

  it("maximises F1 when asked", () => {
    const c = chooseThreshold(l, s, "f1");
    assert.equal(c.threshold, 0.3); // F1 6/7 vs 4/5 at 0.4
    close(c.value, 6 / 7, 1e-12);
  });

  it("finds the separating threshold and survives one-class data", () => {
    assert.equal(chooseThreshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]).threshold, 0.7);
    const c = chooseThreshold([1, 1], [0.2, 0.9]);
    assert.equal(c.threshold, 0.5);
    assert.ok(Number.isNaN(c.value));
  });
});

describe("evaluation: bootstrap and run summaries", () => {
  const labels = Array.from({ length: 100 }, (_, i) => i % 2);
  // 80 of 100 correct at 0.5.
  const scores = labels.map((y, i) => (i < 80 ? (y ? 0.9 : 0.1) : y ? 0.1 : 0.9));

  it("is reproducible from its seed and brackets the estimate", () => {
    const a = bootstrapCI(labels, scores, metricFn("accuracy"), { n: 500, seed: 7 });
    const b = bootstrapCI(labels, scores, metricFn("accuracy"), { n: 500, seed: 7 });
    const c = bootstrapCI(labels, scores, metricFn("accuracy"), { n: 500, seed: 8 });
    assert.deepEqual(a, b);
    assert.notDeepEqual([a.lower, a.upper], [c.lower, c.upper]);
    close(a.estimate, 0.8);
    // Binomial SE = 0.04 → roughly [0.72, 0.88].
    assert.ok(Math.abs(a.lower - 0.72) < 0.03 && Math.abs(a.upper - 0.88) < 0.03, `${a.lower} ${a.upper}`);
  });

  it("skips and counts one-class resamples for AUC; stratified resampling has none", () => {
    const l = [1, 0, 0, 0, 0];
    const s = [0.9, 0.1, 0.2, 0.3, 0.4];
    const plain = bootstrapCI(l, s, auc, { n: 200, seed: 1 });
    assert.ok(plain.nInvalid > 0);
    assert.equal(plain.lower, 1);
    const strat = bootstrapCI(l, s, auc, { n: 200, seed: 1, stratified: true });
    assert.equal(strat.nInvalid, 0);
    assert.deepEqual([strat.lower, strat.upper, strat.estimate], [1, 1, 1]);
  });

  it("computes quantiles like numpy and mean ± sample SD", () => {
    close(quantile([1, 2, 3, 4], 0.5), 2.5);
    close(quantile([1, 2, 3, 4], 0.25), 1.75);
    const m = meanSd([1, 2, 3, 4]);
    close(m.mean, 2.5);
    close(m.sd, Math.sqrt(5 / 3));
    assert.ok(Number.isNaN(meanSd([5]).sd));
    assert.ok(Number.isNaN(meanSd([]).mean));
  });
});
