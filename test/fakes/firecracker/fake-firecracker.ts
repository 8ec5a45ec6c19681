/**
 * A strict fake Firecracker: accepts Firecracker's command line, serves its REST API on the
 * unix socket, validates every body against the spec of the version it claims, enforces the
 * pre/post-boot rules and the VM state machine, writes logger and metrics lines, and serves
 * hybrid vsock. See docs/firecracker.md ("The fakes") for everything it does and does not do.
 *
 * Version: `--fake-version X` (removed from the arguments before parsing), else FAKE_FC_VERSION,
 * else the version baked in at build time (build.ts makes one binary per version), else 1.16.1. Jailed runs: the fake jailer cannot chroot a Node program, so it passes the
 * jail root in FAKE_FC_JAIL_ROOT and every path Firecracker is given (API socket, drives,
 * kernel, log, vsock...) is resolved inside it, as a chrooted Firecracker would.
 *
 * Threads mirror Firecracker's: the main thread is named `firecracker` (the VMM), a worker named
 * `fc_api` serves HTTP, and each vCPU is a worker named `fc_vcpu N`.
 */
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { compareVersions, tryParseVersion } from "../../../src/vmm/firecracker/version.js";
import { ArgsError, parseFcArgs } from "./cli.js";
import { SerialConsole, guestBehaviourFromEnv, nameThread } from "./guest.js";
import {
  RequestParser,
  formatResponse,
  isFramingError,
  microHttpErrorBody,
  tooManyConnectionsResponse,
} from "./http.js";
import { startMmdsGuestEndpoint } from "./mmds-guest.js";
import { FcLogger, FcMetrics, openTarget, parseLevel } from "./telemetry.js";
import { FakeVmm, type Reply } from "./vmm.js";

// -- messages between the fc_api thread and the VMM thread --------------------------------------

interface ApiRequestMsg {
  type: "request";
  id: number;
  method: string;
  path: string;
  body?: string;
}
interface ApiReplyMsg {
  type: "reply";
  id: number;
  status: number;
  body?: string;
  headers: [string, string][];
  exitAfter?: number;
}
type ApiThreadMsg =
  | ApiRequestMsg
  | { type: "listening" }
  | { type: "listen-error"; message: string }
  | { type: "exit"; code: number }
  | { type: "sigpipe" };

const MAX_CONNECTIONS = 10;

/** Set by build.ts (esbuild define) in per-version builds; absent when run from source. */
declare const __FAKE_BAKED_VERSION__: string | undefined;
function bakedVersion(): string | undefined {
  return typeof __FAKE_BAKED_VERSION__ === "string" ? __FAKE_BAKED_VERSION__ : undefined;
}

interface ApiThreadData {
  socketPath: string;
  maxPayload: number;
  /** micro-http parses DELETE only in the versions with DELETE endpoints. */
  deleteMethod: boolean;
}

/** How long the real server takes per answer to an oversized body's chunks (it answers as it reads). */
const FRAMING_ANSWER_GAP_MS = 2;

