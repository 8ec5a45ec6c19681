/**
 * QEMU's command line, built from a structured description. Nothing here knows about
 * sandboxes: it maps a VM description to argv (no shell ever parses it). Devices use the
 * virtio-mmio transport on `microvm` and PCI on `q35`/`pc`.
 */

export type QemuMachineType = "microvm" | "q35" | "pc";
export const QEMU_MACHINE_TYPES: readonly QemuMachineType[] = ["microvm", "q35", "pc"];

export interface QemuDrive {
  id: string;
  file: string;
  format: "raw" | "qcow2";
  readOnly: boolean;
  /** `virtio-blk` as its own device; `scsi` on the VM's virtio-scsi controller. */
  bus: "virtio-blk" | "scsi";
  /** SCSI LUN (bus "scsi"). */
  lun?: number;
  cacheDirect?: boolean;
  cacheNoFlush?: boolean;
  serial?: string;
}

export interface QemuSerialPort {
  id: string;
  /** The name the guest sees in /sys/class/virtio-ports/<port>/name. */
  name: string;
  socketPath: string;
}

export interface Qemu9pShare {
  id: string;
  path: string;
  tag: string;
  readOnly?: boolean;
}

export interface QemuVirtioFsShare {
  id: string;
  /** virtiofsd's vhost-user socket. */
  socketPath: string;
  tag: string;
  queueSize?: number;
}

/** A NIC on a tap QEMU opens by name (it runs in the tap's network namespace). */
export interface QemuNic {
  id: string;
  ifname: string;
  mac: string;
  vhost: boolean;
}

export interface QemuVmSpec {
  name: string;
  uuid?: string;
  machine: {
    type: QemuMachineType;
    accel: "kvm" | "tcg";
    /** Extra machine properties (the configuration's machine_accelerators), e.g. "nosmm". */
    extraOptions?: string[];
  };
  cpu: { model: string };
  smp: { cpus: number; maxCpus: number };
  memory: {
    sizeMiB: number;
    /** Hotplug slots and ceiling; only machines with memory hotplug (q35, pc) use them. */
    slots?: number;
    maxMiB?: number;
    /** Back guest RAM with a shared memfd (required by vhost-user devices such as virtio-fs). */
    shared?: boolean;
    prealloc?: boolean;
    hugePages?: boolean;
    /**
     * VM templates and snapshots: guest RAM in a file (`share` true for a template, false
     * for a clone's copy-on-write mapping), or in plain RAM named like that backend (a
     * snapshot restored from a clone).
     */
    backend?: { kind: "file"; path: string; share: boolean } | { kind: "ram" };
  };
  /** `-incoming defer`: wait for QMP `migrate-incoming` (templates and snapshots). */
  incomingDefer?: boolean;
  kernel: { path: string; initrd?: string; append: string };
  drives: QemuDrive[];
  /** A virtio-scsi controller for SCSI drives and SCSI hotplug. */
  scsiController?: { id: string };
  serialPorts: QemuSerialPort[];
  console: { socketPath: string; logFile: string };
  qmpSocket: string;
  pidFile: string;
  shares9p?: Qemu9pShare[];
  virtiofs?: QemuVirtioFsShare[];
  rng?: { source: string };
  nics?: QemuNic[];
  /** PCIe root ports to hot-plug PCI devices into (q35). */
  pcieRootPorts?: number;
  /** Guest reboot makes QEMU exit (a guest that reboots is a guest that crashed). */
  noReboot?: boolean;
  extraArgs?: string[];
}

/** `key=value` options joined with commas; QEMU escapes a literal comma by doubling it. */
function opts(head: string, props: Record<string, string | number | boolean | undefined>): string {
  const parts = [head];
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined) continue;
    const value = typeof v === "boolean" ? (v ? "on" : "off") : String(v);
    parts.push(`${k}=${value.replaceAll(",", ",,")}`);
  }
  return parts.join(",");
}

function escapeValue(v: string): string {
  return v.replaceAll(",", ",,");
}

/** The transport-specific device name: virtio-X-device on microvm, virtio-X-pci elsewhere. */
export function virtioDevice(machine: QemuMachineType, kind: string): string {
  return machine === "microvm" ? `virtio-${kind}-device` : `virtio-${kind}-pci`;
}

