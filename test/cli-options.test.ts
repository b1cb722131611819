/**
 * The run commands' shared options (lib/cli-options.ts): an empty value, a negative seed or an
 * unknown name is refused with a message naming the flag and the value, and nothing is written.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PROJECT_ROOT, resolveDataRoot, resolveLunaRoot } from "../lib/config";

const CLI = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");

function cli(args: string[], env: Record<string, string> = {}): { code: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: PROJECT_ROOT, encoding: "utf8", env: { ...process.env, COVIDCT_DEBUG: "", ...env } });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

function refusedNaming(r: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0, "exit code should be non-zero");
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /^\s+at .+:\d+:\d+\)?$/m, `no stack trace:\n${r.stderr}`);
}

describe("run command options (lib/cli-options.ts)", function () {
  let tmp: string;
  before(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-opts-")); });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("an empty root flag or variable is an error, not the default", function () {
    assert.throws(() => resolveDataRoot(""), /--data is empty \(''\)/);
    assert.throws(() => resolveDataRoot("  "), /--data is empty/);
    const saved = process.env.COVIDCT_LUNA;
    process.env.COVIDCT_LUNA = "";
    try {
      assert.throws(() => resolveLunaRoot(), /COVIDCT_LUNA is set but empty/);
    } finally {
      if (saved === undefined) delete process.env.COVIDCT_LUNA; else process.env.COVIDCT_LUNA = saved;
    }
    // A real value still resolves as before.
    assert.equal(resolveDataRoot(tmp).dir, tmp);
  });

  it("the issue's three commands exit non-zero naming the value, and write nothing", function () {
    const out = path.join(tmp, "run");
    refusedNaming(cli(["train", "--model", "densenet169", "--positives", "covid-seg", "--protocol", "paper", "--profile", "smoke", "--data", "", "--out", out]), /--data is empty \(''\)/);
    assert.ok(!fs.existsSync(out), "no run directory");
    refusedNaming(cli(["stats"], { COVIDCT_DATA: "" }), /COVIDCT_DATA is set but empty \(''\)/);
    const file = path.join(tmp, "p.json");
    refusedNaming(cli(["protocol", "paper", "--seed", "-3", "--out", file]), /--seed must be an integer ≥ 0, got '-3'/);
    assert.ok(!fs.existsSync(file), "no protocol.json");
  });

  it("every run command refuses an empty --out, a bad --seed, --profile or --protocol, and an empty data root", function () {
    const base: Record<string, string[]> = {
      train: ["train", "--model", "tiny-densenet", "--positives", "covid-seg", "--protocol", "paper", "--profile", "smoke", "--out", path.join(tmp, "t")],
      pretrain: ["pretrain", "--model", "tiny-densenet", "--init", "random", "--profile", "smoke", "--out", path.join(tmp, "p")],
      lungs: ["lungs", "--source", "medseg", "--profile", "smoke", "--out", path.join(tmp, "l")],
      grid: ["grid", "--study", "study1", "--profile", "smoke"],
    };
    const set = (args: string[], flag: string, value: string) => {
      const i = args.indexOf(flag);
      return i >= 0 ? [...args.slice(0, i + 1), value, ...args.slice(i + 2)] : [...args, flag, value];
    };
    for (const [cmd, args] of Object.entries(base)) {
      refusedNaming(cli(set(args, "--out", "")), /--out is empty \(''\)/);
      refusedNaming(cli(set(args, "--profile", "")), /--profile '' is not known/);
      refusedNaming(cli(set(args, "--profile", "fast")), /--profile 'fast' is not known: use one of paper, quick, smoke/);
      if (cmd !== "lungs") refusedNaming(cli(set(args, "--protocol", "other")), /--protocol 'other' is not known/);
      if (cmd !== "grid") refusedNaming(cli(set(args, "--seed", "-1")), /--seed must be an integer ≥ 0, got '-1'/);
      if (cmd !== "grid") refusedNaming(cli(set(args, "--seed", "")), /--seed must be an integer ≥ 0, got ''/);
      if (cmd === "train" || cmd === "pretrain") refusedNaming(cli(set(args, "--data", "")), /--data is empty/);
      if (cmd !== "grid") refusedNaming(cli(args, { COVIDCT_DATA: "" }), /COVIDCT_DATA is set but empty/);
      if (cmd === "train" || cmd === "lungs") refusedNaming(cli(args, { COVIDCT_MEDSEG: " " }), /COVIDCT_MEDSEG is set but empty \(' '\)/);
    }
    for (const d of ["t", "p", "l"]) assert.ok(!fs.existsSync(path.join(tmp, d)), `nothing written at ${d}`);
  });
});
