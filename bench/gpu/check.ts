/**
 * `npm run bench:gpu` (node dist/bench/gpu/check.js): does the project's GPU path work on this
 * machine, and how fast is it? Issue 17. Steps, each recorded in the JSON and the markdown:
 *
 *  1. WebGPU: initBackend({ prefer: "webgpu" }); print the adapter Dawn chose.
 *     Without an adapter: print "no GPU adapter: <reason>" and exit 3 (no stack trace).
 *  2. Agreement: one DenseNet-169 training step's loss and gradient global norm (project's
 *     buildModel + accumulateGradients, same seed, same weights, same batch of `--batch` examples,
 *     same micro-batches) on WebGPU and on wasm, at each `--sizes` (224, 480). Tolerances:
 *     relative 1e-3 on the loss, 1e-2 on the gradient norm (see TOLERANCE below).
 *  3. Speed: median of `--steps` full training steps (forward + backward + Adam, batch 16 in one
 *     pass) on WebGPU after `--warmup` steps (pipeline compilation), against PyTorch on CUDA
 *     (bench/torch_step.py --device cuda, the same model, size and batch; skipped when python3
 *     has no CUDA torch).
 *  4. The real path: `covid-ct train --model densenet169 --positives covid-seg --protocol paper
 *     --profile paper --epochs 1` on WebGPU (Study I, one arm, one epoch), wall time and exit code.
 *
 * Options: --sizes 224,480  --batch 16  --steps 3  --warmup 1  --out DIR (default
 *          bench/gpu/results/<timestamp>)  --no-agreement  --no-torch  --no-train
 *          --train-timeout S (default 3600)
 * Env: TORCH_PYTHON (default python3), COVIDCT_DATA / COVIDCT_COVIDSEG / COVIDCT_LUNA /
 *      COVIDCT_MEDSEG / COVIDCT_WEIGHTS for the training run.
 * Exit codes: 0 all checks passed; 1 a check failed or errored (see the JSON); 2 bad arguments;
 *             3 WebGPU cannot load here, nothing else was run: "no GPU adapter: …" (Dawn offered
 *               none, or the optional packages are missing), or "WebGPU did not initialise: …".
 */
import * as tf from "@tensorflow/tfjs";
import { execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import seedrandom from "seedrandom";
import { BackendInfo, describeAdapter, initBackend } from "../../lib/backend";
import { PROJECT_ROOT } from "../../lib/config";
import { buildModel } from "../../lib/models";
import { accumulateGradients, planMicroBatch, trainStepAccumulated } from "../../lib/training/accumulate";
import { prepareWasm } from "../../lib/wasm";

export const EXIT_NO_ADAPTER = 3;

/**
 * Agreement tolerances, WebGPU vs wasm, both float32. The two backends sum in different orders
 * (tiled matmuls/convolutions, tree vs sequential reductions in BatchNormalization statistics
 * over up to 16·240·240 values, softmax/cross-entropy), each reduction of n terms carrying a
 * relative rounding error up to ~√n·2⁻²⁴ (≈ 1e-4 for n ≈ 10⁶). Through 169 layers, with
 * BatchNormalization renormalising activations each time, the forward loss stays within ~1e-4 in
 * practice: 1e-3 relative leaves a margin of 10. Backward passes accumulate more (the BN backward
 * subtracts nearly equal terms, which amplifies relative error), so the gradient global norm gets
 * 1e-2. A real kernel bug (wrong padding, transposed filter, a missing term) moves either by far
 * more than that.
 */
export const TOLERANCE = { lossRelative: 1e-3, gradNormRelative: 1e-2 };

interface Agreement {
  size: number;
  batch: number;
  microBatch: number;
  wasm?: { loss: number; gradNorm: number; ms: number };
  webgpu?: { loss: number; gradNorm: number; ms: number };
  lossRelDiff?: number;
  gradNormRelDiff?: number;
  ok: boolean;
  error?: string;
}

interface Speed {
  size: number;
  batch: number;
  warmupMs: number[];
  stepsMs: number[];
  medianMs: number;
  losses: number[];
  torch?: { medianMs: number; stepsMs: number[]; torch: string; device: string; gpu?: string; tf32: boolean };
  torchError?: string;
  ratio?: number;
  error?: string;
}

interface TrainRun {
  command: string;
  exitCode: number | null;
  wallSeconds: number;
  outDir: string;
  tail: string;
  metrics?: unknown;
}

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);
const median = (a: number[]) => {
  const s = a.slice().sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
const msSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const errLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 400);

