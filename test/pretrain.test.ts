import { strict as assert } from "assert";
import * as tf from "@tensorflow/tfjs";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { initBackend } from "../lib/backend";
import { PROJECT_ROOT } from "../lib/config";
import { buildModel } from "../lib/models";
import { readWeights } from "../lib/models/weights";
import { protocolExamples } from "../lib/protocols";
import { MOCO_V2_AUGMENT } from "../lib/ssl/augment";
import { loadLayersModel } from "../lib/ssl/moco";
import { loadPretrainedBackbone, PretrainConfig, PretrainEpoch, PretrainProfile, PRETRAIN_PROFILES, runPretraining } from "../lib/ssl/pretrain";
import { selectProtocol } from "../lib/protocols";
import { cleanupTempDirs, requireRealData, tempDir } from "./data-fixtures";

const SMOKE: PretrainConfig = { method: "moco", model: "densenet169", init: "imagenet", protocol: "paper", profile: "smoke", seed: 2 };

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The deterministic part of an epoch record (no wall time). */
const stable = (h: PretrainEpoch[]) => h.map(({ seconds: _s, ...rest }) => rest);

describe("CSSL: MoCo pretraining run", function () {
  let uninterrupted = "";
  before(async function () {
    requireRealData(this);
    await initBackend();
  });
  after(() => cleanupTempDirs());

  it("a smoke pretraining lowers its loss and raises positive-key accuracy", async () => {
    // 48 images, 3 steps of 16 per epoch, queue 16 (< images − batch: no stale copy of a batch image
    // is a negative), mild augmentation (as test/ssl.test.ts): instance discrimination the 79k-
    // parameter tiny-resnet learns in 60 steps. From epoch 2 on the queue holds real keys only.
    const overrides: Partial<PretrainProfile> = {
      maxImages: 48,
      epochs: 20,
      moco: { ...PRETRAIN_PROFILES.smoke.moco, dim: 32, batchSize: 16, microBatch: 8, queueSize: 16, lr: 0.1, augment: { ...MOCO_V2_AUGMENT, minScale: 0.7, brightness: 0.1, contrast: 0.1, blurProb: 0 } },
      probe: { ...PRETRAIN_PROFILES.smoke.probe, every: 0 },
    };
    const r = await runPretraining({ ...SMOKE, model: "resnet50", out: path.join(tempDir("cssl"), "learn"), profileOverrides: overrides });
    assert.ok(!r.interrupted);
    const h = r.history.slice(1);
    if (process.env.CSSL_DEBUG) console.log(h.map((e) => `${e.loss!.toFixed(3)}/${e.accuracy!.toFixed(3)}`).join(" "));
    const mean = (xs: PretrainEpoch[], k: "loss" | "accuracy") => xs.reduce((a, e) => a + e[k]!, 0) / xs.length;
    const early = h.slice(1, 5);
    const late = h.slice(-4);
    assert.ok(mean(late, "loss") < mean(early, "loss") - 0.2, `loss ${mean(early, "loss").toFixed(3)} → ${mean(late, "loss").toFixed(3)}`);
    assert.ok(mean(late, "accuracy") > mean(early, "accuracy") + 0.1, `top-1 ${mean(early, "accuracy").toFixed(3)} → ${mean(late, "accuracy").toFixed(3)}`);
  });

  it("resume after an interruption gives exactly the uninterrupted run (history and encoder weights)", async () => {
    const root = tempDir("cssl");
    uninterrupted = path.join(root, "a");
    const a = await runPretraining({ ...SMOKE, out: uninterrupted, epochs: 3 });
    assert.ok(!a.interrupted);
    const b1 = await runPretraining({ ...SMOKE, out: path.join(root, "b"), epochs: 3, stopAfterEpochs: 1 });
    assert.ok(b1.interrupted);
    assert.equal(b1.history.length, 2, "epoch 0 (probe) + epoch 1");
    await assert.rejects(loadPretrainedBackbone(buildModel("tiny-densenet", { inputSize: 32 }).model, path.join(root, "b")), /not finished.*--resume/);
    await assert.rejects(runPretraining({ ...SMOKE, out: path.join(root, "b"), epochs: 3 }), /interrupted run.*--resume/);
    const b = await runPretraining({ ...SMOKE, out: path.join(root, "b"), epochs: 3, resume: true });
    assert.ok(!b.interrupted);
    assert.deepEqual(stable(b.history), stable(a.history));
    assert.equal(a.history.length, 4);
    assert.ok(a.history.every((e) => e.probe), "smoke probes every epoch, epoch 0 included");
    const wa = readWeights(path.join(uninterrupted, "encoder")).tensors;
    const wb = readWeights(path.join(root, "b", "encoder")).tensors;
    assert.deepEqual(Object.keys(wb).sort(), Object.keys(wa).sort());
    let worst = 0;
    for (const k of Object.keys(wa)) worst = Math.max(worst, maxAbsDiff(wa[k].dataSync(), wb[k].dataSync()));
    assert.ok(worst <= 1e-6, `encoder weights differ by ${worst}`);
    tf.dispose([...Object.values(wa), ...Object.values(wb)]);
    const metrics = JSON.parse(fs.readFileSync(path.join(uninterrupted, "metrics.json"), "utf8"));
    assert.deepEqual(metrics.probe.initial, a.history[0].probe);
    assert.deepEqual(metrics.probe.final, a.history[3].probe);
  });

  it("records only protocol training images, and the MoCo settings, in the manifest", async () => {
    const m = JSON.parse(fs.readFileSync(path.join(uninterrupted, "manifest.json"), "utf8"));
    const p = await selectProtocol({ protocol: "paper" });
    const train = new Set(protocolExamples(p, "train").map((e) => e.id));
    const held = new Set([...protocolExamples(p, "val"), ...protocolExamples(p, "test")].map((e) => e.id));
    const ids: string[] = m.pretraining.images;
    assert.equal(ids.length, 12);
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) {
      assert.ok(train.has(id), `${id} is a training image`);
      assert.ok(!held.has(id), `${id} is no validation/test image`);
    }
    assert.equal(m.pretraining.method, "moco");
    assert.equal(m.pretraining.variant, "v2");
    assert.equal(m.pretraining.queueSize, 8);
    assert.equal(m.pretraining.momentum, 0.99);
    assert.equal(m.pretraining.temperature, 0.2);
    assert.equal(m.checksums["protocol/paper"], p.hash);
    assert.ok(m.git && "revision" in m.git);
    assert.equal(m.kind, "cssl-pretrain");
    // encoder/ is a standard tfjs layers model: the backbone (pooled features), layer names of buildModel.
    const enc = await loadLayersModel(path.join(uninterrupted, "encoder"));
    const ref = buildModel("tiny-densenet", { inputSize: 32, includeHead: false }).model;
    assert.deepEqual(enc.layers.map((l) => l.name), ref.layers.map((l) => l.name));
    const x = tf.zeros([1, 32, 32, 3]);
    assert.deepEqual((enc.predict(x) as tf.Tensor).shape, (ref.predict(x) as tf.Tensor).shape);
    tf.dispose(x);
    enc.dispose();
    ref.dispose();
  });

  it("checkpoint init loads every backbone weight (3 channels, and 4 with zero mask filters); refuses another model", async () => {
    const enc = readWeights(path.join(uninterrupted, "encoder")).tensors;
    for (const channels of [3, 4]) {
      const target = buildModel("tiny-densenet", { inputSize: 32, channels, seed: 77 }).model;
      const init = new Map(target.weights.map((w) => [w.originalName, w.read().dataSync().slice()]));
      const r = await loadPretrainedBackbone(target, uninterrupted, channels === 4 ? { adaptChannels: "zeros" } : {});
      assert.deepEqual(r.backboneLeftAtInit, []);
      assert.deepEqual(r.notInFile, [], "the head (covid_*) is never loaded nor listed");
      assert.equal(r.loaded, Object.keys(enc).length);
      for (const w of target.weights) {
        const name = w.originalName;
        if (name.startsWith("covid_head")) continue;
        let got = w.read();
        if (name === "conv1/conv/kernel" && channels === 4) {
          const extra = got.slice([0, 0, 3, 0], [-1, -1, 1, -1]);
          assert.equal(tf.max(tf.abs(extra)).dataSync()[0], 0, "mask channel filters are zero");
          got = got.slice([0, 0, 0, 0], [-1, -1, 3, -1]);
        }
        assert.equal(maxAbsDiff(got.dataSync(), enc[name].dataSync()), 0, `${name} = the encoder's`);
        // Not left at the target's (other-seeded) init: BN γ/β/moving statistics moved in pretraining too.
        assert.ok(maxAbsDiff(w.read().dataSync(), init.get(name)!) > 0, `${name} is no longer its init`);
      }
      target.dispose();
    }
    tf.dispose(Object.values(enc));
    const other = buildModel("tiny-resnet", { inputSize: 32 }).model;
    await assert.rejects(loadPretrainedBackbone(other, uninterrupted), /pretrained tiny-densenet.*does not fit|does not fit[\s\S]*buildModel\('tiny-densenet'/);
    other.dispose();
    await assert.rejects(loadPretrainedBackbone(other, PROJECT_ROOT), /not a pretraining run/);
  });

  it("a frozen stem (frozenUntil) keeps its init, runs in inference mode, and resumes exactly", async () => {
    const root = tempDir("cssl");
    const o: Partial<PretrainProfile> = { moco: { ...PRETRAIN_PROFILES.smoke.moco, frozenUntil: "pool2_pool" } };
    const a = await runPretraining({ ...SMOKE, out: path.join(root, "a"), epochs: 2, profileOverrides: o });
    await runPretraining({ ...SMOKE, out: path.join(root, "b"), epochs: 2, profileOverrides: o, stopAfterEpochs: 1 });
    const b = await runPretraining({ ...SMOKE, out: path.join(root, "b"), epochs: 2, profileOverrides: o, resume: true });
    assert.deepEqual(stable(b.history), stable(a.history));
    const wa = readWeights(path.join(root, "a", "encoder")).tensors;
    const wb = readWeights(path.join(root, "b", "encoder")).tensors;
    // The run's seeded random init, as MoCo builds it (seed = run seed, PyTorch BN momentum).
    const init = buildModel("tiny-densenet", { includeHead: false, inputSize: 32, seed: SMOKE.seed, bnMomentum: 0.9 }).model;
    const initW = new Map(init.weights.map((w) => [w.originalName, w.read().dataSync()]));
    for (const name of Object.keys(wa)) {
      assert.ok(maxAbsDiff(wa[name].dataSync(), wb[name].dataSync()) <= 1e-6, `${name}: resumed = uninterrupted`);
      const stem = /^(conv1|conv2_|pool2_)/.test(name);
      const d = maxAbsDiff(wa[name].dataSync(), initW.get(name)!);
      if (stem) assert.equal(d, 0, `${name} is in the frozen stem: unchanged (BN statistics too: inference mode)`);
      else assert.ok(d > 0, `${name} trains`);
    }
    init.dispose();
    tf.dispose([...Object.values(wa), ...Object.values(wb)]);
  });

  it("CLI: pretrain rejects bad flags with a clear message", () => {
    const cli = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
    const cases: [string[], RegExp][] = [
      [["--method", "simclr"], /--method 'simclr' is not known: use one of moco/],
      [["--init", "foo"], /--init 'foo' is not known: use one of imagenet, random/],
      [["--profile", "huge"], /--profile 'huge' is not known/],
      [["--model", "vgg16"], /--model 'vgg16' is not known/],
      [["--protocol", "mine"], /--protocol 'mine' is not known/],
      [["--seed", "-1"], /--seed must be an integer ≥ 0, got '-1'/],
      [["--epochs", "0"], /--epochs must be an integer from 1/],
      [["--epochs", "1.5"], /--epochs must be an integer/],
      [["--resume", "--force"], /--resume and --force contradict/],
    ];
    for (const [args, re] of cases) {
      const r = spawnSync(process.execPath, [cli, "pretrain", ...args], { encoding: "utf8", timeout: 60000 });
      assert.notEqual(r.status, 0, `${args.join(" ")} must fail`);
      assert.match(r.stderr, re, `${args.join(" ")}: ${r.stderr}`);
    }
  });
});
