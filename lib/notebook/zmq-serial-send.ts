/**
 * Loaded into the tslab kernel process (by the runner's preload and by the shipped kernelspec).
 *
 * tslab publishes on its zeromq sockets without waiting for the previous send to finish; zeromq 6
 * then throws "Socket is busy writing; only one send operation may be in progress at any time"
 * (EBUSY) — seen when a large output (a chart carrying plotly.js) is still being sent as tslab
 * publishes the cell's idle status, and the kernel dies. Queueing sends per socket makes every
 * send wait for the one before it; message order is unchanged.
 */
import * as path from "path";

type Send = (this: object, msg: unknown) => Promise<void>;

/** The socket classes of the zeromq that tslab loads (resolved from tslab's folder). */
function socketClasses(): { prototype: object }[] {
  try {
    const tslabDir = path.dirname(require.resolve("tslab/package.json"));
    const zmq = require(require.resolve("zeromq", { paths: [tslabDir] }));
    return ["Publisher", "Router", "Dealer", "Reply", "Request", "Pair", "Push", "XPublisher"].map((n) => zmq[n]).filter(Boolean);
  } catch {
    return [];
  }
}

const queues = new WeakMap<object, Promise<void>>();
// The native base class's send is read-only; each socket class gets an own, queueing send instead.
for (const cls of socketClasses()) {
  const proto = cls.prototype as { send: Send & { covidctSerial?: boolean } };
  if (proto.send.covidctSerial) continue;
  const original = proto.send;
  const serial: Send & { covidctSerial?: boolean } = function (this: object, msg: unknown) {
    const prev = queues.get(this) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() => original.call(this, msg));
    queues.set(this, next);
    // tslab never awaits its sends: report a failed one instead of an unhandled rejection.
    next.catch((e: unknown) => process.stderr.write(`covid-ct kernel: zeromq send failed: ${(e as Error).message}\n`));
    return next;
  };
  serial.covidctSerial = true;
  Object.defineProperty(proto, "send", { value: serial, writable: true, configurable: true });
}

export {};
