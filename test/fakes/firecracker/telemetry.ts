/**
 * Firecracker's logger and metrics outputs (firecracker-api.md §11): a file or FIFO opened
 * O_RDWR|O_NONBLOCK (so a FIFO needs no reader yet), one text line per log record, one JSON
 * object per metrics flush. A full FIFO drops lines and counts them, as the real one does.
 */
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { compareVersions } from "../../../src/vmm/firecracker/version.js";
import { errnoCode } from "../../../src/errors.js";

export const LEVELS = ["Off", "Error", "Warning", "Info", "Debug", "Trace"] as const;
export type Level = (typeof LEVELS)[number];
const LABEL: Record<Level, string> = {
  Off: "OFF",
  Error: "ERROR",
  Warning: "WARN",
  Info: "INFO",
  Debug: "DEBUG",
  Trace: "TRACE",
};

export function parseLevel(text: string): Level | undefined {
  return LEVELS.find((l) => l.toLowerCase() === text.toLowerCase());
}

/** Opens a log/metrics target as Firecracker does; `create` for versions that create a missing file (1.14+). */
export function openTarget(path: string, create: boolean): number {
  return openSync(
    path,
    constants.O_RDWR | constants.O_NONBLOCK | constants.O_APPEND | (create ? constants.O_CREAT : 0),
    0o600,
  );
}

function timestamp(): string {
  const now = new Date();
  const ns = String(
    now.getUTCMilliseconds() * 1_000_000 + Number(process.hrtime.bigint() % 1_000_000n),
  ).padStart(9, "0");
  return now.toISOString().slice(0, 19) + "." + ns;
}

export class FcLogger {
  private fd: number | undefined;
  level: Level;
  private showLevel = false;
  private showOrigin = false;
  private module: string | undefined;
  missed = 0;
  configured = false;

  constructor(
    private readonly id: string,
    version: string,
  ) {
    this.level = compareVersions(version, "1.5.0") >= 0 ? "Info" : "Warning";
  }

  configure(
    fd: number | undefined,
    options: { level?: Level; showLevel?: boolean; showOrigin?: boolean; module?: string },
  ): void {
    if (this.fd !== undefined && this.fd !== 1) closeSync(this.fd);
    this.fd = fd;
    if (options.level) this.level = options.level;
    this.showLevel = options.showLevel ?? false;
    this.showOrigin = options.showOrigin ?? false;
    this.module = options.module;
    this.configured = true;
  }

  enabled(level: Level): boolean {
    return this.level !== "Off" && LEVELS.indexOf(level) <= LEVELS.indexOf(this.level);
  }

  log(level: Level, thread: string, message: string, origin = "src/firecracker/src/main.rs:1"): void {
    if (this.fd === undefined || !this.enabled(level)) return;
    const module = origin.split(":")[0] ?? "";
    if (this.module && !module.includes(this.module.replace(/::/g, "/"))) return;
    const tags = [
      this.id,
      thread,
      ...(this.showLevel ? [LABEL[level]] : []),
      ...(this.showOrigin ? [origin] : []),
    ];
    writeLine(this.fd, `${timestamp()} [${tags.join(":")}] ${message}\n`, () => this.missed++);
  }
}

function writeLine(fd: number, line: string, onDrop: () => void): void {
  try {
    writeSync(fd, line);
  } catch (err) {
    if (errnoCode(err) === "EAGAIN") onDrop();
    else throw err;
  }
}

type Group = Record<string, number>;

/**
 * Metrics: counters hold the delta since the previous flush, "store" values are absolute
 * (firecracker-api.md §11). The groups are the v1.0 ones; 1.4+ adds `entropy`, 1.6+ the
 * per-device `block_<id>` / `net_<id>` groups.
 */
export class FcMetrics {
  private fd: number | undefined;
  private counters: Record<string, Group> = {};
  private stores: Record<string, Group> = {};
  missed = 0;

  constructor(private readonly version: string) {
    this.reset();
  }

  get configured(): boolean {
    return this.fd !== undefined;
  }

  configure(fd: number): void {
    this.fd = fd;
  }

