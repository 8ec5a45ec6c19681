import path from "node:path";
import { z } from "zod";
import { HypervisorError } from "../../errors.js";
import { ACRN_UUIDS, type AcrnUuid } from "./uuids.js";

/**
 * The `acrn-dm` command line. acrn-dm (the ACRN device model, a bhyve descendant) takes the
 * whole VM definition as arguments: `-s <slot>,<emulation>,<config>` per PCI device, the
 * kernel with `-k`/`-B`, and the VM name as its only positional argument. This module knows
 * that syntax and nothing about sandboxes.
 */

/** PCI slots on the one bus acrn-dm emulates (device numbers 0..31). */
export const ACRN_PCI_SLOTS = 32;
/** acrn-dm hard-wires GVT-g (graphics) to slot 2, so nothing else may take it. */
export const ACRN_GVTG_SLOT = 2;
/** How many placeholder virtio-blk devices a VM gets for later block "hotplug". */
export const ACRN_BLOCK_POOL_SIZE = 8;
/** The backing "file" acrn-dm understands as an empty placeholder drive. */
export const ACRN_PLACEHOLDER_DISK = "nodisk";
/** acrn-dm refuses a kernel command line longer than this (bytes). */
export const ACRN_BOOTARGS_MAX = 1023;
/** acrn-dm keeps VM names in a 128-byte buffer, terminator included. */
export const ACRN_VM_NAME_MAX = 127;
/** A unix socket path must fit sun_path (108 bytes with its terminator); acrn-dm truncates silently. */
export const UNIX_SOCKET_PATH_MAX = 107;

export type AcrnDevice =
  /** The PCI host bridge; must come first so it gets slot 0. */
  | { kind: "hostbridge" }
  /** The LPC bridge carrying the emulated UART com1, which acrn-dm wires to its stdio. */
  | { kind: "lpc" }
  /**
   * A virtio-console port backed by a unix socket that acrn-dm listens on. `console` makes it
   * the guest's console (hvc0); otherwise it is a named port (/dev/vport*, e.g. the agent).
   */
  | { kind: "console-port"; name: string; socketPath: string; console: boolean }
  /** A virtio-blk disk; `file` is a path or "nodisk" (a placeholder for blkrescan). */
  | { kind: "virtio-blk"; index: number; file: string; readOnly?: boolean }
  /** A virtio-net NIC on a host tap (or macvtap) interface. */
  | { kind: "virtio-net"; ifName: string; mac: string; model: "tap" | "macvtap" };

export interface AcrnDmSpec {
  /** The VM name acrn-dm registers (acrnctl addresses the VM by it). */
  name: string;
  uuid: AcrnUuid;
  /** Build ACPI tables (-A). */
  acpi: boolean;
  memoryMB: number;
  vcpus: number;
  /** In PCI order: slots are handed out in this order (skipping the GVT-g slot). */
  devices: AcrnDevice[];
  kernel: { path: string; cmdline: string };
}

export interface AcrnDmLaunch {
  argv: string[];
  /** The PCI slot of each device, in `devices` order. */
  slots: number[];
  /** virtio-blk index → PCI slot: what `acrnctl blkrescan` needs. */
  blockSlots: Map<number, number>;
}

const absolutePath = z
  .string()
  .min(1, "is empty")
  .refine((p) => path.isAbsolute(p), "must be an absolute path");

const socketPath = absolutePath
  .refine((p) => !/[,:]/.test(p), "cannot contain ',' or ':' (acrn-dm's socket backend splits on them)")
  .refine(
    (p) => Buffer.byteLength(p) <= UNIX_SOCKET_PATH_MAX,
    `is longer than ${UNIX_SOCKET_PATH_MAX} bytes, the unix socket path limit (use a shorter state root)`,
  );

const deviceSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("hostbridge") }),
  z.object({ kind: z.literal("lpc") }),
  z.object({
    kind: z.literal("console-port"),
    name: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, "port name must be 1-64 letters, digits, '.', '_' or '-'"),
    socketPath,
    console: z.boolean(),
  }),
  z.object({
    kind: z.literal("virtio-blk"),
    index: z.number().int().nonnegative(),
    file: z.union([
      z.literal(ACRN_PLACEHOLDER_DISK),
      // acrn-dm splits `-s` values on ',' so a path holding one would be cut in two.
      absolutePath.refine((p) => !p.includes(","), "cannot contain ',' (acrn-dm splits on it)"),
    ]),
    readOnly: z.boolean().optional(),
  }),
  z
    .object({
      kind: z.literal("virtio-net"),
      ifName: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{1,15}$/, "interface name must be 1-15 letters, digits, '_', '.' or '-'"),
      mac: z
        .string()
        .regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, "MAC address must look like aa:bb:cc:dd:ee:ff"),
      model: z.enum(["tap", "macvtap"]),
    })
    // acrn-dm only opens a tap whose name starts with "tap" or "vmnet"; any other name gives the
    // guest a NIC with no backend, silently. Refuse that here instead.
    .refine((d) => d.model !== "tap" || /^(tap|vmnet)/.test(d.ifName), {
      message: "acrn-dm only opens tap interfaces named tap* or vmnet*",
      path: ["ifName"],
    }),
]);

