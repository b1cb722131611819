/**
 * Backend selection (issue 17): the order with WebGPU after tfjs-node-gpu, the reason a forced
 * WebGPU gives on a machine without a GPU adapter, and an engine left clean by a failed WebGPU
 * attempt so that wasm still loads. Every case that loads a backend runs in a child process, so
 * the engine of this test process is untouched.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { BACKEND_ORDER } from "../lib/backend";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
const BACKEND_JS = path.join(PROJECT_ROOT, "dist", "lib", "backend.js");
const FAKE_DAWN = path.join(PROJECT_ROOT, "dist", "test", "support", "fake-dawn.js");
const GPU_CHECK = path.join(PROJECT_ROOT, "dist", "bench", "gpu", "check.js");

function run(args: string[], env: Record<string, string | undefined>): { code: number | null; stdout: string; stderr: string } {
  const e: Record<string, string | undefined> = { ...process.env, COVIDCT_DEBUG: "", COVIDCT_BACKEND: undefined, COVIDCT_WEBGPU_MODULE: undefined, FAKE_DAWN: undefined, ...env };
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  const r = spawnSync(process.execPath, args, { cwd: PROJECT_ROOT, encoding: "utf8", env: e as NodeJS.ProcessEnv, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * In a child: force WebGPU (expected to fail), then record the engine's state, then load wasm and
 * compute 1 + 2 on it. Prints one JSON line.
 */
const AFTER_FAILED_WEBGPU = `
const tf = require("@tensorflow/tfjs");
const { initBackend } = require(${JSON.stringify(BACKEND_JS)});
(async () => {
  let webgpuError = null;
  try { await initBackend({ prefer: "webgpu" }); } catch (e) { webgpuError = e.message; }
  const registered = Object.keys(tf.engine().registryFactory);
  const navigatorGpu = typeof globalThis.navigator === "object" && globalThis.navigator !== null && globalThis.navigator.gpu !== undefined;
  const globalsLeft = ["GPUBufferUsage", "GPUMapMode"].filter((k) => k in globalThis);
  const b = await initBackend({ prefer: "wasm", force: true });
  const sum = tf.add(tf.scalar(1), tf.scalar(2)).dataSync()[0];
  const auto = await initBackend({ force: true });
  console.log(JSON.stringify({ webgpuError, registered, navigatorGpu, globalsLeft, choice: b.choice, backend: tf.getBackend(), sum,
    auto: { choice: auto.choice, attempts: auto.attempts } }));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(3); });
`;

function afterFailedWebgpu(env: Record<string, string | undefined>) {
  const r = run(["-e", AFTER_FAILED_WEBGPU], env);
  assert.equal(r.code, 0, `child failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

function webgpuLoadsHere(): boolean {
  return run([CLI, "backend"], { COVIDCT_BACKEND: "webgpu" }).code === 0;
}

describe("backend order and WebGPU (issue 17)", function () {
  this.timeout(180_000);

  it("tries node-gpu → webgpu → node → wasm → cpu", () => {
    assert.deepEqual([...BACKEND_ORDER], ["node-gpu", "webgpu", "node", "wasm", "cpu"]);
  });

  it("`covid-ct backend` says why each backend that did not load failed, webgpu included", () => {
    const r = run([CLI, "backend"], {});
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    for (const choice of BACKEND_ORDER.slice(0, BACKEND_ORDER.indexOf("wasm"))) {
      const line = lines.find((l) => l.trim().startsWith(`${choice}:`));
      assert.ok(line, `no line for ${choice} in:\n${r.stdout}`);
    }
    const json = JSON.parse(run([CLI, "backend", "--json"], {}).stdout);
    assert.deepEqual(json.attempts.map((a: { choice: string }) => a.choice).slice(0, 2), ["node-gpu", "webgpu"]);
    const w = json.attempts[1];
    if (!w.ok) assert.ok(w.reason && w.reason.length > 10, `webgpu skipped without a reason: ${JSON.stringify(w)}`);
  });

  it("COVIDCT_BACKEND=webgpu without a GPU adapter: non-zero exit, the reason, no stack trace", function () {
    if (webgpuLoadsHere()) this.skip(); // a machine with a Vulkan GPU: nothing to check here
    const r = run([CLI, "backend"], { COVIDCT_BACKEND: "webgpu" });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /COVIDCT_BACKEND=webgpu could not be loaded/);
    assert.match(r.stderr, /webgpu: (Dawn found no GPU adapter \(.+\)|require\('(webgpu|@tensorflow\/tfjs-backend-webgpu)'\) failed)/);
    assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace in:\n${r.stderr}`);
    assert.equal(r.stdout, "");
  });

  it("a failed WebGPU attempt (real Dawn, no adapter here) leaves wasm loadable", function () {
    if (webgpuLoadsHere()) this.skip();
    const s = afterFailedWebgpu({});
    assert.match(s.webgpuError, /COVIDCT_BACKEND|forced/);
    assert.match(s.webgpuError, /webgpu: /);
    assert.ok(!s.registered.includes("webgpu"), `'webgpu' left registered: ${s.registered}`);
    assert.equal(s.navigatorGpu, false);
    assert.equal(s.choice, "wasm");
    assert.equal(s.backend, "wasm");
    assert.equal(s.sum, 3);
  });

  it("a WebGPU backend that registers but fails to initialise is removed again; wasm then loads (fake Dawn)", () => {
    const s = afterFailedWebgpu({ COVIDCT_WEBGPU_MODULE: FAKE_DAWN });
    assert.match(s.webgpuError, /webgpu: backend 'webgpu' failed to initialise on 'Fake adapter for tests'/);
    assert.ok(!s.registered.includes("webgpu"), `'webgpu' left registered: ${s.registered}`);
    assert.equal(s.navigatorGpu, false, "navigator.gpu left installed");
    assert.deepEqual(s.globalsLeft, [], "Dawn's GPU* globals left installed");
    assert.equal(s.choice, "wasm");
    assert.equal(s.sum, 3);
    // The automatic order goes on past the failed WebGPU attempt too.
    assert.equal(s.auto.attempts[1].choice, "webgpu");
    assert.equal(s.auto.attempts[1].ok, false);
    assert.equal(s.auto.choice, "wasm");
  });

  it("Dawn's own words end up in the reason when it finds no adapter (fake Dawn)", () => {
    const r = run([CLI, "backend"], { COVIDCT_BACKEND: "webgpu", COVIDCT_WEBGPU_MODULE: FAKE_DAWN, FAKE_DAWN: "no-adapter" });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /webgpu: Dawn found no GPU adapter \(Vulkan: fake loader missing\)/);
    assert.doesNotMatch(r.stderr, /fake\.cpp/);
  });

  it("the GPU check script (npm run bench:gpu) exits 3 with 'no GPU adapter' and no stack trace", function () {
    if (webgpuLoadsHere()) this.skip();
    const r = run([GPU_CHECK], {});
    assert.equal(r.code, 3, `exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, /^no GPU adapter: WebGPU cannot load here: .+/m);
    assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace in:\n${r.stderr}`);
    // With a fake adapter that cannot make a device, it is still "no GPU adapter", not a crash.
    const f = run([GPU_CHECK], { COVIDCT_WEBGPU_MODULE: FAKE_DAWN, FAKE_DAWN: "no-adapter" });
    assert.equal(f.code, 3, f.stderr);
    assert.match(f.stderr, /no GPU adapter: .*Dawn found no GPU adapter \(Vulkan: fake loader missing\)/);
  });
});
