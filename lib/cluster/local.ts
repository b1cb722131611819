/**
 * Local backend: the grid on one machine, N runs at a time, each a child `covid-ct` process with
 * the cores divided among them (COVIDCT_WASM_THREADS). Finished runs are skipped, partial ones
 * continue with --resume, an entry starts only when its dependencies finished, and an entry whose
 * dependency failed is not started.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PROJECT_ROOT } from "../config";
import { entryArgv, GridEntry, runDirState, RunState } from "./grid";

export interface LocalRunOptions {
  /** Runs at a time (default 1). */
  parallel?: number;
  /** Cores to divide among the parallel runs (default: all of this machine's). */
  cores?: number;
  /** One log per run: <logsDir>/<study>-<id>.log (default <project>/runs/logs). */
  logsDir?: string;
  log?: (line: string) => void;
}

export interface LocalRunResult {
  id: string;
  runDir: string;
  /** finished: was already, or finished now; failed: non-zero exit; skipped: a dependency did not finish. */
  outcome: "already-finished" | "finished" | "failed" | "skipped";
  exitCode?: number;
  seconds?: number;
  log?: string;
  state: RunState;
}

export async function runGridLocal(entries: GridEntry[], o: LocalRunOptions = {}): Promise<LocalRunResult[]> {
  const parallel = o.parallel ?? 1;
  if (!Number.isInteger(parallel) || parallel < 1) throw new Error(`--parallel must be an integer ≥ 1, got '${parallel}'.`);
  const cores = o.cores ?? os.cpus().length;
  const threads = Math.max(1, Math.floor(cores / parallel));
  const logsDir = path.resolve(o.logsDir ?? path.join(PROJECT_ROOT, "runs", "logs"));
  const log = o.log ?? (() => undefined);
  const cli = path.join(PROJECT_ROOT, "dist", "lib", "cli.js");
  const results = new Map<string, LocalRunResult>();
  const pending: GridEntry[] = [];
  for (const e of entries) {
    if (runDirState(e.runDir) === "finished") results.set(e.id, { id: e.id, runDir: e.runDir, outcome: "already-finished", state: "finished" });
    else pending.push(e);
  }
  if (pending.length) {
    fs.mkdirSync(logsDir, { recursive: true });
    log(`${pending.length} of ${entries.length} runs to do, ${parallel} at a time, ${threads} thread(s) each; logs in ${logsDir}`);
  }
  const ok = (id: string) => { const r = results.get(id); return r?.outcome === "finished" || r?.outcome === "already-finished"; };
  const running = new Set<Promise<void>>();
  const start = (e: GridEntry): Promise<void> => {
    const argv = entryArgv(e);
    if (runDirState(e.runDir) === "partial" && fs.existsSync(path.join(e.runDir, "manifest.json"))) argv.push("--resume");
    const logFile = path.join(logsDir, `${e.study}-${e.id}.log`);
    const fd = fs.openSync(logFile, "a");
    fs.writeSync(fd, `[${new Date().toISOString()}] covid-ct ${argv.join(" ")} (COVIDCT_WASM_THREADS=${threads})\n`);
    log(`start ${e.id}: covid-ct ${argv.join(" ")}`);
    const t0 = Date.now();
    return new Promise<void>((resolve) => {
      const child = spawn(process.execPath, [cli, ...argv], { cwd: PROJECT_ROOT, env: { ...process.env, COVIDCT_WASM_THREADS: String(threads) }, stdio: ["ignore", fd, fd] });
      const done = (code: number) => {
        fs.closeSync(fd);
        const seconds = (Date.now() - t0) / 1000;
        const state = runDirState(e.runDir);
        const outcome = code === 0 && state === "finished" ? "finished" : "failed";
        results.set(e.id, { id: e.id, runDir: e.runDir, outcome, exitCode: code, seconds, log: logFile, state });
        log(`${outcome === "finished" ? "done " : "FAIL "} ${e.id} in ${seconds.toFixed(1)} s${outcome === "failed" ? ` (exit ${code}, run ${state}; see ${logFile})` : ""}`);
        resolve();
      };
      child.on("error", () => done(-1));
      child.on("exit", (code, signal) => done(code ?? (signal ? 128 : -1)));
    });
  };
  while (pending.length || running.size) {
    // Entries whose dependencies failed will never start: settle them first.
    for (let i = pending.length - 1; i >= 0; i--) {
      const bad = pending[i].dependsOn.find((d) => results.has(d) && !ok(d));
      if (bad) {
        const e = pending.splice(i, 1)[0];
        results.set(e.id, { id: e.id, runDir: e.runDir, outcome: "skipped", state: runDirState(e.runDir) });
        log(`skip  ${e.id}: its dependency ${bad} did not finish`);
      }
    }
    let started = false;
    for (let i = 0; i < pending.length && running.size < parallel; ) {
      if (pending[i].dependsOn.every(ok)) {
        const p: Promise<void> = start(pending.splice(i, 1)[0]).then(() => { running.delete(p); });
        running.add(p);
        started = true;
      } else i++;
    }
    if (!running.size) {
      if (pending.length && !started) throw new Error(`grid: ${pending.map((e) => e.id).join(", ")} wait for dependencies that are not in this grid.`);
      continue;
    }
    await Promise.race(running);
  }
  return entries.map((e) => results.get(e.id)!);
}