const specSchema = z.object({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "VM name must be letters, digits, '.', '_' or '-'")
    .max(ACRN_VM_NAME_MAX, `VM name is longer than ${ACRN_VM_NAME_MAX} characters`),
  uuid: z.enum(ACRN_UUIDS),
  acpi: z.boolean(),
  memoryMB: z.number().int().positive(),
  vcpus: z.number().int().positive(),
  devices: z.array(deviceSchema),
  kernel: z.object({
    path: absolutePath,
    cmdline: z
      .string()
      .refine(
        (c) => Buffer.byteLength(c) <= ACRN_BOOTARGS_MAX,
        `kernel command line is longer than ${ACRN_BOOTARGS_MAX} bytes`,
      ),
  }),
});

function invalid(message: string, details: Record<string, unknown>): HypervisorError {
  return new HypervisorError("ERR_INVALID_CONFIG", message, { details });
}

function checkSpec(spec: AcrnDmSpec): void {
  const parsed = specSchema.safeParse(spec);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.join(".");
    throw invalid(`invalid acrn-dm configuration: ${where ? `${where} ` : ""}${issue.message}`, {
      field: where,
    });
  }
  const count = (kind: AcrnDevice["kind"]) => spec.devices.filter((d) => d.kind === kind).length;
  if (count("hostbridge") > 1) throw invalid("an ACRN VM has one PCI host bridge", { field: "devices" });
  if (count("lpc") > 1) throw invalid("an ACRN VM has one LPC bridge", { field: "devices" });
  if (spec.devices.filter((d) => d.kind === "console-port" && d.console).length > 1) {
    throw invalid("only one virtio-console port can be the guest console", { field: "devices" });
  }
  const indexes = spec.devices.flatMap((d) => (d.kind === "virtio-blk" ? [d.index] : []));
  const dup = indexes.find((i, n) => indexes.indexOf(i) !== n);
  if (dup !== undefined)
    throw invalid(`two virtio-blk devices use index ${dup}`, { field: "devices", index: dup });
  const sockets = spec.devices.flatMap((d) => (d.kind === "console-port" ? [d.socketPath] : []));
  const dupSocket = sockets.find((s, n) => sockets.indexOf(s) !== n);
  if (dupSocket !== undefined)
    throw invalid(`two console ports use socket ${dupSocket}`, { field: "devices" });
}

/** The slots devices get, in order: 0, 1, 3, 4, ... (slot 2 belongs to GVT-g). */
export function assignSlots(deviceCount: number): number[] {
  const slots: number[] = [];
  for (let slot = 0; slots.length < deviceCount; slot++) {
    if (slot === ACRN_GVTG_SLOT) continue;
    if (slot >= ACRN_PCI_SLOTS) {
      throw new HypervisorError(
        "ERR_RESOURCE_EXHAUSTED",
        `the VM needs ${deviceCount} PCI devices but acrn-dm has only ${ACRN_PCI_SLOTS - 1} usable slots`,
        { details: { devices: deviceCount } },
      );
    }
    slots.push(slot);
  }
  return slots;
}

function deviceArgs(d: AcrnDevice, slot: number): string[] {
  switch (d.kind) {
    case "hostbridge":
      return ["-s", `${slot}:0,hostbridge`];
    case "lpc":
      // The UART on the LPC bus goes to acrn-dm's stdout: early boot output lands in its log.
      return ["-s", `${slot}:0,lpc`, "-l", "com1,stdio"];
    case "console-port":
      return ["-s", `${slot},virtio-console,${d.console ? "@" : ""}socket:${d.name}=${d.socketPath}`];
    case "virtio-blk":
      return [
        "-s",
        `${slot},virtio-blk,${d.file}${d.readOnly && d.file !== ACRN_PLACEHOLDER_DISK ? ",ro" : ""}`,
      ];
    case "virtio-net":
      // The ACRN 1.x/2.x syntax this module targets: the interface name first (acrn-dm opens it
      // only if it starts with "tap" or "vmnet"), then options. ACRN 3.0 changed it to
      // `tap=<name>[,mac=…]`, which an older acrn-dm would take as a tap literally named
      // "tap=<name>"; and 3.0 reads `<name>,mac=…` as no backend at all. Not interchangeable.
      return ["-s", `${slot},virtio-net,${d.ifName},mac=${d.mac.toLowerCase()}`];
  }
}

/**
 * Builds the acrn-dm argv (without the program itself). Options first, in the order acrn-dm's
 * own launch scripts use: UUID, ACPI, memory, vCPUs, PCI devices, kernel; the VM name last.
 */
export function buildAcrnDmArgv(spec: AcrnDmSpec): AcrnDmLaunch {
  checkSpec(spec);
  const slots = assignSlots(spec.devices.length);
  const argv: string[] = ["-U", spec.uuid];
  if (spec.acpi) argv.push("-A");
  argv.push("-m", `${spec.memoryMB}M`);
  // One vCPU is acrn-dm's default, and later ACRN releases dropped -c (the scenario decides
  // the CPUs), so the flag is only passed when more than one is asked for.
  if (spec.vcpus > 1) argv.push("-c", String(spec.vcpus));
  const blockSlots = new Map<number, number>();
  spec.devices.forEach((d, i) => {
    const slot = slots[i]!;
    argv.push(...deviceArgs(d, slot));
    if (d.kind === "virtio-blk") blockSlots.set(d.index, slot);
  });
  argv.push("-k", spec.kernel.path);
  if (spec.kernel.cmdline !== "") argv.push("-B", spec.kernel.cmdline);
  argv.push(spec.name);
  return { argv, slots, blockSlots };
}
