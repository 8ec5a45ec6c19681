import type { Logger } from "pino";
import { Client } from "undici";
import { z } from "zod";
import { HypervisorError, errnoCode, messageOf } from "../../errors.js";
import type {
  Balloon,
  BalloonHintingStatus,
  BalloonStartCmd,
  BalloonStats,
  BalloonStatsUpdate,
  BalloonUpdate,
  BootSource,
  CpuConfig,
  Drive,
  EntropyDevice,
  FirecrackerVersion,
  FullVmConfiguration,
  InstanceActionInfo,
  InstanceInfo,
  Logger as FcLogger,
  MachineConfiguration,
  MemoryHotplugConfig,
  MemoryHotplugSizeUpdate,
  MemoryHotplugStatus,
  Metrics,
  MmdsConfig,
  NetworkInterface,
  OperationKey,
  Operations,
  PartialDrive,
  PartialNetworkInterface,
  PartialPmem,
  Pmem,
  SerialDevice,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vm,
  Vsock,
} from "../../gen/firecracker/index.js";
import { RESOURCE_ID_RE, VersionedApi, endpointInfo } from "./api-model.js";
import { FirecrackerApiError, FirecrackerConnectionError, FirecrackerRequestError } from "./errors.js";
import { MIN_SUPPORTED_VERSION, compareVersions, parseVersion, type FcVersion } from "./version.js";

/** The answer to one HTTP request, before any interpretation. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** A successful call: the validated body and whether Firecracker flagged a deprecation. */
export interface ApiResult<T> {
  status: number;
  body: T;
  /** Firecracker answered with `Deprecation: true` (a deprecated field or endpoint was used). */
  deprecated: boolean;
}

export interface DeprecationNotice {
  method: string;
  path: string;
  /** Deprecated fields the SDK saw in the body (may be empty when only the header told). */
  fields: string[];
}

export interface ClientOptions {
  socketPath: string;
  logger?: Logger;
  /** Per-request limit (default 30 s; snapshot calls pass their own). */
  requestTimeoutMs?: number;
  /** Called for every answer carrying `Deprecation: true`. The default logs a warning. */
  onDeprecation?: (notice: DeprecationNotice) => void;
  /** The `--http-api-max-payload-size` Firecracker was started with (default 51,200 bytes). */
  maxPayloadBytes?: number;
}

export interface CallOptions {
  timeoutMs?: number;
  /** The body updates some fields only (PATCH /machine-config): required fields may be left out. */
  partialBody?: boolean;
}

const faultSchema = z.object({ fault_message: z.string() });
const microHttpErrorSchema = z.object({ error: z.string() });

/**
 * Firecracker's default `--http-api-max-payload-size`. A bigger body is not refused once: the
 * server answers one 400 per KiB of it, and a client that drops the connection while those
 * answers are still being written makes Firecracker take SIGPIPE and die (SIGSYS, seen on every
 * version from 1.0 to 1.14). So the client refuses such a body before sending a byte.
 */
export const DEFAULT_API_MAX_PAYLOAD_BYTES = 51_200;

/**
 * Parses a body micro-http wrote itself: `{ "error": "<msg>" }`, where the message of the
 * payload-limit and unsupported-method answers holds a raw newline, so it is not valid JSON.
 * Control characters inside the string are escaped before parsing.
 */
function parseMicroHttpError(text: string): string | undefined {
  if (!/^\s*\{\s*"error"\s*:/.test(text)) return undefined;
  let escaped = "";
  for (const c of text.trim()) {
    const code = c.charCodeAt(0);
    escaped += code < 0x20 ? `\\u${code.toString(16).padStart(4, "0")}` : c;
  }
  const parsed = microHttpErrorSchema.safeParse(safeJson(escaped));
  return parsed.success ? parsed.data.error : undefined;
}

/** Turns a non-2xx answer into a typed error, whichever of Firecracker's two error bodies it has. */
export function apiErrorFrom(method: string, path: string, res: RawResponse): FirecrackerApiError {
  let parsed: unknown;
  try {
    parsed = res.text ? JSON.parse(res.text) : undefined;
  } catch {
    parsed = undefined;
  }
  const fault = faultSchema.safeParse(parsed);
  if (fault.success)
    return new FirecrackerApiError({
      status: res.status,
      faultMessage: fault.data.fault_message,
      bodyKey: "fault_message",
      method,
      path,
    });
  const microHttpError = parseMicroHttpError(res.text);
  if (microHttpError !== undefined)
    return new FirecrackerApiError({
      status: res.status,
      faultMessage: microHttpError,
      bodyKey: "error",
      method,
      path,
    });
  return new FirecrackerApiError({
    status: res.status,
    faultMessage: res.text.trim() || "(no body)",
    bodyKey: "none",
    method,
    path,
  });
}

function expandPath(template: string, params: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (_m, name: string) => {
    const value = params[name];
    if (value === undefined)
      throw new FirecrackerRequestError(`missing path parameter ${name} for ${template}`);
    if (!RESOURCE_ID_RE.test(value)) {
      throw new FirecrackerRequestError(
        `invalid ${name} "${value}": Firecracker resource ids may only contain letters, digits and underscores`,
        { [name]: value },
      );
    }
    return encodeURIComponent(value);
  });
}

