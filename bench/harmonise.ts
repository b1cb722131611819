/**
 * Harmonisation, measured (issue 18, scope 5; README "Harmonisation, measured"): Table 5's
 * DenseNet-169 and shortcut cells and the source probes under the paper protocol, without and with
 * `--harmonise body-histogram`, side by side. Finished runs are reused (the unharmonised ones are
 * notebook 02's); the harmonised ones train into their own directories (…-harmonise-body-histogram-seedN).
 *
 *   node dist/bench/harmonise.js [--profile quick] [--gallery-only]
 *
 * Writes runs/harmonise/<profile>/{gallery.png,report.md,report.json}.
 */
import * as fs from "fs";
import * as path from "path";
import { PROJECT_ROOT } from "../lib/config";
import { HarmoniseName } from "../lib/data/harmonise";
import { runSourceProbes } from "../lib/diagnosis/source-probe";
import { protocolExamples, protocolExternalExamples, protocolHarmoniser, selectProtocol } from "../lib/protocols";
import { harmoniseGallery, harmoniseProbeTable, harmoniseTable } from "../lib/reports/harmonise";
import { runTable5 } from "../lib/studies/study1";
import { getProfile, ProfileName } from "../lib/training/profiles";

const HARMONISE: Exclude<HarmoniseName, "none"> = "body-histogram";

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profile = (args.includes("--profile") ? args[args.indexOf("--profile") + 1] : "quick") as ProfileName;
  const p = getProfile(profile);
  const out = path.join(PROJECT_ROOT, "runs", "harmonise", profile);
  fs.mkdirSync(out, { recursive: true });
  const log = (m: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);

  const protocol = await selectProtocol({ protocol: "paper" });
  const h = (await protocolHarmoniser(protocol, HARMONISE, p.inputSize))!;
  log(`reference: ${h.n} training images at ${h.size}², key ${h.key.slice(0, 12)}`);
  // Two images of every training source and class, and of the external set (looked at, not measured).
  const train = protocolExamples(protocol, "train");
  const pick = (xs: typeof train) => [xs[0], xs[Math.floor(xs.length / 2)]].filter(Boolean);
  const shown = [
    ...pick(train.filter((e) => e.source === "covid-ct" && e.label === 1)),
    ...pick(train.filter((e) => e.source === "covid19-ct-seg")),
    ...pick(train.filter((e) => e.source === "covid-ct" && e.label === 0)),
    ...pick(train.filter((e) => e.source === "luna16")),
    ...pick(protocolExternalExamples(protocol, "covid")),
    ...pick(protocolExternalExamples(protocol, "noncovid")),
  ];
  fs.writeFileSync(path.join(out, "gallery.png"), await harmoniseGallery(shown, h));
  log(`gallery (rows: ${shown.map((e) => e.source).join(", ")}; left as cached, right harmonised) → ${path.join(out, "gallery.png")}`);
  if (args.includes("--gallery-only")) return;

  const grid = { profile, protocol: "paper" as const, models: ["shortcut", "densenet169"] as const };
  const hooks = { log, onRun: (c: { model: string; positives: string; seed: number }, i: number, n: number) => log(`[${i + 1}/${n}] ${c.model} ${c.positives} seed ${c.seed}`) };
  const none = await runTable5({ ...grid, models: [...grid.models] }, hooks);
  const harmonised = await runTable5({ ...grid, models: [...grid.models], harmonise: HARMONISE }, hooks);
  const probeNone = await runSourceProbes({ profile }, log);
  const probeHarm = await runSourceProbes({ profile, harmonise: HARMONISE }, log);

  const t = harmoniseTable(none, harmonised, HARMONISE);
  const pr = harmoniseProbeTable(probeNone.results, probeHarm.results, HARMONISE);
  const md = `# Harmonisation (${HARMONISE}) vs none, paper protocol, ${profile}\n\nReference: ${h.n} training images, key ${h.key}\n\n\`\`\`\n${t["text/plain"]}\n\`\`\`\n\n\`\`\`\n${pr["text/plain"]}\n\`\`\`\n`;
  fs.writeFileSync(path.join(out, "report.md"), md);
  const brief = (rs: typeof none) => rs.map((r) => ({ run: path.relative(PROJECT_ROOT, r.runDir), test: r.metrics.test.auc, external: r.metrics.external?.atHalf.auc ?? null }));
  fs.writeFileSync(path.join(out, "report.json"), JSON.stringify({ harmonise: HARMONISE, reference: { n: h.n, key: h.key }, none: brief(none), harmonised: brief(harmonised), probes: { none: probeNone.results, harmonised: probeHarm.results } }, null, 2));
  process.stdout.write(md);
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
