#!/usr/bin/env node
/**
 * `covid-ct` command line: dataset statistics and audit, data fetch/verify, the headless notebook
 * runner, and Study I training/evaluation. Each command loads only the modules it needs.
 */
import { Command, Option } from "commander";
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT, resolveDataRoot } from "./config";

const program = new Command();
program
  .name("covid-ct")
  .description("COVID-CT-Dataset (Yang et al., 2020) in TypeScript: data, studies and notebooks")
  .version(JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")).version)
  .showHelpAfterError();

const dataOption = () => new Option("--data <dir>", "COVID-CT release root (else $COVIDCT_DATA, data/covid-ct, ../shared/datasets/covid-ct)");

function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + "\n" : text() + "\n");
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "–";
}

program
  .command("stats")
  .description("dataset statistics of the paper (Section 2, Table 1, Figure 2) measured on the release")
  .addOption(dataOption())
  .option("--json", "print JSON (keys: covid.images, covid.patients, noncovid.images, split.<s>.<c>, metadata.*, sizes.*)")
  .action(async (o: { data?: string; json?: boolean }) => {
    const { computeStats } = await import("./data/stats");
    const s = await computeStats(resolveDataRoot(o.data).dir);
    const { ages, splitNotes, ...core } = s;
    const out = o.json ? { ...core, splitNotes: { missing: splitNotes.missing, tolerant: splitNotes.tolerant, unlisted: splitNotes.unlisted, multiListed: splitNotes.multiListed }, ages } : s;
    print(!!o.json, out, () =>
      [
        `root: ${s.root}`,
        `COVID images ${s.covid.images}, patients ${s.covid.patients}; NonCOVID images ${s.noncovid.images}, patients ${s.noncovid.patients}`,
        ...(["train", "val", "test"] as const).map((k) => `  ${k.padEnd(5)} covid ${s.split[k].covid}  noncovid ${s.split[k].noncovid}`),
        `metadata (image level): with age ${s.metadata.imagesWithAge}, with gender ${s.metadata.imagesWithGender} (M ${s.metadata.male}, F ${s.metadata.female})`,
        `metadata (patient level): with age ${s.metadata.patientsWithAge}, with gender ${s.metadata.patientsWithGender} (M ${s.metadata.malePatients}, F ${s.metadata.femalePatients})`,
        ...(["covid", "noncovid"] as const).map(
          (c) => `  ${c.padEnd(8)} height ${fmt(s.sizes[c].height.min)}/${fmt(s.sizes[c].height.mean)}/${fmt(s.sizes[c].height.max)}  width ${fmt(s.sizes[c].width.min)}/${fmt(s.sizes[c].width.mean)}/${fmt(s.sizes[c].width.max)} (min/mean/max)`,
        ),
      ].join("\n"),
    );
  });

program
  .command("audit")
  .description("integrity audit: split entries without files, unlisted files, patient leaks, near-duplicate images")
  .addOption(dataOption())
  .option("--json", "print JSON (keys: missing, unlisted, leaks, duplicates, summary, …)")
  .option("--threshold <bits>", "max pHash Hamming distance for a duplicate pair (0–64)", (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 64) throw new Error(`--threshold must be an integer 0–64, got '${v}'`);
    return n;
  })
  .action(async (o: { data?: string; json?: boolean; threshold?: number }) => {
    const { auditDataset } = await import("./audit");
    const r = await auditDataset(resolveDataRoot(o.data).dir, { threshold: o.threshold });
    const { hashes, ...rest } = r;
    print(!!o.json, rest, () =>
      [
        `root: ${r.root} (${r.images} images, pHash threshold ${r.threshold})`,
        `missing split entries: ${r.missing.length}`,
        ...r.missing.slice(0, 20).map((m) => `  ${m.class}/${m.split}: ${m.entry}`),
        `unlisted files: ${r.unlisted.length}`,
        ...r.unlisted.slice(0, 20).map((m) => `  ${m.class}: ${m.file}`),
        `patient leaks across splits: ${r.summary.leakedPatients} patients, ${r.summary.leakedImages} images`,
        ...r.leaks.slice(0, 20).map((l) => `  ${l.patient}: ${Object.entries(l.bySplit).map(([k, v]) => `${k} ${v?.length}`).join(", ")}`),
        `near-duplicate pairs: ${r.summary.duplicatePairs} (${Object.entries(r.summary.byKind).map(([k, v]) => `${k} ${v}`).join(", ")}; identical ${r.summary.identicalPairs})`,
        ...r.duplicates.slice(0, 20).map((d) => `  d=${d.distance} ${d.a} ↔ ${d.b} (${d.kind})`),
      ].join("\n"),
    );
  });

