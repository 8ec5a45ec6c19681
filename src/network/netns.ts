import { createHash } from "node:crypto";
import { access } from "node:fs/promises";
import { HostError } from "../errors.js";
import { runChecked, runCommand, type RunResult } from "../host/process.js";

/**
 * Network namespaces. Node cannot unshare, so a namespace cocoon makes is `ip netns add NAME`
 * (a bind mount at /var/run/netns/NAME that outlives every process); commands run inside one
 * through `nsenter --net=PATH`, which also works for a namespace someone else made (a pod's).
 */

export const NETNS_DIR = "/var/run/netns";
/** Every namespace cocoon makes starts with this, so gc can find the ones nothing owns. */
export const NETNS_PREFIX = "cocoon-";

/**
 * The name of a sandbox's namespace. /var/run/netns is shared by every state root on the
 * machine (tests run several at once), so the name carries a short hash of the state root.
 */
export function sandboxNetnsName(stateRoot: string, id: string): string {
  const root = createHash("sha256").update(stateRoot).digest("hex").slice(0, 8);
  return `${NETNS_PREFIX}${root}-${id}`;
}

/** The state-root hash part of names made for `stateRoot` (for gc). */
export function netnsNamePrefix(stateRoot: string): string {
  return sandboxNetnsName(stateRoot, "");
}

export async function pathExists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

export async function createNamedNetns(name: string): Promise<string> {
  const p = `${NETNS_DIR}/${name}`;
  await runChecked("ip", ["netns", "add", name], { timeoutMs: 30_000 });
  // A new namespace's loopback is down; the VMM itself does not need it, but tools run there do.
  await runInNetns(p, "ip", ["link", "set", "lo", "up"]);
  return p;
}

/** Deletes a namespace cocoon made; one already gone is fine. */
export async function deleteNamedNetns(name: string): Promise<void> {
  if (!(await pathExists(`${NETNS_DIR}/${name}`))) return;
  const res = await runCommand("ip", ["netns", "delete", name], { timeoutMs: 30_000 });
  if (res.code !== 0 && (await pathExists(`${NETNS_DIR}/${name}`)))
    throw new HostError("ERR_PROCESS", `ip netns delete ${name} failed: ${res.stderr.trim()}`);
}

/** Runs a program inside the namespace at `nsPath`; a non-zero exit is an error. */
export function runInNetns(
  nsPath: string,
  file: string,
  args: readonly string[],
  options: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return runChecked("nsenter", [`--net=${nsPath}`, "--", file, ...args], { timeoutMs: 30_000, ...options });
}

/** Like runInNetns, but returns the result whatever the exit. */
export function tryInNetns(nsPath: string, file: string, args: readonly string[]): Promise<RunResult> {
  return runCommand("nsenter", [`--net=${nsPath}`, "--", file, ...args], { timeoutMs: 30_000 });
}

/** The argv prefix that starts a program (the VMM) inside a namespace. */
export function netnsLaunchPrefix(nsPath: string): string[] {
  return [`--net=${nsPath}`, "--"];
}