/** The fc_api thread: micro-http framing, one request at a time per connection. */
function apiThread(data: ApiThreadData): void {
  nameThread("fc_api");
  const port = parentPort!;
  const pending = new Map<number, (reply: ApiReplyMsg) => void>();
  let nextId = 1;
  port.on("message", (msg: ApiReplyMsg) => {
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  const ask = (method: string, p: string, body: string | undefined) =>
    new Promise<ApiReplyMsg>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      port.postMessage({
        type: "request",
        id,
        method,
        path: p,
        ...(body !== undefined ? { body } : {}),
      } satisfies ApiRequestMsg);
    });
  let open = 0;
  const server = net.createServer((sock) => {
    sock.on("error", () => undefined);
    if (open >= MAX_CONNECTIONS) {
      sock.end(tooManyConnectionsResponse());
      return;
    }
    open++;
    // Answers queued but not yet written. The real Firecracker writes with SIGPIPE unblocked:
    // when the client hangs up while answers are still owed (it sent an oversized body and left
    // after the first 400), it logs "Received signal 13" and is killed (SIGSYS). Modelled so that
    // a client that sends such a body fails its tests.
    // (Only framing-error answers are counted: the cases seen on real binaries.)
    let owed = 0;
    sock.on("close", () => {
      open--;
      if (owed > 0) port.postMessage({ type: "sigpipe" } satisfies ApiThreadMsg);
    });
    const parser = new RequestParser(data.maxPayload, { deleteMethod: data.deleteMethod });
    let chain = Promise.resolve();
    sock.on("data", (chunk: Buffer) => {
      for (const item of parser.push(chunk)) {
        if (isFramingError(item)) owed++;
        chain = chain.then(async () => {
          if (isFramingError(item)) owed--;
          if (sock.destroyed) return;
          if (isFramingError(item)) {
            await sleep(FRAMING_ANSWER_GAP_MS);
            await new Promise<void>((resolve) =>
              sock.write(formatResponse(item.status, microHttpErrorBody(item.error)), () => resolve()),
            );
            return;
          }
          const reply = await ask(item.method, item.path, item.body?.toString("utf8"));
          await new Promise<void>((resolve) =>
            sock.write(formatResponse(reply.status, reply.body, reply.headers), () => resolve()),
          );
          if (reply.exitAfter !== undefined) port.postMessage({ type: "exit", code: reply.exitAfter });
        });
      }
    });
  });
  server.once("error", (err: NodeJS.ErrnoException) =>
    port.postMessage({ type: "listen-error", message: err.message }),
  );
  server.listen(data.socketPath, () => port.postMessage({ type: "listening" }));
}

// -- the VMM thread ------------------------------------------------------------------------------

