/** Gray images as the network's input: batches in [0, 1], 3 channels, the weight set's normalisation. */
import * as tf from "@tensorflow/tfjs";
import { applyPreprocessing, Preprocessing } from "./weights";

/** Batch [n, s, s, 1] in [0, 1] from gray bytes. */
export function grayBatch(images: readonly Uint8Array[], idx: readonly number[], size: number): tf.Tensor4D {
  const per = size * size;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((i, k) => {
    const img = images[i];
    for (let p = 0; p < per; p++) buf[k * per + p] = img[p] / 255;
  });
  return tf.tensor4d(buf, [idx.length, size, size, 1]);
}

/** Gray [n,s,s,1] in [0,1] → 3 channels in [0,255] → the weight set's normalisation. */
export function toModelInput(gray: tf.Tensor4D, p: Preprocessing): tf.Tensor4D {
  return tf.tidy(() => applyPreprocessing(tf.tile(tf.mul(gray, 255), [1, 1, 1, 3]) as tf.Tensor4D, p));
}