export function buildQemuArgs(spec: QemuVmSpec): string[] {
  const m = spec.machine.type;
  const args: string[] = [];
  args.push("-name", `${escapeValue(spec.name)},debug-threads=on`);
  if (spec.uuid) args.push("-uuid", spec.uuid);

  const machineProps: Record<string, string | boolean | undefined> =
    m === "microvm" ? { "x-option-roms": false, rtc: true, "isa-serial": true, acpi: true } : {};
  if (spec.memory.shared || spec.memory.backend) machineProps["memory-backend"] = "mem";
  const machineArg = [opts(m, machineProps), ...(spec.machine.extraOptions ?? [])].join(",");
  args.push("-machine", machineArg, "-accel", spec.machine.accel, "-cpu", spec.cpu.model);

  const maxCpus = m === "microvm" ? spec.smp.cpus : Math.max(spec.smp.cpus, spec.smp.maxCpus);
  args.push("-smp", `cpus=${spec.smp.cpus},maxcpus=${maxCpus}`);

  const hotplugMemory =
    m !== "microvm" && spec.memory.slots && spec.memory.maxMiB && spec.memory.maxMiB > spec.memory.sizeMiB;
  args.push(
    "-m",
    hotplugMemory
      ? `${spec.memory.sizeMiB}M,slots=${spec.memory.slots},maxmem=${spec.memory.maxMiB}M`
      : `${spec.memory.sizeMiB}M`,
  );
  if (spec.memory.backend) {
    // VM templates and snapshots (src/hypervisor/qemu/migration.ts)
    const b = spec.memory.backend;
    args.push(
      "-object",
      b.kind === "file"
        ? opts("memory-backend-file", {
            id: "mem",
            size: `${spec.memory.sizeMiB}M`,
            "mem-path": b.path,
            share: b.share,
          })
        : opts("memory-backend-ram", { id: "mem", size: `${spec.memory.sizeMiB}M` }),
    );
  } else if (spec.memory.shared) {
    args.push(
      "-object",
      opts("memory-backend-memfd", {
        id: "mem",
        size: `${spec.memory.sizeMiB}M`,
        share: true,
        prealloc: spec.memory.prealloc ? true : undefined,
        hugetlb: spec.memory.hugePages ? true : undefined,
      }),
    );
  } else if (spec.memory.prealloc) {
    args.push("-overcommit", "mem-lock=off", "-mem-prealloc");
  }

  args.push("-kernel", spec.kernel.path);
  if (spec.kernel.initrd) args.push("-initrd", spec.kernel.initrd);
  args.push("-append", spec.kernel.append);

  args.push("-nodefaults", "-no-user-config", "-nographic");
  if (spec.noReboot ?? true) args.push("-no-reboot");
  if (m === "microvm") {
    // vhost-user (virtio-fs) refuses legacy virtio-mmio devices.
    args.push("-global", "virtio-mmio.force-legacy=false");
  }

  for (let i = 0; i < (spec.pcieRootPorts ?? 0); i++) {
    args.push(
      "-device",
      opts("pcie-root-port", { id: `rp${i}`, bus: "pcie.0", chassis: i + 1, slot: i + 1 }),
    );
  }

  args.push(
    "-chardev",
    opts("socket", { id: "qmp", path: spec.qmpSocket, server: true, wait: false }),
    "-mon",
    "chardev=qmp,mode=control",
  );
  args.push(
    "-chardev",
    opts("socket", {
      id: "console",
      path: spec.console.socketPath,
      server: true,
      wait: false,
      logfile: spec.console.logFile,
      logappend: true,
    }),
    "-serial",
    "chardev:console",
  );

  if (spec.scsiController) {
    args.push("-device", opts(virtioDevice(m, "scsi"), { id: spec.scsiController.id }));
  }
  for (const d of spec.drives) {
    args.push(
      "-drive",
      opts("if=none", {
        id: d.id,
        file: d.file,
        format: d.format,
        readonly: d.readOnly ? true : undefined,
        "cache.direct": d.cacheDirect,
        "cache.no-flush": d.cacheNoFlush,
      }),
    );
    if (d.bus === "scsi") {
      if (!spec.scsiController) throw new Error(`drive ${d.id} is on SCSI but the VM has no SCSI controller`);
      args.push(
        "-device",
        opts("scsi-hd", {
          id: `dev-${d.id}`,
          drive: d.id,
          bus: `${spec.scsiController.id}.0`,
          channel: 0,
          "scsi-id": 0,
          lun: d.lun ?? 0,
          serial: d.serial,
        }),
      );
    } else {
      args.push(
        "-device",
        opts(virtioDevice(m, "blk"), { id: `dev-${d.id}`, drive: d.id, serial: d.serial }),
      );
    }
  }

  if (spec.serialPorts.length) {
    args.push("-device", opts(virtioDevice(m, "serial"), { id: "vserial0" }));
    for (const p of spec.serialPorts) {
      args.push(
        "-chardev",
        opts("socket", { id: p.id, path: p.socketPath, server: true, wait: false }),
        "-device",
        opts("virtserialport", { chardev: p.id, name: p.name, bus: "vserial0.0" }),
      );
    }
  }

  for (const s of spec.shares9p ?? []) {
    args.push(
      "-fsdev",
      opts("local", {
        id: s.id,
        path: s.path,
        security_model: "none",
        readonly: s.readOnly ? true : undefined,
      }),
      "-device",
      opts(virtioDevice(m, "9p"), { fsdev: s.id, mount_tag: s.tag }),
    );
  }
  for (const v of spec.virtiofs ?? []) {
    const dev = m === "microvm" ? "vhost-user-fs-device" : "vhost-user-fs-pci";
    args.push(
      "-chardev",
      opts("socket", { id: v.id, path: v.socketPath }),
      "-device",
      opts(dev, { chardev: v.id, tag: v.tag, "queue-size": v.queueSize }),
    );
  }
  if (spec.rng) {
    args.push(
      "-object",
      opts("rng-random", { id: "rng0", filename: spec.rng.source }),
      "-device",
      opts(virtioDevice(m, "rng"), { rng: "rng0" }),
    );
  }
  for (const n of spec.nics ?? []) {
    args.push(
      "-netdev",
      opts("tap", { id: n.id, ifname: n.ifname, script: "no", downscript: "no", vhost: n.vhost }),
      "-device",
      opts(virtioDevice(m, "net"), { id: `dev-${n.id}`, netdev: n.id, mac: n.mac }),
    );
  }
  args.push("-pidfile", spec.pidFile);
  if (spec.incomingDefer) args.push("-incoming", "defer");
  args.push(...(spec.extraArgs ?? []));
  return args;
}