function fail(code: number, message: string): never {
  process.stderr.write(message + "\n");
  process.exit(code);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let version = process.env.FAKE_FC_VERSION || bakedVersion() || "1.16.1";
  const fv = argv.indexOf("--fake-version");
  if (fv !== -1) {
    version = argv[fv + 1] ?? version;
    argv.splice(fv, 2);
  }
  if (!tryParseVersion(version)) fail(1, `fake firecracker: invalid FAKE_FC_VERSION "${version}"`);
  let args;
  try {
    args = parseFcArgs(argv, version);
  } catch (err) {
    if (err instanceof ArgsError) fail(153, `Arguments parsing error: ${err.message}`);
    throw err;
  }
  if (args.help) {
    process.stdout.write("Firecracker (cocoon fake): see docs/firecracker.md\n");
    process.exit(0);
  }
  if (args.version) {
    process.stdout.write(`Firecracker v${version}\n`);
    process.exit(0);
  }
  if (args.snapshotVersion) {
    process.stdout.write(`v${version}\n`);
    process.exit(0);
  }
  const jailRoot = process.env.FAKE_FC_JAIL_ROOT || undefined;
  const resolve = (p: string) => (jailRoot ? path.join(jailRoot, path.resolve("/", p)) : path.resolve(p));
  if (args.describeSnapshot) {
    try {
      const state = JSON.parse(readFileSync(resolve(args.describeSnapshot), "utf8")) as { version?: string };
      process.stdout.write(`v${state.version ?? "?"}\n`);
      process.exit(0);
    } catch (err) {
      fail(1, `Failed to read the snapshot: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  nameThread("firecracker");
  const started = process.hrtime.bigint();
  const logger = new FcLogger(args.id, version);
  const metrics = new FcMetrics(version);
  const create = compareVersions(version, "1.14.0") >= 0;
  if (args.logPath) {
    const level = args.level ? parseLevel(args.level) : undefined;
    if (args.level && !level) fail(153, `Arguments parsing error: Invalid log level: ${args.level}`);
    try {
      logger.configure(openTarget(resolve(args.logPath), create), {
        ...(level ? { level } : {}),
        showLevel: args.showLevel,
        showOrigin: args.showLogOrigin,
        ...(args.module ? { module: args.module } : {}),
      });
    } catch (err) {
      fail(1, `Failed to initialize the logger: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  logger.log("Info", "main", `Running Firecracker v${version}`);
  if (args.metricsPath) {
    try {
      metrics.configure(openTarget(resolve(args.metricsPath), create));
    } catch (err) {
      fail(1, `Failed to initialize metrics: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  const exit = (code: number): never => {
    logger.log(
      code === 0 ? "Info" : "Error",
      "main",
      code === 0
        ? "Firecracker exiting successfully. exit_code=0"
        : `Firecracker exiting with error. exit_code=${code}`,
    );
    process.exit(code);
  };
  const serial = new SerialConsole();
  const vmm = new FakeVmm({
    version,
    id: args.id,
    jailRoot,
    enablePci: args.enablePci,
    bootTimer: args.bootTimer,
    mmdsSizeLimit: args.mmdsSizeLimit ?? args.httpApiMaxPayloadSize,
    guest: guestBehaviourFromEnv(process.env),
    logger,
    metrics,
    console: serial,
    exit,
  });

  // Signals Firecracker handles; SIGTERM keeps its default action (death by signal), as in the real one.
  for (const [sig, code] of [
    ["SIGHUP", 156],
    ["SIGXFSZ", 151],
    ["SIGXCPU", 154],
  ] as const) {
    process.on(sig, () => {
      logger.log("Error", "firecracker", `Shutting down VM after intercepting signal ${sig}`);
      exit(code);
    });
  }
  if (process.env.FAKE_FC_IGNORE_SIGTERM === "1")
    process.on("SIGTERM", () =>
      logger.log("Warning", "firecracker", "ignoring SIGTERM (FAKE_FC_IGNORE_SIGTERM)"),
    );

  if (args.metadata) {
    try {
      const data: unknown = JSON.parse(readFileSync(resolve(args.metadata), "utf8"));
      if (typeof data !== "object" || data === null || Array.isArray(data))
        throw new Error("not a JSON object");
      vmm.setMmdsData(data as Record<string, unknown>);
    } catch (err) {
      fail(1, `Unable to parse the metadata file: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  let chain = Promise.resolve();
  const serve = (method: string, p: string, body: string | undefined): Promise<Reply> => {
    const result = chain.then(async () => {
      const t0 = process.hrtime.bigint();
      logger.log(
        "Info",
        "fc_api",
        body === undefined
          ? `The API server received a ${method[0]}${method.slice(1).toLowerCase()} request on ${JSON.stringify(p)}.`
          : `The API server received a ${method[0]}${method.slice(1).toLowerCase()} request on ${JSON.stringify(p)} with body ${JSON.stringify(body)}.`,
      );
      const reply = await vmm.handle(method, p, body);
      if (reply.status >= 300) {
        const msg = (reply.body as { fault_message?: string } | undefined)?.fault_message ?? "";
        logger.log(
          "Error",
          "fc_api",
          `Received Error. Status code: ${reply.status} Bad Request. Message: ${msg}`,
        );
      }
      logger.log(
        "Debug",
        "fc_api",
        `Total previous API call duration: ${Number((process.hrtime.bigint() - t0) / 1000n)} us.`,
      );
      return reply;
    });
    chain = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  };

  if (args.configFile) {
    await bootFromConfigFile(resolve(args.configFile), version, serve, exit);
  }
  metrics.store("api_server", "process_startup_time_us", Number((process.hrtime.bigint() - started) / 1000n));
  metrics.store("api_server", "process_startup_time_cpu_us", Math.round(process.cpuUsage().user));
  // Metrics are flushed every 60 s on their own.
  setInterval(() => metrics.flush(), 60_000).unref();

  if (args.noApi) return;
  const socketPath = resolve(args.apiSock);
  if (existsSync(socketPath)) {
    logger.log(
      "Error",
      "main",
      `Failed to open the API socket at: ${socketPath}. Check that it is not already used.`,
    );
    exit(1);
  }
  if (process.env.FAKE_FC_MMDS_GUEST === "1")
    startMmdsGuestEndpoint(
      `${socketPath}.mmds`,
      () => vmm.mmdsView(),
      () => vmm.booted,
    );
  const worker = new Worker(new URL(import.meta.url), {
    workerData: {
      role: "api",
      socketPath,
      maxPayload: args.httpApiMaxPayloadSize,
      deleteMethod: compareVersions(version, "1.16.0") >= 0,
    } satisfies ApiThreadData & { role: string },
  });
  worker.on("message", (msg: ApiThreadMsg) => {
    if (msg.type === "listening") {
      logger.log("Debug", "fc_api", "API server started.");
    } else if (msg.type === "listen-error") {
      logger.log("Error", "main", `Failed to open the API socket at: ${socketPath}. ${msg.message}`);
      exit(1);
    } else if (msg.type === "exit") {
      exit(msg.code);
    } else if (msg.type === "sigpipe") {
      logger.log("Error", "firecracker", "Received signal 13, code 0.");
      // Firecracker's seccomp filter then kills it: death by SIGSYS, no exit line.
      process.kill(process.pid, "SIGSYS");
    } else {
      void serve(msg.method, msg.path, msg.body).then(
        (reply) => {
          const headers: [string, string][] = reply.deprecated ? [["Deprecation", "true"]] : [];
          worker.postMessage({
            type: "reply",
            id: msg.id,
            status: reply.status,
            ...(reply.body !== undefined ? { body: JSON.stringify(reply.body) } : {}),
            headers,
            ...(reply.exitAfter !== undefined ? { exitAfter: reply.exitAfter } : {}),
          } satisfies ApiReplyMsg);
        },
        (err: unknown) => {
          logger.log(
            "Error",
            "firecracker",
            `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
          );
          worker.postMessage({
            type: "reply",
            id: msg.id,
            status: 500,
            body: JSON.stringify({ fault_message: "Internal error" }),
            headers: [],
          } satisfies ApiReplyMsg);
        },
      );
    }
  });
  worker.on("error", (err) => {
    logger.log("Error", "main", `API thread failed: ${err.message}`);
    exit(1);
  });
}

/**
 * --config-file: the same sections as GET /vm/config; the VM boots right after. A bad file
 * ends Firecracker with exit code 152 in 1.0, and with 1 (and Rust's `Error: …` line) from 1.5.
 */
async function bootFromConfigFile(
  file: string,
  version: string,
  serve: (method: string, p: string, body: string | undefined) => Promise<Reply>,
  exit: (code: number) => never,
): Promise<void> {
  const failed = (message: string, variant: string): never => {
    if (compareVersions(version, "1.5.0") < 0) {
      process.stderr.write(`Configuration for VMM from one single json failed: ${message}\n`);
      return exit(152);
    }
    process.stderr.write(
      `Error: RunWithoutApiError(BuildMicroVMFromJson(${variant}(${JSON.stringify(message)})))\n`,
    );
    return exit(1);
  };
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (err) {
    return failed(err instanceof Error ? err.message : String(err), "ParseFromJson");
  }
  const calls: [string, string, unknown][] = [];
  const one = (key: string, p: string) =>
    cfg[key] !== undefined && cfg[key] !== null && calls.push(["PUT", p, cfg[key]]);
  one("logger", "/logger");
  one("metrics", "/metrics");
  one("machine-config", "/machine-config");
  one("cpu-config", "/cpu-config");
  one("boot-source", "/boot-source");
  for (const d of Array.isArray(cfg.drives) ? (cfg.drives as { drive_id?: string }[]) : [])
    calls.push(["PUT", `/drives/${d.drive_id ?? ""}`, d]);
  for (const n of Array.isArray(cfg["network-interfaces"])
    ? (cfg["network-interfaces"] as { iface_id?: string }[])
    : []) {
    calls.push(["PUT", `/network-interfaces/${n.iface_id ?? ""}`, n]);
  }
  one("vsock", "/vsock");
  one("balloon", "/balloon");
  one("entropy", "/entropy");
  one("mmds-config", "/mmds/config");
  calls.push(["PUT", "/actions", { action_type: "InstanceStart" }]);
  for (const [method, p, body] of calls) {
    const reply = await serve(method, p, JSON.stringify(body));
    if (reply.status >= 300) {
      const msg =
        (reply.body as { fault_message?: string } | undefined)?.fault_message ?? `status ${reply.status}`;
      failed(msg, "StartMicroVM");
    }
  }
}

if (isMainThread) {
  main().catch((err: unknown) => {
    process.stderr.write(
      `fake firecracker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  });
} else if ((workerData as { role?: string } | null)?.role === "api") {
  apiThread(workerData as ApiThreadData);
}
