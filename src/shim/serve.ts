import { pino, type Logger } from "pino";
import { existsSync } from "node:fs";
import path from "node:path";
import { Task } from "../gen/shim/github.com/containerd/containerd/runtime/v2/task/shim_pb.js";
import { EventPublisher } from "./events.js";
import { toStatus } from "./errors.js";
import type { ShimFlags } from "./flags.js";
import { TaskService } from "./service.js";
import { TtrpcServer } from "./ttrpc/server.js";
import { bootVm } from "./vm.js";

/** How long an exiting shim waits for queued events to reach containerd. */
const EXIT_FLUSH_MS = 5_000;

/** containerd picks v3 only when a shim advertises it; both names get the same handlers. */
const TASK_SERVICES = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

/** Logs go to the bundle's `log` FIFO, which containerd copies to its own log. */
function shimLogger(flags: ShimFlags): Logger {
  const file = path.join(process.cwd(), "log");
  const dest = existsSync(file)
    ? pino.destination({ dest: file, sync: true })
    : pino.destination({ dest: "/dev/null" });
  return pino(
    {
      level: flags.debug ? "debug" : "info",
      base: { id: flags.id, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    dest,
  );
}

/** The long-lived shim: a ttrpc server owning the task's sandbox; exits after Shutdown when idle. */
export async function serveCommand(flags: ShimFlags): Promise<void> {
  const logger = shimLogger(flags);
  const ttrpcAddress = process.env["TTRPC_ADDRESS"] ?? (flags.address ? `${flags.address}.ttrpc` : undefined);
  const events = new EventPublisher(ttrpcAddress, flags.namespace, logger);
  const server = new TtrpcServer(toStatus);
  let exiting = false;
  const exit = async (code: number) => {
    if (exiting) return;
    exiting = true;
    // After Shutdown containerd is done with us; if its event socket is gone (containerd
    // restarted), queued events must not keep the shim alive through their retries.
    await Promise.race([events.flush(), new Promise((r) => setTimeout(r, EXIT_FLUSH_MS))]);
    events.close();
    await server.close(flags.socket);
    logger.info("shim exiting");
    process.exit(code);
  };
  const service = new TaskService({
    namespace: flags.namespace,
    logger,
    events,
    bootVm,
    // Answer Shutdown first, then go.
    onShutdown: () => setTimeout(() => void exit(0), 50),
  });
  for (const name of TASK_SERVICES) server.registerService(name, Task, service.handlers());
  process.on("uncaughtException", (err) => logger.error({ err }, "uncaught exception"));
  process.on("unhandledRejection", (err) => logger.error({ err }, "unhandled rejection"));
  process.on("SIGTERM", () => void exit(0));
  process.on("SIGINT", () => undefined);
  process.on("SIGPIPE", () => undefined);
  await server.listen(flags.socket);
  logger.info({ socket: flags.socket }, "shim listening");
  process.send?.("ready");
}