program
  .command("verify-data")
  .description("check every file of the data root against the committed SHA-256 manifest (data/covid-ct.sha256)")
  .addOption(dataOption())
  .option("--json", "print the report as JSON")
  .action(async (o: { data?: string; json?: boolean }) => {
    const { verifyData, describeVerify } = await import("./data/checksums");
    const r = await verifyData(resolveDataRoot(o.data).dir);
    print(!!o.json, r, () => describeVerify(r));
    if (!r.ok) {
      if (!o.json) process.stderr.write(`Data root ${r.root} does not match the manifest: run 'npx covid-ct fetch-data --data ${r.root} --force' or point --data / COVIDCT_DATA at a complete copy.\n`);
      process.exitCode = 1;
    }
  });

program
  .command("fetch-data")
  .description("download the official release from GitHub UCSD-AI4H/COVID-CT, extract it and verify every file")
  .addOption(dataOption())
  .option("--force", "download again even when the root already verifies")
  .action(async (o: { data?: string; force?: boolean }) => {
    const { fetchData, describeVerify } = await import("./data/checksums");
    // Default target is the project's data/covid-ct, never the read-only shared copy.
    const root = o.data ? path.resolve(o.data) : process.env.COVIDCT_DATA ? path.resolve(process.env.COVIDCT_DATA) : path.join(PROJECT_ROOT, "data", "covid-ct");
    const r = await fetchData(root, { force: o.force, log: (m) => process.stderr.write(m + "\n") });
    process.stdout.write(describeVerify(r.verify) + "\n");
    if (!r.verify.ok) process.exitCode = 1;
  });

program
  .command("backend")
  .description("show which tfjs backend loads here (node-gpu → node → wasm → cpu; COVIDCT_BACKEND forces one)")
  .option("--json", "print JSON")
  .action(async (o: { json?: boolean }) => {
    const { initBackend, describeBackend } = await import("./backend");
    const b = await initBackend();
    print(!!o.json, b, () => [describeBackend(b), ...b.attempts.map((a) => `  ${a.choice}: ${a.ok ? "ok" : a.reason}`)].join("\n"));
  });

program
  .command("reproduce")
  .description("execute notebooks headless with the tslab kernel (all in order, or the ones named), saving each executed notebook and an HTML export")
  .argument("[notebooks...]", "paths, names (01-dataset) or numbers (1); default: every notebooks/*.ipynb")
  .option("--profile <name>", "profile passed to each notebook's parameters cell (paper | quick | smoke)", "quick")
  .option("--out <dir>", "where executed notebooks and HTML go", "notebooks/executed")
  .addOption(dataOption())
  .option("--cell-timeout <seconds>", "fail a cell that runs longer than this", (v) => Number(v))
  .action(async (names: string[], o: { profile: string; out: string; data?: string; cellTimeout?: number }) => {
    const { ensureDataForReproduce } = await import("./data/ensure");
    const dataRoot = await ensureDataForReproduce(o.data);
    const { reproduce } = await import("./notebook/runner");
    const r = await reproduce({
      notebooks: names.length ? names : undefined,
      profile: o.profile,
      outDir: path.resolve(o.out),
      env: { COVIDCT_DATA: dataRoot },
      cellTimeoutMs: o.cellTimeout ? o.cellTimeout * 1000 : undefined,
      log: (l) => process.stderr.write(l + "\n"),
    });
    for (const n of r.results) {
      process.stdout.write(`${n.ok ? "ok  " : "FAIL"} ${n.name}  ${(n.durationMs / 1000).toFixed(1)} s  ${path.relative(process.cwd(), n.executedPath)}  ${n.htmlPath ? path.relative(process.cwd(), n.htmlPath) : ""}\n`);
      if (!n.ok && n.failedCell) process.stdout.write(`     cell ${n.failedCell.index} failed:\n${n.failedCell.errorText.replace(/^/gm, "       ")}\n`);
    }
    if (!r.ok) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  const err = e as Error;
  process.stderr.write(`covid-ct: ${err.message ?? String(e)}\n`);
  if (process.env.COVIDCT_DEBUG) process.stderr.write(`${err.stack}\n`);
  process.exitCode = process.exitCode || 1;
});
