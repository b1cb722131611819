/**
 * The lesion-burden score (notebook 05): how much of the lung the lesion segmenter marks.
 *
 *   burden = |predicted lesion ∩ predicted lung| / |predicted lung|
 *
 * It is fitted to no class label: its only learned parts are the two U-Nets, which learned masks
 * from radiologists. Beside it, lesion statistics of the same masks (both lungs involved, the
 * peripheral share, the number of lesion components) feed a small logistic model fitted on a
 * protocol's training images (lib/lesions/score.ts). Both work on the masks at the file's own size,
 * so every statistic here is a share or a count that does not depend on the resolution.
 */

/** What the lesion masks of one slice say, inside its lung mask. */
export interface LesionStatistics {
  /** Lung pixels (share of the image). */
  lungShare: number;
  /** Lesion pixels inside the lung / lung pixels (0 when there is no lung). */
  burden: number;
  /** Burden of each lung: left and right of the lung mask's box centre (image left / image right). */
  sides: [number, number];
  /** 1 when both lungs hold lesion above BILATERAL_MIN of their own area, else 0. */
  bilateral: number;
  /** Share of the lesion (inside the lung) in the lung's outer third: distance to the lung's edge ≤ a third of the deepest lung pixel's (0 without lesion). */
  peripheral: number;
  /** 8-connected lesion components inside the lung holding at least COMPONENT_MIN of the lung's area. */
  components: number;
}

/** A lung counts as involved when lesion covers at least 1 % of it. */
export const BILATERAL_MIN = 0.01;
/** Lesion components smaller than 0.1 % of the lung area are not counted (specks). */
export const COMPONENT_MIN = 0.001;

/** City-block distance of every mask pixel to the nearest pixel outside the mask (the image border counts as outside); 0 outside. */
export function distanceToEdge(mask: ArrayLike<number>, height: number, width: number): Int32Array {
  const big = height + width;
  const d = new Int32Array(height * width);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    const i = y * width + x;
    if (!mask[i]) continue;
    const up = y > 0 ? d[i - width] : 0, left = x > 0 ? d[i - 1] : 0;
    d[i] = Math.min(big, Math.min(up, left) + 1);
  }
  for (let y = height - 1; y >= 0; y--) for (let x = width - 1; x >= 0; x--) {
    const i = y * width + x;
    if (!mask[i]) continue;
    const down = y < height - 1 ? d[i + width] : 0, right = x < width - 1 ? d[i + 1] : 0;
    d[i] = Math.min(d[i], Math.min(down, right) + 1);
  }
  return d;
}

/** 8-connected components of a 0/1 mask: their pixel counts. */
export function componentSizes(mask: ArrayLike<number>, height: number, width: number): number[] {
  const seen = new Uint8Array(height * width);
  const sizes: number[] = [];
  const stack: number[] = [];
  for (let start = 0; start < seen.length; start++) {
    if (!mask[start] || seen[start]) continue;
    let n = 0;
    seen[start] = 1;
    stack.push(start);
    while (stack.length) {
      const i = stack.pop()!;
      n++;
      const y = Math.floor(i / width), x = i - y * width;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const yy = y + dy, xx = x + dx;
        if ((dy || dx) && yy >= 0 && yy < height && xx >= 0 && xx < width) {
          const j = yy * width + xx;
          if (mask[j] && !seen[j]) {
            seen[j] = 1;
            stack.push(j);
          }
        }
      }
    }
    sizes.push(n);
  }
  return sizes;
}

/** The lesion statistics of one slice from its 0/1 lung and lesion masks (same size, upright or not: left/right is the image's). */
export function lesionStatistics(lung: ArrayLike<number>, lesion: ArrayLike<number>, height: number, width: number): LesionStatistics {
  const n = height * width;
  if (lung.length !== n || lesion.length !== n) throw new Error(`lesionStatistics: masks of ${lung.length} and ${lesion.length} pixels for ${height}×${width}`);
  let lungArea = 0, x0 = width, x1 = -1;
  for (let i = 0; i < n; i++) if (lung[i]) {
    lungArea++;
    const x = i % width;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
  }
  const empty: LesionStatistics = { lungShare: lungArea / n, burden: 0, sides: [0, 0], bilateral: 0, peripheral: 0, components: 0 };
  if (lungArea === 0) return empty;
  const mid = (x0 + x1) / 2;
  const inside = new Uint8Array(n);
  const lungSide = [0, 0], lesionSide = [0, 0];
  let lesionArea = 0;
  for (let i = 0; i < n; i++) {
    if (!lung[i]) continue;
    const side = i % width <= mid ? 0 : 1;
    lungSide[side]++;
    if (lesion[i]) {
      inside[i] = 1;
      lesionArea++;
      lesionSide[side]++;
    }
  }
  const sides: [number, number] = [lungSide[0] ? lesionSide[0] / lungSide[0] : 0, lungSide[1] ? lesionSide[1] / lungSide[1] : 0];
  if (lesionArea === 0) return { ...empty, sides };
  const dist = distanceToEdge(lung, height, width);
  let deepest = 0;
  for (let i = 0; i < n; i++) if (dist[i] > deepest) deepest = dist[i];
  let outer = 0;
  for (let i = 0; i < n; i++) if (inside[i] && dist[i] <= deepest / 3) outer++;
  const minComponent = COMPONENT_MIN * lungArea;
  return {
    lungShare: lungArea / n,
    burden: lesionArea / lungArea,
    sides,
    bilateral: sides[0] >= BILATERAL_MIN && sides[1] >= BILATERAL_MIN ? 1 : 0,
    peripheral: outer / lesionArea,
    components: componentSizes(inside, height, width).filter((s) => s >= minComponent).length,
  };
}

