/**
 * The layout of lib/ stays layered: no folder imports from a folder that imports from it, no file
 * from a file that imports it, and the shared diagnosis run never reaches up into the studies.
 */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { fileCycles, folderCycles, importGraph, nodeOf } from "./support/imports";

const LIB = path.join(PROJECT_ROOT, "lib");

describe("layout of lib/", function () {
  it("the cycle check finds a folder cycle, a file cycle, `import type` and `import()` included", function () {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-layout-"));
    try {
      const w = (rel: string, text: string) => { fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true }); fs.writeFileSync(path.join(root, rel), text); };
      w("a/x.ts", 'import type { Y } from "../b/y";\nexport type X = number;\n');
      w("b/y.ts", 'export type Y = string;\nexport async function f() { return import("../a/z"); }\n');
      w("a/z.ts", 'export const z = 1;\n');
      w("c/p.ts", 'import { q } from "./q";\nexport const p = 1;\n');
      w("c/q.ts", 'import { p } from "./p";\nexport const q = 2;\n');
      w("top.ts", 'import { p } from "./c/p";\n');
      const fc = folderCycles(root);
      assert.deepEqual(fc.map((c) => c.folders), [["a", "b"]]);
      assert.ok(fc[0].imports.includes(`a${path.sep}x.ts → b${path.sep}y.ts`) && fc[0].imports.includes(`b${path.sep}y.ts → a${path.sep}z.ts`), fc[0].imports.join("\n"));
      assert.deepEqual(fileCycles(root), [[`c${path.sep}p.ts`, `c${path.sep}q.ts`]]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("has no folder-level import cycle", function () {
    const found = folderCycles(LIB);
    assert.deepEqual(found, [], found.map((c) => `cycle ${c.folders.join(" ↔ ")}:\n  ${c.imports.join("\n  ")}`).join("\n"));
  });

  it("has no file-level import cycle", function () {
    assert.deepEqual(fileCycles(LIB), []);
  });

  it("the diagnosis run imports no study, report or grid; a study imports no other study", function () {
    const g = importGraph(LIB);
    const bad: string[] = [];
    for (const [f, deps] of g) for (const t of deps) {
      if (nodeOf(f) === "diagnosis" && ["studies", "reports", "cluster"].includes(nodeOf(t))) bad.push(`${f} → ${t}`);
      if (nodeOf(f) === "studies" && nodeOf(t) === "studies" && path.basename(f) !== "index.ts") bad.push(`${f} → ${t}`);
    }
    assert.deepEqual(bad, []);
    // Every diagnosis module is reached by the studies only through the run's public modules.
    assert.ok(g.has(path.join("diagnosis", "run.ts")) && g.has(path.join("studies", "study1.ts")));
  });

  it("no file is named for one study while another study's module imports it", function () {
    const g = importGraph(LIB);
    const studyOf = (f: string) => /^(study1|study2|cssl)\b/.exec(path.basename(f, ".ts"))?.[1] ?? null;
    // A study's own report and grid read its module; so do the entry points (cli, every index) and the cluster grids.
    const entry = (f: string) => ["cli.ts", "cluster"].includes(nodeOf(f)) || path.basename(f) === "index.ts";
    const bad: string[] = [];
    for (const [f, deps] of g) for (const t of deps) {
      if (studyOf(t) && studyOf(f) !== studyOf(t) && !entry(f)) bad.push(`${f} → ${t}`);
    }
    assert.deepEqual(bad, []);
    // The shared run is named for what it is.
    const names = [...g.keys()].join("\n");
    assert.doesNotMatch(names, /diagnosis[\/\\](study|cssl)/);
  });
});
