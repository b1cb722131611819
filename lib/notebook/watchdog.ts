/**
 * Preloaded into every kernel the runner starts (`node --require watchdog.js tslab kernel ...`):
 * when the process that started the kernel goes away (even by SIGKILL, when no cleanup code can
 * run), the kernel is re-parented, its ppid changes, and it exits. This keeps orphan kernels from
 * piling up after an interrupted `covid-ct reproduce`.
 */
const startedBy = process.ppid;
const timer = setInterval(() => {
  if (process.ppid !== startedBy) process.exit(0);
}, 500);
timer.unref();

export {};
