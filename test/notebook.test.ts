import { spawnSync } from "child_process";
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { notebookToHtml } from "../lib/notebook/html";
import { Kernel, decodeMessage, encodeMessage } from "../lib/notebook/kernel";
import {
  CodeCell,
  Notebook,
  codeCell,
  joinSource,
  markdownCell,
  newNotebook,
  parseNotebook,
  readNotebook,
  serializeNotebook,
  writeNotebook,
} from "../lib/notebook/nbformat";
import { listNotebooks, parameterEnvName, planParameterInjection, reproduce, resolveNotebook, runNotebook } from "../lib/notebook/runner";

function processGone(pid: number | undefined): boolean {
  assert.ok(pid && pid > 0, "kernel pid recorded");
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ESRCH";
  }
}

function text(cell: CodeCell): string {
  return cell.outputs.map((o) => (o.output_type === "stream" ? joinSource(o.text) : JSON.stringify(o))).join("");
}

function codeCells(nb: Notebook): CodeCell[] {
  return nb.cells.filter((c): c is CodeCell => c.cell_type === "code");
}

describe("notebook: nbformat + protocol (no kernel)", () => {
  it("round-trips a notebook with sources as line arrays", () => {
    const nb = newNotebook([markdownCell("# T\n\ntext"), codeCell("let a = 1;\nconsole.log(a);", ["parameters"])]);
    const s = serializeNotebook(nb);
    const raw = JSON.parse(s);
    assert.deepEqual(raw.cells[1].source, ["let a = 1;\n", "console.log(a);"]);
    assert.equal(raw.metadata.kernelspec.name, "tslab");
    assert.equal(raw.nbformat, 4);
    const back = parseNotebook(s);
    assert.equal(joinSource(back.cells[1].source), "let a = 1;\nconsole.log(a);");
    assert.deepEqual(back.cells[1].metadata.tags, ["parameters"]);
  });

  it("signs and verifies messages, rejecting a tampered one", () => {
    const msg = {
      header: { msg_id: "1", session: "s", username: "u", date: "d", msg_type: "x", version: "5.3" },
      parent_header: {},
      metadata: {},
      content: { a: 1 },
      buffers: [],
    };
    const frames = encodeMessage("k3y", msg);
    assert.deepEqual(decodeMessage("k3y", [Buffer.from("topic"), ...frames]).content, { a: 1 });
    frames[5] = Buffer.from(JSON.stringify({ a: 2 }));
    assert.throws(() => decodeMessage("k3y", frames), /HMAC/);
  });

  it("plans parameter injection and names the env vars", () => {
    assert.equal(parameterEnvName("profile"), "COVIDCT_PROFILE");
    assert.equal(parameterEnvName("maxEpochs"), "COVIDCT_MAX_EPOCHS");
    const nb = newNotebook([codeCell('let profile = process.env.COVIDCT_PROFILE ?? "quick";\nconst fixed = 1;', ["parameters"])]);
    const plan = planParameterInjection(nb, { profile: "paper", fixed: 2, other: true });
    assert.equal(plan.parametersCell, 0);
    assert.match(joinSource(plan.injected!.source), /profile = "paper";/);
    assert.deepEqual(plan.injected!.metadata.tags, ["injected-parameters"]);
    assert.deepEqual(
      plan.envOnly.map((e) => e.name),
      ["fixed", "other"],
    );
  });

  it("renders outputs by priority, escaped, without network references", () => {
    const c = codeCell("const x = '<b>';");
    c.execution_count = 3;
    c.outputs = [
      { output_type: "stream", name: "stdout", text: "a <tag> & b\n" },
      { output_type: "display_data", data: { "text/html": "<i>rich</i>", "text/plain": "plain" }, metadata: {} },
      {
        output_type: "display_data",
        data: { "application/vnd.plotly.v1+json": { data: [] }, "text/html": "<div id='plot'>fig</div>", "text/plain": "Figure" },
        metadata: {},
      },
      { output_type: "display_data", data: { "image/png": "iVBORw0KGgo=", "text/plain": "img" }, metadata: {} },
      { output_type: "error", ename: "Error", evalue: "boom", traceback: ["\u001b[31mError: boom\u001b[0m"] },
    ];
    const html = notebookToHtml(newNotebook([markdownCell("# Title *x*"), c]));
    assert.match(html, /<h1>Title <em>x<\/em><\/h1>/);
    assert.match(html, /In \[3\]:/);
    assert.match(html, /const x = &#39;&lt;b&gt;&#39;;/);
    assert.match(html, /a &lt;tag&gt; &amp; b/);
    assert.match(html, /<i>rich<\/i>/);
    assert.doesNotMatch(html, />plain</);
    assert.match(html, /<div id='plot'>fig<\/div>/);
    assert.match(html, /src="data:image\/png;base64,iVBORw0KGgo="/);
    assert.match(html, /Error: boom/);
    assert.doesNotMatch(html, /\u001b/);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
  });

  it("lists and resolves notebooks in numeric order", () => {
    const dir = fs.mkdtempSync(path.join(PROJECT_ROOT, "notebooks", ".tmp-test-list-"));
    try {
      for (const n of ["10-last.ipynb", "2-second.ipynb", "01-first.ipynb"]) writeNotebook(path.join(dir, n), newNotebook());
      fs.mkdirSync(path.join(dir, "executed"));
      assert.deepEqual(listNotebooks(dir).map((f) => path.basename(f)), ["01-first.ipynb", "2-second.ipynb", "10-last.ipynb"]);
      assert.equal(path.basename(resolveNotebook("01", dir)), "01-first.ipynb");
      assert.equal(path.basename(resolveNotebook("2", dir)), "2-second.ipynb");
      assert.equal(path.basename(resolveNotebook("10-last", dir)), "10-last.ipynb");
      assert.throws(() => resolveNotebook("99", dir), /no notebook matches/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("kernel preload: serialised zeromq sends", () => {
  it("queues concurrent sends on one socket and delivers them in order", async () => {
    require("../lib/notebook/zmq-serial-send");
    const zmq = require("zeromq");
    assert.equal(zmq.Publisher.prototype.send.covidctSerial, true);
    const pub = new zmq.Push();
    const pull = new zmq.Pull();
    await pub.bind("tcp://127.0.0.1:*");
    pull.connect(pub.lastEndpoint);
    const big = Buffer.alloc(4_000_000);
    // Unqueued, a second send while the first is in flight throws EBUSY in zeromq 6.
    const sends = Array.from({ length: 8 }, (_, i) => pub.send([Buffer.from(String(i)), big]));
    const got: string[] = [];
    for (let i = 0; i < 8; i++) got.push(((await pull.receive()) as Buffer[])[0].toString());
    await Promise.all(sends);
    assert.deepEqual(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    pub.close();
    pull.close();
  });
});

describe("notebook runner (tslab kernel)", function () {
  this.timeout(60_000);
  let dir: string;
  let outDir: string;
  const logs: string[] = [];
  const log = (l: string) => logs.push(l);

  before(() => {
    fs.mkdirSync(path.join(PROJECT_ROOT, "notebooks"), { recursive: true });
    dir = fs.mkdtempSync(path.join(PROJECT_ROOT, "notebooks", ".tmp-test-"));
    outDir = path.join(dir, "executed");
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("executes a notebook, saving outputs, execution counts and an HTML export", async () => {
    const nb = newNotebook([
      markdownCell("# Tiny notebook\n\nSome *markdown*."),
      codeCell('let profile = process.env.COVIDCT_PROFILE ?? "quick";', ["parameters"]),
      codeCell('console.log("hello from cell", 6 * 7);'),
      codeCell('import * as tslab from "tslab";\ntslab.display.html("<b id=\\"shown\\">displayed value</b>");'),
      codeCell('import { PROJECT_ROOT } from "covid-ct";\nconsole.log("root:" + PROJECT_ROOT);\nconsole.log("profile=" + profile);'),
      codeCell("const d = tslab.newDisplay();\nd.text(\"progress 1\");\nd.text(\"progress 2\");"),
    ]);
    const input = path.join(dir, "01-tiny.ipynb");
    writeNotebook(input, nb);
    const r = await runNotebook(input, { outDir, log, parameters: { profile: "paper" } });
    assert.equal(r.ok, true, r.error);
    assert.equal(r.executedPath, path.join(outDir, "01-tiny.ipynb"));
    assert.ok(processGone(r.kernelPid), "kernel process ended");

    const out = readNotebook(r.executedPath);
    const code = codeCells(out);
    // parameters cell, injected-parameters cell, then the 4 cells
    assert.equal(code.length, 6);
    assert.deepEqual(code[1].metadata.tags, ["injected-parameters"]);
    assert.deepEqual(
      code.map((c) => c.execution_count),
      [1, 2, 3, 4, 5, 6],
    );
    assert.equal(text(code[2]), "hello from cell 42\n");
    const disp = code[3].outputs[0];
    assert.equal(disp.output_type, "display_data");
    assert.match(joinSource((disp as { data: Record<string, string[]> }).data["text/html"]), /displayed value/);
    // the override reached the cell through the injected cell (and env)
    assert.equal(text(code[4]), `root:${PROJECT_ROOT}\nprofile=paper\n`);
    // update_display_data replaced the earlier display output
    assert.equal(code[5].outputs.length, 1);
    assert.equal(joinSource((code[5].outputs[0] as { data: Record<string, string[]> }).data["text/plain"]), "progress 2");
    assert.ok(logs.some((l) => /\[01-tiny\] cell 3\/6 ok \d+\.\ds/.test(l)), logs.join("\n"));

    const html = fs.readFileSync(r.htmlPath, "utf8");
    assert.match(html, /<h1>Tiny notebook<\/h1>/);
    assert.match(html, /In \[3\]:/);
    assert.match(html, /hello from cell 42/);
    assert.match(html, /<b id="shown">displayed value<\/b>/);
    assert.match(html, /profile=paper/);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
  });

  it("passes parameters to notebooks as COVIDCT_* env even without a parameters cell", async () => {
    const input = path.join(dir, "02-env.ipynb");
    writeNotebook(input, newNotebook([codeCell("console.log(process.env.COVIDCT_PROFILE, process.env.COVIDCT_MAX_EPOCHS);")]));
    const res = await reproduce({ notebooks: [input], profile: "paper", parameters: { maxEpochs: 3 }, outDir, log });
    assert.equal(res.ok, true);
    assert.equal(text(codeCells(readNotebook(res.results[0].executedPath))[0]), "paper 3\n");
    assert.ok(processGone(res.results[0].kernelPid));
  });

  it("stops at a throwing cell, reports its error text and saves the partial notebook", async () => {
    const input = path.join(dir, "03-throws.ipynb");
    writeNotebook(
      input,
      newNotebook([
        markdownCell("failing notebook"),
        codeCell('console.log("before failure");'),
        codeCell('console.log("about to throw");\nthrow new Error("planted failure 42");'),
        codeCell('console.log("never runs");'),
      ]),
    );
    const logged: string[] = [];
    const res = await reproduce({ notebooks: [input], outDir, log: (l) => logged.push(l) });
    assert.equal(res.ok, false);
    const r = res.results[0];
    assert.equal(r.ok, false);
    assert.ok(r.failedCell);
    assert.equal(r.failedCell.index, 2);
    assert.equal(r.failedCell.codeCell, 2);
    assert.match(r.failedCell.errorText, /Error: planted failure 42/);
    assert.match(r.error ?? "", /cell 2\/3/);
    assert.ok(logged.some((l) => /FAILED/.test(l) && /planted failure 42/.test(l)), logged.join("\n"));
    assert.ok(processGone(r.kernelPid));

    const out = readNotebook(r.executedPath);
    const code = codeCells(out);
    assert.equal(text(code[0]), "before failure\n");
    assert.equal(code[0].execution_count, 1);
    assert.match(text(code[1]), /about to throw[\s\S]*planted failure 42/);
    assert.equal(code[1].execution_count, 2);
    assert.equal(code[2].execution_count, null);
    assert.deepEqual(code[2].outputs, []);
    assert.equal((out.metadata.covidct_run as { ok: boolean }).ok, false);
    const html = fs.readFileSync(r.htmlPath, "utf8");
    assert.match(html, /before failure/);
    assert.match(html, /planted failure 42/);
    assert.match(html, /Execution <b>failed<\/b>/);
  });

  it("`covid-ct reproduce` exits non-zero and prints the failing cell's error", () => {
    const input = path.join(dir, "05-cli-throws.ipynb");
    writeNotebook(input, newNotebook([codeCell('console.log("ok so far");'), codeCell('throw new Error("planted CLI failure 7");')]));
    const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, "dist", "lib", "cli.js"), "reproduce", input, "--out", path.join(dir, "cli-out")], {
      cwd: PROJECT_ROOT,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.notEqual(r.status, 0, `exit status ${r.status}`);
    assert.match(r.stdout, /FAIL\s+05-cli-throws/);
    assert.match(r.stdout + r.stderr, /planted CLI failure 7/);
    assert.ok(fs.existsSync(path.join(dir, "cli-out", "05-cli-throws.ipynb")), "partial notebook saved");
  });

  it("fails the same way on a TypeScript type error", async () => {
    const input = path.join(dir, "04-type-error.ipynb");
    writeNotebook(input, newNotebook([codeCell("const ok = 1;"), codeCell('const n: number = "not a number";'), codeCell("console.log(ok);")]));
    const r = await runNotebook(input, { outDir, log });
    assert.equal(r.ok, false);
    assert.equal(r.failedCell?.codeCell, 2);
    assert.match(r.failedCell?.errorText ?? "", /Type 'string' is not assignable to type 'number'/);
    assert.ok(processGone(r.kernelPid));
    const code = codeCells(readNotebook(r.executedPath));
    assert.equal(code[0].execution_count, 1);
    assert.equal(code[2].execution_count, null);
  });

  it("times out a hanging cell, keeps its partial output and kills the kernel", async () => {
    const input = path.join(dir, "05-timeout.ipynb");
    writeNotebook(input, newNotebook([codeCell('console.log("partial");\nawait new Promise((r) => setTimeout(r, 60_000));')]));
    const r = await runNotebook(input, { outDir, log, cellTimeoutMs: 1500 });
    assert.equal(r.ok, false);
    assert.equal(r.failedCell?.status, "timeout");
    assert.match(r.error ?? "", /timed out/);
    assert.ok(processGone(r.kernelPid));
    assert.equal(text(codeCells(readNotebook(r.executedPath))[0]), "partial\n");
  });

  it("reports a kernel that dies in a cell", async () => {
    const input = path.join(dir, "06-exit.ipynb");
    writeNotebook(input, newNotebook([codeCell('console.log("bye");\nprocess.exit(3);'), codeCell("1")]));
    const r = await runNotebook(input, { outDir, log });
    assert.equal(r.ok, false);
    assert.equal(r.failedCell?.status, "died");
    assert.match(r.failedCell?.errorText ?? "", /exited with code 3/);
    assert.ok(processGone(r.kernelPid));
  });

  it("the shipped kernelspec starts tslab from a notebook folder", async () => {
    const spec = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "notebooks", "kernels", "tslab", "kernel.json"), "utf8"));
    assert.equal(spec.language, "typescript");
    const sub = path.join(dir, "nested");
    fs.mkdirSync(sub, { recursive: true });
    const k = await Kernel.start({ cwd: sub, argv: spec.argv });
    try {
      const r = await k.execute('import { PROJECT_ROOT } from "covid-ct";\nconsole.log(PROJECT_ROOT);', { timeoutMs: 30_000 });
      assert.equal(r.status, "ok", r.errorText);
      assert.equal(text({ outputs: r.outputs } as CodeCell), `${PROJECT_ROOT}\n`);
    } finally {
      await k.shutdown();
    }
    assert.ok(processGone(k.pid));
  });

  it("Kernel.shutdown() ends the process even while a cell is running", async () => {
    const k = await Kernel.start({ cwd: dir });
    const pending = k.execute("while (true) {}");
    await new Promise((r) => setTimeout(r, 300));
    await k.shutdown();
    const res = await pending;
    assert.equal(res.status, "died");
    assert.ok(processGone(k.pid));
  });
});