/** The features of the lesion logistic model, in order (burden as log(1 + 100·burden): burdens span orders of magnitude). */
export const LESION_FEATURES = ["log burden", "both lungs", "peripheral share", "components"] as const;

export function featureVector(s: LesionStatistics): number[] {
  return [Math.log1p(100 * s.burden), s.bilateral, s.peripheral, Math.log1p(s.components)];
}

/** A logistic model on standardised features: p = σ(b + Σ wᵢ (xᵢ − μᵢ)/σᵢ). */
export interface LogisticModel {
  features: readonly string[];
  mean: number[];
  sd: number[];
  weights: number[];
  bias: number;
  /** L2 penalty on the weights (not the bias). */
  l2: number;
}

export function logisticProbability(m: LogisticModel, x: readonly number[]): number {
  let z = m.bias;
  for (let j = 0; j < m.weights.length; j++) z += m.weights[j] * ((x[j] - m.mean[j]) / m.sd[j]);
  return 1 / (1 + Math.exp(-z));
}

/**
 * Fit a logistic model by Newton's method (IRLS) on standardised features with an L2 penalty:
 * deterministic, no learning rate, converges in a few steps on a handful of features.
 */
export function fitLogistic(xs: readonly (readonly number[])[], ys: readonly number[], o: { l2?: number; iterations?: number; features?: readonly string[] } = {}): LogisticModel {
  if (xs.length !== ys.length || xs.length === 0) throw new Error(`fitLogistic: ${xs.length} feature rows for ${ys.length} labels`);
  if (new Set(ys).size < 2) throw new Error("fitLogistic: the training labels hold one class only; both are needed");
  const d = xs[0].length, n = xs.length, l2 = o.l2 ?? 1;
  const mean = Array.from({ length: d }, (_, j) => xs.reduce((a, x) => a + x[j], 0) / n);
  const sd = Array.from({ length: d }, (_, j) => Math.sqrt(xs.reduce((a, x) => a + (x[j] - mean[j]) ** 2, 0) / n) || 1);
  const z = xs.map((x) => x.map((v, j) => (v - mean[j]) / sd[j]));
  // θ = [bias, w₁ … w_d]; rows get a leading 1.
  const rows = z.map((r) => [1, ...r]);
  let theta = new Array(d + 1).fill(0);
  for (let it = 0; it < (o.iterations ?? 50); it++) {
    const grad = new Array(d + 1).fill(0);
    const hess = Array.from({ length: d + 1 }, () => new Array(d + 1).fill(0));
    for (let i = 0; i < n; i++) {
      const r = rows[i];
      const p = 1 / (1 + Math.exp(-r.reduce((a, v, j) => a + v * theta[j], 0)));
      const w = p * (1 - p);
      for (let j = 0; j <= d; j++) {
        grad[j] += (p - ys[i]) * r[j];
        for (let k = 0; k <= d; k++) hess[j][k] += w * r[j] * r[k];
      }
    }
    for (let j = 1; j <= d; j++) {
      grad[j] += l2 * theta[j];
      hess[j][j] += l2;
    }
    const step = solve(hess, grad);
    theta = theta.map((t, j) => t - step[j]);
    if (Math.max(...step.map(Math.abs)) < 1e-10) break;
  }
  return { features: o.features ?? Array.from({ length: d }, (_, j) => `x${j}`), mean, sd, weights: theta.slice(1), bias: theta[0], l2 };
}

/** Solve A x = b (Gaussian elimination with partial pivoting; A is small and positive definite here). */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r][c]) > Math.abs(m[p][c])) p = r;
    [m[c], m[p]] = [m[p], m[c]];
    const piv = m[c][c] || 1e-12;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r][c] / piv;
      for (let k = c; k <= n; k++) m[r][k] -= f * m[c][k];
    }
  }
  return m.map((row, i) => row[n] / (row[i] || 1e-12));
}
