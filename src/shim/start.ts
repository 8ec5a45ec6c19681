import { fork } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import path from "node:path";
import type { ShimFlags } from "./flags.js";
import { groupIdFor, socketPathFor } from "./group.js";

export function listening(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export async function annotationsOf(bundle: string): Promise<Record<string, string>> {
  try {
    const spec = JSON.parse(await readFile(path.join(bundle, "config.json"), "utf8")) as {
      annotations?: unknown;
    };
    const a = spec.annotations;
    if (a && typeof a === "object")
      return Object.fromEntries(Object.entries(a).filter(([, v]) => typeof v === "string")) as Record<
        string,
        string
      >;
  } catch {
    // No readable spec: the task gets its own shim; Create reports the spec error.
  }
  return {};
}

/**
 * `start`: reuse the pod's shim if it already runs, else fork the long-lived server (detached,
 * stdio not inherited — containerd reads our stdout to EOF), wait until it listens, write
 * `address` and `shim.pid` in the bundle and print the plain `unix://` address.
 */
export async function startCommand(flags: ShimFlags, entry: string): Promise<string> {
  const bundle = process.cwd();
  const group = groupIdFor(flags.id, await annotationsOf(bundle));
  const socket = socketPathFor(flags.address, flags.namespace, group);
  const address = `unix://${socket}`;
  if (group !== flags.id && (await listening(socket))) {
    await writeFile(path.join(bundle, "address"), address);
    return address;
  }
  await mkdir(path.dirname(socket), { recursive: true, mode: 0o711 });
  const args = process.argv.slice(2).filter((a) => a !== "start");
  const child = fork(entry, [...args, "-socket", socket, "serve"], {
    cwd: bundle,
    detached: true,
    stdio: ["ignore", "ignore", "ignore", "ipc"],
    env: process.env,
  });
  await new Promise<void>((resolve, reject) => {
    child.once("message", (m) => (m === "ready" ? resolve() : reject(new Error(String(m)))));
    child.once("exit", (code, signal) =>
      reject(new Error(`the shim server exited during start (${signal ?? code})`)),
    );
  });
  child.disconnect();
  child.unref();
  await writeFile(path.join(bundle, "address"), address);
  await writeFile(path.join(bundle, "shim.pid"), String(child.pid));
  return address;
}
