import { describe, expect, it } from "vitest";
import {
  buildJailerArgs,
  checkJailerId,
  hostPathOf,
  jailLayout,
  spawnedPidIsFirecracker,
  writesPidFile,
} from "./jailer.js";
import { parseVersion } from "./version.js";

const v1_0 = parseVersion("1.0.0");
const v1_7 = parseVersion("1.7.0");
const v1_16 = parseVersion("1.16.1");

describe("buildJailerArgs", () => {
  const base = { id: "vm-1", execFile: "/usr/bin/firecracker", uid: 123, gid: 456 };

  it("emits the jailer's flags, then -- and Firecracker's own", () => {
    expect(
      buildJailerArgs(
        {
          ...base,
          chrootBaseDir: "/var/lib/cocoon/jails",
          netns: "/var/run/netns/ns1",
          daemonize: true,
          newPidNs: true,
          cgroups: ["cpuset.cpus=0", "cpuset.mems=0"],
          cgroupVersion: 2,
          parentCgroup: "cocoon",
          resourceLimits: { fsize: 1024, noFile: 4096 },
          firecrackerArgs: ["--api-sock", "/api.socket"],
        },
        v1_16,
      ),
    ).toEqual([
      "--id",
      "vm-1",
      "--exec-file",
      "/usr/bin/firecracker",
      "--uid",
      "123",
      "--gid",
      "456",
      "--chroot-base-dir",
      "/var/lib/cocoon/jails",
      "--netns",
      "/var/run/netns/ns1",
      "--daemonize",
      "--new-pid-ns",
      "--cgroup",
      "cpuset.cpus=0",
      "--cgroup",
      "cpuset.mems=0",
      "--cgroup-version",
      "2",
      "--parent-cgroup",
      "cocoon",
      "--resource-limit",
      "fsize=1024",
      "--resource-limit",
      "no-file=4096",
      "--",
      "--api-sock",
      "/api.socket",
    ]);
  });

  it.each(["1.0.0", "1.5.1", "1.7.0", "1.13.0", "1.16.1"])(
    "passes the sandbox's network namespace to jailer %s with --netns, before Firecracker's flags",
    (version) => {
      const args = buildJailerArgs(
        {
          ...base,
          netns: "/var/run/netns/cocoon-ab12cd34-sb1",
          firecrackerArgs: ["--api-sock", "/api.socket"],
        },
        parseVersion(version),
      );
      const at = args.indexOf("--netns");
      expect(args[at + 1]).toBe("/var/run/netns/cocoon-ab12cd34-sb1");
      expect(at).toBeGreaterThan(-1);
      expect(at).toBeLessThan(args.indexOf("--"));
      expect(args.filter((a) => a === "--netns")).toHaveLength(1);
    },
  );

  it("never sends the flags jailer v1.0 removed (--node, --seccomp-level)", () => {
    const args = buildJailerArgs({ ...base, daemonize: true }, v1_0);
    expect(args).not.toContain("--node");
    expect(args).not.toContain("--seccomp-level");
    expect(args).not.toContain("--extra-args");
  });

  it("refuses what the jailer refuses", () => {
    expect(() => buildJailerArgs({ ...base, id: "bad_id" }, v1_16)).toThrow(/cannot be a jailer id/);
    expect(() => buildJailerArgs({ ...base, execFile: "/opt/fc" }, parseVersion("1.5.0"))).toThrow(
      /must.*contain|contains "firecracker"/,
    );
    expect(buildJailerArgs({ ...base, execFile: "/opt/fc" }, v1_16)).toContain("/opt/fc");
    expect(() => buildJailerArgs({ ...base, parentCgroup: "../up" }, v1_16)).toThrow(/relative path/);
    expect(() => buildJailerArgs({ ...base, cgroups: ["cpus"] }, v1_16)).toThrow(
      /<controller>\.<file>=<value>/,
    );
    expect(() => buildJailerArgs({ ...base, firecrackerArgs: ["--id", "x"] }, v1_16)).toThrow(
      /jailer passes its own --id/,
    );
    expect(() => buildJailerArgs({ ...base, uid: -1 }, v1_16)).toThrow(/uid must be/);
    expect(checkJailerId("a-Z-9")).toBe("a-Z-9");
    expect(() => checkJailerId("x".repeat(65))).toThrow();
  });
});

describe("jail layout and pid rules", () => {
  it("computes <base>/<exec>/<id>/root and the pid file", () => {
    expect(jailLayout("/srv/jailer", "/usr/local/bin/firecracker-v1.16", "vm1")).toEqual({
      jailDir: "/srv/jailer/firecracker-v1.16/vm1",
      root: "/srv/jailer/firecracker-v1.16/vm1/root",
      pidFile: "/srv/jailer/firecracker-v1.16/vm1/root/firecracker-v1.16.pid",
      execName: "firecracker-v1.16",
    });
    expect(hostPathOf("/j/root", "/run/firecracker.socket")).toBe("/j/root/run/firecracker.socket");
    expect(hostPathOf("/j/root", "../../etc/passwd")).toBe("/j/root/etc/passwd");
  });

  it("knows when a pid file is written and whether the spawned pid is Firecracker", () => {
    expect(writesPidFile(v1_0, {})).toBe(false);
    expect(writesPidFile(v1_0, { newPidNs: true })).toBe(true);
    expect(writesPidFile(v1_7, {})).toBe(true);
    expect(spawnedPidIsFirecracker(v1_0, { daemonize: true })).toBe(true);
    expect(spawnedPidIsFirecracker(v1_7, { daemonize: true })).toBe(false);
    expect(spawnedPidIsFirecracker(v1_16, {})).toBe(true);
    expect(spawnedPidIsFirecracker(v1_0, { newPidNs: true })).toBe(false);
  });
});
