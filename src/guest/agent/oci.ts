/**
 * The OCI runtime spec for a container, as runc expects it. The host sends only what the user
 * chose (program, environment, hostname...); the rest is fixed policy here: namespaces, the
 * usual /proc, /dev, /sys mounts, Docker's default capabilities, masked /proc paths.
 */

import type { Rlimit } from "../../agent/protocol/container-setup.js";
import { ociResources, type ContainerResources } from "../../agent/protocol/resources.js";

export interface ContainerSpecInput {
  containerId: string;
  rootfs: string;
  readonlyRootfs: boolean;
  hostname: string;
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  /** Files in the guest bind-mounted over /etc/hosts, /etc/hostname, /etc/resolv.conf. */
  etcFiles: { hosts: string; hostname: string; resolvConf?: string };
  /** Resource control: cgroup limits (memory, CPU, pids). */
  resources?: ContainerResources;
  /** runc gives the container its own pty (a foreground `runc run` without one hands it pipes). */
  terminal?: boolean;
  /** The process's rlimits instead of the default high RLIMIT_NOFILE. */
  rlimits?: Rlimit[];
  /**
   * OCI mounts asked for by the host: one with the destination of a default mount takes its
   * place (podman's own /etc/hosts, /dev/shm size...), the others follow the defaults.
   */
  extraMounts?: OciMount[];
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

const DEFAULT_CAPS = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

export const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export function withDefaultEnv(env: string[], hostname: string): string[] {
  const out = [...env];
  if (!out.some((e) => e.startsWith("PATH="))) out.unshift(DEFAULT_PATH);
  if (!out.some((e) => e.startsWith("HOSTNAME="))) out.push(`HOSTNAME=${hostname}`);
  if (!out.some((e) => e.startsWith("HOME="))) out.push("HOME=/root");
  return out;
}

/** A bind mount of a guest file or directory into the container. */
export function bind(source: string, destination: string, ro = false): OciMount {
  return { destination, type: "bind", source, options: ["rbind", ro ? "ro" : "rw", "nosuid", "nodev"] };
}

export function ociSpec(input: ContainerSpecInput): Record<string, unknown> {
  const mounts: OciMount[] = [
    { destination: "/proc", type: "proc", source: "proc" },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    {
      destination: "/sys/fs/cgroup",
      type: "cgroup",
      source: "cgroup",
      options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
    { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755"] },
    bind(input.etcFiles.hosts, "/etc/hosts"),
    bind(input.etcFiles.hostname, "/etc/hostname"),
  ];
  if (input.etcFiles.resolvConf) mounts.push(bind(input.etcFiles.resolvConf, "/etc/resolv.conf"));
  for (const extra of input.extraMounts ?? []) {
    const same = mounts.findIndex((m) => m.destination === extra.destination);
    if (same >= 0) mounts[same] = extra;
    else mounts.push(extra);
  }
  return {
    ociVersion: "1.0.2",
    process: {
      // runc's pty; runc copies it to cocoon-pty's, wrapped around runc, and follows its size (SIGWINCH)
      terminal: input.terminal ?? false,
      user: { uid: input.uid, gid: input.gid },
      args: input.args,
      env: withDefaultEnv(input.env, input.hostname),
      cwd: input.cwd,
      capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS },
      rlimits: input.rlimits ?? [{ type: "RLIMIT_NOFILE", hard: 1048576, soft: 1048576 }],
      noNewPrivileges: true,
    },
    root: { path: input.rootfs, readonly: input.readonlyRootfs },
    hostname: input.hostname,
    mounts,
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }],
      cgroupsPath: `/cocoon/${input.containerId}`,
      resources: { devices: [{ allow: false, access: "rwm" }], ...ociResources(input.resources) },
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}
