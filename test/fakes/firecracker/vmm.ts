/**
 * The fake Firecracker's VMM: configuration store, the Not started → Running ⇄ Paused state
 * machine, pre/post-boot gating, and one handler per endpoint. Answers use Firecracker's
 * status codes and `fault_message` texts; the texts observed on a real v1.0
 * (firecracker-v1.0-observed.md) are reproduced exactly, the others are close paraphrases of
 * Firecracker's error enums (listed in docs/firecracker.md).
 *
 * Request bodies are checked against the spec of the claimed version: the exact swagger of
 * v1.0.0 or v1.16.1, or, for a version in between, the definitions derived from the generated
 * version history (the same data the SDK uses).
 */
import {
  constants,
  existsSync,
  openSync,
  closeSync,
  readFileSync,
  writeFileSync,
  ftruncateSync,
} from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ENDPOINT_HISTORY,
  FIELD_HISTORY,
  SPEC_V1_0_0,
  SPEC_V1_16_1,
  type EndpointHistory,
} from "../../../src/gen/firecracker/index.js";
import { definitionsFor } from "../../../src/vmm/firecracker/api-model.js";
import { compareVersions, parseVersion } from "../../../src/vmm/firecracker/version.js";
import {
  SerdeError,
  checkAgainst,
  deserializeFault,
  parseJson,
  toValue,
  type JNode,
  type Schema,
} from "./serde.js";
import { SerialConsole, VcpuThreads, VsockBackend, type GuestBehaviour } from "./guest.js";
import { FcLogger, FcMetrics, openTarget, parseLevel, type Level } from "./telemetry.js";

export interface Reply {
  status: number;
  body?: unknown;
  deprecated?: boolean;
  /** Exit the process with this code once the answer is written (failed snapshot load). */
  exitAfter?: number;
}

export interface VmmOptions {
  version: string;
  id: string;
  jailRoot: string | undefined;
  enablePci: boolean;
  bootTimer: boolean;
  mmdsSizeLimit: number;
  guest: GuestBehaviour;
  logger: FcLogger;
  metrics: FcMetrics;
  console: SerialConsole;
  /** Ends the process (logs the exit line first). */
  exit: (code: number) => void;
}

type VmState = "Not started" | "Running" | "Paused";
type Obj = Record<string, unknown>;

const BEFORE = "The requested operation is not supported before starting the microVM.";
const AFTER = "The requested operation is not supported after starting the microVM.";
const ENOENT_TEXT = "No such file or directory (os error 2)";

function fault(message: string, status = 400): Reply {
  return { status, body: { fault_message: message } };
}

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function entry(node: JNode | undefined, key: string): JNode | undefined {
  return node?.kind === "object" ? node.entries.find((e) => e.key === key)?.value : undefined;
}

/** RFC 7396 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return patch;
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Which metric counts each endpoint (put_api_requests.drive_count ...). */
const METRIC_OF: Record<string, [string, string]> = {
  "GET /": ["get_api_requests", "instance_info"],
  "GET /machine-config": ["get_api_requests", "machine_cfg"],
  "GET /mmds": ["get_api_requests", "mmds"],
  "GET /version": ["get_api_requests", "vmm_version"],
  "PUT /actions": ["put_api_requests", "actions"],
  "PUT /boot-source": ["put_api_requests", "boot_source"],
  "PUT /drives/{drive_id}": ["put_api_requests", "drive"],
  "PUT /logger": ["put_api_requests", "logger"],
  "PUT /machine-config": ["put_api_requests", "machine_cfg"],
  "PUT /metrics": ["put_api_requests", "metrics"],
  "PUT /network-interfaces/{iface_id}": ["put_api_requests", "network"],
  "PUT /mmds": ["put_api_requests", "mmds"],
  "PUT /vsock": ["put_api_requests", "vsock"],
  "PATCH /drives/{drive_id}": ["patch_api_requests", "drive"],
  "PATCH /network-interfaces/{iface_id}": ["patch_api_requests", "network"],
  "PATCH /machine-config": ["patch_api_requests", "machine_cfg"],
  "PATCH /mmds": ["patch_api_requests", "mmds"],
};

interface Route {
  key: string;
  info: EndpointHistory;
  params: Record<string, string>;
}

