import { z } from "zod";
import { containerMountSchema, rlimitSchema } from "./container-setup.js";
import { containerResourcesSchema, lazySchema } from "./resources.js";

/**
 * The agent's methods: name → params and result schemas. Both sides validate with these, so
 * a malformed request is refused by the agent and a malformed answer by the host. They mirror
 * the Kata agent RPCs the runtime needs (docs/agent-protocol.md has the mapping).
 */

const empty = lazySchema(() => z.object({}).strict());
const id = lazySchema(() =>
  z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, "ids are 1-128 letters, digits, '_', '.' or '-'"),
);
const streamId = lazySchema(() => z.number().int().positive());
const signalName = lazySchema(() => z.string().regex(/^SIG[A-Z0-9]+$/, "a signal name such as SIGTERM"));

export const blockDeviceSchema = lazySchema(() =>
  z.object({
    /** Kernel name, e.g. "vda" or "sdb". */
    name: z.string(),
    sizeBytes: z.number(),
    readOnly: z.boolean(),
    /** "host:channel:target:lun" for SCSI disks. */
    scsiAddress: z.string().optional(),
    serial: z.string().optional(),
  }),
);
export type GuestBlockDevice = z.infer<ReturnType<typeof blockDeviceSchema>>;

/** Something the agent mounts: a shared directory or a block device. */
export const storageSchema = lazySchema(() =>
  z.object({
    /** virtio-fs and 9p: `source` is the mount tag; scsi: the SCSI address; blk: the device path. */
    driver: z.enum(["virtio-fs", "9p", "scsi", "blk", "tmpfs"]),
    source: z.string(),
    fstype: z.string(),
    options: z.array(z.string()).default([]),
    mountPoint: z.string().startsWith("/run/cocoon/"),
    readOnly: z.boolean().default(false),
  }),
);
export type Storage = z.input<ReturnType<typeof storageSchema>>;

/** Where a process's standard streams go: stream ids on the requesting session. */
export const stdioSchema = lazySchema(() =>
  z.object({
    stdin: streamId().optional(),
    stdout: streamId().optional(),
    stderr: streamId().optional(),
  }),
);

export const processSpecSchema = lazySchema(() =>
  z.object({
    args: z.array(z.string()).min(1, "a process needs at least a program name"),
    env: z.array(z.string().regex(/^[^=]+=/, "environment entries are KEY=VALUE")).default([]),
    cwd: z.string().startsWith("/").default("/"),
    terminal: z.boolean().default(false),
    /** Initial window size when `terminal`. */
    rows: z.number().int().positive().max(65535).default(24),
    cols: z.number().int().positive().max(65535).default(80),
    user: z
      .object({ uid: z.number().int().nonnegative(), gid: z.number().int().nonnegative() })
      .default({ uid: 0, gid: 0 }),
  }),
);
export type ProcessSpec = z.input<ReturnType<typeof processSpecSchema>>;

export const exitSchema = lazySchema(() =>
  z.object({
    exitCode: z.number().int(),
    /** Set when a signal ended the process (exitCode is then 128 + its number). */
    signal: z.string().optional(),
    /** Resource control: the guest kernel's OOM killer ended it (its memory limit was hit). */
    oomKilled: z.boolean().optional(),
  }),
);
export type ProcessExit = z.infer<ReturnType<typeof exitSchema>>;

export const processInfoSchema = lazySchema(() =>
  z.object({
    execId: z.string(),
    containerId: z.string().optional(),
    pid: z.number(),
    args: z.array(z.string()),
    terminal: z.boolean(),
    state: z.enum(["running", "exited"]),
    exit: exitSchema().optional(),
    startedAt: z.string(),
  }),
);
export type GuestProcessInfo = z.infer<ReturnType<typeof processInfoSchema>>;

export const containerInfoSchema = lazySchema(() =>
  z.object({
    containerId: z.string(),
    state: z.enum(["created", "running", "paused", "stopped"]),
    pid: z.number().optional(),
    hostname: z.string(),
    rootfs: z.string(),
  }),
);
export type GuestContainerInfo = z.infer<ReturnType<typeof containerInfoSchema>>;

// Networking (src/guest/agent/network.ts): Kata's UpdateInterface / UpdateRoutes / List*.
const macAddress = lazySchema(() =>
  z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, "a MAC address such as 02:42:ac:11:00:02"),
);
const ifName = lazySchema(() =>
  z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, "an interface name: 1-15 letters, digits, '_', '.' or '-'"),
);
/** "10.88.0.2/16" or "fd00::2/64". */
const ipWithPrefix = lazySchema(() =>
  z.string().regex(/^[0-9a-fA-F.:]+\/\d{1,3}$/, "an address with its prefix length, e.g. 10.0.0.2/24"),
);

