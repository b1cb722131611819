/**
 * One process per run directory: an exclusive lock file (`<run>/.lock`, created with O_EXCL) that
 * holds the owner's pid, host and start time. A lock whose process is gone (same host, pid not
 * alive) is stale and taken over; a lock from another host cannot be checked and is refused with
 * the command that removes it.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LOCK_FILE, RunDirError } from "./dir";

export interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
  command: string;
}

export interface RunLock {
  readonly dir: string;
  readonly file: string;
  /** Remove the lock (idempotent). */
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function readLock(dir: string): LockOwner | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), "utf8")) as LockOwner;
  } catch {
    return null;
  }
}

/** Is the lock in dir held by a live process other than this one? Returns its owner if so. */
export function liveLockOwner(dir: string): LockOwner | null {
  const owner = readLock(dir);
  if (!owner) return null;
  if (owner.host !== os.hostname()) return owner;
  if (owner.pid === process.pid) return null;
  return alive(owner.pid) ? owner : null;
}

const held = new Set<RunLock>();
let exitHook = false;

function describeOwner(o: LockOwner): string {
  return `pid ${o.pid} on ${o.host} since ${o.startedAt} (${o.command})`;
}

/** Take the lock of dir (which must exist), or throw a RunDirError naming its owner. */
export function acquireRunLock(dir: string): RunLock {
  const file = path.join(dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), command: process.argv.slice(1).map((a) => path.basename(a)).join(" ").slice(0, 200) };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(me), { flag: "wx" });
      const lock: RunLock = {
        dir,
        file,
        release() {
          if (!held.has(lock)) return;
          held.delete(lock);
          const o = readLock(dir);
          if (o && o.pid === me.pid && o.host === me.host) fs.rmSync(file, { force: true });
        },
      };
      held.add(lock);
      if (!exitHook) {
        exitHook = true;
        process.on("exit", () => [...held].forEach((l) => l.release()));
      }
      return lock;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const owner = readLock(dir);
      if (owner && owner.host !== os.hostname()) {
        throw new RunDirError(`Run directory ${dir} is locked by ${describeOwner(owner)}. If that process is gone, remove ${file} and try again.`);
      }
      if (owner && alive(owner.pid) && owner.pid !== process.pid) {
        throw new RunDirError(`Run directory ${dir} is in use by ${describeOwner(owner)}. Wait for it to finish, or choose another --out.`);
      }
      // Stale (its process died, e.g. SIGKILL) or unreadable: take it over once.
      fs.rmSync(file, { force: true });
    }
  }
  throw new RunDirError(`Could not lock ${dir}: another process keeps taking ${file}. Try again.`);
}

/** Release every lock this process holds (signal handlers call this before exiting). */
export function releaseAllLocks(): void {
  [...held].forEach((l) => l.release());
}
