/**
 * `npm run bench`: forward+backward+Adam training steps on the wasm backend (our tuned setup),
 * side by side with PyTorch on CPU in the same run where /usr/bin/python3 has torch.
 *
 * For each (model, size): build the model (lib/models; 2-class softmax head), warm up, time
 * `--steps` steps (median), then run bench/torch_step.py for the same model, size and batch with
 * torch.set_num_threads(core count). Prints a table and JSON (and writes it with --out FILE).
 *
 * Options: --models densenet169,resnet50,smallcnn  --sizes 112,128,224  --batch 8  --steps 3
 *          --warmup 1  --micro auto|N  --threads N  --no-torch  --stock-kernels  --profile  --out FILE
 * Env: TORCH_PYTHON (default /usr/bin/python3).
 */
import * as tf from "@tensorflow/tfjs";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describeWasm, prepareWasm, wasmHeapBytes } from "../lib/wasm";
import { planMicroBatch, trainStepAccumulated } from "../lib/training/accumulate";

type ModelKey = "densenet169" | "resnet50" | "smallcnn";

interface Row {
  model: ModelKey;
  size: number;
  batch: number;
  microBatch: number;
  steps: number;
  tfjsMs: number[];
  tfjsMedianMs: number;
  gflopPerStep: number;
  gflops: number;
  fractionOfCeiling: number;
  torchMedianMs?: number;
  torchMs?: number[];
  ratio?: number;
  heapGiB: number;
  error?: string;
  profile?: { kernel: string; ms: number; calls: number }[];
}

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function median(a: number[]): number {
  const s = a.slice().sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function smallCnn(size: number): tf.LayersModel {
  const m = tf.sequential();
  m.add(tf.layers.conv2d({ inputShape: [size, size, 3], filters: 32, kernelSize: 3, padding: "same", activation: "relu" }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.conv2d({ filters: 64, kernelSize: 3, padding: "same", activation: "relu" }));
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  m.add(tf.layers.conv2d({ filters: 128, kernelSize: 3, padding: "same", activation: "relu" }));
  m.add(tf.layers.globalAveragePooling2d({}));
  m.add(tf.layers.dense({ units: 2, activation: "softmax" }));
  return m;
}

function buildBenchModel(key: ModelKey, size: number): tf.LayersModel {
  if (key === "smallcnn") return smallCnn(size);
  // lib/models: Keras-named DenseNet/ResNet builders.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const models = require("../lib/models") as { buildModel(name: string, cfg: object): { model: tf.LayersModel } };
  return models.buildModel(key, { inputSize: size, numClasses: 2, seed: 1 }).model;
}

/** Forward multiply-adds per example of the Conv2D and Dense layers. */
function forwardMacs(model: tf.LayersModel): number {
  let macs = 0;
  const visit = (layers: tf.layers.Layer[]) => {
    for (const l of layers) {
      const cls = l.getClassName();
      const cfg = l.getConfig() as Record<string, unknown>;
      if (cls === "Conv2D") {
        const out = l.outputShape as number[];
        const inp = (l.inputSpec?.[0]?.axes?.[-1] as number | undefined) ?? ((l.input as tf.SymbolicTensor).shape[3] as number);
        const [kh, kw] = cfg.kernelSize as number[];
        macs += out[1] * out[2] * out[3] * kh * kw * inp;
      } else if (cls === "Dense") {
        const inp = (l.input as tf.SymbolicTensor).shape.slice(-1)[0] as number;
        macs += inp * (cfg.units as number);
      } else if ((l as unknown as { layers?: tf.layers.Layer[] }).layers) {
        visit((l as unknown as { layers: tf.layers.Layer[] }).layers);
      }
    }
  };
  visit(model.layers);
  return macs;
}

function matmulCeiling(): number {
  const n = 1024;
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  const ts: number[] = [];
  for (let i = 0; i < 6; i++) {
    const t0 = process.hrtime.bigint();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    if (i > 0) ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  tf.dispose([a, b]);
  return (2 * n ** 3) / median(ts) / 1e6;
}

function torchAvailable(python: string): string | undefined {
  try {
    return execFileSync(python, ["-c", "import torch, torchvision; print(torch.__version__)"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

function runTorch(python: string, model: ModelKey, size: number, batch: number, steps: number, warmup: number, threads: number): { medianMs: number; stepsMs: number[] } {
  const script = path.join(__dirname, "..", "..", "bench", "torch_step.py");
  const out = execFileSync(python, [script, model, String(size), String(batch), String(steps), String(warmup), String(threads)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const line = out.trim().split("\n").pop()!;
  return JSON.parse(line);
}

async function profileStep(model: tf.LayersModel, opt: tf.Optimizer, x: tf.Tensor, y: tf.Tensor, micro: number): Promise<{ kernel: string; ms: number; calls: number }[]> {
  const saved = tf.env().getBool("CHECK_COMPUTATION_FOR_ERRORS");
  tf.env().set("CHECK_COMPUTATION_FOR_ERRORS", false);
  try {
    const info = await tf.profile(() => {
      trainStepAccumulated(model, opt, x, y, micro);
    });
    const agg = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : ((await k.kernelTimeMs) as unknown as { error?: string }) && 0;
      const e = agg.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += ms;
      e.calls++;
      agg.set(k.name, e);
    }
    return [...agg.entries()].map(([kernel, v]) => ({ kernel, ...v })).sort((a, b) => b.ms - a.ms);
  } finally {
    tf.env().set("CHECK_COMPUTATION_FOR_ERRORS", saved);
  }
}

async function main(): Promise<void> {
  const modelsArg = arg("models", "smallcnn,densenet169,resnet50").split(",") as ModelKey[];
  const sizes = arg("sizes", "112,128,224").split(",").map(Number);
  const batch = Number(arg("batch", "8"));
  const steps = Number(arg("steps", "3"));
  const warmup = Number(arg("warmup", "1"));
  const microArg = arg("micro", "auto");
  const threads = Number(arg("threads", String(Math.min(os.cpus().length, 8))));
  const python = process.env.TORCH_PYTHON ?? "/usr/bin/python3";
  const torchVersion = flag("no-torch") ? undefined : torchAvailable(python);

  await prepareWasm({ threads, kernels: !flag("stock-kernels") });
  if (!(await tf.setBackend("wasm"))) throw new Error("wasm backend did not initialise");
  const setup = describeWasm();
  const loadStart = os.loadavg();
  const ceiling = matmulCeiling();
  const header = {
    date: new Date().toISOString(),
    host: `${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}`,
    node: process.version,
    tfjs: tf.version.tfjs,
    wasm: setup,
    torch: torchVersion ?? "not run",
    batch,
    steps,
    warmup,
    matmulCeilingGflops: ceiling,
    loadavgStart: loadStart,
  };
  console.log(`# ${header.date}  ${header.host}  node ${header.node}  tfjs ${header.tfjs}`);
  console.log(`# wasm: ${setup.loader}, ${setup.threads} threads, SIMD ${setup.simd}, kernels: ${setup.kernels.join(", ") || "stock"}`);
  console.log(`# wasm matmul ceiling (1024³, ${setup.threads} threads): ${ceiling.toFixed(1)} GFLOP/s; torch: ${header.torch}; load average ${loadStart.map((v) => v.toFixed(2)).join(" ")}`);

  const rows: Row[] = [];
  for (const key of modelsArg) {
    for (const size of sizes) {
      const row: Row = { model: key, size, batch, microBatch: batch, steps, tfjsMs: [], tfjsMedianMs: NaN, gflopPerStep: NaN, gflops: NaN, fractionOfCeiling: NaN, heapGiB: 0 };
      let model: tf.LayersModel | undefined;
      const opt = tf.train.adam(1e-4);
      const x = tf.randomNormal([batch, size, size, 3]);
      const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 2), "int32"), 2).toFloat();
      try {
        model = buildBenchModel(key, size);
        row.gflopPerStep = (3 * 2 * forwardMacs(model) * batch) / 1e9;
        if (microArg === "auto") row.microBatch = planMicroBatch(model, [size, size, 3], [2], batch).microBatch;
        else row.microBatch = Math.min(batch, Number(microArg));
        for (let i = 0; i < warmup + steps; i++) {
          const t0 = process.hrtime.bigint();
          trainStepAccumulated(model, opt, x, y, row.microBatch);
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          if (i >= warmup) row.tfjsMs.push(ms);
        }
        row.tfjsMedianMs = median(row.tfjsMs);
        row.gflops = row.gflopPerStep / (row.tfjsMedianMs / 1000);
        row.fractionOfCeiling = row.gflops / ceiling;
        row.heapGiB = wasmHeapBytes() / 1024 ** 3;
        if (flag("profile")) row.profile = (await profileStep(model, opt, x, y, row.microBatch)).slice(0, 15);
      } catch (e) {
        row.error = e instanceof Error ? e.message : String(e);
      } finally {
        model?.dispose();
        opt.dispose();
        tf.dispose([x, y]);
      }
      if (torchVersion && !row.error) {
        try {
          const t = runTorch(python, key, size, batch, steps, warmup, os.cpus().length);
          row.torchMedianMs = t.medianMs;
          row.torchMs = t.stepsMs;
          row.ratio = row.tfjsMedianMs / t.medianMs;
        } catch (e) {
          row.error = `torch: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`;
        }
      }
      rows.push(row);
      printRow(row, rows.length === 1);
      if (row.profile) for (const p of row.profile) console.log(`    ${p.kernel.padEnd(24)} ${p.ms.toFixed(0).padStart(7)} ms  ${String(p.calls).padStart(5)} calls`);
    }
  }
  const result = { ...header, loadavgEnd: os.loadavg(), rows };
  console.log(`# load average at end: ${result.loadavgEnd.map((v) => v.toFixed(2)).join(" ")}`);
  console.log("JSON " + JSON.stringify(result));
  const out = arg("out", "");
  if (out) fs.writeFileSync(out, JSON.stringify(result, null, 2) + "\n");
}

function printRow(r: Row, head: boolean): void {
  if (head) {
    console.log("| model | input | batch (micro) | tfjs-wasm step | GFLOP/step | GFLOP/s | of wasm matmul ceiling | PyTorch step | tfjs / PyTorch |");
    console.log("|---|---|---|---|---|---|---|---|---|");
  }
  const f = (v: number | undefined, d = 0) => (v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(d));
  const cells = [
    r.model,
    `${r.size}²`,
    `${r.batch} (${r.microBatch})`,
    r.error && !r.error.startsWith("torch") ? `error: ${r.error.slice(0, 80)}` : `${f(r.tfjsMedianMs)} ms`,
    f(r.gflopPerStep, 1),
    f(r.gflops, 1),
    Number.isFinite(r.fractionOfCeiling) ? `${(100 * r.fractionOfCeiling).toFixed(0)} %` : "—",
    r.torchMedianMs !== undefined ? `${f(r.torchMedianMs)} ms` : r.error?.startsWith("torch") ? r.error.slice(0, 60) : "—",
    r.ratio !== undefined ? `${r.ratio.toFixed(2)}×` : "—",
  ];
  console.log(`| ${cells.join(" | ")} |`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
