/**
 * Micro-benchmark of the wasm training kernels at shapes from DenseNet-169 / ResNet-50 (batch 8,
 * 112²–224²): forward Conv2D (the XNNPACK reference), our Conv2DBackpropFilter/Input, and the
 * matmul ceiling. Usage: node dist/bench/kernels.js [--stock] [--via-conv]
 */
import * as tf from "@tensorflow/tfjs";
import { prepareWasm, describeWasm } from "../lib/wasm";
import { tuning } from "../lib/wasm/kernels";

interface Shape {
  name: string;
  x: [number, number, number, number];
  k: number;
  co: number;
  s: number;
}

const SHAPES: Shape[] = [
  { name: "dn 1x1 56² 128→128", x: [8, 56, 56, 128], k: 1, co: 128, s: 1 },
  { name: "dn 3x3 56² 128→32", x: [8, 56, 56, 128], k: 3, co: 32, s: 1 },
  { name: "dn 1x1 28² 384→128", x: [8, 28, 28, 384], k: 1, co: 128, s: 1 },
  { name: "dn 3x3 14² 128→32", x: [8, 14, 14, 128], k: 3, co: 32, s: 1 },
  { name: "dn 1x1 7² 1024→128", x: [8, 7, 7, 1024], k: 1, co: 128, s: 1 },
  { name: "rn 1x1 56² 256→64", x: [8, 56, 56, 256], k: 1, co: 64, s: 1 },
  { name: "rn 3x3 56² 64→64", x: [8, 56, 56, 64], k: 3, co: 64, s: 1 },
  { name: "rn 1x1 s2 56² 256→512", x: [8, 56, 56, 256], k: 1, co: 512, s: 2 },
  { name: "rn 3x3 14² 256→256", x: [8, 14, 14, 256], k: 3, co: 256, s: 1 },
  { name: "stem 7x7 s2 224² 3→64", x: [8, 224, 224, 3], k: 7, co: 64, s: 2 },
];

function time(f: () => tf.Tensor, reps = 3): number {
  f().dispose();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const y = f();
    y.dataSync();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    y.dispose();
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}

async function main(): Promise<void> {
  const stockKernels = process.argv.includes("--stock");
  if (process.argv.includes("--via-conv")) tuning.filterGradVia = "conv";
  await prepareWasm({ kernels: !stockKernels });
  await tf.setBackend("wasm");
  const w = describeWasm();
  console.log(`wasm ${w.loader}, ${w.threads} threads, SIMD ${w.simd}, kernels: ${w.kernels.join(", ") || "stock"}, dW route ${tuning.filterGradVia}`);
  const fmt = (ms: number, flop: number) => `${ms.toFixed(1).padStart(7)} ms ${(flop / ms / 1e6).toFixed(1).padStart(5)} GF/s`;
  for (const s of SHAPES) {
    const [n, h, wd, c] = s.x;
    const x = tf.randomNormal(s.x) as tf.Tensor4D;
    const f = tf.randomNormal([s.k, s.k, c, s.co]) as tf.Tensor4D;
    const y = tf.conv2d(x, f, s.s, "same");
    const dy = tf.randomNormal(y.shape) as tf.Tensor4D;
    const flop = 2 * y.size * s.k * s.k * c;
    const fwd = time(() => tf.conv2d(x, f, s.s, "same"));
    let dw = NaN;
    let dx = NaN;
    try {
      dw = time(() => tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { strides: [s.s, s.s], pad: "same", dataFormat: "NHWC", filterShape: f.shape } as never) as tf.Tensor);
    } catch {
      /* stock wasm has no filter gradient */
    }
    if (c > 3) dx = time(() => tf.conv2dTranspose(dy, f, [n, h, wd, c], s.s, "same"));
    console.log(`${s.name.padEnd(24)} fwd ${fmt(fwd, flop)} | dW ${fmt(dw, flop)} | dX ${fmt(dx, flop)}`);
    tf.dispose([x, f, y, dy]);
  }
  for (const m of [1024]) {
    const a = tf.randomNormal([m, m]);
    const b = tf.randomNormal([m, m]);
    const t = time(() => tf.matMul(a, b), 5);
    const tt = time(() => tf.matMul(a, b, true, false), 3);
    console.log(`matmul ${m}³ ${fmt(t, 2 * m ** 3)} | transposeA ${fmt(tt, 2 * m ** 3)}`);
    tf.dispose([a, b]);
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
