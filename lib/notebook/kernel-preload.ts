/** Preloaded into every kernel the runner starts: orphan watchdog + serialised zeromq sends. */
import "./watchdog";
import "./zmq-serial-send";
