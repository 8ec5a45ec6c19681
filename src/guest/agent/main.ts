/**
 * The cocoon guest agent: started by the guest's init, it serves the agent protocol on every
 * virtio-serial port named `cocoon.agent*` (QEMU, ACRN) and on a unix socket that a vsock
 * bridge feeds (Firecracker's hybrid vsock). Each host connection is one session; sessions
 * share the agent's state (processes, containers), so a later connection can pick up work an
 * earlier one started.
 *
 * Loading this module starts nothing: the guest's loader (loader.ts) compiles the bundle with a
 * V8 code cache and calls startAgent(), and the image build evaluates the same bundle on the
 * host to write that cache (code-cache.ts). So nothing at module level may depend on the
 * machine it runs on or touch it: what the guest provides (its kernel arguments) is read in
 * startAgent().
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import type { Duplex } from "node:stream";
import { Connection } from "../../agent/protocol/connection.js";
import { dispatcher, type Handlers } from "./dispatch.js";
import { AgentState } from "./agent.js";
import { AGENT_VERSION } from "./ops/basic.js";
import { watchPowerButton } from "./power.js";
import { servePort } from "./serial.js";
import { markStart, writeStartTimeline } from "./start-timeline.js";

export const AGENT_SOCKET = "/run/cocoon/agent.sock";
export const PORT_PREFIX = "cocoon.agent";

function kernelArgs(): Map<string, string> {
  const args = new Map<string, string>();
  try {
    for (const word of readFileSync("/proc/cmdline", "utf8").trim().split(/\s+/)) {
      const eq = word.indexOf("=");
      args.set(eq === -1 ? word : word.slice(0, eq), eq === -1 ? "" : word.slice(eq + 1));
    }
  } catch {
    // not in a VM (tests): defaults
  }
  return args;
}

/** Set from the kernel arguments when the agent starts (not at load: see the module comment). */
let debug = false;
function log(message: string): void {
  process.stderr.write(`cocoon-agent: ${message}\n`);
}
function debugLog(message: string): void {
  if (debug) log(message);
}

/**
 * The start timeline (start-timeline.ts) is written once the agent has both answered its first
 * HELLO and finished startAgent(), whichever comes last: after the first answer, never before.
 */
let helloSeen = false;
let started = false;
function onFirstHello(): void {
  if (helloSeen) return;
  helloSeen = true;
  markStart("hello answered");
  if (started) setImmediate(() => void writeStartTimeline());
}
function onStarted(): void {
  started = true;
  markStart("ready");
  if (helloSeen) setImmediate(() => void writeStartTimeline());
}

/**
 * Serves sessions on one stream until it ends. On a serial port a new host can arrive without
 * the old one's disconnect being seen: its HELLO restarts the session on the same stream.
 */
export function serveSession(
  stream: Duplex,
  state: AgentState,
  handlers: Handlers,
  restartOnHello = false,
): Promise<void> {
  return new Promise((resolve) => {
    const start = (): void => {
      const conn = new Connection(stream, {
        role: "server",
        handler: dispatcher(handlers),
        agentVersion: AGENT_VERSION,
        restartOnHello,
      });
      state.addSession(conn);
      conn.on("protocol-error", (err: Error) => log(`protocol error: ${err.message}`));
      conn.once("restart", (pending: Buffer) => {
        debugLog("a new host session replaced the previous one");
        start();
        stream.emit("data", pending);
      });
      conn.once("hello", onFirstHello);
      conn.once("close", () => {
        if (!conn.restarted) resolve();
      });
    };
    start();
  });
}

/** Synchronous: sysfs reads are cheap, a threadpool round trip is not (see watchPowerButton). */
function agentPorts(): string[] {
  const out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync("/sys/class/virtio-ports");
  } catch {
    return out;
  }
  for (const port of entries) {
    let name = "";
    try {
      name = readFileSync(`/sys/class/virtio-ports/${port}/name`, "utf8").trim();
    } catch {
      // gone or unnamed: not an agent port
    }
    if (name.startsWith(PORT_PREFIX)) out.push(`/dev/${port}`);
  }
  return out.sort();
}

/** /dev/vsock exists whenever the kernel has vsock; a transport exists only with a device. */
async function hasVsockTransport(): Promise<boolean> {
  const entries = await readdir("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport").catch(
    () => [] as string[],
  );
  return existsSync("/dev/vsock") && entries.some((e) => e.startsWith("virtio"));
}

/**
 * `cocoon.cpuprof=1` on the kernel command line (benchmarks, issue 14): profiles the agent from
 * its start; SIGUSR2 writes the profile so far to /tmp/agent.cpuprofile. Loaded only when asked,
 * so a normal start pays nothing for it.
 */
async function startProfiler(): Promise<void> {
  // Not import(): a function that comes from the V8 code cache has lost the loader's dynamic
  // import callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), and the agent died here at each
  // start (issue 14: "cocoon.cpuprof=1 hung at the handshake").
  const { Session } = process.getBuiltinModule("node:inspector/promises");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 1000 });
  await session.post("Profiler.start");
  process.on("SIGUSR2", () => {
    void (async () => {
      const { profile } = await session.post("Profiler.stop");
      await writeFile("/tmp/agent.cpuprofile", JSON.stringify(profile));
      await session.post("Profiler.start");
      log("wrote /tmp/agent.cpuprofile");
    })();
  });
}

/** Starts the agent: serves every agent port and the unix socket until the guest stops. */
export async function startAgent(): Promise<void> {
  markStart("startAgent");
  const args = kernelArgs();
  debug = args.get("cocoon.debug") === "1";
  if (args.get("cocoon.cpuprof") === "1") await startProfiler();
  process.on("uncaughtException", (err) => log(`uncaught: ${err.stack ?? err.message}`));
  process.on("unhandledRejection", (err) => log(`unhandled rejection: ${String(err)}`));
  // Before any session: once the host sees the agent it may ask for a graceful powerdown.
  watchPowerButton(log);
  markStart("power button watched");
  const state = new AgentState();
  const handlers = state.handlers();
  const onSession = (stream: Duplex): Promise<void> => serveSession(stream, state, handlers);

  const ports = agentPorts();
  markStart("ports listed");
  for (const port of ports)
    void servePort(port, (stream) => serveSession(stream, state, handlers, true), log);

  await mkdir("/run/cocoon", { recursive: true });
  await rm(AGENT_SOCKET, { force: true });
  const server = net.createServer((sock) => void onSession(sock));
  await new Promise<void>((resolve) => server.listen(AGENT_SOCKET, resolve));
  markStart("socket listening");

  const vsockPort = args.get("cocoon.vsock_port") ?? "1024";
  const vsock = await hasVsockTransport();
  if (vsock) {
    // Node cannot open AF_VSOCK: socat bridges each vsock connection to the unix socket.
    const bridge = spawn(
      "socat",
      [`VSOCK-LISTEN:${vsockPort},reuseaddr,fork`, `UNIX-CONNECT:${AGENT_SOCKET}`],
      {
        stdio: "ignore",
      },
    );
    bridge.on("error", (e) => log(`vsock bridge: ${e.message}`));
    bridge.on("exit", (code) => log(`vsock bridge exited with ${String(code)}`));
  }
  log(
    `ready (version ${AGENT_VERSION}, ${ports.length} serial port(s)${vsock ? `, vsock ${vsockPort}` : ""})`,
  );
  debugLog(`kernel args: ${[...args.keys()].join(" ")}`);
  onStarted();
}