/** The id field a body must repeat for each path parameter (Firecracker refuses a mismatch). */
const BODY_ID_FIELD: Record<string, string> = { drive_id: "drive_id", iface_id: "iface_id", id: "id" };

/**
 * HTTP client for one Firecracker API socket. `connect()` asks the running version first
 * (GET /version); from then on every request is checked against that version's API: an
 * endpoint, field or enum value it lacks is refused before sending, with the version that
 * added it. Error answers become FirecrackerApiError, and `Deprecation: true` is surfaced.
 */
export class FirecrackerClient {
  private readonly http: Client;
  private readonly timeoutMs: number;
  private runningVersion: FcVersion | undefined;
  private versioned: VersionedApi | undefined;
  private closed = false;

  constructor(private readonly options: ClientOptions) {
    this.http = new Client("http://localhost", {
      socketPath: options.socketPath,
      pipelining: 1,
      // micro-http has no idle timeout of its own; keep our side short so a dead VMM is noticed.
      keepAliveTimeout: 4_000,
      connect: { timeout: 2_000 },
    });
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** A client that has learned the running version. */
  static async connect(options: ClientOptions): Promise<FirecrackerClient> {
    const client = new FirecrackerClient(options);
    try {
      await client.learnVersion();
      return client;
    } catch (err) {
      await client.close();
      throw err;
    }
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  /** The running Firecracker's version (after connect / learnVersion). */
  get version(): FcVersion {
    if (!this.runningVersion) {
      throw new HypervisorError(
        "ERR_INVALID_STATE",
        "the Firecracker client has not learned the version yet: call connect() first",
      );
    }
    return this.runningVersion;
  }

  get api(): VersionedApi {
    this.versioned ??= VersionedApi.for(this.version);
    return this.versioned;
  }

  /** GET /version; refuses a Firecracker older than 1.0 (it has no /version and another API). */
  async learnVersion(): Promise<FcVersion> {
    const res = await this.raw("GET", "/version");
    if (res.status === 400) {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `the Firecracker at ${this.socketPath} has no GET /version: it is older than ${MIN_SUPPORTED_VERSION}, which cocoon does not support`,
      );
    }
    if (res.status !== 200) throw apiErrorFrom("GET", "/version", res);
    const body = z.object({ firecracker_version: z.string() }).safeParse(safeJson(res.text));
    if (!body.success)
      throw new HypervisorError(
        "ERR_VMM_API",
        `Firecracker answered GET /version with ${res.text.slice(0, 200)}`,
      );
    const v = parseVersion(body.data.firecracker_version);
    if (compareVersions(v, MIN_SUPPORTED_VERSION) < 0) {
      throw new HypervisorError(
        "ERR_NOT_SUPPORTED",
        `Firecracker ${v.raw} is older than ${MIN_SUPPORTED_VERSION}, which cocoon does not support`,
      );
    }
    this.runningVersion = v;
    this.versioned = VersionedApi.for(v);
    return v;
  }

  /**
   * Sends one request with no checks of the API model (tests of Firecracker's own refusals use
   * this), only the payload limit, whose refusal can kill Firecracker. `body` is sent as is
   * when a string or Buffer, else as JSON.
   */
  async raw(
    method: string,
    path: string,
    body?: unknown,
    options: CallOptions & { headers?: Record<string, string> } = {},
  ): Promise<RawResponse> {
    try {
      return await this.rawOnce(method, path, body, options);
    } catch (err) {
      // micro-http closes the connection after a transport error; a GET that met the closing
      // socket was never read, so it is safe (and needed) to send it again on a new one.
      const code = errnoCode(err instanceof FirecrackerConnectionError ? err.cause : err);
      if (method === "GET" && (code === "UND_ERR_SOCKET" || code === "ECONNRESET"))
        return this.rawOnce(method, path, body, options);
      throw err;
    }
  }

  private async rawOnce(
    method: string,
    path: string,
    body: unknown,
    options: CallOptions & { headers?: Record<string, string> },
  ): Promise<RawResponse> {
    if (this.closed)
      throw new FirecrackerConnectionError(this.socketPath, "the Firecracker client is closed");
    const payload =
      body === undefined
        ? undefined
        : typeof body === "string" || Buffer.isBuffer(body)
          ? body
          : JSON.stringify(body);
    this.refuseOversizedBody(method, path, payload);
    const timeout = options.timeoutMs ?? this.timeoutMs;
    try {
      const res = await this.http.request({
        method: method as "GET",
        path,
        headers: {
          accept: "application/json",
          ...(payload !== undefined ? { "content-type": "application/json" } : {}),
          ...options.headers,
        },
        ...(payload !== undefined ? { body: payload } : {}),
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      const text = await res.body.text();
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers))
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      return { status: res.statusCode, headers, text };
    } catch (err) {
      const code = errnoCode(err);
      const why =
        code === "ENOENT"
          ? "no such socket"
          : code === "ECONNREFUSED"
            ? "connection refused (nothing listens)"
            : code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT"
              ? `no answer within ${timeout} ms`
              : messageOf(err);
      throw new FirecrackerConnectionError(
        this.socketPath,
        `cannot reach the Firecracker API at ${this.socketPath} (${method} ${path}): ${why}`,
        {
          cause: err,
          details: { code },
        },
      );
    }
  }

  /** Refuses a body over Firecracker's payload limit before sending it (see DEFAULT_API_MAX_PAYLOAD_BYTES). */
  private refuseOversizedBody(method: string, path: string, payload: string | Buffer | undefined): void {
    if (payload === undefined) return;
    const limit = this.options.maxPayloadBytes ?? DEFAULT_API_MAX_PAYLOAD_BYTES;
    const size = typeof payload === "string" ? Buffer.byteLength(payload) : payload.length;
    if (size <= limit) return;
    throw new FirecrackerRequestError(
      `the body of ${method} ${path} is ${size} bytes, over Firecracker's API payload limit of ${limit} bytes: ` +
        "Firecracker would refuse it (and can die when the refused connection is dropped); send less " +
        "(large MMDS data: --metadata at launch) or start Firecracker with a larger --http-api-max-payload-size",
      { method, path, size, limit },
    );
  }

  /**
   * One operation of the API, checked against the running version: the endpoint must exist,
   * path ids must be valid and match the body's id, and the body must be valid for it.
   */
  async call<K extends OperationKey>(
    key: K,
    params: Operations[K]["pathParams"],
    body?: Operations[K]["body"],
    options: CallOptions = {},
  ): Promise<ApiResult<Operations[K]["response"]>> {
    const space = key.indexOf(" ");
    const method = key.slice(0, space);
    const template = key.slice(space + 1);
    const info = endpointInfo(method, template);
    if (!info) throw new FirecrackerRequestError(`unknown Firecracker endpoint ${key}`);
    this.api.checkEndpoint(info);
    const pathParams = params as Record<string, string>;
    const path = expandPath(template, pathParams);
    if (info.body) {
      if (body === undefined) {
        if (info.bodyRequired) throw new FirecrackerRequestError(`${key} needs a ${info.body} body`);
      } else {
        this.api.checkBody(info.body, body, { partial: options.partialBody ?? false });
        for (const name of info.pathParams) {
          const field = BODY_ID_FIELD[name];
          const value = field ? (body as Record<string, unknown>)[field] : undefined;
          if (field && value !== undefined && value !== pathParams[name]) {
            throw new FirecrackerRequestError(
              `${key}: the body's ${field} "${String(value)}" differs from the path's "${pathParams[name]}"`,
            );
          }
        }
      }
    } else if (body !== undefined) {
      throw new FirecrackerRequestError(`${key} takes no body`);
    }
    const res = await this.raw(method, path, body, options);
    if (res.status < 200 || res.status > 299) throw apiErrorFrom(method, path, res);
    const deprecated = res.headers["deprecation"] === "true";
    if (deprecated) {
      const fields = [
        ...(info.body && body !== undefined ? this.api.deprecatedFields(info.body, body) : []),
        ...deprecatedSettings(info.key, body),
      ];
      const notice: DeprecationNotice = { method, path, fields };
      if (this.options.onDeprecation) this.options.onDeprecation(notice);
      else
        this.options.logger?.warn(
          notice,
          fields.length
            ? `Firecracker deprecates ${fields.join(", ")} (${method} ${path})`
            : `Firecracker deprecates something in ${method} ${path} without saying what`,
        );
    }
    let parsed: unknown = undefined;
    if (info.response) {
      const json = safeJson(res.text);
      if (json === undefined)
        throw new HypervisorError(
          "ERR_VMM_API",
          `Firecracker answered ${method} ${path} with a body that is not JSON: ${res.text.slice(0, 200)}`,
        );
      parsed = this.api.validateResponse(info.response, json);
    }
    return { status: res.status, body: parsed as Operations[K]["response"], deprecated };
  }

  // -- typed operations ---------------------------------------------------------------------

  describeInstance(): Promise<ApiResult<InstanceInfo>> {
    return this.call("GET /", {});
  }
  getVersion(): Promise<ApiResult<FirecrackerVersion>> {
    return this.call("GET /version", {});
  }
  getMachineConfig(): Promise<ApiResult<MachineConfiguration>> {
    return this.call("GET /machine-config", {});
  }
  putMachineConfig(body: MachineConfiguration): Promise<ApiResult<void>> {
    return this.call("PUT /machine-config", {}, body);
  }
  /** Changes some fields (at least one) of the machine configuration, before boot. */
  patchMachineConfig(body: Partial<MachineConfiguration>): Promise<ApiResult<void>> {
    return this.call("PATCH /machine-config", {}, body as MachineConfiguration, { partialBody: true });
  }
  putCpuConfig(body: CpuConfig): Promise<ApiResult<void>> {
    return this.call("PUT /cpu-config", {}, body);
  }
  putBootSource(body: BootSource): Promise<ApiResult<void>> {
    return this.call("PUT /boot-source", {}, body);
  }
  putDrive(body: Drive): Promise<ApiResult<void>> {
    return this.call("PUT /drives/{drive_id}", { drive_id: body.drive_id }, body);
  }
  patchDrive(body: PartialDrive): Promise<ApiResult<void>> {
    return this.call("PATCH /drives/{drive_id}", { drive_id: body.drive_id }, body);
  }
  deleteDrive(driveId: string): Promise<ApiResult<void>> {
    return this.call("DELETE /drives/{drive_id}", { drive_id: driveId });
  }
  putPmem(body: Pmem): Promise<ApiResult<void>> {
    return this.call("PUT /pmem/{id}", { id: body.id }, body);
  }
  patchPmem(body: PartialPmem): Promise<ApiResult<void>> {
    return this.call("PATCH /pmem/{id}", { id: body.id }, body);
  }
  putNetworkInterface(body: NetworkInterface): Promise<ApiResult<void>> {
    return this.call("PUT /network-interfaces/{iface_id}", { iface_id: body.iface_id }, body);
  }
  patchNetworkInterface(body: PartialNetworkInterface): Promise<ApiResult<void>> {
    return this.call("PATCH /network-interfaces/{iface_id}", { iface_id: body.iface_id }, body);
  }
  deleteNetworkInterface(ifaceId: string): Promise<ApiResult<void>> {
    return this.call("DELETE /network-interfaces/{iface_id}", { iface_id: ifaceId });
  }
  putVsock(body: Vsock): Promise<ApiResult<void>> {
    return this.call("PUT /vsock", {}, body);
  }
  putLogger(body: FcLogger): Promise<ApiResult<void>> {
    return this.call("PUT /logger", {}, body);
  }
  putMetrics(body: Metrics): Promise<ApiResult<void>> {
    return this.call("PUT /metrics", {}, body);
  }
  putMmdsConfig(body: MmdsConfig): Promise<ApiResult<void>> {
    return this.call("PUT /mmds/config", {}, body);
  }
  putMmds(data: Record<string, unknown>): Promise<ApiResult<void>> {
    return this.call("PUT /mmds", {}, data);
  }
  patchMmds(data: Record<string, unknown>): Promise<ApiResult<void>> {
    return this.call("PATCH /mmds", {}, data);
  }
  getMmds(): Promise<ApiResult<{ [key: string]: unknown }>> {
    return this.call("GET /mmds", {});
  }
  putBalloon(body: Balloon): Promise<ApiResult<void>> {
    return this.call("PUT /balloon", {}, body);
  }
  patchBalloon(body: BalloonUpdate): Promise<ApiResult<void>> {
    return this.call("PATCH /balloon", {}, body);
  }
  getBalloon(): Promise<ApiResult<Balloon>> {
    return this.call("GET /balloon", {});
  }
  getBalloonStats(): Promise<ApiResult<BalloonStats>> {
    return this.call("GET /balloon/statistics", {});
  }
  patchBalloonStats(body: BalloonStatsUpdate): Promise<ApiResult<void>> {
    return this.call("PATCH /balloon/statistics", {}, body);
  }
  startBalloonHinting(body: BalloonStartCmd = {}): Promise<ApiResult<void>> {
    return this.call("PATCH /balloon/hinting/start", {}, body);
  }
  getBalloonHintingStatus(): Promise<ApiResult<BalloonHintingStatus>> {
    return this.call("GET /balloon/hinting/status", {});
  }
  stopBalloonHinting(): Promise<ApiResult<void>> {
    return this.call("PATCH /balloon/hinting/stop", {});
  }
  putEntropy(body: EntropyDevice = {}): Promise<ApiResult<void>> {
    return this.call("PUT /entropy", {}, body);
  }
  putSerial(body: SerialDevice): Promise<ApiResult<void>> {
    return this.call("PUT /serial", {}, body);
  }
  putMemoryHotplug(body: MemoryHotplugConfig): Promise<ApiResult<void>> {
    return this.call("PUT /hotplug/memory", {}, body);
  }
  patchMemoryHotplug(body: MemoryHotplugSizeUpdate): Promise<ApiResult<void>> {
    return this.call("PATCH /hotplug/memory", {}, body);
  }
  getMemoryHotplug(): Promise<ApiResult<MemoryHotplugStatus>> {
    return this.call("GET /hotplug/memory", {});
  }
  action(actionType: InstanceActionInfo["action_type"]): Promise<ApiResult<void>> {
    return this.call("PUT /actions", {}, { action_type: actionType });
  }
  instanceStart(): Promise<ApiResult<void>> {
    return this.action("InstanceStart");
  }
  flushMetrics(): Promise<ApiResult<void>> {
    return this.action("FlushMetrics");
  }
  sendCtrlAltDel(): Promise<ApiResult<void>> {
    return this.action("SendCtrlAltDel");
  }
  patchVm(state: Vm["state"]): Promise<ApiResult<void>> {
    return this.call("PATCH /vm", {}, { state });
  }
  pause(): Promise<ApiResult<void>> {
    return this.patchVm("Paused");
  }
  resume(): Promise<ApiResult<void>> {
    return this.patchVm("Resumed");
  }
  createSnapshot(body: SnapshotCreateParams, options: CallOptions = {}): Promise<ApiResult<void>> {
    return this.call("PUT /snapshot/create", {}, body, { timeoutMs: options.timeoutMs ?? 300_000 });
  }
  loadSnapshot(body: SnapshotLoadParams, options: CallOptions = {}): Promise<ApiResult<void>> {
    return this.call("PUT /snapshot/load", {}, body, { timeoutMs: options.timeoutMs ?? 300_000 });
  }
  getVmConfig(): Promise<ApiResult<FullVmConfiguration>> {
    return this.call("GET /vm/config", {});
  }

  /** Closes the HTTP connection; the VM keeps running. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.http.close().catch(() => this.http.destroy());
  }
}

/**
 * Deprecations Firecracker flags by a value rather than a field, which the field history
 * cannot name: MMDS version 1 (1.5+ answer `Deprecation: true` to PUT /mmds/config whenever
 * the version is V1 or left out, which means V1).
 */
export function deprecatedSettings(key: string, body: unknown): string[] {
  if (key === "PUT /mmds/config" && typeof body === "object" && body !== null) {
    const version = (body as { version?: unknown }).version;
    if (version === undefined) return ['MmdsConfig.version (left out, so V1; send "V2")'];
    if (version === "V1") return ['MmdsConfig.version="V1" (send "V2")'];
  }
  return [];
}

function safeJson(text: string): unknown {
  try {
    return text === "" ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}
