/**
 * Grad-CAM (Selvaraju et al., 2017): where in the image the classifier looks. The class score's
 * gradient with respect to the last convolutional feature map A, averaged over space, weights A's
 * channels; the ReLU of that weighted sum, upsampled to the input, is the heat map.
 *
 * Users of COVID-CT suspect models learn artefacts of paper-extracted images (text, arrows,
 * borders); overlays make that visible.
 */
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { BuiltModel, featureExtractor, headModel } from "./models";

export interface CamResult {
  /** Heat map in [0, 1], size × size, row-major. */
  cam: Float32Array;
  size: number;
  /** P(class) from the model for this image. */
  probability: number;
}

/**
 * Grad-CAM for one preprocessed model input x [1, s, s, 3] and class index (1 = COVID).
 * Only forward kernels and the gradients of pooling/dense/softmax are needed (no convolution
 * gradients), so it runs on every backend.
 */
export function gradCam(built: BuiltModel, x: tf.Tensor4D, classIndex = 1): CamResult {
  const mapModel = featureExtractor(built, "map");
  const head = headModel(built, "map");
  const size = x.shape[1];
  const [cam, prob] = tf.tidy(() => {
    const A = mapModel.predict(x) as tf.Tensor4D;
    const score = (a: tf.Tensor) => (head.apply(a) as tf.Tensor).slice([0, classIndex], [1, 1]).sum();
    const g = tf.grad(score)(A);
    const alpha = tf.mean(g, [1, 2], true); // [1,1,1,C]
    let m = tf.relu(tf.sum(tf.mul(alpha, A), -1, true)) as tf.Tensor4D; // [1,h,w,1]
    m = tf.image.resizeBilinear(m, [size, size]);
    const max = tf.max(m);
    m = tf.div(m, tf.maximum(max, 1e-12));
    const p = (head.predict(A) as tf.Tensor).slice([0, classIndex], [1, 1]).reshape([]);
    return [m.reshape([size * size]), p];
  });
  const out = { cam: cam.dataSync() as Float32Array, size, probability: prob.dataSync()[0] };
  tf.dispose([cam, prob]);
  return out;
}

/** Jet-like colour map for t in [0, 1]. */
function jet(t: number): [number, number, number] {
  const c = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))];
}

/**
 * PNG of the gray image with the heat map blended on top (alpha grows with the heat), as a data
 * URI for notebooks. gray: size × size bytes.
 */
export async function camOverlayPng(gray: Uint8Array, r: CamResult, opts: { maxAlpha?: number; outSize?: number } = {}): Promise<string> {
  const n = r.size * r.size;
  const rgb = Buffer.alloc(n * 3);
  const maxAlpha = opts.maxAlpha ?? 0.55;
  for (let i = 0; i < n; i++) {
    const t = r.cam[i];
    const [cr, cg, cb] = jet(t);
    const a = maxAlpha * t;
    const g = gray[i];
    rgb[3 * i] = Math.round((1 - a) * g + a * cr);
    rgb[3 * i + 1] = Math.round((1 - a) * g + a * cg);
    rgb[3 * i + 2] = Math.round((1 - a) * g + a * cb);
  }
  const png = await sharp(rgb, { raw: { width: r.size, height: r.size, channels: 3 } })
    .resize(opts.outSize ?? 160, opts.outSize ?? 160)
    .png()
    .toBuffer();
  return `data:image/png;base64,${png.toString("base64")}`;
}

/** The gray image alone as a PNG data URI (the left half of an overlay pair). */
export async function grayPng(gray: Uint8Array, size: number, outSize = 160): Promise<string> {
  const png = await sharp(Buffer.from(gray), { raw: { width: size, height: size, channels: 1 } }).resize(outSize, outSize).png().toBuffer();
  return `data:image/png;base64,${png.toString("base64")}`;
}
