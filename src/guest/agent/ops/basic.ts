import { readdir, readFile, readlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PROTOCOL_VERSION } from "../../../agent/protocol/connection.js";
import type { GuestBlockDevice } from "../../../agent/protocol/methods.js";
import type { Handlers } from "../dispatch.js";

declare const __COCOON_VERSION__: string;
export const AGENT_VERSION = typeof __COCOON_VERSION__ === "string" ? __COCOON_VERSION__ : "dev";

async function readTrim(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    return undefined;
  }
}

/** Block devices from /sys/block, skipping loop and ram devices. */
export async function listBlockDevices(sysBlock = "/sys/block"): Promise<GuestBlockDevice[]> {
  const out: GuestBlockDevice[] = [];
  for (const name of (await readdir(sysBlock)).sort()) {
    if (/^(loop|ram|zram)/.test(name)) continue;
    const dir = path.join(sysBlock, name);
    const sectors = Number((await readTrim(path.join(dir, "size"))) ?? "0");
    const ro = (await readTrim(path.join(dir, "ro"))) === "1";
    const dev: GuestBlockDevice = { name, sizeBytes: sectors * 512, readOnly: ro };
    try {
      // SCSI disks: device → .../host0/target0:0:0/0:0:0:1
      const target = path.basename(await readlink(path.join(dir, "device")));
      if (/^\d+:\d+:\d+:\d+$/.test(target)) dev.scsiAddress = target;
    } catch {
      // not a SCSI disk
    }
    const serial = await readTrim(path.join(dir, "serial"));
    if (serial) dev.serial = serial;
    out.push(dev);
  }
  return out;
}

export const basicHandlers: Handlers = {
  "health.check": async () => ({ status: "SERVING" }),
  "agent.version": async () => ({
    agentVersion: AGENT_VERSION,
    protocol: PROTOCOL_VERSION,
    kernel: os.release(),
    node: process.version,
  }),
  "guest.clock": async () => ({
    monotonicNs: process.hrtime.bigint().toString(),
    realtimeMs: Date.now(),
    uptimeSeconds: os.uptime(),
  }),
  "storage.listBlockDevices": async () => ({ devices: await listBlockDevices() }),
};