export const guestInterfaceSchema = lazySchema(() =>
  z.object({
    name: z.string(),
    mac: z.string(),
    mtu: z.number(),
    up: z.boolean(),
    addresses: z.array(z.string()),
  }),
);
export type GuestInterface = z.infer<ReturnType<typeof guestInterfaceSchema>>;

export const guestRouteSchema = lazySchema(() =>
  z.object({
    /** "default" or a CIDR. */
    dest: z.string().regex(/^(default|[0-9a-fA-F.:]+\/\d{1,3})$/, "default or a CIDR"),
    gateway: z
      .string()
      .regex(/^[0-9a-fA-F.:]+$/)
      .optional(),
    device: ifName().optional(),
    scope: z.enum(["link", "global", "host"]).optional(),
    source: z
      .string()
      .regex(/^[0-9a-fA-F.:]+$/)
      .optional(),
  }),
);
export type GuestRoute = z.infer<ReturnType<typeof guestRouteSchema>>;

export const hostEntrySchema = lazySchema(() =>
  z.object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/, "a host name"),
    ip: z.string().regex(/^[0-9a-fA-F.:]+$/, "an IP address"),
  }),
);
export type HostEntry = z.infer<ReturnType<typeof hostEntrySchema>>;

/** A method's params and result schemas. */
export interface MethodSpec<P extends z.ZodType, R extends z.ZodType> {
  readonly params: P;
  readonly result: R;
}

/**
 * A method's schemas, built the first time either is used instead of when this module loads
 * (see lazySchema for why): a request needs only its own method's.
 */
function lazyMethod<P extends z.ZodType, R extends z.ZodType>(
  build: () => MethodSpec<P, R>,
): MethodSpec<P, R> {
  let built: MethodSpec<P, R> | undefined;
  return {
    get params() {
      return (built ??= build()).params;
    },
    get result() {
      return (built ??= build()).result;
    },
  };
}

