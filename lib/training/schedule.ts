/**
 * Learning-rate schedule of the paper: Adam at 1e-4 with a cosine schedule whose period is
 * 10 epochs (Section 3). The official code built `CosineAnnealingLR(T_max=10)` but never stepped it;
 * we step it, per iteration, with PyTorch's closed form
 *   lr(e) = lrMin + (lr0 − lrMin) · (1 + cos(π · e / period)) / 2,   e = fractional epoch,
 * which, like PyTorch beyond T_max, rises again after one period instead of restarting abruptly.
 */
export interface CosineSchedule {
  /** Initial learning rate (paper: 1e-4). */
  lr: number;
  /** Epochs from lr to lrMin (paper: 10). */
  periodEpochs: number;
  /** Floor of the schedule (PyTorch's eta_min; paper default 0). */
  lrMin?: number;
}

export function cosineLr(s: CosineSchedule, epoch: number, stepInEpoch = 0, stepsPerEpoch = 1): number {
  const e = epoch + stepInEpoch / Math.max(1, stepsPerEpoch);
  const lrMin = s.lrMin ?? 0;
  return lrMin + ((s.lr - lrMin) * (1 + Math.cos((Math.PI * e) / s.periodEpochs))) / 2;
}
