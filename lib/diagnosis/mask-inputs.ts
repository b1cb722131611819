/**
 * Input pipelines of Study II: an example becomes (image [+ lung-mask channel], lesion target).
 *
 * MaskedImageSource (fine-tuning: `paper`, `smoke`): gray image at the input size, the lung mask as
 * channel 4 (Fig. 4A), the lesion mask as a target (Fig. 4B); the paper's augmentation moves image
 * and masks together (augmentPair).
 * MapFeatureSource (`quick`): a frozen backbone's cached feature map per image, z-scored per channel
 * with training statistics, the lung mask as a second input at the map's resolution (the share of
 * lung pixels in each cell) and the lesion target at a reduced size.
 */
import * as tf from "@tensorflow/tfjs";
import { Example, LabelledExamples, loadGrayImages } from "../data/examples";
import { toModelInput } from "../models/input";
import { Preprocessing } from "../models/weights";
import { augmentBatch, augmentPair } from "../training/augment";
import { Tensors } from "../training/accumulate";
import { BatchContext } from "../training/loop";
import { MultiTaskSource } from "../training/multitask";
import { AugmentConfig } from "../training/profiles";
import { lesionTargetOf } from "./masks";

function bytesBatch(arrays: readonly Uint8Array[], idx: readonly number[], per: number, scale: number): Float32Array {
  const buf = new Float32Array(idx.length * per);
  idx.forEach((i, k) => {
    const a = arrays[i];
    for (let p = 0; p < per; p++) buf[k * per + p] = a[p] * scale;
  });
  return buf;
}

/** What a Study II example carries besides its image. */
export interface ExampleMasks {
  /** Lung mask per example at the image size (0/1), or null when the variant has no lung input. */
  lung: Uint8Array[] | null;
  /** Lesion LABEL per example at the target size (null: none), or null when the variant has no lesion branch. */
  lesion: (Uint8Array | null)[] | null;
}

export class MaskedImageSource extends LabelledExamples implements MultiTaskSource {
  readonly lesionSize: [number, number];
  private readonly targets: { mask: Uint8Array; hasMask: 0 | 1 }[] | null;
  private constructor(
    private readonly images: Uint8Array[],
    private readonly side: number,
    private readonly pre: Preprocessing,
    private readonly augment: AugmentConfig | null,
    examples: readonly Example[],
    private readonly masks: ExampleMasks,
  ) {
    super(examples);
    this.lesionSize = [side, side];
    this.targets = masks.lesion ? examples.map((e, i) => lesionTargetOf(e, masks.lesion![i], side)) : null;
  }

  static async create(examples: readonly Example[], side: number, pre: Preprocessing, augment: AugmentConfig | null, masks: ExampleMasks): Promise<MaskedImageSource> {
    return new MaskedImageSource(await loadGrayImages(examples, side), side, pre, augment, examples, masks);
  }

  /** Gray [n,s,s,1] in [0,1], lung [n,s,s,1] or null, lesion [n,s,s,1] or null — augmented together when training. */
  private planes(idx: readonly number[], ctx: BatchContext): { gray: tf.Tensor4D; lung: tf.Tensor4D | null; lesion: tf.Tensor4D | null } {
    const s = this.side, per = s * s, n = idx.length;
    const gray = tf.tensor4d(bytesBatch(this.images, idx, per, 1 / 255), [n, s, s, 1]);
    const lung = this.masks.lung ? tf.tensor4d(bytesBatch(this.masks.lung, idx, per, 1), [n, s, s, 1]) : null;
    const lesion = this.targets ? tf.tensor4d(bytesBatch(this.targets.map((t) => t.mask), idx, per, 1), [n, s, s, 1]) : null;
    if (!(ctx.train && this.augment)) return { gray, lung, lesion };
    const ms = [lung, lesion].filter((m): m is tf.Tensor4D => m !== null);
    if (ms.length === 0) {
      const g = augmentBatch(gray, this.augment, ctx.seed);
      gray.dispose();
      return { gray: g, lung, lesion };
    }
    const stacked = ms.length === 1 ? ms[0] : (tf.concat(ms, 3) as tf.Tensor4D);
    const [g, m] = augmentPair(gray, stacked, this.augment, ctx.seed);
    tf.dispose([gray, ...ms, ...(ms.length > 1 ? [stacked] : [])]);
    const parts = ms.length === 1 ? [m] : (tf.split(m, ms.length, 3) as tf.Tensor4D[]);
    if (ms.length > 1) m.dispose();
    return { gray: g, lung: lung ? parts[0] : null, lesion: lesion ? parts[parts.length - 1] : null };
  }

  private modelInput(gray: tf.Tensor4D, lung: tf.Tensor4D | null): tf.Tensor4D {
    return tf.tidy(() => {
      const rgb = toModelInput(gray, this.pre);
      return lung ? (tf.concat([rgb, lung], 3) as tf.Tensor4D) : rgb;
    });
  }

  inputs(indices: readonly number[], ctx: BatchContext): Tensors {
    const { gray, lung, lesion } = this.planes(indices, ctx);
    const x = this.modelInput(gray, lung);
    tf.dispose([gray, lung, lesion].filter((t): t is tf.Tensor4D => t !== null));
    return x;
  }

