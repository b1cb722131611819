import { useChosenBackend } from "./support/backend";
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { resolveCovidSegRoot, resolveDataRoot, resolveLunaRoot, resolveMedsegRoot } from "../lib/config";
import { extractLungs } from "../lib/lungs/classical";
import { UNET_OUTPUT, buildResUNet, segmentationLossPerImage } from "../lib/models";
import { trainStepAccumulated } from "../lib/training/accumulate";

const SIZE = 64;

/** Grey image at SIZE² (0–1) and its classical lung mask (0/1), both resized from the full slice. */
async function example(file: string): Promise<{ img: Float32Array; mask: Float32Array }> {
  const { data, info } = await sharp(file).greyscale().raw().toBuffer({ resolveWithObject: true });
  const gray = new Uint8Array(info.width * info.height);
  for (let i = 0; i < gray.length; i++) gray[i] = data[i * info.channels];
  const m = extractLungs(gray, info.height, info.width);
  const img = await sharp(gray, { raw: { width: info.width, height: info.height, channels: 1 } }).resize(SIZE, SIZE, { fit: "fill" }).toColourspace("b-w").raw().toBuffer();
  const mask = await sharp(Buffer.from(m.mask.map((v) => v * 255)), { raw: { width: info.width, height: info.height, channels: 1 } })
    .resize(SIZE, SIZE, { fit: "fill", kernel: "nearest" })
    .toColourspace("b-w")
    .raw()
    .toBuffer();
  return { img: Float32Array.from(img, (v) => v / 255), mask: Float32Array.from(mask, (v) => (v >= 128 ? 1 : 0)) };
}

function files(dir: string, n: number): string[] {
  if (!fs.existsSync(dir)) return [];
  const all = fs.readdirSync(dir).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort();
  const step = Math.max(1, Math.floor(all.length / n));
  return all.filter((_, i) => i % step === 0).slice(0, n).map((f) => path.join(dir, f));
}

describe("models: residual U-Net (lung segmentation)", () => {
  useChosenBackend();

  it("paper width (64…512): three levels + bridge, 224² → 224²×1; small widths scale every level", () => {
    const full = buildResUNet({ channels: 3 });
    assert.deepEqual(full.outputs[0].shape, [null, 224, 224, 1]);
    assert.deepEqual(full.getLayer("unet_bridge_conv2").outputShape, [null, 28, 28, 512]);
    assert.deepEqual(full.getLayer("unet_dec1_conv2").outputShape, [null, 224, 224, 64]);
    const trainable = full.trainableWeights.reduce((a, w) => a + (w.shape as number[]).reduce((x, y) => x * y, 1), 0);
    assert.equal(trainable, 8_223_809);
    full.dispose();
    const small = buildResUNet({ inputSize: 32, width: 4, seed: 1 });
    assert.deepEqual(small.getLayer("unet_bridge_conv2").outputShape, [null, 4, 4, 32]);
    const y = small.predict(tf.randomNormal([2, 32, 32, 1], 0, 1, "float32", 1)) as tf.Tensor;
    assert.deepEqual(y.shape, [2, 32, 32, 1]);
    assert.ok(y.dataSync().every((v) => v > 0 && v < 1));
    assert.equal(small.outputNames[0], UNET_OUTPUT);
    y.dispose();
    small.dispose();
    assert.throws(() => buildResUNet({ inputSize: 60 }), /multiple of 8/);
  });

  it("smoke: 16 real slices (4 per source) with classical lung masks, 64², width 8 — the loss falls over 30 steps", async function () {
    const root = resolveDataRoot().dir;
    const medseg = resolveMedsegRoot().dir;
    const list = [
      ...files(path.join(root, "Images-processed", "CT_COVID"), 2),
      ...files(path.join(root, "Images-processed", "CT_NonCOVID"), 2),
      ...files(resolveLunaRoot().dir, 4),
      ...files(path.join(medseg, "train", "images"), 4),
      ...files(path.join(resolveCovidSegRoot().dir, "images"), 4),
    ];
    if (list.length < 16) this.skip();
    const ex = await Promise.all(list.map(example));
    const x = tf.tensor4d(Float32Array.from(ex.flatMap((e) => Array.from(e.img))), [16, SIZE, SIZE, 1]);
    const y = tf.tensor4d(Float32Array.from(ex.flatMap((e) => Array.from(e.mask))), [16, SIZE, SIZE, 1]);
    const lungShare = tf.tidy(() => tf.mean(y).dataSync()[0]);
    assert.ok(lungShare > 0.1 && lungShare < 0.8, `lung share of the targets ${lungShare}`);
    const model = buildResUNet({ inputSize: SIZE, width: 8, seed: 1 });
    const vars = model.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
    const lossFn = (xs: tf.Tensor, ys: tf.Tensor) => tf.mean(segmentationLossPerImage(model.apply(xs, { training: true }) as tf.Tensor, ys)) as tf.Scalar;
    const opt = tf.train.adam(3e-3);
    const before = tf.memory().numTensors;
    const losses: number[] = [];
    for (let s = 0; s < 30; s++) losses.push(trainStepAccumulated(lossFn, opt, x, y, 16, { vars }).loss);
    // Adam's two slots per variable appear after the first step; nothing else may accumulate.
    assert.ok(tf.memory().numTensors - before <= 2 * vars.length + 2, "no tensor leak per step");
    const first = (losses[0] + losses[1]) / 2, last = (losses[28] + losses[29]) / 2;
    console.log(`      U-Net loss ${first.toFixed(3)} → ${last.toFixed(3)} (Dice+BCE, 30 steps)`);
    assert.ok(last < 0.7 * first, JSON.stringify(losses.map((l) => +l.toFixed(3))));
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
  });
});
