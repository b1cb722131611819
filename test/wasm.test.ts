/**
 * Replacement wasm training kernels (lib/wasm) against the pure-JS cpu backend on random inputs.
 * Small shapes: the whole file runs in seconds.
 */
import * as tf from "@tensorflow/tfjs";
import { strict as assert } from "assert";
import * as os from "os";
import { describeWasm, prepareWasm } from "../lib/wasm";
import { tuning } from "../lib/wasm/kernels";
import { align16 } from "../lib/wasm/simd";

const TOL = 1e-4;

/** Deterministic pseudo-random data in [-1, 1). */
function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    a[i] = (s / 2 ** 32) * 2 - 1;
  }
  return a;
}

interface Input {
  shape: number[];
  seed: number;
}

/** Run `f` on the given backend with fresh tensors made from the same data; return flat values + shape. */
async function on(backend: string, inputs: Input[], f: (...xs: tf.Tensor[]) => tf.Tensor): Promise<{ v: Float32Array; shape: number[] }> {
  await tf.setBackend(backend);
  const xs = inputs.map((i) => tf.tensor(rand(i.shape.reduce((a, b) => a * b, 1), i.seed), i.shape));
  const y = f(...xs);
  const v = (await y.data()) as Float32Array;
  const shape = y.shape.slice();
  tf.dispose([...xs, y]);
  return { v, shape };
}

function relErr(a: Float32Array, b: Float32Array): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  return maxDiff / Math.max(maxRef, 1e-12);
}

async function compare(name: string, inputs: Input[], f: (...xs: tf.Tensor[]) => tf.Tensor): Promise<void> {
  const ref = await on("cpu", inputs, f);
  const got = await on("wasm", inputs, f);
  assert.deepEqual(got.shape, ref.shape, `${name}: shape`);
  assert.ok(got.v.every(Number.isFinite), `${name}: non-finite values`);
  const e = relErr(got.v, ref.v);
  assert.ok(e <= TOL, `${name}: relative error ${e.toExponential(2)} > ${TOL}`);
}

type Pad = "same" | "valid" | [[number, number], [number, number], [number, number], [number, number]];

interface ConvCase { n: number; h: number; w: number; ci: number; co: number; k: [number, number]; s: [number, number]; pad: Pad }
function convCases(): ConvCase[] {
  const cases: ConvCase[] = [];
  const pads: Pad[] = ["same", "valid"];
  for (const k of [1, 3, 7]) {
    for (const s of [1, 2, 3]) {
      for (const pad of pads) {
        const h = 9 + ((k + s) % 3); // odd and even sizes
        const w = 8 + ((k * s) % 4);
        cases.push({ n: 2, h, w, ci: 3 + (k % 4), co: 5 + s, k: [k, k] as [number, number], s: [s, s] as [number, number], pad });
      }
    }
  }
  // Non-square kernels and strides, explicit padding, batch 1 and 3.
  cases.push({ n: 1, h: 7, w: 11, ci: 4, co: 6, k: [1, 3], s: [1, 2], pad: "same" as Pad });
  cases.push({ n: 3, h: 10, w: 7, ci: 2, co: 3, k: [3, 1], s: [2, 1], pad: "valid" as Pad });
  cases.push({ n: 2, h: 9, w: 9, ci: 5, co: 4, k: [3, 3], s: [1, 1], pad: [[0, 0], [1, 2], [2, 0], [0, 0]] as Pad });
  cases.push({ n: 2, h: 12, w: 10, ci: 3, co: 4, k: [3, 3], s: [2, 2], pad: [[0, 0], [1, 1], [0, 1], [0, 0]] as Pad });
  cases.push({ n: 2, h: 16, w: 16, ci: 16, co: 8, k: [1, 1], s: [1, 1], pad: "valid" as Pad });
  cases.push({ n: 2, h: 15, w: 15, ci: 8, co: 16, k: [1, 1], s: [2, 2], pad: "same" as Pad });
  return cases;
}

function outSize(x: number, k: number, s: number, pad: Pad, axis: 1 | 2): number {
  if (pad === "same") return Math.ceil(x / s);
  if (pad === "valid") return Math.ceil((x - k + 1) / s);
  const [p, q] = pad[axis];
  return Math.floor((x + p + q - k) / s) + 1;
}