  multiTaskBatch(indices: readonly number[], ctx: BatchContext): { x: Tensors; lesion: tf.Tensor; hasMask: tf.Tensor } {
    if (!this.targets) throw new Error("this source has no lesion targets (variant without a lesion branch)");
    const { gray, lung, lesion } = this.planes(indices, ctx);
    const x = this.modelInput(gray, lung);
    tf.dispose([gray, lung].filter((t): t is tf.Tensor4D => t !== null));
    return { x, lesion: lesion!, hasMask: tf.tensor1d(indices.map((i) => this.targets![i].hasMask)) };
  }

  lesionLabel(i: number): Uint8Array | null {
    return this.masks.lesion?.[i] ?? null;
  }
}

/** Per-channel mean and standard deviation of feature maps over every cell of the training maps. */
export interface ChannelNormalisation {
  mean: Float32Array;
  std: Float32Array;
}

export function channelNormalisation(maps: readonly Float32Array[], channels: number): ChannelNormalisation {
  const mean = new Float64Array(channels), sq = new Float64Array(channels);
  let cells = 0;
  for (const m of maps) {
    for (let o = 0; o < m.length; o += channels) {
      for (let c = 0; c < channels; c++) { const v = m[o + c]; mean[c] += v; sq[c] += v * v; }
      cells++;
    }
  }
  const mu = Float32Array.from(mean, (x) => x / cells);
  const sd = Float32Array.from(sq, (x, c) => Math.sqrt(Math.max(0, x / cells - mu[c] * mu[c])) + 1e-6);
  return { mean: mu, std: sd };
}

/** Share of mask pixels in each cell of an h×w grid over a size×size mask (the lung input at the map's resolution). */
export function maskToGrid(mask: Uint8Array, size: number, h: number, w: number): Float32Array {
  const out = new Float32Array(h * w);
  const cnt = new Float32Array(h * w);
  for (let y = 0; y < size; y++) {
    const gy = Math.min(h - 1, Math.floor((y * h) / size));
    for (let x = 0; x < size; x++) {
      const g = gy * w + Math.min(w - 1, Math.floor((x * w) / size));
      out[g] += mask[y * size + x];
      cnt[g]++;
    }
  }
  for (let i = 0; i < out.length; i++) out[i] /= cnt[i];
  return out;
}

/**
 * Cached frozen feature maps [h,w,C] (+ lung grids, lesion targets) as a multi-task source. The
 * maps are standardised once, in place; a batch is a copy of 16 of them. Measured on wasm: a fresh
 * 5 MB batch array costs ~7 ms, tf.gather from one big tensor ~57 ms, a reused array ~0.3 ms — so
 * on wasm (which copies the data into its heap when the tensor is made) one array is reused.
 */
export class MapFeatureSource extends LabelledExamples implements MultiTaskSource {
  readonly lesionSize: [number, number];
  private readonly targets: { mask: Uint8Array; hasMask: 0 | 1 }[] | null;
  private scratch = new Float32Array(0);
  /** `maps` are standardised in place with `norm`: pass arrays this source may own. */
  constructor(
    private readonly maps: readonly Float32Array[],
    readonly mapShape: [number, number, number],
    norm: ChannelNormalisation,
    examples: readonly Example[],
    private readonly lungGrids: Float32Array[] | null,
    private readonly lesion: (Uint8Array | null)[] | null,
    lesionSide: number,
  ) {
    super(examples);
    this.lesionSize = [lesionSide, lesionSide];
    this.targets = lesion ? examples.map((e, i) => lesionTargetOf(e, lesion[i], lesionSide)) : null;
    const c = mapShape[2];
    for (const m of maps) for (let p = 0; p < m.length; p += c) for (let j = 0; j < c; j++) m[p + j] = (m[p + j] - norm.mean[j]) / norm.std[j];
  }

  /** A batch array: the reused one on wasm (its tensors copy the data at creation), a fresh one elsewhere. */
  private batchArray(n: number): Float32Array {
    if (tf.getBackend() !== "wasm") return new Float32Array(n);
    if (this.scratch.length < n) this.scratch = new Float32Array(n);
    return this.scratch.subarray(0, n);
  }

  inputs(indices: readonly number[]): Tensors {
    const [h, w, c] = this.mapShape;
    const per = h * w * c;
    const buf = this.batchArray(indices.length * per);
    indices.forEach((i, k) => buf.set(this.maps[i], k * per));
    const map = tf.tensor4d(buf, [indices.length, h, w, c]);
    if (!this.lungGrids) return map;
    const lung = new Float32Array(indices.length * h * w);
    indices.forEach((i, k) => lung.set(this.lungGrids![i], k * h * w));
    return [map, tf.tensor4d(lung, [indices.length, h, w, 1])];
  }

  multiTaskBatch(indices: readonly number[]): { x: Tensors; lesion: tf.Tensor; hasMask: tf.Tensor } {
    if (!this.targets) throw new Error("this source has no lesion targets (variant without a lesion branch)");
    const [s] = this.lesionSize;
    return {
      x: this.inputs(indices),
      lesion: tf.tensor4d(bytesBatch(this.targets.map((t) => t.mask), indices, s * s, 1), [indices.length, s, s, 1]),
      hasMask: tf.tensor1d(indices.map((i) => this.targets![i].hasMask)),
    };
  }

  lesionLabel(i: number): Uint8Array | null {
    return this.lesion?.[i] ?? null;
  }
}
