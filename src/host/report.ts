import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import type { CocoonConfig } from "../config/schema.js";
import { messageOf } from "../errors.js";
import { cgroupControllersCheck } from "./cgroups/check.js";
import { chooseAccelerator, type AccelProbePaths, DEFAULT_ACCEL_PATHS } from "./accel.js";
import { hostMemoryKb, runningOnVmm } from "./proc.js";
import { runCommand } from "./process.js";
import { which } from "./which.js";

export type CheckStatus = "ok" | "warn" | "fail" | "info";

export interface HostCheck {
  /** Stable identifier, e.g. "qemu.binary". */
  id: string;
  title: string;
  status: CheckStatus;
  detail: string;
}

export interface HostReportOptions {
  config: CocoonConfig;
  accelPaths?: AccelProbePaths;
  /** Extra checks (e.g. guest assets) supplied by higher layers. */
  extra?: () => Promise<HostCheck[]>;
}

async function fileStatus(p: string): Promise<"missing" | "not-executable" | "ok"> {
  try {
    await stat(p);
  } catch {
    return "missing";
  }
  try {
    await access(p, constants.X_OK);
    return "ok";
  } catch {
    return "not-executable";
  }
}

async function firstLine(file: string, args: string[]): Promise<string | undefined> {
  try {
    const r = await runCommand(file, args, { timeoutMs: 10_000 });
    if (r.code !== 0) return undefined;
    return (r.stdout || r.stderr)
      .split("\n")
      .find((l) => l.trim() !== "")
      ?.trim();
  } catch {
    return undefined;
  }
}

async function binaryCheck(
  id: string,
  title: string,
  file: string,
  required: boolean,
  versionArgs: string[],
): Promise<HostCheck> {
  if (file === "") return { id, title, status: "info", detail: "not configured" };
  const st = await fileStatus(file);
  if (st !== "ok") {
    return {
      id,
      title,
      status: required ? "fail" : "info",
      detail: `${file}: ${st === "missing" ? "not installed" : "not executable"}`,
    };
  }
  const version = versionArgs.length ? await firstLine(file, versionArgs) : undefined;
  return { id, title, status: "ok", detail: version ? `${file} (${version})` : file };
}

/** Collects the host facts `cocoon check` prints. Never throws: a failed probe is a failed check. */
export async function hostReport(options: HostReportOptions): Promise<HostCheck[]> {
  const { config } = options;
  const checks: HostCheck[] = [];
  const q = config.hypervisor.qemu;
  const defaultHv = config.runtime.hypervisor;

  const accel = await chooseAccelerator(q.accelerator, options.accelPaths ?? DEFAULT_ACCEL_PATHS);
  checks.push({
    id: "accelerator",
    title: "QEMU accelerator",
    status: accel.warning ? "warn" : "ok",
    detail: `${accel.accelerator} (requested ${accel.requested}): ${accel.reason}${accel.warning ? `; warning: ${accel.warning}` : ""}`,
  });
  checks.push({
    id: "kvm",
    title: "KVM",
    status: accel.kvmUsable && !accel.pvmHost ? "ok" : "info",
    detail: `${accel.kvmPresent ? "present" : "absent"}, ${accel.kvmUsable ? "usable" : "not usable"}${accel.pvmHost ? ", PVM host" : ""}`,
  });
  try {
    const vmm = await runningOnVmm();
    checks.push({
      id: "nested",
      title: "Running inside a VM",
      status: "info",
      detail: vmm ? "yes (hypervisor CPU flag)" : "no",
    });
  } catch (err) {
    checks.push({ id: "nested", title: "Running inside a VM", status: "warn", detail: messageOf(err) });
  }
  try {
    const kb = await hostMemoryKb();
    checks.push({
      id: "memory",
      title: "Host memory",
      status: "info",
      detail: `${Math.round(kb / 1024)} MiB`,
    });
  } catch (err) {
    checks.push({ id: "memory", title: "Host memory", status: "warn", detail: messageOf(err) });
  }

  checks.push(await binaryCheck("qemu.binary", "QEMU", q.path, defaultHv === "qemu", ["--version"]));
  if (q.shared_fs === "virtio-fs") {
    checks.push(
      await binaryCheck("qemu.virtiofsd", "virtiofsd", q.virtio_fs_daemon, defaultHv === "qemu", [
        "--version",
      ]),
    );
  }
  const fc = config.hypervisor.firecracker;
  checks.push(
    await binaryCheck("firecracker.binary", "Firecracker", fc.path, defaultHv === "firecracker", [
      "--version",
    ]),
  );
  checks.push(
    await binaryCheck(
      "firecracker.jailer",
      "Firecracker jailer",
      fc.jailer_path,
      defaultHv === "firecracker" && fc.jailer_path !== "",
      ["--version"],
    ),
  );
  const acrn = config.hypervisor.acrn;
  checks.push(await binaryCheck("acrn.dm", "acrn-dm", acrn.path, defaultHv === "acrn", []));
  checks.push(await binaryCheck("acrn.ctl", "acrnctl", acrn.ctlpath, defaultHv === "acrn", []));

  checks.push(await cgroupCheck());
  checks.push(await cgroupControllersCheck());
  const ip = await which("ip");
  checks.push({
    id: "netns",
    title: "Network namespaces",
    status: ip ? "ok" : "warn",
    detail: ip ? `iproute2 at ${ip}` : "the ip command (iproute2) is not installed",
  });
  const tun = await fileStatus("/dev/net/tun");
  checks.push({
    id: "tun",
    title: "/dev/net/tun",
    status: tun === "missing" ? "warn" : "ok",
    detail: tun === "missing" ? "missing: tap networking is unavailable" : "present",
  });
  const vsock = await fileStatus("/dev/vhost-vsock");
  checks.push({
    id: "vhost-vsock",
    title: "/dev/vhost-vsock",
    status: "info",
    detail: vsock === "missing" ? "absent: QEMU's agent channel uses virtio-serial" : "present",
  });
  if (options.extra) checks.push(...(await options.extra()));
  return checks;
}

/** Which cgroup hierarchies are mounted: v2 unified, v1 per-controller, or both (hybrid). */
export function describeCgroupMounts(mounts: string): { v1: string[]; v2: string[] } {
  const v1: string[] = [];
  const v2: string[] = [];
  for (const line of mounts.split("\n")) {
    const [, mountPoint, fsType, options] = line.split(" ");
    if (fsType === "cgroup2" && mountPoint) v2.push(mountPoint);
    if (fsType === "cgroup" && options) {
      v1.push(
        ...options
          .split(",")
          .filter((o) => !["rw", "ro", "relatime", "nosuid", "nodev", "noexec"].includes(o)),
      );
    }
  }
  return { v1, v2 };
}

async function cgroupCheck(): Promise<HostCheck> {
  try {
    const { v1, v2 } = describeCgroupMounts(await readFile("/proc/self/mounts", "utf8"));
    if (v1.length === 0 && v2.length === 0) {
      return { id: "cgroups", title: "cgroups", status: "warn", detail: "no cgroup hierarchy is mounted" };
    }
    const parts = [];
    if (v2.length) parts.push(`v2 at ${v2.join(", ")}`);
    if (v1.length) parts.push(`v1 controllers: ${v1.join(", ")}`);
    return { id: "cgroups", title: "cgroups", status: "ok", detail: parts.join("; ") };
  } catch (err) {
    return { id: "cgroups", title: "cgroups", status: "warn", detail: messageOf(err) };
  }
}