describe("wasm backend (lib/wasm)", function () {
  this.timeout(120000);

  before(async () => {
    await prepareWasm();
    assert.ok(await tf.setBackend("wasm"), "wasm backend initialises");
  });

  after(async () => {
    await tf.setBackend("cpu");
  });

  it("runs threaded SIMD with one XNNPACK thread per core and registers the replacement kernels", () => {
    const s = describeWasm();
    assert.equal(s.simd, true);
    assert.equal(s.loader, "threaded-simd", s.fallbackReason);
    assert.equal(s.threads, Math.min(os.cpus().length, 8));
    for (const k of ["Conv2DBackpropFilter", "Conv2DBackpropInput", "BatchMatMul", "Tile", "Slice", "Identity", "Cast", "BatchNormalization (fused training op, SIMD)", "Adam (fused SIMD update)", "Relu gradient (fused SIMD)"]) {
      assert.ok(s.kernels.includes(k), `${k} in ${s.kernels.join(", ")}`);
    }
  });

  describe("Conv2DBackpropFilter", () => {
    for (const c of convCases()) {
      const label = `x[${c.n},${c.h},${c.w},${c.ci}] k${c.k.join("x")} s${c.s.join("x")} ${typeof c.pad === "string" ? c.pad : "explicit"} co${c.co}`;
      it(label, async () => {
        const ho = outSize(c.h, c.k[0], c.s[0], c.pad, 1);
        const wo = outSize(c.w, c.k[1], c.s[1], c.pad, 2);
        const filterShape = [c.k[0], c.k[1], c.ci, c.co];
        await compare(label, [{ shape: [c.n, c.h, c.w, c.ci], seed: 1 }, { shape: [c.n, ho, wo, c.co], seed: 2 }], (x, dy) =>
          tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { strides: c.s, pad: c.pad, dataFormat: "NHWC", dimRoundingMode: undefined, filterShape } as never) as tf.Tensor,
        );
      });
    }
    it("1×1 filters also match through the convolution route", async () => {
      const saved = tuning.filterGradVia;
      tuning.filterGradVia = "conv";
      try {
        for (const s of [1, 2, 3]) {
          const ho = Math.ceil(13 / s);
          await compare(`1x1 via conv s${s}`, [{ shape: [3, 13, 13, 6], seed: 3 }, { shape: [3, ho, ho, 5], seed: 4 }], (x, dy) =>
            tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { strides: [s, s], pad: "same", dataFormat: "NHWC", dimRoundingMode: undefined, filterShape: [1, 1, 6, 5] } as never) as tf.Tensor,
          );
        }
      } finally {
        tuning.filterGradVia = saved;
      }
    });
  });

  describe("Conv2DBackpropInput", () => {
    for (const c of convCases()) {
      const label = `dx[${c.n},${c.h},${c.w},${c.ci}] k${c.k.join("x")} s${c.s.join("x")} ${typeof c.pad === "string" ? c.pad : "explicit"} co${c.co}`;
      it(label, async () => {
        const ho = outSize(c.h, c.k[0], c.s[0], c.pad, 1);
        const wo = outSize(c.w, c.k[1], c.s[1], c.pad, 2);
        await compare(label, [{ shape: [c.n, ho, wo, c.co], seed: 5 }, { shape: [c.k[0], c.k[1], c.ci, c.co], seed: 6 }], (dy, filter) =>
          tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, { inputShape: [c.n, c.h, c.w, c.ci], strides: c.s, pad: c.pad, dataFormat: "NHWC", dimRoundingMode: undefined } as never) as tf.Tensor,
        );
      });
    }
  });

  describe("BatchMatMul", () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[7, 5], [5, 9], false, false],
      [[5, 7], [5, 9], true, false],
      [[7, 5], [9, 5], false, true],
      [[5, 7], [9, 5], true, true],
      [[3, 5, 7], [3, 5, 4], true, false],
      [[3, 7, 5], [1, 4, 5], false, true],
      [[2, 3, 4, 6], [2, 3, 6, 5], false, false],
      [[64, 33], [64, 17], true, false],
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const label = `[${sa}]${ta ? "ᵀ" : ""} · [${sb}]${tb ? "ᵀ" : ""}`;
      it(label, () => compare(label, [{ shape: sa, seed: 7 }, { shape: sb, seed: 8 }], (a, b) => tf.matMul(a, b, ta, tb)));
    }
  });

  describe("Tile", () => {
    const cases: [number[], number[]][] = [
      [[1, 1, 1, 5], [2, 3, 4, 1]],
      [[5], [3]],
      [[2, 3], [2, 3]],
      [[2, 1, 3], [1, 4, 2]],
      [[3, 2, 1, 2], [2, 2, 3, 2]], // tiled rank > 6: stock fallback
    ];
    for (const [shape, reps] of cases) {
      const label = `[${shape}] × [${reps}]`;
      it(label, () => compare(label, [{ shape, seed: 9 }], (x) => tf.tile(x, reps)));
    }
  });

  describe("Slice", () => {
    const cases: [number[], number[], number[]][] = [
      [[2, 5, 6, 8], [0, 0, 0, 3], [2, 5, 6, 4]],
      [[2, 5, 6, 8], [1, 1, 0, 0], [1, 3, 6, 8]],
      [[4, 7], [1, 2], [2, 4]],
      [[3, 4, 5], [0, 1, 1], [3, 2, 3]],
      [[2, 2, 3, 4, 5], [0, 1, 0, 2, 1], [2, 1, 3, 2, 4]],
      [[10], [3], [5]],
    ];
    for (const [shape, begin, size] of cases) {
      const label = `[${shape}] from [${begin}] size [${size}]`;
      it(label, () => compare(label, [{ shape, seed: 10 }], (x) => tf.slice(x, begin, size)));
    }
  });

  describe("SIMD Relu, Relu gradient, Sum", () => {
    for (const shape of [[2, 5, 5, 7], [37], [3, 16]]) {
      it(`relu and its gradient for [${shape}]`, () =>
        compare(`relu [${shape}]`, [{ shape, seed: 40 }, { shape, seed: 41 }], (x, dy) => {
          const g = tf.grad((z: tf.Tensor) => tf.sum(tf.mul(tf.relu(z), dy)))(x);
          return tf.concat([tf.reshape(tf.relu(x), [-1]), tf.reshape(g, [-1])]);
        }));
    }
    const sums: [number[], number[], boolean][] = [
      [[2, 5, 5, 7], [0, 1, 2], false],
      [[2, 5, 5, 8], [2, 0, 1], true],
      [[9, 3], [0], false],
      [[2, 5, 5, 7], [1, 2], false],
      [[4, 6], [1], true],
    ];
    for (const [shape, axes, keep] of sums) {
      it(`sum [${shape}] over [${axes}] keepDims ${keep}`, () => compare(`sum`, [{ shape, seed: 42 }], (x) => tf.sum(x, axes, keep)));
    }
  });

  describe("Transpose (SIMD tiles)", () => {
    const cases: [number[], number[]][] = [
      [[37, 23], [1, 0]],
      [[16, 32], [1, 0]],
      [[3, 9, 6], [0, 2, 1]],
      [[5, 4, 9], [1, 0, 2]],
      [[5, 4, 3], [1, 0, 2]],
      [[2, 5, 6, 7], [0, 3, 1, 2]],
      [[2, 5, 6, 7], [3, 1, 2, 0]],
      [[2, 5, 6, 7], [1, 2, 0, 3]],
      [[3, 3, 5, 7], [0, 1, 3, 2]],
      [[1, 6, 1, 9], [3, 1, 2, 0]],
    ];
    for (const [shape, perm] of cases) {
      it(`[${shape}] perm [${perm}]`, () => compare("transpose", [{ shape, seed: 50 }], (x) => tf.transpose(x, perm)));
    }
    it("int32", () => compare("transpose int32", [{ shape: [7, 13], seed: 51 }], (x) => tf.transpose(tf.cast(tf.mul(x, 100), "int32")).toFloat()));
  });

  it("aligns heap addresses above 2 GiB without going negative", () => {
    assert.equal(align16(2 ** 31 + 5), 2 ** 31 + 16);
    assert.equal(align16(2 ** 32 - 32), 2 ** 32 - 32);
    assert.equal(align16(17), 32);
  });

  describe("Identity / Cast share buffers", () => {
    it("clone and same-dtype cast keep values after the source is disposed", async () => {
      await tf.setBackend("wasm");
      const x = tf.tensor([1, 2, 3, 4], [2, 2]);
      const c = tf.clone(x);
      const k = tf.cast(x, "float32");
      const i = tf.cast(x, "int32");
      x.dispose();
      assert.deepEqual(Array.from(await c.data()), [1, 2, 3, 4]);
      assert.deepEqual(Array.from(await k.data()), [1, 2, 3, 4]);
      assert.equal(i.dtype, "int32");
      tf.dispose([c, k, i]);
    });
  });

  describe("BatchNormalization (fused training op)", () => {
    for (const shape of [[4, 5, 6, 7], [3, 9], [2, 3, 3, 16]]) {
      it(`layer output, moving statistics and gradients match the cpu backend for [${shape}]`, async () => {
        const c = shape[shape.length - 1];
        const run = (x: tf.Tensor, dyw: tf.Tensor) => {
          const layer = tf.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-3, gammaInitializer: tf.initializers.randomNormal({ seed: 1 }), betaInitializer: tf.initializers.randomNormal({ seed: 2 }) });
          layer.build(x.shape);
          const vars = layer.trainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read());
          // Offset the input so that mean and spread differ per channel.
          const xin = tf.add(tf.mul(x, 2), tf.linspace(-1, 3, c));
          const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(xin, { training: true }) as tf.Tensor, dyw)) as tf.Scalar, vars);
          const dx = tf.grad((z: tf.Tensor) => tf.sum(tf.mul(layer.apply(z, { training: true }) as tf.Tensor, dyw)))(xin);
          const y = layer.apply(xin, { training: true }) as tf.Tensor;
          const parts = [y, dx, ...Object.values(grads), ...layer.nonTrainableWeights.map((w) => (w as unknown as { read(): tf.Variable }).read()), value];
          return tf.concat(parts.map((t) => tf.reshape(t, [-1])));
        };
        await compare(`bn [${shape}]`, [{ shape, seed: 21 }, { shape, seed: 22 }], run);
      });
    }
  });

  describe("Adam (fused SIMD update)", () => {
    it("three steps on variables of odd sizes match tfjs Adam on the cpu backend", async () => {
      const shapes = [[3, 3, 5, 7], [13], [2, 2]];
      const run = (...ts: tf.Tensor[]) => {
        const vars = shapes.map((_, i) => tf.variable(tf.clone(ts[i]), true, `adamtest_${tf.getBackend()}_${i}_${Math.random()}`));
        const opt = tf.train.adam(0.05, 0.8, 0.95, 1e-6);
        for (let step = 0; step < 3; step++) {
          const grads = vars.map((v, i) => ({ name: v.name, tensor: tf.mul(ts[shapes.length + i], step + 1) }));
          opt.applyGradients(grads);
          tf.dispose(grads.map((g) => g.tensor));
        }
        const out = tf.concat(vars.map((v) => tf.reshape(v, [-1])));
        opt.dispose();
        tf.dispose(vars);
        return out;
      };
      await compare("adam", [...shapes, ...shapes].map((shape, i) => ({ shape, seed: 30 + i })), run);
    });
  });

  it("gradients of a small CNN (conv s1/s2, batch norm, dense) match the cpu backend", async () => {
    const f = (x: tf.Tensor, w1: tf.Tensor, w2: tf.Tensor, w3: tf.Tensor, g: tf.Tensor, beta: tf.Tensor) => {
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, gamma: tf.Tensor, offset: tf.Tensor) => {
        const h1 = tf.relu(tf.conv2d(x as tf.Tensor4D, a as tf.Tensor4D, 1, "same"));
        const { mean, variance } = tf.moments(h1, [0, 1, 2]);
        const h2 = tf.batchNorm(h1, mean, variance, offset as tf.Tensor1D, gamma as tf.Tensor1D, 1e-3) as tf.Tensor4D;
        const h = tf.relu(tf.conv2d(h2, b as tf.Tensor4D, 2, "same"));
        const flat = tf.reshape(h, [x.shape[0], -1]);
        return tf.sum(tf.square(tf.matMul(flat, c)));
      });
      const gs = grads([w1, w2, w3, g, beta]);
      return tf.concat(gs.map((t) => tf.reshape(t, [-1])));
    };
    await compare("small CNN grads", [
      { shape: [2, 9, 9, 3], seed: 11 },
      { shape: [3, 3, 3, 8], seed: 12 },
      { shape: [3, 3, 8, 4], seed: 13 },
      { shape: [4 * 5 * 5, 3], seed: 14 },
      { shape: [8], seed: 15 },
      { shape: [8], seed: 16 },
    ], f as (...xs: tf.Tensor[]) => tf.Tensor);
  });
});