export class FakeVmm {
  state: VmState = "Not started";
  /** Post-boot: after InstanceStart or a successful snapshot load. */
  booted = false;
  /** Something /snapshot/load forbids was configured. */
  private configured = false;
  private machine: Obj = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false };
  private bootSource: Obj | undefined;
  private readonly drives = new Map<string, Obj>();
  private readonly nets = new Map<string, Obj>();
  private readonly pmem = new Map<string, Obj>();
  private vsock: { cfg: Obj; backend: VsockBackend } | undefined;
  private loggerCfg: Obj | undefined;
  private metricsCfg: Obj | undefined;
  private mmdsConfig: Obj | undefined;
  /** Any JSON value: PUT /mmds takes arrays and strings too. */
  private mmdsData: unknown;
  private balloon:
    { cfg: Obj; actualMib: number; hinting: { host_cmd: number; guest_cmd: number } } | undefined;
  private entropy: Obj | undefined;
  private cpuConfig: Obj | undefined;
  private memoryHotplug: { cfg: Obj; requested: number } | undefined;
  private readonly vcpus = new VcpuThreads();
  private readonly defs: Record<string, Schema>;
  /** PATCH /machine-config: the machine configuration with no required field. */
  private readonly patchDefs: Record<string, Schema>;
  private readonly routes: [string, EndpointHistory][];

  constructor(private readonly o: VmmOptions) {
    const v = o.version;
    const exact = [SPEC_V1_0_0, SPEC_V1_16_1].find((s) => compareVersions(s.version, v) === 0);
    this.defs = exact
      ? (exact.definitions as Record<string, Schema>)
      : (definitionsFor(parseVersion(v)) as Record<string, Schema>);
    const { required: _required, ...partialMachine } = this.defs.MachineConfiguration ?? {};
    this.patchDefs = { ...this.defs, MachineConfiguration: partialMachine };
    this.routes = Object.entries(ENDPOINT_HISTORY).filter(
      ([, e]) =>
        compareVersions(v, e.since) >= 0 && (e.removed === undefined || compareVersions(v, e.removed) < 0),
    );
  }

  private atLeast(min: string): boolean {
    return compareVersions(this.o.version, min) >= 0;
  }

  /** A path as Firecracker sees it, on the host: inside the jail root when jailed. */
  resolve(p: string): string {
    return this.o.jailRoot ? path.join(this.o.jailRoot, path.resolve("/", p)) : path.resolve(p);
  }

  setMmdsData(data: Obj): void {
    this.mmdsData = data;
  }

  private route(method: string, p: string): Route | undefined {
    for (const [key, info] of this.routes) {
      const space = key.indexOf(" ");
      if (key.slice(0, space) !== method) continue;
      const names: string[] = [];
      const re = new RegExp(
        "^" +
          key
            .slice(space + 1)
            .replace(/[.*+?^$()|[\]\\]/g, "\\$&")
            .replace(/\{(\w+)\}/g, (_m, n: string) => (names.push(n), "([^/]*)")) +
          "$",
      );
      const m = re.exec(p);
      if (!m) continue;
      const params: Record<string, string> = {};
      names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1] ?? "")));
      return { key, info, params };
    }
    return undefined;
  }

  /** Handles one API request (the caller serializes requests, like Firecracker's VMM thread). */
  async handle(method: string, p: string, body: string | undefined): Promise<Reply> {
    // GET /mmds/<anything> (not in the spec) answers the whole store, as GET /mmds does.
    if (method === "GET" && p.startsWith("/mmds/") && body === undefined)
      return { status: 200, body: this.mmdsData ?? {} };
    const route = this.route(method, p);
    // Firecracker names only the first path segment ("GET drives." for GET /drives/rootfs).
    if (!route) return fault(`Invalid request method and/or path: ${method} ${p.split("/")[1] ?? ""}.`);
    const metric = METRIC_OF[route.key];
    const reply = await this.dispatch(route, method, body);
    if (metric) this.o.metrics.inc(metric[0], `${metric[1]}_${reply.status >= 300 ? "fails" : "count"}`);
    if (reply.deprecated) this.o.metrics.inc("deprecated_api", "deprecated_http_api_calls");
    return reply;
  }

  private async dispatch(route: Route, method: string, body: string | undefined): Promise<Reply> {
    const { key, info, params } = route;
    for (const name of info.pathParams) {
      if (!/^[A-Za-z0-9_]+$/.test(params[name] ?? ""))
        return fault("API Resource IDs can only contain alphanumeric characters and underscores.");
    }
    const hasBody = body !== undefined && body.length > 0;
    if (method === "GET" && hasBody) return fault("GET request cannot have a body.");
    // PUT /mmds is documented with an optional body, but Firecracker refuses an empty one.
    const bodyRequired = info.bodyRequired !== false || key === "PUT /mmds";
    if ((method === "PUT" || method === "PATCH") && !hasBody && info.body && bodyRequired) {
      return fault(`Empty ${method} request.`);
    }
    let node: JNode | undefined;
    let value: unknown;
    if (hasBody && info.body) {
      try {
        node = parseJson(body);
        if (key === "PATCH /machine-config") {
          // Every real version takes a partial body here, but not an empty one.
          if (node.kind === "object" && node.entries.length === 0) return fault("Empty PATCH request.");
          checkAgainst(this.patchDefs, info.body, node);
        } else {
          if (info.body === "Logger") this.checkLogLevel(node);
          // PUT /mmds stores any JSON value, not only the object the spec describes.
          if (key !== "PUT /mmds") checkAgainst(this.defs, info.body, node);
        }
        this.semanticSerde(info.body, node);
      } catch (err) {
        if (err instanceof SerdeError) return fault(deserializeFault(err));
        throw err;
      }
      value = toValue(node);
      for (const name of info.pathParams) {
        if (isObj(value) && value[name] !== params[name])
          return fault("The id from the path does not match the id from the body!");
      }
    }
    const gate = this.gate(key, info, value);
    if (gate) return gate;
    const deprecated = this.deprecated(info.body, value);
    if (deprecated) this.o.logger.log("Warning", "fc_api", `Deprecated API call: ${key} uses ${deprecated}.`);
    const reply = await this.run(key, params, value);
    // MMDS V1 (also when the version is left out) is deprecated from 1.5, on success and failure.
    const mmdsV1 =
      key === "PUT /mmds/config" && this.atLeast("1.5.0") && isObj(value) && (value.version ?? "V1") === "V1";
    if (mmdsV1) this.o.logger.log("Warning", "fc_api", "Deprecated API call: PUT /mmds/config uses MMDS V1.");
    return mmdsV1 || (deprecated && reply.status < 300) ? { ...reply, deprecated: true } : reply;
  }

  /** From 1.5 the level is parsed as a log::LevelFilter (any case, Trace and Off too). */
  private checkLogLevel(node: JNode): void {
    const level = entry(node, "level");
    if (!this.atLeast("1.5.0") || level?.kind !== "string") return;
    if (!["off", "error", "warn", "warning", "info", "debug", "trace"].includes(level.value.toLowerCase()))
      throw new SerdeError("Invalid LevelFilter", level.end);
  }

  /** Checks Firecracker does in its own deserializers (beyond the schema's types). */
  private semanticSerde(def: string, node: JNode): void {
    // Before 1.7 serde itself refuses 0 or more than 32 vCPUs; from 1.7 the VMM does (putMachine).
    if (def === "MachineConfiguration" && !this.atLeast("1.7.0")) {
      const vcpus = entry(node, "vcpu_count");
      if (vcpus?.kind === "number" && vcpus.value === 0) {
        throw new SerdeError(
          "invalid value: vcpu_num, expected number of vCPUs should be larger than 0",
          vcpus.end,
        );
      }
      if (vcpus?.kind === "number" && vcpus.value > 32) {
        throw new SerdeError(
          "invalid value: vcpu_num, expected number of vCPUs exceeds the maximum limitation",
          vcpus.end,
        );
      }
    }
    if (def === "NetworkInterface") {
      const mac = entry(node, "guest_mac");
      if (mac?.kind === "string" && !/^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/.test(mac.value)) {
        throw new SerdeError(
          `invalid value: string ${JSON.stringify(mac.value)}, expected a valid MAC address`,
          mac.end,
        );
      }
    }
    if (def === "SnapshotLoadParams" && this.atLeast("1.1.0")) {
      const file = entry(node, "mem_file_path");
      const backend = entry(node, "mem_backend");
      const hasFile = file !== undefined && file.kind !== "null";
      const hasBackend = backend !== undefined && backend.kind !== "null";
      if (hasFile && hasBackend)
        throw new SerdeError(
          "too many fields: either `mem_backend` or `mem_file_path` exclusively",
          node.end,
        );
      if (!hasFile && !hasBackend)
        throw new SerdeError("missing field: either `mem_backend` or `mem_file_path` is required", node.end);
    }
  }

  private gate(key: string, info: EndpointHistory, value: unknown): Reply | undefined {
    if (key === "PUT /actions") {
      const action = isObj(value) ? value.action_type : undefined;
      if (action === "InstanceStart" && this.booted) return fault(AFTER);
      if (action !== "InstanceStart" && !this.booted) return fault(BEFORE);
      return undefined;
    }
    if (!this.booted && !info.preBoot) return fault(BEFORE);
    if (this.booted && info.postBoot === false) return fault(AFTER);
    if (this.booted && typeof info.postBoot === "string") {
      if (!this.atLeast(info.postBoot)) return fault(AFTER);
      if (!this.o.enablePci) return fault("Unable to hotplug the device: PCI is not enabled.");
    }
    return undefined;
  }

  private deprecated(def: string | undefined, value: unknown): string | undefined {
    if (!def || !isObj(value)) return undefined;
    for (const field of Object.keys(value)) {
      const since = FIELD_HISTORY[`${def}.${field}`]?.deprecated;
      if (since !== undefined && this.atLeast(since)) return `${def}.${field}`;
    }
    return undefined;
  }

  private async run(key: string, params: Record<string, string>, value: unknown): Promise<Reply> {
    const body = isObj(value) ? value : {};
    switch (key) {
      case "GET /":
        return {
          status: 200,
          body: { id: this.o.id, state: this.state, vmm_version: this.o.version, app_name: "Firecracker" },
        };
      case "GET /version":
        return { status: 200, body: { firecracker_version: this.o.version } };
      case "GET /machine-config":
        return { status: 200, body: this.machineView() };
      case "PUT /machine-config":
        return this.putMachine(body, true);
      case "PATCH /machine-config":
        return this.putMachine(body, false);
      case "PUT /cpu-config":
        this.cpuConfig = body;
        return { status: 204 };
      case "PUT /boot-source":
        return this.putBootSource(body);
      case "PUT /drives/{drive_id}":
        return this.putDrive(body);
      case "PATCH /drives/{drive_id}":
        return this.patchDrive(body);
      case "DELETE /drives/{drive_id}":
        return this.drives.delete(params.drive_id ?? "")
          ? { status: 204 }
          : fault(`Drive config error: No drive with id ${params.drive_id}.`);
      case "PUT /pmem/{id}":
        if (!existsSync(this.resolve(String(body.path_on_host))))
          return fault(`Pmem config error: Cannot open the backing file: ${ENOENT_TEXT}`);
        this.pmem.set(String(body.id), body);
        this.configured = true;
        return { status: 204 };
      case "PATCH /pmem/{id}":
      case "DELETE /pmem/{id}": {
        const dev = this.pmem.get(params.id ?? "");
        if (!dev) return fault(`Pmem config error: No pmem device with id ${params.id}.`);
        if (key.startsWith("DELETE")) this.pmem.delete(params.id ?? "");
        else Object.assign(dev, body);
        return { status: 204 };
      }
      case "PUT /network-interfaces/{iface_id}":
        return this.putNet(body);
      case "PATCH /network-interfaces/{iface_id}": {
        const iface = this.nets.get(String(body.iface_id));
        if (!iface) return fault(`Unable to update the net device: Invalid interface ID - not found.`);
        for (const k of ["rx_rate_limiter", "tx_rate_limiter"]) if (body[k] !== undefined) iface[k] = body[k];
        return { status: 204 };
      }
      case "DELETE /network-interfaces/{iface_id}":
        return this.nets.delete(params.iface_id ?? "")
          ? { status: 204 }
          : fault(`Unable to update the net device: Invalid interface ID - not found.`);
      case "PUT /vsock":
        return this.putVsock(body);
      case "PUT /logger":
        return this.putLogger(body);
      case "PUT /metrics":
        return this.putMetrics(body);
      case "PUT /mmds/config":
        return this.putMmdsConfig(body);
      case "PUT /mmds":
      case "PATCH /mmds":
        return this.putMmds(key.startsWith("PATCH"), value);
      case "GET /mmds":
        if (this.booted && this.mmdsData === undefined && this.mmdsConfig === undefined)
          return fault("The MMDS data store is not initialized.");
        return { status: 200, body: this.mmdsData ?? {} };
      case "PUT /balloon":
        return this.putBalloon(body);
      case "PATCH /balloon":
        return this.patchBalloon(body);
      case "GET /balloon":
        if (!this.balloon)
          return fault(`${this.atLeast("1.7.0") ? "Balloon config error: " : ""}No balloon device found.`);
        return { status: 200, body: this.balloon.cfg };
      case "GET /balloon/statistics":
        return this.balloonStats();
      case "PATCH /balloon/statistics":
        return this.patchBalloonStats(body);
      case "PATCH /balloon/hinting/start":
      case "PATCH /balloon/hinting/stop":
      case "GET /balloon/hinting/status": {
        if (!this.balloon)
          return fault(`${this.atLeast("1.7.0") ? "Balloon config error: " : ""}No balloon device found.`);
        if (this.balloon.cfg.free_page_hinting !== true)
          return fault("Free page hinting was not enabled when the device was configured.");
        const h = this.balloon.hinting;
        if (key.endsWith("start")) {
          h.host_cmd += 1;
          h.guest_cmd = h.host_cmd;
        }
        if (key.endsWith("stop")) h.host_cmd = 1;
        return key.startsWith("GET") ? { status: 200, body: { ...h } } : { status: 204 };
      }
      case "PUT /entropy":
        this.entropy = body;
        this.configured = true;
        return { status: 204 };
      case "PUT /serial":
        if (typeof body.serial_out_path === "string")
          this.o.console.setOutput(this.resolve(body.serial_out_path));
        return { status: 204 };
      case "PUT /hotplug/memory":
        this.memoryHotplug = { cfg: { slot_size_mib: 128, block_size_mib: 2, ...body }, requested: 0 };
        this.configured = true;
        return { status: 204 };
      case "PATCH /hotplug/memory": {
        if (!this.memoryHotplug) return fault("Memory hotplug device not configured.");
        const req = Number(body.requested_size_mib ?? 0);
        if (req > Number(this.memoryHotplug.cfg.total_size_mib ?? 0))
          return fault("Invalid requested size: larger than the total size.");
        this.memoryHotplug.requested = req;
        return { status: 204 };
      }
      case "GET /hotplug/memory":
        if (!this.memoryHotplug) return fault("Memory hotplug device not configured.");
        return {
          status: 200,
          body: {
            ...this.memoryHotplug.cfg,
            plugged_size_mib: this.memoryHotplug.requested,
            requested_size_mib: this.memoryHotplug.requested,
          },
        };
      case "PUT /actions":
        return this.action(String(body.action_type));
      case "PATCH /vm":
        return this.patchVm(String(body.state));
      case "PUT /snapshot/create":
        return this.createSnapshot(body);
      case "PUT /snapshot/load":
        return this.loadSnapshot(body);
      case "GET /vm/config":
        return { status: 200, body: this.exportConfig() };
      default:
        return fault(`Invalid request method and/or path: ${key}.`);
    }
  }

  // -- machine and boot ---------------------------------------------------------------------

  private machineView(): Obj {
    const m = this.machine;
    return {
      vcpu_count: m.vcpu_count,
      mem_size_mib: m.mem_size_mib,
      smt: m.smt,
      ...(m.cpu_template !== undefined && m.cpu_template !== "None" ? { cpu_template: m.cpu_template } : {}),
      track_dirty_pages: m.track_dirty_pages,
      ...(this.atLeast("1.7.0") ? { huge_pages: m.huge_pages ?? "None" } : {}),
    };
  }

  private putMachine(body: Obj, put: boolean): Reply {
    const defaults: Obj = { smt: false, track_dirty_pages: false };
    // A PUT resets omitted optional fields to their defaults since 1.1; v1.0 kept them.
    const base: Obj =
      put && this.atLeast("1.1.0")
        ? { ...defaults, vcpu_count: this.machine.vcpu_count, mem_size_mib: this.machine.mem_size_mib }
        : { ...this.machine };
    const next: Obj = { ...base, ...body };
    const vcpus = Number(next.vcpu_count);
    const badVcpus = vcpus === 0 || vcpus > 32 || (next.smt === true && vcpus > 1 && vcpus % 2 !== 0);
    if (badVcpus && this.atLeast("1.7.0"))
      return fault(
        "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled.",
      );
    if (badVcpus) {
      return fault(
        "The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.",
      );
    }
    if (Number(next.mem_size_mib) === 0)
      return fault(
        `${this.atLeast("1.7.0") ? "Machine config error: " : ""}The memory size (MiB) is invalid.`,
      );
    if (next.huge_pages === "2M" && Number(next.mem_size_mib) % 2 !== 0)
      return fault("The memory size (MiB) must be a multiple of 2 with 2M huge pages.");
    this.machine = next;
    this.configured = true;
    return { status: 204 };
  }

  private putBootSource(body: Obj): Reply {
    const prefix = this.atLeast("1.7.0") ? "Boot source error: " : "";
    if (!existsSync(this.resolve(String(body.kernel_image_path))))
      return fault(`${prefix}The kernel file cannot be opened: ${ENOENT_TEXT}`);
    if (typeof body.initrd_path === "string" && !existsSync(this.resolve(body.initrd_path))) {
      return fault(
        `${prefix}The initrd file cannot be opened due to invalid path or invalid permissions. ${ENOENT_TEXT}`,
      );
    }
    this.bootSource = body;
    this.configured = true;
    return { status: 204 };
  }

  // -- devices ------------------------------------------------------------------------------

  private putDrive(body: Obj): Reply {
    const id = String(body.drive_id);
    if (typeof body.socket !== "string") {
      // is_read_only became optional (default false) in 1.7.
      const readOnlyMissing = typeof body.is_read_only !== "boolean" && !this.atLeast("1.7.0");
      if (typeof body.path_on_host !== "string" || readOnlyMissing) {
        return fault("Drive config error: A virtio-block device needs path_on_host and is_read_only.");
      }
      if (!existsSync(this.resolve(body.path_on_host))) {
        return fault(
          this.atLeast("1.7.0")
            ? `Drive config error: Unable to create the virtio block device: VirtioBackend(BackingFile(Os { code: 2, kind: NotFound, message: "No such file or directory" }, "${body.path_on_host}"))`
            : `Invalid block device path: ${body.path_on_host}`,
        );
      }
    }
    if (
      body.is_root_device === true &&
      [...this.drives.values()].some((d) => d.is_root_device === true && d.drive_id !== id)
    ) {
      return fault(
        `${this.atLeast("1.7.0") ? "Drive config error: " : ""}A root block device already exists!`,
      );
    }
    this.drives.set(id, { cache_type: "Unsafe", io_engine: "Sync", ...body });
    this.configured = true;
    return { status: 204 };
  }

  private patchDrive(body: Obj): Reply {
    const id = String(body.drive_id);
    const drive = this.drives.get(id);
    if (!drive) return fault(`Drive config error: Unable to patch the block device: no drive with id ${id}.`);
    if (typeof body.path_on_host === "string") {
      if (!existsSync(this.resolve(body.path_on_host))) {
        return fault(
          `Drive config error: Unable to patch the block device: BackingFile(Os { code: 2, kind: NotFound, message: "No such file or directory" }, "${body.path_on_host}")`,
        );
      }
      drive.path_on_host = body.path_on_host;
    }
    if (body.rate_limiter !== undefined) drive.rate_limiter = body.rate_limiter;
    this.o.metrics.inc("block", "update_count");
    return { status: 204 };
  }

  private putNet(body: Obj): Reply {
    const id = String(body.iface_id);
    for (const other of this.nets.values()) {
      if (other.iface_id === id) continue;
      const prefix = this.atLeast("1.7.0") ? "Network config error: " : "";
      if (other.host_dev_name === body.host_dev_name)
        return fault(
          this.atLeast("1.5.0")
            ? `${prefix}Could not create the network device: Open tap device failed: Error while creating ifreq structure: Resource busy (os error 16). Invalid TUN/TAP Backend provided by ${String(body.host_dev_name)}. Check our documentation on setting up the network devices.`
            : 'Could not create Network Device: TapOpen(IoctlError(Os { code: 16, kind: Other, message: "Resource busy" }))',
        );
      // MACs compare (and are reported) in lower case.
      const mac = typeof body.guest_mac === "string" ? body.guest_mac.toLowerCase() : undefined;
      if (mac !== undefined && String(other.guest_mac ?? "").toLowerCase() === mac)
        return fault(
          this.atLeast("1.5.0")
            ? `${prefix}The MAC address is already in use: ${mac}`
            : `The guest MAC address ${mac} is already in use.`,
        );
    }
    this.nets.set(id, body);
    this.configured = true;
    return { status: 204 };
  }

  private async putVsock(body: Obj): Promise<Reply> {
    const cid = Number(body.guest_cid);
    // Every real version takes CID 2 (the host's); below that it is refused.
    if (cid < 2)
      return fault(
        `Cannot create backend for vsock device: invalid guest CID ${cid} (the guest CID must be at least 3).`,
      );
    const hostPath = this.resolve(String(body.uds_path));
    const old = this.vsock;
    if (old) await old.backend.close();
    const backend = this.newVsockBackend(hostPath, cid);
    try {
      await backend.listen();
    } catch (err) {
      this.vsock = undefined;
      return fault(err instanceof Error ? err.message : String(err));
    }
    const cfg: Obj = { guest_cid: cid, uds_path: body.uds_path };
    this.vsock = { cfg, backend };
    this.configured = true;
    return { status: 204 };
  }

  private newVsockBackend(hostPath: string, cid: number): VsockBackend {
    return new VsockBackend(
      hostPath,
      cid,
      this.o.guest,
      () => this.state === "Running",
      (rx, tx) => {
        this.o.metrics.inc("vsock", "rx_bytes_count", rx);
        this.o.metrics.inc("vsock", "tx_bytes_count", tx);
      },
    );
  }

  // -- logger, metrics, MMDS ----------------------------------------------------------------

  private putLogger(body: Obj): Reply {
    // 1.0 initializes the logger once; from 1.5 a new PUT reconfigures it.
    if (this.o.logger.configured && !this.atLeast("1.5.0"))
      return fault("Logger initialization failure: The component is already initialized.");
    const level = body.level === undefined ? undefined : parseLevel(String(body.level));
    let fd: number | undefined;
    if (typeof body.log_path === "string") {
      try {
        fd = openTarget(this.resolve(body.log_path), this.atLeast("1.14.0"));
      } catch {
        return fault(this.atLeast("1.5.0") ? `Failed to open target file: ${ENOENT_TEXT}` : ENOENT_TEXT);
      }
    } else {
      fd = 1; // 1.6+: without a path the logs go to stdout
    }
    this.o.logger.configure(fd, {
      ...(level ? { level: level as Level } : {}),
      showLevel: body.show_level === true,
      showOrigin: body.show_log_origin === true,
      ...(typeof body.module === "string" ? { module: body.module } : {}),
    });
    this.loggerCfg = body;
    this.o.logger.log("Info", "fc_api", `Running Firecracker v${this.o.version}`);
    return { status: 204 };
  }

  private putMetrics(body: Obj): Reply {
    const prefix = this.atLeast("1.7.0")
      ? "Metrics error: Cannot initialize the metrics system due to bad user input: "
      : "";
    if (this.o.metrics.configured) return fault(`${prefix}Reinitialization of metrics not allowed.`);
    try {
      this.o.metrics.configure(openTarget(this.resolve(String(body.metrics_path)), this.atLeast("1.14.0")));
    } catch {
      return fault(`${prefix}${ENOENT_TEXT}`);
    }
    this.metricsCfg = body;
    return { status: 204 };
  }

  private putMmdsConfig(body: Obj): Reply {
    const ifaces = Array.isArray(body.network_interfaces) ? body.network_interfaces.map(String) : [];
    if (ifaces.length === 0)
      return fault("The list of network interface IDs that allow forwarding MMDS requests is empty.");
    if (ifaces.some((id) => !this.nets.has(id))) {
      return fault(
        "The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
      );
    }
    if (typeof body.ipv4_address === "string" && !/^169\.254\.\d{1,3}\.\d{1,3}$/.test(body.ipv4_address)) {
      return fault(`The MMDS IPv4 address is not link local: ${body.ipv4_address}.`);
    }
    this.mmdsConfig = { version: "V1", ipv4_address: "169.254.169.254", ...body };
    this.mmdsData ??= {};
    this.configured = true;
    return { status: 204 };
  }

  private putMmds(patch: boolean, value: unknown): Reply {
    if (patch && !isObj(value)) return fault("The MMDS data store must be a JSON object.");
    if (patch && this.mmdsData === undefined) return fault("The MMDS data store is not initialized.");
    const next = patch ? mergePatch(this.mmdsData, value) : value;
    const size = Buffer.byteLength(JSON.stringify(next));
    if (size > this.o.mmdsSizeLimit) {
      return fault(
        `The MMDS ${patch ? "patch" : "data"} request doesn't fit. The MMDS data store limit is ${this.o.mmdsSizeLimit} bytes.`,
        413,
      );
    }
    this.mmdsData = next;
    return { status: 204 };
  }

  /** The guest-visible MMDS state (for the optional guest-side endpoint). */
  mmdsView(): { config: Obj | undefined; data: Obj } {
    return { config: this.mmdsConfig, data: isObj(this.mmdsData) ? this.mmdsData : {} };
  }

  // -- balloon ------------------------------------------------------------------------------

  private putBalloon(body: Obj): Reply {
    if (Number(body.amount_mib) > Number(this.machine.mem_size_mib))
      return fault("Amount of pages requested is too large.");
    this.balloon = {
      cfg: { stats_polling_interval_s: 0, ...body },
      actualMib: 0,
      hinting: { host_cmd: 0, guest_cmd: 0 },
    };
    this.configured = true;
    return { status: 204 };
  }

  private patchBalloon(body: Obj): Reply {
    if (!this.balloon) return fault("Balloon device not configured.");
    if (!this.o.guest.balloonDriver)
      return fault("Device is inactive, check if balloon driver is enabled in guest kernel.");
    const mib = Number(body.amount_mib);
    if (mib > Number(this.machine.mem_size_mib)) return fault("Amount of pages requested is too large.");
    this.o.metrics.inc("balloon", mib > this.balloon.actualMib ? "inflate_count" : "deflate_count");
    this.balloon.cfg.amount_mib = mib;
    this.balloon.actualMib = mib; // the fake guest's driver gives the pages at once
    return { status: 204 };
  }

  private balloonStats(): Reply {
    const b = this.balloon;
    if (!b) return fault("Balloon device not configured.");
    if (!Number(b.cfg.stats_polling_interval_s))
      return fault("Statistics for the balloon device are not enabled.");
    const target = Number(b.cfg.amount_mib);
    const memBytes = Number(this.machine.mem_size_mib) * 1024 * 1024;
    const guest = this.o.guest.balloonDriver && this.state !== "Not started";
    return {
      status: 200,
      body: {
        target_pages: target * 256,
        actual_pages: b.actualMib * 256,
        target_mib: target,
        actual_mib: b.actualMib,
        ...(guest
          ? {
              swap_in: 0,
              swap_out: 0,
              major_faults: 12,
              minor_faults: 3400,
              free_memory: memBytes - b.actualMib * 1024 * 1024 - 32 * 1024 * 1024,
              total_memory: memBytes,
              available_memory: memBytes - b.actualMib * 1024 * 1024 - 24 * 1024 * 1024,
              disk_caches: 4 * 1024 * 1024,
              hugetlb_allocations: 0,
              hugetlb_failures: 0,
              ...(this.atLeast("1.14.0")
                ? {
                    oom_kill: 0,
                    alloc_stall: 0,
                    async_scan: 0,
                    direct_scan: 0,
                    async_reclaim: 0,
                    direct_reclaim: 0,
                  }
                : {}),
            }
          : {}),
      },
    };
  }

  private patchBalloonStats(body: Obj): Reply {
    if (!this.balloon) return fault("Balloon device not configured.");
    const next = Number(body.stats_polling_interval_s);
    if (!Number(this.balloon.cfg.stats_polling_interval_s) || next === 0)
      return fault("Cannot enable/disable statistics after boot.");
    this.balloon.cfg.stats_polling_interval_s = next;
    return { status: 204 };
  }

  // -- lifecycle ----------------------------------------------------------------------------

  private async action(type: string): Promise<Reply> {
    if (type === "FlushMetrics") {
      this.o.metrics.flush(this.deviceMetricGroups());
      return { status: 204 };
    }
    if (type === "SendCtrlAltDel") {
      if (this.o.guest.ctrlAltDel) {
        // The guest resets; Firecracker exits cleanly on a CPU reset.
        setTimeout(() => this.o.exit(0), 100).unref();
      }
      return { status: 204 };
    }
    return this.instanceStart();
  }

  private deviceMetricGroups(): string[] {
    if (!this.atLeast("1.6.0")) return [];
    return [
      ...[...this.drives.keys()].map((d) => `block_${d}`),
      ...[...this.nets.keys()].map((n) => `net_${n}`),
    ];
  }

  /** InstanceStart's errors: the `Start microvm error: ` prefix came with 1.7. */
  private startFault(message: string): Reply {
    return fault(this.atLeast("1.7.0") ? `Start microvm error: ${message}` : message);
  }

  /**
   * KVM, as each version fails without it. Modelled only when FAKE_FC_KVM_DEVICE names the
   * device to open (the fake itself needs no KVM): v1.0 panics and aborts without answering.
   */
  private kvmFailure(): Reply | undefined {
    const device = process.env.FAKE_FC_KVM_DEVICE;
    if (!device) return undefined;
    try {
      closeSync(openSync(device, constants.O_RDWR));
      return undefined;
    } catch {
      // as real Firecracker reports a missing /dev/kvm (ENOENT)
    }
    if (!this.atLeast("1.5.0")) {
      this.o.logger.log(
        "Error",
        "firecracker",
        "Firecracker panicked at 'Error creating the Kvm object: Error(2)', src/vmm/src/vstate/system.rs:53:30",
      );
      process.abort();
    }
    if (this.atLeast("1.14.0"))
      return this.startFault(`Kvm error: Error creating KVM object: ${ENOENT_TEXT}`);
    if (this.atLeast("1.7.0"))
      return this.startFault(
        `Internal error while starting microVM: Vm error: Error creating KVM object: ${ENOENT_TEXT} Make sure the user launching the firecracker process is \\\nconfigured on the /dev/kvm file's ACL.`,
      );
    return this.startFault(
      `Internal error while starting microVM: Vm error: Error creating KVM object. [${ENOENT_TEXT}]`,
    );
  }

  private async instanceStart(): Promise<Reply> {
    if (!this.bootSource) return this.startFault("Cannot start microvm without kernel configuration.");
    const kernel = this.resolve(String(this.bootSource.kernel_image_path));
    let head: Buffer;
    try {
      head = readFileSync(kernel).subarray(0, 0x210);
    } catch {
      return this.startFault(
        `Cannot load kernel due to invalid memory configuration or invalid kernel image: ${ENOENT_TEXT}`,
      );
    }
    const elf = head.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    const bz = head.subarray(0x202, 0x206).toString("latin1") === "HdrS";
    if (!elf && !bz) {
      return this.startFault(
        "Cannot load kernel due to invalid memory configuration or invalid kernel image: Failed to read ELF header",
      );
    }
    const noKvm = this.kvmFailure();
    if (noKvm) return noKvm;
    const t0 = process.hrtime.bigint();
    await this.boot(Number(this.machine.vcpu_count));
    const bootArgs = String(this.bootSource.boot_args ?? "");
    if (/(^|\s)console=ttyS0(\s|,|$)/.test(bootArgs)) {
      this.o.console.write(
        `[    0.000000] Linux version 6.1.0-cocoon-fake (fake guest of the cocoon fake Firecracker ${this.o.version})\n` +
          `[    0.000000] Command line: ${bootArgs}\n` +
          `[    0.120000] Run /sbin/init as init process\n`,
      );
    }
    if (this.o.bootTimer) {
      const us = Number((process.hrtime.bigint() - t0) / 1000n);
      this.o.logger.log(
        "Info",
        "fc_vcpu 0",
        `Guest-boot-time = ${us} us ${Math.floor(us / 1000)} ms, ${us} CPU us ${Math.floor(us / 1000)} CPU ms`,
      );
    }
    return { status: 204 };
  }

  private async boot(vcpus: number): Promise<void> {
    await this.vcpus.start(vcpus);
    this.booted = true;
    this.state = "Running";
    this.vsock?.backend.dialHost();
  }

  private patchVm(state: string): Reply {
    const t0 = process.hrtime.bigint();
    if (state === "Paused") this.state = "Paused";
    else if (this.state === "Paused") this.state = "Running";
    const us = Number((process.hrtime.bigint() - t0) / 1000n);
    this.o.metrics.store("latencies_us", state === "Paused" ? "pause_vm" : "resume_vm", us);
    this.o.logger.log("Info", "firecracker", state === "Paused" ? "Vmm is paused." : "Vmm is resumed.");
    return { status: 204 };
  }

  private createSnapshot(body: Obj): Reply {
    if (this.state !== "Paused") {
      return fault(
        "Cannot save the microVM state: Operation not allowed: save/restore unavailable while running",
      );
    }
    const diff = body.snapshot_type === "Diff";
    if (diff && this.machine.track_dirty_pages !== true) {
      return fault(
        "Cannot save the microVM state: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.",
      );
    }
    const t0 = process.hrtime.bigint();
    const vmstate = this.resolve(String(body.snapshot_path));
    const mem = this.resolve(String(body.mem_file_path));
    try {
      writeFileSync(
        vmstate,
        JSON.stringify({
          magic: "cocoon-fake-firecracker-vmstate",
          version: this.o.version,
          type: diff ? "Diff" : "Full",
          createdAt: new Date().toISOString(),
          machine: this.machine,
          drives: [...this.drives.values()],
          nets: [...this.nets.values()],
          vsock: this.vsock?.cfg ?? null,
          mmdsConfig: this.mmdsConfig ?? null,
          balloon: this.balloon?.cfg ?? null,
        }),
      );
      // Guest memory: a sparse file of the guest's size (the fake has no memory contents).
      const fd = openSync(mem, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
      try {
        ftruncateSync(fd, Number(this.machine.mem_size_mib) * 1024 * 1024);
      } finally {
        closeSync(fd);
      }
    } catch {
      return fault(`Cannot save the microVM state: Cannot open the snapshot file: ${ENOENT_TEXT}`);
    }
    this.vsock?.backend.resetConnections();
    const us = Number((process.hrtime.bigint() - t0) / 1000n);
    this.o.metrics.store("latencies_us", diff ? "diff_create_snapshot" : "full_create_snapshot", us);
    return { status: 204 };
  }

  private async loadSnapshot(body: Obj): Promise<Reply> {
    if (this.configured)
      return fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    // The prefix became "Load snapshot error:" in 1.7; 1.5 reworded the causes.
    const prefix = this.atLeast("1.7.0") ? "Load snapshot error" : "Load microVM snapshot error";
    const failed = (why: string): Reply => ({ ...fault(`${prefix}: ${why}`), exitAfter: 1 });
    let state: Obj;
    try {
      state = JSON.parse(readFileSync(this.resolve(String(body.snapshot_path)), "utf8")) as Obj;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        return failed("Cannot deserialize the microVM state.");
      return failed(
        this.atLeast("1.5.0")
          ? `Failed to restore from snapshot: Failed to get snapshot state from file: Failed to open snapshot file: ${ENOENT_TEXT}`
          : `Cannot perform open on the snapshot backing file: ${ENOENT_TEXT}`,
      );
    }
    if (state.magic !== "cocoon-fake-firecracker-vmstate")
      return failed("Cannot deserialize the microVM state.");
    const from = parseVersion(String(state.version));
    const here = parseVersion(this.o.version);
    if (from.major !== here.major || from.minor !== here.minor) {
      return failed(
        `Snapshot version mismatch: the snapshot was taken by Firecracker ${String(state.version)}.`,
      );
    }
    const backend = isObj(body.mem_backend)
      ? body.mem_backend
      : { backend_type: "File", backend_path: body.mem_file_path };
    const memPath = this.resolve(String(backend.backend_path));
    if (backend.backend_type === "File") {
      if (!existsSync(memPath)) return failed(`Cannot open the memory file: ${ENOENT_TEXT}`);
    } else {
      const machine = isObj(state.machine) ? state.machine : {};
      try {
        await sendUffdRegions(memPath, Number(machine.mem_size_mib ?? 128));
      } catch (err) {
        return failed(
          `Cannot connect to the UFFD handler socket: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    const drives = Array.isArray(state.drives) ? state.drives.filter(isObj) : [];
    for (const d of drives) {
      if (typeof d.path_on_host === "string" && !existsSync(this.resolve(d.path_on_host))) {
        return failed(`Cannot restore the block device ${String(d.drive_id)}: ${ENOENT_TEXT}`);
      }
    }
    this.machine = isObj(state.machine) ? { ...state.machine } : this.machine;
    if (body.track_dirty_pages === true || body.enable_diff_snapshots === true)
      this.machine.track_dirty_pages = true;
    for (const d of drives) this.drives.set(String(d.drive_id), d);
    const overrides = Array.isArray(body.network_overrides) ? body.network_overrides.filter(isObj) : [];
    for (const n of Array.isArray(state.nets) ? state.nets.filter(isObj) : []) {
      const o = overrides.find((x) => x.iface_id === n.iface_id);
      this.nets.set(String(n.iface_id), o ? { ...n, host_dev_name: o.host_dev_name } : n);
    }
    if (isObj(state.vsock)) {
      const udsPath = isObj(body.vsock_override)
        ? String(body.vsock_override.uds_path)
        : String(state.vsock.uds_path);
      const b = this.newVsockBackend(this.resolve(udsPath), Number(state.vsock.guest_cid));
      try {
        await b.listen();
      } catch (err) {
        return failed(err instanceof Error ? err.message : String(err));
      }
      this.vsock = { cfg: { ...state.vsock, uds_path: udsPath }, backend: b };
    }
    // The MMDS configuration is restored (1.1+), its data store is not.
    if (isObj(state.mmdsConfig) && this.atLeast("1.1.0")) this.mmdsConfig = state.mmdsConfig;
    if (isObj(state.balloon))
      this.balloon = {
        cfg: state.balloon,
        actualMib: Number(state.balloon.amount_mib ?? 0),
        hinting: { host_cmd: 0, guest_cmd: 0 },
      };
    await this.vcpus.start(Number(this.machine.vcpu_count));
    this.booted = true;
    this.state = body.resume_vm === true ? "Running" : "Paused";
    return { status: 204 };
  }

  private exportConfig(): Obj {
    const drives = [...this.drives.values()].map((d) => ({
      drive_id: d.drive_id,
      path_on_host: d.path_on_host ?? null,
      is_root_device: d.is_root_device,
      partuuid: d.partuuid ?? null,
      is_read_only: d.is_read_only ?? null,
      cache_type: d.cache_type ?? "Unsafe",
      rate_limiter: d.rate_limiter ?? null,
      io_engine: d.io_engine ?? "Sync",
      ...(this.atLeast("1.6.0") ? { socket: d.socket ?? null } : {}),
    }));
    const nets = [...this.nets.values()].map((n) => ({
      iface_id: n.iface_id,
      host_dev_name: n.host_dev_name,
      guest_mac: n.guest_mac ?? null,
      rx_rate_limiter: n.rx_rate_limiter ?? null,
      tx_rate_limiter: n.tx_rate_limiter ?? null,
      ...(this.atLeast("1.16.0") ? { mtu: n.mtu ?? null } : {}),
    }));
    const boot = this.bootSource
      ? {
          kernel_image_path: this.bootSource.kernel_image_path,
          initrd_path: this.bootSource.initrd_path ?? null,
          boot_args: this.bootSource.boot_args ?? null,
        }
      : null;
    // The root device comes first; v1.0 shows no logger or metrics and an empty boot source.
    const rootFirst = [...drives].sort(
      (a, b) => Number((b as Obj).is_root_device === true) - Number((a as Obj).is_root_device === true),
    );
    const v10 = !this.atLeast("1.1.0");
    return {
      balloon: this.balloon?.cfg ?? null,
      drives: rootFirst,
      "boot-source": boot ?? (v10 ? { kernel_image_path: "", initrd_path: null } : null),
      ...(this.atLeast("1.10.0") ? { "cpu-config": this.cpuConfig ?? null } : {}),
      logger: v10 ? null : (this.loggerCfg ?? null),
      "machine-config": this.machineView(),
      metrics: v10 ? null : (this.metricsCfg ?? null),
      ...(this.atLeast("1.14.0") ? { "memory-hotplug": this.memoryHotplug?.cfg ?? null } : {}),
      "mmds-config": this.mmdsConfig ?? null,
      "network-interfaces": nets,
      ...(this.atLeast("1.14.0") ? { pmem: [...this.pmem.values()] } : {}),
      vsock: this.vsock?.cfg ?? null,
      ...(this.atLeast("1.10.0") ? { entropy: this.entropy ?? null } : {}),
    };
  }

  /** Removes nothing: like Firecracker, the fake leaves its sockets behind when it dies. */
  async stopDevices(): Promise<void> {
    await this.vcpus.stop();
    await this.vsock?.backend.close();
  }

  /** For a Paused VM the guest does not run: vsock connects are refused by the backend. */
  get running(): boolean {
    return this.state === "Running";
  }
}

/**
 * The UFFD handshake: Firecracker connects to the handler's socket and sends the guest memory
 * regions as JSON along with a userfaultfd over SCM_RIGHTS. Node cannot send file descriptors,
 * so the fake sends the JSON only (documented in docs/firecracker.md).
 */
async function sendUffdRegions(socketPath: string, memMib: number): Promise<void> {
  const regions = [
    {
      base_host_virt_addr: 0x7f0000000000,
      size: memMib * 1024 * 1024,
      offset: 0,
      page_size: 4096,
      page_size_kib: 4096,
    },
  ];
  await new Promise<void>((resolve, reject) => {
    const sock = net.connect(socketPath);
    sock.once("error", reject);
    sock.once("connect", () => sock.end(JSON.stringify(regions), () => resolve()));
  });
  await sleep(0);
}
