/**
 * Live training progress: a terminal progress bar for the CLI (cli-progress) and an updating
 * display for notebooks (one output replaced in place through tslab's display id).
 */
import { escapeHtml } from "../util/html";
import { SingleBar, Presets } from "cli-progress";
import * as crypto from "crypto";
import { displayBundle } from "../plots";
import { EpochLog, StepLog } from "./loop";

export interface ProgressSink {
  onStep: (s: StepLog) => void;
  onEpoch: (e: EpochLog) => void;
  onFeatures: (done: number, total: number) => void;
  log: (msg: string) => void;
  stop: () => void;
}

function epochLine(e: EpochLog): string {
  return `epoch ${e.epoch + 1}: train loss ${e.trainLoss.toFixed(4)}  val loss ${e.valLoss.toFixed(4)}  val AUC ${e.valAuc.toFixed(4)}  val acc ${e.valAccuracy.toFixed(3)}  lr ${e.lr.toExponential(2)}  ${e.seconds.toFixed(1)} s`;
}

/** A progress bar on stderr (no bar when stderr is not a terminal: one line per epoch instead). */
export function cliProgress(): ProgressSink {
  const tty = Boolean(process.stderr.isTTY);
  const bar = new SingleBar({ format: "{phase} [{bar}] {value}/{total} {info}", stream: process.stderr, hideCursor: true, clearOnComplete: true }, Presets.shades_classic);
  let active = false;
  let phase = "";
  const start = (p: string, total: number) => {
    if (!tty) return;
    if (active && phase === p) return;
    if (active) bar.stop();
    phase = p;
    bar.start(total, 0, { phase: p, info: "" });
    active = true;
  };
  return {
    onFeatures: (done, total) => {
      start("features", total);
      if (tty) bar.update(done, { phase: "features", info: "" });
    },
    onStep: (s) => {
      start(`epoch ${s.epoch + 1}`, s.steps);
      if (tty) bar.update(s.step + 1, { phase: `epoch ${s.epoch + 1}`, info: `loss ${s.loss.toFixed(4)}` });
    },
    onEpoch: (e) => {
      if (active) { bar.stop(); active = false; }
      process.stderr.write(epochLine(e) + "\n");
    },
    log: (m) => {
      if (active) { bar.stop(); active = false; }
      process.stderr.write(m + "\n");
    },
    stop: () => { if (active) bar.stop(); active = false; },
  };
}

/**
 * An output cell that updates in place: the latest step and a table of finished epochs. After
 * `stop()`, the next message opens a new output in the cell that is running then: a log belongs
 * to the cell that produced it, never to an earlier cell's output.
 */
export function notebookProgress(title: string): ProgressSink {
  let id = crypto.randomBytes(8).toString("hex");
  const epochs: string[] = [];
  let status = "starting";
  let first = true;
  let last = 0;
  const render = (force = false) => {
    const now = Date.now();
    if (!force && now - last < 500) return; // at most two updates a second
    last = now;
    const text = [`${title}: ${status}`, ...epochs.slice(-12)].join("\n");
    displayBundle({ "text/plain": text, "text/html": `<pre>${escapeHtml(text)}</pre>` }, id, !first);
    first = false;
  };
  return {
    onFeatures: (done, total) => { status = `features ${done}/${total}`; render(done === total); },
    onStep: (s) => { status = `epoch ${s.epoch + 1}, step ${s.step + 1}/${s.steps}, loss ${s.loss.toFixed(4)}`; render(); },
    onEpoch: (e) => { epochs.push(epochLine(e)); status = `epoch ${e.epoch + 1} done`; render(true); },
    log: (m) => { status = m; render(true); },
    stop: () => {
      if (!first) render(true);
      id = crypto.randomBytes(8).toString("hex");
      epochs.length = 0;
      first = true;
    },
  };
}
