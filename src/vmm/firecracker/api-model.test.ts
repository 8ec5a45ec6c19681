import { describe, expect, it } from "vitest";
import { SPEC_V1_0_0, SPEC_V1_16_1, type Schema } from "../../gen/firecracker/index.js";
import { VersionedApi, definitionsFor, matchEndpoint } from "./api-model.js";
import { FirecrackerRequestError, FirecrackerVersionError } from "./errors.js";
import { parseVersion } from "./version.js";

/** Drops what legitimately differs between a spec and the derived view: defaults, key order, no-op keywords. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[key];
    // additionalProperties is what the strict view adds (serde's deny_unknown_fields).
    if (key === "default" || key === "additionalProperties") continue;
    out[key] = key === "required" && Array.isArray(v) ? [...v].sort() : canonical(v);
  }
  return out;
}

describe("derived per-version definitions", () => {
  for (const spec of [SPEC_V1_0_0, SPEC_V1_16_1]) {
    it(`equal the ${spec.version} spec (the version history is complete and right)`, () => {
      const derived = definitionsFor(parseVersion(spec.version), { strict: true });
      const expected: Record<string, Schema> = { ...spec.definitions };
      // v1.0.0's spec documents snake_case keys that v1.0 never sent (firecracker-api.md §13.1).
      delete expected.FullVmConfiguration;
      const got: Record<string, Schema> = { ...derived };
      delete got.FullVmConfiguration;
      expect(canonical(got)).toEqual(canonical(expected));
    });
  }

  it("drops fields per version in between (1.7 has huge_pages, not mtu)", () => {
    const defs = definitionsFor(parseVersion("1.7.0"), { strict: true });
    expect(Object.keys(defs.MachineConfiguration?.properties ?? {})).toContain("huge_pages");
    expect(Object.keys(defs.NetworkInterface?.properties ?? {})).not.toContain("mtu");
    expect(defs.Drive?.required).toEqual(["drive_id", "is_root_device"]);
    expect(definitionsFor(parseVersion("1.5.0"), { strict: true }).Drive?.required).toContain("path_on_host");
  });
});

describe("VersionedApi.checkBody", () => {
  const v1 = VersionedApi.for("1.0.0");
  const v16 = VersionedApi.for("1.16.1");

  it("refuses a field newer than the running version, naming the version that added it", () => {
    expect(() =>
      v1.checkBody("MachineConfiguration", { vcpu_count: 1, mem_size_mib: 128, huge_pages: "2M" }),
    ).toThrow(
      /the field MachineConfiguration.huge_pages was added in Firecracker 1.7.0; the running Firecracker is 1.0.0/,
    );
    expect(() =>
      v1.checkBody("SnapshotLoadParams", {
        snapshot_path: "/s",
        mem_backend: { backend_type: "File", backend_path: "/m" },
      }),
    ).toThrow(FirecrackerVersionError);
    v16.checkBody("SnapshotLoadParams", {
      snapshot_path: "/s",
      mem_backend: { backend_type: "Uffd", backend_path: "/m" },
    });
  });

  it("refuses a removed field and new enum values", () => {
    expect(() =>
      v16.checkBody("SnapshotCreateParams", { snapshot_path: "/s", mem_file_path: "/m", version: "1.0.0" }),
    ).toThrow(/removed in Firecracker 1.6.0/);
    expect(() => v1.checkBody("Logger", { log_path: "/l", level: "Trace" })).toThrow(
      /"Trace" of Logger.level was added in Firecracker 1.5.0/,
    );
    v16.checkBody("Logger", { level: "Off" });
  });

  it("refuses unknown fields and type errors", () => {
    expect(() =>
      v16.checkBody("MachineConfiguration", { vcpu_count: 1, mem_size_mib: 128, bogus: 1 }),
    ).toThrow(FirecrackerRequestError);
    expect(() => v16.checkBody("MachineConfiguration", { vcpu_count: 0, mem_size_mib: 128 })).toThrow(
      /vcpu_count must be >= 1/,
    );
    expect(() => v1.checkBody("Drive", { drive_id: "a", is_root_device: false })).toThrow(
      /must have required property 'is_read_only'/,
    );
    v16.checkBody("Drive", { drive_id: "a", is_root_device: false, socket: "/vhost.sock" });
  });

  it("reports deprecated fields", () => {
    expect(v1.deprecatedFields("Vsock", { guest_cid: 3, uds_path: "/v", vsock_id: "root" })).toEqual([
      "Vsock.vsock_id",
    ]);
    expect(v1.deprecatedFields("SnapshotLoadParams", { snapshot_path: "/s", mem_file_path: "/m" })).toEqual(
      [],
    );
    expect(v16.deprecatedFields("SnapshotLoadParams", { snapshot_path: "/s", mem_file_path: "/m" })).toEqual([
      "SnapshotLoadParams.mem_file_path",
    ]);
  });

  it("validates responses leniently (v1.0 /vm/config uses kebab-case keys)", () => {
    v1.validateResponse("FullVmConfiguration", {
      "boot-source": { kernel_image_path: "/k", initrd_path: null },
      drives: [],
      balloon: null,
    });
    expect(() => v1.validateResponse("InstanceInfo", { id: "x" })).toThrow(/invalid InstanceInfo/);
  });
});

describe("endpoints", () => {
  it("matches concrete paths and gates by version", () => {
    const m = matchEndpoint("PUT", "/drives/rootfs");
    expect(m?.info.key).toBe("PUT /drives/{drive_id}");
    expect(m?.params).toEqual({ drive_id: "rootfs" });
    const cpu = matchEndpoint("PUT", "/cpu-config")!;
    expect(() => VersionedApi.for("1.0.0").checkEndpoint(cpu.info)).toThrow(
      /endpoint PUT \/cpu-config was added in Firecracker 1.4.0/,
    );
    VersionedApi.for("1.4.0").checkEndpoint(cpu.info);
    expect(matchEndpoint("POST", "/actions")).toBeUndefined();
  });
});
