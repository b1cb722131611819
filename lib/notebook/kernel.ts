/**
 * A minimal Jupyter client for the tslab kernel (Jupyter messaging protocol 5.3) over zeromq.
 *
 * - writes a connection file with free TCP ports on 127.0.0.1 and a random HMAC-SHA256 key,
 * - starts `node --require watchdog.js node_modules/tslab/bin/tslab kernel --config-path <file>`
 *   with cwd = the notebook's folder (tslab compiles cells with that folder as rootDir),
 * - talks over Dealer sockets (shell, control, stdin) and a Subscriber (iopub); heartbeat is not
 *   used, the child process itself is watched instead,
 * - `execute()` collects iopub outputs (stream, display_data, update_display_data, execute_result,
 *   error, clear_output) into nbformat v4 outputs until the kernel reports idle for that request,
 * - `shutdown()` always ends the process (shutdown_request, then SIGKILL) and releases sockets.
 *
 * tslab specifics: compile errors and thrown errors are written to stderr (a `stream` output) and
 * the execute_reply carries status "error" with no ename/evalue; tslab never sends `error` messages.
 * After an error tslab refuses requests for ~200 ms, which does not matter here because the runner
 * stops at the first failing cell.
 */
import { ChildProcess, spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import type * as Zmq from "zeromq";
import { DisplayDataOutput, MimeBundle, Output } from "./nbformat";

const DELIM = Buffer.from("<IDS|MSG>");
const PROTOCOL_VERSION = "5.3";

export interface ConnectionInfo {
  transport: "tcp";
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: "hmac-sha256";
  kernel_name: string;
}

export interface MessageHeader {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
}

export interface JupyterMessage<C = Record<string, unknown>> {
  header: MessageHeader;
  parent_header: Partial<MessageHeader>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

export interface KernelStartOptions {
  /** Working directory of the kernel: the notebook's folder. */
  cwd: string;
  /** Extra environment for the kernel (merged over process.env). */
  env?: Record<string, string | undefined>;
  /** Start tslab's JavaScript kernel instead of TypeScript. */
  js?: boolean;
  /** How long to wait for the kernel to answer kernel_info and publish on iopub (default 60 s). */
  startTimeoutMs?: number;
  /** Debug log for protocol events. */
  log?: (line: string) => void;
  /**
   * Kernelspec-style command instead of the default (e.g. the argv of notebooks/kernels/tslab/kernel.json):
   * "{connection_file}" is substituted and a leading "node" means this Node binary. The orphan watchdog
   * is only preloaded with the default command.
   */
  argv?: string[];
}

export interface ExecuteOptions {
  /** Abort waiting after this long; the kernel keeps running (call shutdown()). 0/undefined: no limit. */
  timeoutMs?: number;
  /** Called whenever the outputs of this execution change (new output, update_display_data). */
  onOutput?: (outputs: Output[]) => void;
}

export type ExecuteStatus = "ok" | "error" | "abort" | "timeout" | "died";

export interface ExecuteResult {
  status: ExecuteStatus;
  executionCount: number | null;
  /** nbformat v4 outputs, consecutive stream chunks merged; this array stays live (late outputs land here). */
  outputs: Output[];
  /** For status != "ok": the best error text available (stderr of the cell, error output, reply, kernel stderr). */
  errorText?: string;
  /** Raw execute_reply content, when one arrived. */
  reply?: Record<string, unknown>;
  durationMs: number;
}

interface PendingExec {
  msgId: string;
  outputs: Output[];
  reply?: Record<string, unknown>;
  idle: boolean;
  clearOnNext: boolean;
  onOutput?: (outputs: Output[]) => void;
  done?: () => void;
}

let zmqModule: typeof Zmq | undefined;
function loadZmq(): typeof Zmq {
  // Loaded lazily so importing the library (e.g. from a notebook) never loads the native addon.
  if (!zmqModule) zmqModule = require("zeromq") as typeof Zmq;
  return zmqModule;
}

/** Path of tslab's CLI script in this project's node_modules. */
export function tslabBin(): string {
  return path.join(path.dirname(require.resolve("tslab/package.json")), "bin", "tslab");
}

/** `count` distinct free TCP ports on `ip` (all held open at once so they differ). */
export async function freePorts(count: number, ip = "127.0.0.1"): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once("error", reject);
        srv.listen(0, ip, () => resolve());
      });
      ports.push((srv.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** HMAC-SHA256 signature over the four JSON frames, hex (empty key: no signing). */
export function signFrames(key: string, frames: (string | Buffer)[]): string {
  if (!key) return "";
  const h = crypto.createHmac("sha256", key);
  for (const f of frames) h.update(f);
  return h.digest("hex");
}

/** Serialise a message to wire frames: [DELIM, signature, header, parent_header, metadata, content]. */
export function encodeMessage(key: string, msg: JupyterMessage<unknown>): Buffer[] {
  const frames = [msg.header, msg.parent_header, msg.metadata, msg.content].map((x) => Buffer.from(JSON.stringify(x)));
  return [DELIM, Buffer.from(signFrames(key, frames)), ...frames, ...msg.buffers];
}

/** Parse wire frames (with any routing prefix); throws on a missing delimiter or a bad signature. */
export function decodeMessage(key: string, raw: Buffer[]): JupyterMessage {
  const i = raw.findIndex((b) => b.equals(DELIM));
  if (i < 0) throw new Error("message without <IDS|MSG> delimiter");
  if (raw.length < i + 6) throw new Error(`message too short (${raw.length} frames)`);
  const signature = raw[i + 1].toString();
  const frames = raw.slice(i + 2, i + 6);
  const want = signFrames(key, frames);
  const a = Buffer.from(signature);
  const b = Buffer.from(want);
  if (key && (a.length !== b.length || !crypto.timingSafeEqual(a, b))) throw new Error("invalid HMAC signature");
  const [header, parent, metadata, content] = frames.map((f) => JSON.parse(f.toString("utf8")));
  return { header, parent_header: parent ?? {}, metadata: metadata ?? {}, content: content ?? {}, buffers: raw.slice(i + 6) };
}

/** Wait for `p` or `ms`, whichever first, without leaving a timer behind. */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => {
    t = setTimeout(() => r(undefined), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Drop stack frames inside tslab / node:vm from an error text (the user's frames stay). */
export function cleanStack(text: string): string {
  return text
    .split("\n")
    .filter((l) => !/^\s+at .*(node:vm|sigintHandlersWrap|[\\/]tslab[\\/]dist[\\/])/.test(l))
    .join("\n");
}

/** Serialises sends: zeromq.js allows one pending send per socket. */
class SendQueue {
  private tail: Promise<void> = Promise.resolve();
  constructor(private readonly sock: Zmq.Dealer) {}
  send(frames: Buffer[]): Promise<void> {
    const p = this.tail.then(() => this.sock.send(frames));
    this.tail = p.catch(() => undefined);
    return p;
  }
}

const liveKernels = new Set<Kernel>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when the host process exits without calling shutdown(): kill synchronously.
  process.on("exit", () => {
    for (const k of liveKernels) k.killNow();
  });
}

const STDERR_CAP = 256 * 1024;

export class Kernel {
  readonly pid: number;
  readonly connectionFile: string;
  kernelInfo: Record<string, unknown> = {};
  private readonly session = crypto.randomUUID();
  private readonly pendingReplies = new Map<string, (m: JupyterMessage) => void>();
  private readonly execs = new Map<string, PendingExec>();
  /** display_id → every output showing it (across cells), for update_display_data. */
  private readonly displays = new Map<string, DisplayDataOutput[]>();
  private procOutput = "";
  private exited = false;
  private exitInfo = "";
  private readonly exitPromise: Promise<void>;
  private closed = false;
  private iopubSeen = false;
  private readonly shellQ: SendQueue;
  private readonly controlQ: SendQueue;

  private constructor(
    private readonly proc: ChildProcess,
    private readonly conn: ConnectionInfo,
    connectionFile: string,
    private readonly shell: Zmq.Dealer,
    private readonly control: Zmq.Dealer,
    private readonly stdin: Zmq.Dealer,
    private readonly iopub: Zmq.Subscriber,
    private readonly log: (line: string) => void,
  ) {
    this.pid = proc.pid!;
    this.connectionFile = connectionFile;
    this.shellQ = new SendQueue(shell);
    this.controlQ = new SendQueue(control);
    const capture = (chunk: Buffer) => {
      this.procOutput += chunk.toString("utf8");
      if (this.procOutput.length > STDERR_CAP) this.procOutput = this.procOutput.slice(-STDERR_CAP);
    };
    proc.stdout?.on("data", capture);
    proc.stderr?.on("data", capture);
    this.exitPromise = new Promise<void>((resolve) => {
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exited) return;
        this.exited = true;
        this.exitInfo = signal ? `killed by ${signal}` : `exited with code ${code}`;
        liveKernels.delete(this);
        for (const ex of this.execs.values()) ex.done?.();
        resolve();
      };
      proc.once("exit", onExit);
      proc.once("error", (e) => {
        capture(Buffer.from(`spawn error: ${e.message}\n`));
        onExit(null, null);
      });
    });
  }

  /** Start a tslab kernel and wait until it answers kernel_info and iopub is connected. */
  static async start(opts: KernelStartOptions): Promise<Kernel> {
    const zmq = loadZmq();
    const log = opts.log ?? (() => undefined);
    const ip = "127.0.0.1";
    const [shell_port, iopub_port, stdin_port, control_port, hb_port] = await freePorts(5, ip);
    const conn: ConnectionInfo = {
      transport: "tcp",
      ip,
      shell_port,
      iopub_port,
      stdin_port,
      control_port,
      hb_port,
      key: crypto.randomBytes(32).toString("hex"),
      signature_scheme: "hmac-sha256",
      kernel_name: opts.js ? "jslab" : "tslab",
    };
    const connectionFile = path.join(os.tmpdir(), `covidct-kernel-${process.pid}-${crypto.randomBytes(6).toString("hex")}.json`);
    fs.writeFileSync(connectionFile, JSON.stringify(conn, null, 1), { mode: 0o600 });

    let cmd = process.execPath;
    let args = ["--require", path.join(__dirname, "kernel-preload.js"), tslabBin(), "kernel", "--config-path", connectionFile];
    if (opts.js) args.push("--js");
    if (opts.argv && opts.argv.length) {
      const sub = opts.argv.map((a) => a.split("{connection_file}").join(connectionFile));
      cmd = sub[0] === "node" ? process.execPath : sub[0];
      args = sub.slice(1);
    }
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, ...(opts.env ?? {}) })) if (v !== undefined) env[k] = v;
    const proc = spawn(cmd, args, { cwd: opts.cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    if (proc.pid === undefined) {
      fs.rmSync(connectionFile, { force: true });
      const err = await new Promise<Error>((r) => proc.once("error", r));
      throw new Error(`cannot start tslab kernel: ${err.message}`);
    }
    log(`kernel pid ${proc.pid} cwd ${opts.cwd}`);

    const mk = <T extends Zmq.Socket>(s: T): T => {
      s.linger = 0;
      return s;
    };
    const shell = mk(new zmq.Dealer());
    const control = mk(new zmq.Dealer());
    const stdin = mk(new zmq.Dealer());
    const iopub = mk(new zmq.Subscriber());
    const kernel = new Kernel(proc, conn, connectionFile, shell, control, stdin, iopub, log);
    liveKernels.add(kernel);
    installExitHook();
    try {
      const addr = (port: number) => `tcp://${ip}:${port}`;
      shell.connect(addr(shell_port));
      control.connect(addr(control_port));
      stdin.connect(addr(stdin_port));
      iopub.connect(addr(iopub_port));
      iopub.subscribe();
      kernel.readLoop(shell, (m) => kernel.onReply(m));
      kernel.readLoop(control, (m) => kernel.onReply(m));
      kernel.readLoop(stdin, (m) => kernel.onStdin(m));
      kernel.readLoop(iopub, (m) => kernel.onIopub(m));
      await kernel.handshake(opts.startTimeoutMs ?? 60_000);
    } catch (e) {
      await kernel.shutdown();
      throw e;
    }
    return kernel;
  }

  /** True until the kernel process has exited. */
  get alive(): boolean {
    return !this.exited;
  }

  /** Everything the kernel process wrote to its own stdout/stderr (outside cells), last 256 KiB. */
  get processOutput(): string {
    return this.procOutput;
  }

  private async readLoop(sock: Zmq.Dealer | Zmq.Subscriber, handle: (m: JupyterMessage) => void): Promise<void> {
    try {
      for await (const frames of sock) {
        let msg: JupyterMessage;
        try {
          msg = decodeMessage(this.conn.key, frames as Buffer[]);
        } catch (e) {
          this.log(`dropped message: ${(e as Error).message}`);
          continue;
        }
        try {
          handle(msg);
        } catch (e) {
          this.log(`error handling ${msg.header?.msg_type}: ${(e as Error).stack}`);
        }
      }
    } catch (e) {
      if (!this.closed) this.log(`socket loop ended: ${(e as Error).message}`);
    }
  }

  private newMessage(msgType: string, content: unknown): JupyterMessage<unknown> {
    return {
      header: {
        msg_id: crypto.randomUUID(),
        session: this.session,
        username: "covid-ct",
        date: new Date().toISOString(),
        msg_type: msgType,
        version: PROTOCOL_VERSION,
      },
      parent_header: {},
      metadata: {},
      content,
      buffers: [],
    };
  }

  private send(q: SendQueue, msg: JupyterMessage<unknown>): Promise<void> {
    return q.send(encodeMessage(this.conn.key, msg));
  }

  private onReply(m: JupyterMessage): void {
    const id = m.parent_header?.msg_id;
    if (!id) return;
    const ex = this.execs.get(id);
    if (ex && m.header.msg_type === "execute_reply") {
      ex.reply = m.content;
      ex.done?.();
      return;
    }
    const cb = this.pendingReplies.get(id);
    if (cb) {
      this.pendingReplies.delete(id);
      cb(m);
    }
  }

  private onStdin(m: JupyterMessage): void {
    // allow_stdin is false, so input_request should never come; answer empty so the kernel never blocks.
    if (m.header.msg_type === "input_request") {
      const reply = this.newMessage("input_reply", { value: "" });
      reply.parent_header = m.header;
      const q = new SendQueue(this.stdin);
      void this.send(q, reply).catch(() => undefined);
    }
  }

  private onIopub(m: JupyterMessage): void {
    const type = m.header.msg_type;
    if (type === "status") this.iopubSeen = true;
    if (type === "update_display_data") {
      const c = m.content as { data?: MimeBundle; metadata?: Record<string, unknown>; transient?: { display_id?: string } };
      const id = c.transient?.display_id;
      for (const out of (id && this.displays.get(id)) || []) {
        out.data = c.data ?? {};
        out.metadata = c.metadata ?? {};
      }
      for (const ex of this.execs.values()) if (ex.onOutput && !ex.idle) ex.onOutput(ex.outputs);
      return;
    }
    const id = m.parent_header?.msg_id;
    const ex = id ? this.execs.get(id) : undefined;
    if (!ex) return;
    const c = m.content as Record<string, any>;
    switch (type) {
      case "status":
        if (c.execution_state === "idle") {
          ex.idle = true;
          ex.done?.();
        }
        return;
      case "execute_input":
        return;
      case "clear_output":
        if (c.wait) ex.clearOnNext = true;
        else ex.outputs.length = 0;
        ex.onOutput?.(ex.outputs);
        return;
    }
    let out: Output | undefined;
    if (type === "stream") {
      out = { output_type: "stream", name: c.name === "stderr" ? "stderr" : "stdout", text: String(c.text ?? "") };
    } else if (type === "display_data") {
      const d: DisplayDataOutput = { output_type: "display_data", data: c.data ?? {}, metadata: c.metadata ?? {} };
      const did: string | undefined = c.transient?.display_id;
      if (did) {
        const list = this.displays.get(did) ?? [];
        list.push(d);
        this.displays.set(did, list);
      }
      out = d;
    } else if (type === "execute_result") {
      out = { output_type: "execute_result", execution_count: c.execution_count ?? null, data: c.data ?? {}, metadata: c.metadata ?? {} };
    } else if (type === "error") {
      out = { output_type: "error", ename: String(c.ename ?? ""), evalue: String(c.evalue ?? ""), traceback: (c.traceback ?? []).map(String) };
    }
    if (!out) return;
    if (ex.clearOnNext) {
      ex.outputs.length = 0;
      ex.clearOnNext = false;
    }
    const last = ex.outputs[ex.outputs.length - 1];
    if (out.output_type === "stream" && last?.output_type === "stream" && last.name === out.name) {
      last.text = String(last.text) + String(out.text);
    } else {
      ex.outputs.push(out);
    }
    ex.onOutput?.(ex.outputs);
  }

  private request(q: SendQueue, msg: JupyterMessage<unknown>, timeoutMs: number): Promise<JupyterMessage | undefined> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.pendingReplies.delete(msg.header.msg_id);
        resolve(undefined);
      }, timeoutMs);
      this.pendingReplies.set(msg.header.msg_id, (m) => {
        clearTimeout(t);
        resolve(m);
      });
      this.send(q, msg).catch(() => undefined);
    });
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let info: JupyterMessage | undefined;
    // iopub is a PUB/SUB pair: messages published before the subscription propagates are lost, so
    // repeat kernel_info until one of its status messages actually arrives on iopub.
    while (!(info && this.iopubSeen)) {
      if (this.exited) {
        throw new Error(`tslab kernel ${this.exitInfo} during start-up:\n${this.procOutput.trim()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`tslab kernel did not answer kernel_info within ${timeoutMs} ms:\n${this.procOutput.trim()}`);
      }
      const r = await Promise.race([
        this.request(this.shellQ, this.newMessage("kernel_info_request", {}), 1000),
        this.exitPromise.then(() => undefined),
      ]);
      if (r) info = r;
      if (info && !this.iopubSeen) await within(this.exitPromise, 100);
    }
    this.kernelInfo = info.content;
    this.log(`kernel ready: ${JSON.stringify((info.content as any).language_info?.name)}`);
  }

  /** Run code; resolves when the kernel is idle again for this request (or on timeout / kernel death). */
  async execute(code: string, opts: ExecuteOptions = {}): Promise<ExecuteResult> {
    const t0 = Date.now();
    if (this.exited) {
      return { status: "died", executionCount: null, outputs: [], errorText: this.deathText(), durationMs: 0 };
    }
    const msg = this.newMessage("execute_request", {
      code,
      silent: false,
      store_history: true,
      user_expressions: {},
      allow_stdin: false,
      stop_on_error: true,
    });
    const ex: PendingExec = { msgId: msg.header.msg_id, outputs: [], idle: false, clearOnNext: false, onOutput: opts.onOutput };
    this.execs.set(ex.msgId, ex);
    let timedOut = false;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      ex.done = () => {
        if ((ex.reply && ex.idle) || this.exited || timedOut) {
          if (timer) clearTimeout(timer);
          ex.done = undefined;
          resolve();
        }
      };
      if (opts.timeoutMs && opts.timeoutMs > 0) {
        timer = setTimeout(() => {
          timedOut = true;
          ex.done?.();
        }, opts.timeoutMs);
      }
      this.send(this.shellQ, msg).catch((e) => {
        this.log(`send failed: ${(e as Error).message}`);
      });
    });
    // Keep `ex` registered: late stream output of this cell (tslab routes it to the last request)
    // still lands in ex.outputs, which the caller holds.
    const durationMs = Date.now() - t0;
    const reply = ex.reply;
    const countRaw = reply?.execution_count;
    const executionCount = typeof countRaw === "number" ? countRaw : null;
    let status: ExecuteStatus;
    if (timedOut && !(ex.reply && ex.idle)) status = "timeout";
    else if (!reply) status = "died";
    else status = reply.status === "ok" ? "ok" : reply.status === "abort" || reply.status === "aborted" ? "abort" : "error";
    const result: ExecuteResult = { status, executionCount, outputs: ex.outputs, reply, durationMs };
    if (status !== "ok") result.errorText = this.errorText(ex, status, opts.timeoutMs);
    return result;
  }

  private deathText(): string {
    const tail = this.procOutput.trim().split("\n").slice(-40).join("\n");
    return `kernel ${this.exitInfo || "died"}${tail ? `; kernel output:\n${tail}` : ""}`;
  }

  private errorText(ex: PendingExec, status: ExecuteStatus, timeoutMs?: number): string {
    const parts: string[] = [];
    if (status === "timeout") parts.push(`cell timed out after ${((timeoutMs ?? 0) / 1000).toFixed(1)} s`);
    if (status === "abort") parts.push("execution aborted by the kernel");
    const stderr = ex.outputs
      .filter((o) => o.output_type === "stream" && o.name === "stderr")
      .map((o) => String((o as { text: string }).text))
      .join("")
      .trim();
    if (stderr) parts.push(cleanStack(stderr));
    for (const o of ex.outputs) {
      if (o.output_type === "error") {
        parts.push([`${o.ename}: ${o.evalue}`, ...o.traceback].join("\n").trim());
      }
    }
    const r = ex.reply as { ename?: string; evalue?: string; traceback?: string[] } | undefined;
    if (r && (r.ename || r.evalue) && parts.length === 0) parts.push(`${r.ename ?? ""}: ${r.evalue ?? ""}`);
    if (status === "died" || this.exited) parts.push(this.deathText());
    if (parts.length === 0) {
      const tail = this.procOutput.trim().split("\n").slice(-20).join("\n");
      parts.push(`cell failed (status ${status}) without error text${tail ? `; kernel output:\n${tail}` : ""}`);
    }
    return parts.join("\n");
  }

  /** Send SIGINT (tslab interrupts the running cell). */
  interrupt(): void {
    if (!this.exited) {
      try {
        process.kill(this.pid, "SIGINT");
      } catch {
        /* gone */
      }
    }
  }

  /** Synchronous SIGKILL (for exit hooks). */
  killNow(): void {
    if (this.exited) return;
    try {
      process.kill(this.pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }

  /**
   * Stop the kernel: shutdown_request on control, SIGKILL after `graceMs`, wait for the process to be
   * reaped, close sockets, delete the connection file. Safe to call more than once; never throws.
   */
  async shutdown(graceMs = 1000): Promise<void> {
    if (!this.exited) {
      try {
        const msg = this.newMessage("shutdown_request", { restart: false });
        await within(this.send(this.controlQ, msg), 200);
      } catch {
        /* ignore */
      }
      await within(this.exitPromise, graceMs);
      this.killNow();
      await within(this.exitPromise, 10_000);
    }
    if (!this.closed) {
      this.closed = true;
      for (const s of [this.shell, this.control, this.stdin, this.iopub]) {
        try {
          s.close();
        } catch {
          /* ignore */
        }
      }
      for (const ex of this.execs.values()) ex.done?.();
      this.execs.clear();
      this.pendingReplies.clear();
      try {
        fs.rmSync(this.connectionFile, { force: true });
      } catch {
        /* ignore */
      }
    }
    liveKernels.delete(this);
  }
}
