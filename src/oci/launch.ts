import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { CocoonError } from "../errors.js";
import { packagePath } from "../package-root.js";
import { RELAY_ENV, type RelayOptions } from "./relay.js";
import { signalNumber } from "./signals.js";

/**
 * The console helper (src/oci/console/cocoon-console.c, built by setup into .cache/oci/);
 * COCOON_CONSOLE_HELPER overrides where it is.
 */
export function consoleHelperPath(): string {
  const fromEnv = process.env.COCOON_CONSOLE_HELPER;
  if (fromEnv) return fromEnv;
  return packagePath(".cache/oci/cocoon-console");
}

export interface LaunchedRelay {
  pid: number;
  /** Resolves with the relay's exit status (for a foreground exec). */
  exited: Promise<number>;
}

/**
 * Starts a relay process (see relay.ts) with our stdio, or behind a new pty whose master goes
 * to `consoleSocket`, and waits until it says it is ready. The relay is not detached: once we
 * exit it belongs to our caller's subreaper (conmon, containerd's runc shim), which waits for it.
 */
export async function launchRelay(
  entry: string,
  root: string,
  id: string,
  options: RelayOptions,
  consoleSocket: string | undefined,
): Promise<LaunchedRelay> {
  const relayArgs = [entry, "--root", root, "relay", id];
  let file = process.execPath;
  let args = relayArgs;
  if (consoleSocket) {
    const helper = consoleHelperPath();
    if (!existsSync(helper))
      throw new CocoonError("ERR_HOST_MISSING_TOOL", `the console helper ${helper} is not built`, {
        hint: "run scripts/setup.sh (or bash src/oci/console/build.sh)",
      });
    file = helper;
    args = [path.resolve(consoleSocket), process.execPath, ...relayArgs];
  }
  const child = spawn(file, args, {
    stdio: ["inherit", "inherit", "inherit", "pipe"],
    env: { ...process.env, [RELAY_ENV]: JSON.stringify(options) },
  });
  const exited = new Promise<number>((resolve) => {
    child.on("exit", (code, signal) => resolve(code ?? 128 + (signal ? signalNumber(signal) : 0)));
    child.on("error", () => resolve(125));
  });
  const channel = child.stdio[3] as Readable;
  let said = "";
  channel.setEncoding("utf8");
  channel.on("data", (chunk: string) => (said += chunk));
  await new Promise<void>((resolve) => {
    channel.on("close", resolve);
    channel.on("error", () => resolve());
  });
  const line = said.trim();
  if (line !== "ready" || child.pid === undefined) {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
    const why = line.startsWith("error ") ? line.slice(6) : "it exited before it was ready";
    throw new CocoonError("ERR_PROCESS", `the container's relay process failed: ${why}`);
  }
  // Not unref'd: a foreground exec waits for it; create and a detached exec exit explicitly.
  return { pid: child.pid, exited };
}