/** A fixed batch: normal pixels from a seeded generator, alternating labels. */
function makeBatch(batch: number, size: number): { x: Float32Array; y: number[] } {
  const rng = seedrandom(`covid-ct gpu check ${size}`);
  const x = new Float32Array(batch * size * size * 3);
  for (let i = 0; i < x.length; i += 2) {
    const u = Math.max(rng(), 1e-12), v = rng();
    const r = Math.sqrt(-2 * Math.log(u));
    x[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < x.length) x[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return { x, y: Array.from({ length: batch }, (_, i) => i % 2) };
}

function tensors(b: { x: Float32Array; y: number[] }, batch: number, size: number): { x: tf.Tensor4D; y: tf.Tensor2D } {
  return tf.tidy(() => ({ x: tf.tensor4d(b.x, [batch, size, size, 3]), y: tf.oneHot(tf.tensor1d(b.y, "int32"), 2).toFloat() as tf.Tensor2D }));
}

/** Loss and gradient global norm of one step (no update) on the current backend. */
function lossAndGradNorm(model: tf.LayersModel, x: tf.Tensor, y: tf.Tensor, micro: number): { loss: number; gradNorm: number; ms: number } {
  const t0 = process.hrtime.bigint();
  const { loss, grads } = accumulateGradients(model, x, y, micro);
  const norm = tf.tidy(() => tf.sqrt(tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g))))).dataSync()[0]);
  tf.dispose(Object.values(grads));
  return { loss, gradNorm: norm, ms: msSince(t0) };
}

async function useBackend(name: string): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`tf.setBackend('${name}') returned false`);
  await tf.ready();
}

async function agreement(size: number, batch: number): Promise<Agreement> {
  const r: Agreement = { size, batch, microBatch: batch, ok: false };
  const data = makeBatch(batch, size);
  let initial: { shape: number[]; values: Float32Array }[] = [];
  try {
    // wasm first: it decides the micro-batch (its heap is 4 GiB); WebGPU then uses the same one,
    // so BatchNormalization sees the same micro-batch statistics on both.
    await useBackend("wasm");
    const built = buildModel("densenet169", { inputSize: size, numClasses: 2, seed: 1 }).model;
    initial = built.getWeights().map((w) => ({ shape: w.shape, values: w.dataSync() as Float32Array }));
    const { x, y } = tensors(data, batch, size);
    r.microBatch = planMicroBatch(built, [size, size, 3], [2], batch).microBatch;
    r.wasm = lossAndGradNorm(built, x, y, r.microBatch);
    tf.dispose([x, y]);
    built.dispose();
  } catch (e) {
    r.error = `wasm: ${errLine(e)}`;
    return r;
  }
  try {
    await useBackend("webgpu");
    const built = buildModel("densenet169", { inputSize: size, numClasses: 2, seed: 1 }).model;
    const ws = initial.map((w) => tf.tensor(w.values, w.shape));
    built.setWeights(ws);
    tf.dispose(ws);
    const { x, y } = tensors(data, batch, size);
    r.webgpu = lossAndGradNorm(built, x, y, r.microBatch);
    tf.dispose([x, y]);
    built.dispose();
  } catch (e) {
    r.error = `webgpu: ${errLine(e)}`;
    return r;
  }
  r.lossRelDiff = relDiff(r.webgpu.loss, r.wasm.loss);
  r.gradNormRelDiff = relDiff(r.webgpu.gradNorm, r.wasm.gradNorm);
  r.ok = Number.isFinite(r.webgpu.loss) && r.lossRelDiff <= TOLERANCE.lossRelative && r.gradNormRelDiff <= TOLERANCE.gradNormRelative;
  return r;
}

async function speed(size: number, batch: number, steps: number, warmup: number, python: string | undefined): Promise<Speed> {
  const r: Speed = { size, batch, warmupMs: [], stepsMs: [], medianMs: NaN, losses: [] };
  try {
    await useBackend("webgpu");
    const model = buildModel("densenet169", { inputSize: size, numClasses: 2, seed: 1 }).model;
    const opt = tf.train.adam(1e-4);
    const { x, y } = tensors(makeBatch(batch, size), batch, size);
    for (let i = 0; i < warmup + steps; i++) {
      const t0 = process.hrtime.bigint();
      const s = trainStepAccumulated(model, opt, x, y, batch); // reads the loss back: waits for the GPU
      const ms = msSince(t0);
      (i < warmup ? r.warmupMs : r.stepsMs).push(ms);
      r.losses.push(s.loss);
    }
    r.medianMs = median(r.stepsMs);
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
  } catch (e) {
    r.error = errLine(e);
  }
  if (python) {
    try {
      const script = path.join(PROJECT_ROOT, "bench", "torch_step.py");
      const out = execFileSync(python, [script, "densenet169", String(size), String(batch), String(steps), String(warmup), String(os.cpus().length), "--device", "cuda"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 600_000,
      });
      r.torch = JSON.parse(out.trim().split("\n").pop()!);
      if (Number.isFinite(r.medianMs)) r.ratio = r.medianMs / r.torch!.medianMs;
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr;
      r.torchError = (stderr ? String(stderr).trim().split("\n").pop() : undefined) ?? errLine(e);
    }
  }
  return r;
}