  private reset(): void {
    const zero = (names: string[]): Group => Object.fromEntries(names.map((n) => [n, 0]));
    this.counters = {
      api_server: zero(["sync_response_fails", "sync_vmm_send_timeout_count"]),
      balloon: zero([
        "activate_fails",
        "inflate_count",
        "stats_updates_count",
        "stats_update_fails",
        "deflate_count",
        "event_fails",
      ]),
      block: zero([
        "activate_fails",
        "cfg_fails",
        "no_avail_buffer",
        "event_fails",
        "execute_fails",
        "invalid_reqs_count",
        "flush_count",
        "queue_event_count",
        "rate_limiter_event_count",
        "update_count",
        "update_fails",
        "read_bytes",
        "write_bytes",
        "read_count",
        "write_count",
        "rate_limiter_throttled_events",
        "io_engine_throttled_events",
      ]),
      deprecated_api: zero(["deprecated_http_api_calls", "deprecated_cmd_line_api_calls"]),
      get_api_requests: zero(["instance_info_count", "machine_cfg_count", "mmds_count", "vmm_version_count"]),
      i8042: zero([
        "error_count",
        "missed_read_count",
        "missed_write_count",
        "read_count",
        "reset_count",
        "write_count",
      ]),
      logger: zero(["missed_metrics_count", "metrics_fails", "missed_log_count", "log_fails"]),
      mmds: zero([
        "rx_accepted",
        "rx_accepted_err",
        "rx_accepted_unusual",
        "rx_bad_eth",
        "rx_count",
        "tx_bytes",
        "tx_count",
        "tx_errors",
        "tx_frames",
        "connections_created",
        "connections_destroyed",
      ]),
      net: zero([
        "activate_fails",
        "cfg_fails",
        "mac_address_updates",
        "no_rx_avail_buffer",
        "no_tx_avail_buffer",
        "event_fails",
        "rx_queue_event_count",
        "rx_event_rate_limiter_count",
        "rx_partial_writes",
        "rx_rate_limiter_throttled",
        "rx_tap_event_count",
        "rx_bytes_count",
        "rx_packets_count",
        "rx_fails",
        "rx_count",
        "tap_read_fails",
        "tap_write_fails",
        "tx_bytes_count",
        "tx_malformed_frames",
        "tx_fails",
        "tx_count",
        "tx_packets_count",
        "tx_partial_reads",
        "tx_queue_event_count",
        "tx_rate_limiter_event_count",
        "tx_rate_limiter_throttled",
        "tx_spoofed_mac_count",
      ]),
      patch_api_requests: zero([
        "drive_count",
        "drive_fails",
        "network_count",
        "network_fails",
        "machine_cfg_count",
        "machine_cfg_fails",
        "mmds_count",
        "mmds_fails",
      ]),
      put_api_requests: zero([
        "actions_count",
        "actions_fails",
        "boot_source_count",
        "boot_source_fails",
        "drive_count",
        "drive_fails",
        "logger_count",
        "logger_fails",
        "machine_cfg_count",
        "machine_cfg_fails",
        "metrics_count",
        "metrics_fails",
        "network_count",
        "network_fails",
        "mmds_count",
        "mmds_fails",
        "vsock_count",
        "vsock_fails",
      ]),
      rtc: zero(["error_count", "missed_read_count", "missed_write_count"]),
      uart: zero([
        "error_count",
        "flush_count",
        "missed_read_count",
        "missed_write_count",
        "read_count",
        "write_count",
      ]),
      vcpu: zero([
        "exit_io_in",
        "exit_io_out",
        "exit_mmio_read",
        "exit_mmio_write",
        "failures",
        "filter_cpuid",
      ]),
      vmm: zero(["device_events", "panic_count"]),
      vsock: zero([
        "activate_fails",
        "cfg_fails",
        "rx_queue_event_fails",
        "tx_queue_event_fails",
        "ev_queue_event_fails",
        "muxer_event_fails",
        "conn_event_fails",
        "rx_queue_event_count",
        "tx_queue_event_count",
        "rx_bytes_count",
        "tx_bytes_count",
        "rx_packets_count",
        "tx_packets_count",
        "conns_added",
        "conns_killed",
        "conns_removed",
        "killq_resync",
        "tx_flush_fails",
        "tx_write_fails",
        "rx_read_fails",
      ]),
      ...(compareVersions(this.version, "1.4.0") >= 0
        ? {
            entropy: zero([
              "activate_fails",
              "entropy_event_fails",
              "entropy_event_count",
              "entropy_bytes",
              "host_rng_fails",
              "entropy_rate_limiter_throttled",
              "rate_limiter_event_count",
            ]),
          }
        : {}),
    };
    this.stores = {
      ...this.stores,
      api_server: {
        process_startup_time_us: this.stores.api_server?.process_startup_time_us ?? 0,
        process_startup_time_cpu_us: this.stores.api_server?.process_startup_time_cpu_us ?? 0,
      },
      latencies_us:
        this.stores.latencies_us ??
        Object.fromEntries(
          [
            "full_create_snapshot",
            "diff_create_snapshot",
            "load_snapshot",
            "pause_vm",
            "resume_vm",
            "vmm_full_create_snapshot",
            "vmm_diff_create_snapshot",
            "vmm_load_snapshot",
            "vmm_pause_vm",
            "vmm_resume_vm",
          ].map((n) => [n, 0]),
        ),
      seccomp: this.stores.seccomp ?? { num_faults: 0 },
      signals: this.stores.signals ?? {
        sigbus: 0,
        sigsegv: 0,
        sigxfsz: 0,
        sigxcpu: 0,
        sigpipe: 0,
        sighup: 0,
        sigill: 0,
      },
    };
  }

  inc(group: string, name: string, by = 1): void {
    const g = (this.counters[group] ??= {});
    g[name] = (g[name] ?? 0) + by;
  }

  store(group: string, name: string, value: number): void {
    const g = (this.stores[group] ??= {});
    g[name] = value;
  }

  /** Writes one line (when configured) and resets the counters; returns the line. */
  flush(extraGroups: string[] = []): string | undefined {
    const merged: Record<string, unknown> = { utc_timestamp_ms: Date.now() };
    const names = [
      ...new Set([...Object.keys(this.counters), ...Object.keys(this.stores), ...extraGroups]),
    ].sort();
    for (const name of names) merged[name] = { ...(this.stores[name] ?? {}), ...(this.counters[name] ?? {}) };
    const line = JSON.stringify(merged);
    this.reset();
    if (this.fd === undefined) return undefined;
    writeLine(this.fd, line + "\n", () => (this.missed++, this.inc("logger", "missed_metrics_count")));
    return line;
  }
}