export const METHODS = {
  /** Liveness. */
  "health.check": lazyMethod(() => ({
    params: empty(),
    result: z.object({ status: z.enum(["SERVING", "NOT_SERVING"]) }),
  })),
  /** Agent, protocol, kernel and Node versions. */
  "agent.version": lazyMethod(() => ({
    params: empty(),
    result: z.object({
      agentVersion: z.string(),
      protocol: z.number(),
      kernel: z.string(),
      node: z.string(),
    }),
  })),
  /** What the guest offers (Kata's GetGuestDetails). */
  "guest.details": lazyMethod(() => ({
    params: empty(),
    result: z.object({
      agentVersion: z.string(),
      kernel: z.string(),
      cpus: z.number(),
      memoryBytes: z.number(),
      memBlockSizeBytes: z.number(),
      storageDrivers: z.array(z.string()),
      supportsSeccomp: z.boolean(),
      hostname: z.string(),
    }),
  })),
  /** The guest's clocks: monotonic stops while the VM is paused. */
  "guest.clock": lazyMethod(() => ({
    params: empty(),
    result: z.object({ monotonicNs: z.string(), realtimeMs: z.number(), uptimeSeconds: z.number() }),
  })),
  /** Sets the guest's wall clock (after a resume or a restore). */
  "guest.setTime": lazyMethod(() => ({
    params: z.object({ unixMs: z.number().int().positive() }).strict(),
    result: z.object({ realtimeMs: z.number() }),
  })),
  /** Mixes host randomness into the guest pool (after cloning a VM). */
  "guest.reseedRandom": lazyMethod(() => ({
    params: z.object({ data: z.string().base64() }).strict(),
    result: z.object({ bytes: z.number() }),
  })),
  /**
   * guest.reseedRandom and guest.setTime in one request and (with cocoon-guestctl) one helper
   * process: what a clone or a restored snapshot gets before anything else runs in it.
   */
  "guest.freshen": lazyMethod(() => ({
    params: z.object({ data: z.string().base64(), unixMs: z.number().int().positive() }).strict(),
    result: z.object({ bytes: z.number(), realtimeMs: z.number() }),
  })),
  /** Block devices the guest kernel sees (for hotplug checks). */
  "storage.listBlockDevices": lazyMethod(() => ({
    params: empty(),
    result: z.object({ devices: z.array(blockDeviceSchema()) }),
  })),
  /** Initialises the sandbox this agent serves (Kata's CreateSandbox). */
  "sandbox.create": lazyMethod(() => ({
    params: z
      .object({
        sandboxId: id(),
        hostname: z.string().min(1).max(64),
        dns: z.array(z.string()).default([]),
        dnsSearch: z.array(z.string()).default([]),
        storages: z.array(storageSchema()).default([]),
      })
      .strict(),
    result: z.object({ mounted: z.array(z.string()) }),
  })),
  /** Stops every process and container, unmounts storages (Kata's DestroySandbox). */
  "sandbox.destroy": lazyMethod(() => ({ params: empty(), result: z.object({ killed: z.number() }) })),
  /** Lays out an OCI bundle for a container on a mounted rootfs; nothing runs yet. */
  "container.create": lazyMethod(() => ({
    params: z
      .object({
        containerId: id(),
        /** The storage holding the container's root, mounted if not yet. */
        rootfs: storageSchema(),
        /** The rootfs inside the storage (e.g. "rootfs" for a bundle layout), "" for its top. */
        rootfsSubpath: z.string().default(""),
        hostname: z.string().min(1).max(64),
        process: processSpecSchema(),
        /** Copy-on-write over the rootfs (writes stay in the guest); false writes through. */
        overlay: z.boolean().default(true),
        readonlyRootfs: z.boolean().default(false),
        /** Resource control: the container's cgroup limits in the guest. */
        resources: containerResourcesSchema().optional(),
        /** The process's rlimits; absent: the agent's default (a high RLIMIT_NOFILE). */
        rlimits: z.array(rlimitSchema()).optional(),
        /** Mounts beyond the defaults (an OCI runtime's config.json, container-setup.ts). */
        mounts: z.array(containerMountSchema()).max(64).default([]),
      })
      .strict(),
    result: containerInfoSchema(),
  })),
  /** Starts the container's init process with the given stdio. */
  "container.start": lazyMethod(() => ({
    params: z
      .object({
        containerId: id(),
        stdio: stdioSchema().default({}),
        /**
         * The terminal's size when the init starts (a terminal container): the attaching client's
         * window, which may differ from the size known at create (a console socket's receiver
         * sets it between create and start).
         */
        rows: z.number().int().positive().max(65535).optional(),
        cols: z.number().int().positive().max(65535).optional(),
      })
      .strict(),
    result: z.object({ pid: z.number() }),
  })),
  /** Kills what is left of a container and removes it. */
  "container.remove": lazyMethod(() => ({
    params: z.object({ containerId: id(), timeoutSeconds: z.number().nonnegative().default(10) }).strict(),
    result: empty(),
  })),
  "container.pause": lazyMethod(() => ({
    params: z.object({ containerId: id() }).strict(),
    result: empty(),
  })),
  "container.resume": lazyMethod(() => ({
    params: z.object({ containerId: id() }).strict(),
    result: empty(),
  })),
  "container.list": lazyMethod(() => ({
    params: empty(),
    result: z.object({ containers: z.array(containerInfoSchema()) }),
  })),
  /** cgroup statistics of a container. */
  "container.stats": lazyMethod(() => ({
    params: z.object({ containerId: id() }).strict(),
    result: z.object({
      cpuUsageUsec: z.number(),
      memoryBytes: z.number(),
      memoryLimitBytes: z.number().optional(),
      pids: z.number(),
    }),
  })),
  /** Starts a process: in a container when `containerId` is set, else directly in the guest. */
  "process.start": lazyMethod(() => ({
    params: z
      .object({
        execId: id(),
        containerId: id().optional(),
        process: processSpecSchema(),
        stdio: stdioSchema().default({}),
      })
      .strict(),
    result: z.object({ pid: z.number() }),
  })),
  /** Binds a running process's stdio to streams of this session (a later cocoon process). */
  "process.attach": lazyMethod(() => ({
    params: z.object({ execId: id(), stdio: stdioSchema() }).strict(),
    result: empty(),
  })),
  /** Blocks until the process exits (Kata's WaitProcess). */
  "process.wait": lazyMethod(() => ({ params: z.object({ execId: id() }).strict(), result: exitSchema() })),
  /** Signals one process, or with `all` every process of a container. */
  "process.signal": lazyMethod(() => ({
    params: z
      .object({
        execId: id().optional(),
        containerId: id().optional(),
        signal: signalName(),
        all: z.boolean().default(false),
      })
      .strict(),
    result: empty(),
  })),
  "process.resize": lazyMethod(() => ({
    params: z
      .object({
        execId: id(),
        rows: z.number().int().positive().max(65535),
        cols: z.number().int().positive().max(65535),
      })
      .strict(),
    result: empty(),
  })),
  "process.closeStdin": lazyMethod(() => ({ params: z.object({ execId: id() }).strict(), result: empty() })),
  "process.list": lazyMethod(() => ({
    params: empty(),
    result: z.object({ processes: z.array(processInfoSchema()) }),
  })),
  /** Writes a file from a stream (Kata's CopyFile); into a container's root when `containerId`. */
  "file.write": lazyMethod(() => ({
    params: z
      .object({
        path: z.string().startsWith("/"),
        containerId: id().optional(),
        stream: streamId(),
        mode: z.number().int().min(0).max(0o7777).default(0o644),
        uid: z.number().int().nonnegative().default(0),
        gid: z.number().int().nonnegative().default(0),
      })
      .strict(),
    result: z.object({ bytes: z.number() }),
  })),
  /** Sends a file's content on a stream. */
  "file.read": lazyMethod(() => ({
    params: z
      .object({ path: z.string().startsWith("/"), containerId: id().optional(), stream: streamId() })
      .strict(),
    result: z.object({ bytes: z.number(), mode: z.number() }),
  })),
  /** Configures the NIC with this MAC: name, addresses (replacing its old ones), MTU, up. */
  "network.updateInterface": lazyMethod(() => ({
    params: z
      .object({
        mac: macAddress(),
        name: ifName().optional(),
        addresses: z.array(ipWithPrefix()).default([]),
        mtu: z.number().int().min(68).max(65535).optional(),
      })
      .strict(),
    result: guestInterfaceSchema(),
  })),
  /** Takes the NIC with this MAC down and flushes its addresses (before it is unplugged). */
  "network.removeInterface": lazyMethod(() => ({
    params: z.object({ mac: macAddress() }).strict(),
    result: empty(),
  })),
  /** Replaces the guest's IPv4 routes (all but the kernel's link routes) with these. */
  "network.updateRoutes": lazyMethod(() => ({
    params: z.object({ routes: z.array(guestRouteSchema()) }).strict(),
    result: z.object({ routes: z.array(guestRouteSchema()) }),
  })),
  "network.listInterfaces": lazyMethod(() => ({
    params: empty(),
    result: z.object({ interfaces: z.array(guestInterfaceSchema()) }),
  })),
  "network.listRoutes": lazyMethod(() => ({
    params: empty(),
    result: z.object({ routes: z.array(guestRouteSchema()) }),
  })),
  /** Extra /etc/hosts entries (--add-host) for the guest and every container created after. */
  "network.setHosts": lazyMethod(() => ({
    params: z.object({ entries: z.array(hostEntrySchema()) }).strict(),
    result: empty(),
  })),
  // Resource control (live resize): the guest onlines hot-plugged CPUs and memory blocks.
  /**
   * Onlines every offline CPU and memory block (memory as movable, so it can be unplugged
   * again) and reports the totals the guest now sees.
   */
  "resources.online": lazyMethod(() => ({
    params: z.object({ movableMemory: z.boolean().default(true) }).strict(),
    result: z.object({
      onlineCpus: z.number(),
      memTotalBytes: z.number(),
      onlinedCpus: z.number(),
      onlinedMemoryBlocks: z.number(),
      /** Blocks the guest refused to online (with the kernel's reason). */
      failures: z.array(z.string()),
    }),
  })),
  /** The guest's own view for `stats`: CPU time over all CPUs, memory, tasks. */
  "resources.usage": lazyMethod(() => ({
    params: empty(),
    result: z.object({
      onlineCpus: z.number(),
      cpuUsageUsec: z.number(),
      memTotalBytes: z.number(),
      memAvailableBytes: z.number(),
      tasks: z.number(),
    }),
  })),
} as const;

export type MethodName = keyof typeof METHODS;
export type ParamsOf<M extends MethodName> = z.input<(typeof METHODS)[M]["params"]>;
export type ParsedParamsOf<M extends MethodName> = z.output<(typeof METHODS)[M]["params"]>;
export type ResultOf<M extends MethodName> = z.output<(typeof METHODS)[M]["result"]>;

export function isMethodName(name: string): name is MethodName {
  return Object.prototype.hasOwnProperty.call(METHODS, name);
}

/** Events the agent pushes to a session. */
export const EVENTS = {
  /** A process ended (sent to every session). */
  "process.exited": lazySchema(() =>
    z.object({ execId: z.string(), containerId: z.string().optional(), exit: exitSchema() }),
  ),
} as const;