function trainOneEpoch(timeoutS: number): Promise<TrainRun> {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-gpu-train-"));
  const cli = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
  const args = ["train", "--model", "densenet169", "--positives", "covid-seg", "--protocol", "paper", "--profile", "paper", "--epochs", "1", "--out", outDir, "--force"];
  const command = `COVIDCT_BACKEND=webgpu covid-ct ${args.join(" ")}`;
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(process.execPath, [cli, ...args], { cwd: PROJECT_ROOT, env: { ...process.env, COVIDCT_BACKEND: "webgpu" }, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    const keep = (d: Buffer) => {
      process.stderr.write(d);
      log = (log + d.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutS * 1000);
    child.on("close", (code) => {
      clearTimeout(timer);
      let metrics: unknown;
      try {
        metrics = JSON.parse(fs.readFileSync(path.join(outDir, "metrics.json"), "utf8"));
      } catch {
        metrics = undefined;
      }
      const tail = log.replace(/\r/g, "\n").split("\n").filter((l) => l.trim()).slice(-15).join("\n");
      resolve({ command, exitCode: code, wallSeconds: msSince(t0) / 1000, outDir, tail, metrics });
    });
  });
}

function torchPython(): string | undefined {
  if (flag("no-torch")) return undefined;
  const python = process.env.TORCH_PYTHON ?? "python3";
  try {
    execFileSync(python, ["-c", "import torch, torchvision, sys; sys.exit(0 if torch.cuda.is_available() else 1)"], { stdio: "ignore", timeout: 120_000 });
    return python;
  } catch {
    return undefined;
  }
}

function markdown(res: Record<string, unknown>, b: BackendInfo, agree: Agreement[], speeds: Speed[], train?: TrainRun): string {
  const f = (v: number | undefined, d = 0) => (v === undefined || !Number.isFinite(v) ? "—" : v.toFixed(d));
  const e = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "—" : v.toExponential(1));
  const lines = [
    `### WebGPU check — ${res.date} (${res.host})`,
    "",
    `Adapter: ${b.webgpu ? describeAdapter(b.webgpu) : "—"}; Dawn ${b.webgpu?.dawnPackage ?? "—"}; ${b.package}@${b.packageVersion}, tfjs ${b.tfjsVersion}, Node ${process.version}.`,
    "",
    `Agreement with wasm (same seed, weights, batch and micro-batches; tolerance: loss ${TOLERANCE.lossRelative}, grad norm ${TOLERANCE.gradNormRelative}, relative):`,
    "",
    "| input | batch (micro) | loss wasm | loss WebGPU | rel. diff | grad norm wasm | grad norm WebGPU | rel. diff | within tolerance |",
    "|---|---|---|---|---|---|---|---|---|",
    ...agree.map((a) =>
      a.error
        ? `| ${a.size}² | ${a.batch} (${a.microBatch}) | error: ${a.error.slice(0, 120)} | | | | | | no |`
        : `| ${a.size}² | ${a.batch} (${a.microBatch}) | ${f(a.wasm?.loss, 6)} | ${f(a.webgpu?.loss, 6)} | ${e(a.lossRelDiff)} | ${f(a.wasm?.gradNorm, 5)} | ${f(a.webgpu?.gradNorm, 5)} | ${e(a.gradNormRelDiff)} | ${a.ok ? "yes" : "**no**"} |`,
    ),
    "",
    "Training step (forward + backward + Adam, DenseNet-169, one pass), median after warm-up:",
    "",
    "| input | batch | WebGPU warm-up | WebGPU step | PyTorch CUDA step | WebGPU / PyTorch |",
    "|---|---|---|---|---|---|",
    ...speeds.map(
      (s) =>
        `| ${s.size}² | ${s.batch} | ${s.warmupMs.map((m) => `${f(m)} ms`).join(", ") || "—"} | ${s.error ? `error: ${s.error.slice(0, 100)}` : `${f(s.medianMs)} ms`} | ${s.torch ? `${f(s.torch.medianMs)} ms (torch ${s.torch.torch}${s.torch.tf32 ? ", TF32" : ", fp32"})` : s.torchError ? `not run: ${s.torchError.slice(0, 80)}` : "not run"} | ${s.ratio !== undefined ? `${s.ratio.toFixed(2)}×` : "—"} |`,
    ),
    "",
  ];
  if (train) {
    lines.push(
      `Study I, \`paper\` profile, one epoch of one arm (\`${train.command}\`): exit ${train.exitCode}, wall time ${f(train.wallSeconds)} s.`,
      "",
    );
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  const sizes = arg("sizes", "224,480").split(",").map(Number);
  const batch = Number(arg("batch", "16"));
  const steps = Number(arg("steps", "3"));
  const warmup = Number(arg("warmup", "1"));
  const trainTimeout = Number(arg("train-timeout", "3600"));
  if (sizes.some((s) => !Number.isInteger(s) || s < 32) || !(batch >= 1) || !(steps >= 1) || !(warmup >= 0)) {
    process.stderr.write("bench/gpu/check: --sizes must be integers ≥ 32, --batch and --steps ≥ 1, --warmup ≥ 0\n");
    return 2;
  }
  let b: BackendInfo;
  try {
    b = await initBackend({ prefer: "webgpu" });
  } catch (e) {
    const reason = ((e as Error).message ?? String(e)).split("\n").find((l) => l.trim().startsWith("webgpu:"))?.trim().replace(/^webgpu:\s*/, "") ?? errLine(e);
    // "no GPU adapter" when Dawn offered none (or is not installed); otherwise say what failed.
    const head = /no GPU adapter|adapter probe|require\(/.test(reason) ? "no GPU adapter" : "WebGPU did not initialise";
    process.stderr.write(`${head}: WebGPU cannot load here: ${reason}\n`);
    process.stderr.write(`bench/gpu/check: nothing run (exit ${EXIT_NO_ADAPTER}); see bench/gpu/README.md for what a GPU machine needs.\n`);
    return EXIT_NO_ADAPTER;
  }
  const outDir = path.resolve(arg("out", path.join(PROJECT_ROOT, "bench", "gpu", "results", new Date().toISOString().replace(/[:.]/g, "-"))));
  fs.mkdirSync(outDir, { recursive: true });
  console.log(`adapter: ${describeAdapter(b.webgpu!)}; Dawn ${b.webgpu!.dawnPackage}; maxBufferSize ${b.webgpu!.maxBufferSize}, maxStorageBufferBindingSize ${b.webgpu!.maxStorageBufferBindingSize}`);
  await prepareWasm();
  const res: Record<string, unknown> = {
    date: new Date().toISOString(),
    host: `${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}`,
    node: process.version,
    backend: b,
    tolerance: TOLERANCE,
  };
  const agree: Agreement[] = [];
  if (!flag("no-agreement")) {
    for (const size of sizes) {
      const a = await agreement(size, batch);
      agree.push(a);
      console.log(`agreement ${size}² batch ${batch} (micro ${a.microBatch}): ${a.error ?? `loss ${a.wasm!.loss} vs ${a.webgpu!.loss} (rel ${a.lossRelDiff!.toExponential(2)}), grad norm ${a.wasm!.gradNorm} vs ${a.webgpu!.gradNorm} (rel ${a.gradNormRelDiff!.toExponential(2)}) → ${a.ok ? "ok" : "OUTSIDE TOLERANCE"}`}`);
    }
  }
  const python = torchPython();
  if (!python && !flag("no-torch")) console.log("PyTorch CUDA: not available (python3 without torch+torchvision with CUDA; TORCH_PYTHON to choose one)");
  const speeds: Speed[] = [];
  for (const size of sizes) {
    const s = await speed(size, batch, steps, warmup, python);
    speeds.push(s);
    console.log(`step ${size}² batch ${batch}: WebGPU ${s.error ?? `${s.medianMs.toFixed(0)} ms (warm-up ${s.warmupMs.map((m) => m.toFixed(0)).join(", ")} ms)`}; PyTorch CUDA ${s.torch ? `${s.torch.medianMs.toFixed(0)} ms → ratio ${s.ratio?.toFixed(2)}×` : s.torchError ?? "not run"}`);
  }
  let train: TrainRun | undefined;
  if (!flag("no-train")) {
    console.log("Study I paper profile, one epoch of densenet169/covid-seg on WebGPU …");
    train = await trainOneEpoch(trainTimeout);
    console.log(`train: exit ${train.exitCode}, ${train.wallSeconds.toFixed(0)} s`);
  }
  Object.assign(res, { agreement: agree, speed: speeds, train });
  const md = markdown(res, b, agree, speeds, train);
  fs.writeFileSync(path.join(outDir, "gpu-check.json"), JSON.stringify(res, null, 2) + "\n");
  fs.writeFileSync(path.join(outDir, "gpu-check.md"), md);
  console.log(md);
  console.log(`results: ${outDir}/gpu-check.json, gpu-check.md`);
  const failed = agree.some((a) => !a.ok) || speeds.some((s) => s.error) || (train !== undefined && train.exitCode !== 0);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench/gpu/check: ${errLine(e)}\n`);
    if (process.env.COVIDCT_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  },
);
