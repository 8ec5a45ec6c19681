import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  applyLimits,
  checkCgroupsFree,
  createCgroups,
  joinVcpuThreads,
  readCgroupStats,
  removeCgroups,
} from "./cgroupfs.js";
import { layoutFrom, parseProcCgroup } from "./layout.js";
import { planCgroups } from "./plan.js";

const HYBRID_MOUNTINFO = `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:32 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;
const HYBRID_SELF = `8:pids:/
5:devices:/
4:memory:/session/abc
3:cpuset:/
1:cpu,cpuacct:/
0::/`;

describe("cgroup layout", () => {
  it("reads a hybrid host: v1 controllers, own cgroup per hierarchy, devices ignored", () => {
    const l = layoutFrom(HYBRID_MOUNTINFO, HYBRID_SELF, []);
    expect(l).toMatchObject({ version: 1, hybrid: true });
    if (l?.version !== 1) throw new Error("v1 expected");
    expect(l.hierarchies.map((h) => [h.controllers.join(","), h.ownDir])).toEqual([
      ["cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"],
      ["cpuset", "/sys/fs/cgroup/cpuset"],
      ["memory", "/sys/fs/cgroup/memory/session/abc"],
      ["pids", "/sys/fs/cgroup/pids"],
    ]);
  });

  it("reads a v2 host with a mount root (a container's view)", () => {
    const l = layoutFrom("40 22 0:37 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw", "0::/kubepods/pod1", [
      "cpu",
      "memory",
      "pids",
    ]);
    expect(l).toEqual({
      version: 2,
      mountPoint: "/sys/fs/cgroup",
      ownDir: "/sys/fs/cgroup/pod1",
      controllers: ["cpu", "memory", "pids"],
    });
    expect(parseProcCgroup("garbage\n0::/x")).toEqual(new Map([["", "/x"]]));
  });
});

describe("cgroup plans", () => {
  const hybrid = layoutFrom(HYBRID_MOUNTINFO, HYBRID_SELF, [])!;
  it("v1, split: vCPUs carry the quota and the pinning, the rest sits in overhead", () => {
    const p = planCgroups(hybrid, "sb1", false);
    expect(p.cpu).toBe("/sys/fs/cgroup/cpu,cpuacct/cocoon-sb1/vcpus");
    expect(p.cpuacct).toBe("/sys/fs/cgroup/cpu,cpuacct/cocoon-sb1");
    expect(p.cpuset).toBe("/sys/fs/cgroup/cpuset/cocoon-sb1/vcpus");
    expect(p.memory).toBe("/sys/fs/cgroup/memory/session/abc/cocoon-sb1");
    expect(p.procs).toContain("/sys/fs/cgroup/cpu,cpuacct/cocoon-sb1/overhead");
    expect(p.procs).toContain("/sys/fs/cgroup/pids/cocoon-sb1");
    expect(p.vcpus).toEqual([
      "/sys/fs/cgroup/cpu,cpuacct/cocoon-sb1/vcpus",
      "/sys/fs/cgroup/cpuset/cocoon-sb1/vcpus",
    ]);
  });
  it("v1, sandbox_cgroup_only: one cgroup per hierarchy, no thread moves", () => {
    const p = planCgroups(hybrid, "sb1", true);
    expect(p.vcpus).toEqual([]);
    expect(p.dirs).toHaveLength(4);
    expect(p.cpu).toBe("/sys/fs/cgroup/cpu,cpuacct/cocoon-sb1");
  });
});

let tmp: string | undefined;
afterEach(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
  tmp = undefined;
});

describe("cgroupfs writes (against a directory standing in for cgroupfs)", () => {
  it("v2 split: threaded children, controllers enabled, limits written, removal children first", async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "cg-"));
    await writeFile(path.join(tmp, "cgroup.controllers"), "cpu cpuset memory pids io\n");
    const layout = {
      version: 2 as const,
      mountPoint: tmp,
      ownDir: tmp,
      controllers: ["cpu", "cpuset", "memory", "pids", "io"],
    };
    const p = planCgroups(layout, "x", false);
    await createCgroups(p, {
      cpus: 2,
      periodUs: 100_000,
      weight: 50,
      cpusetCpus: "1",
      memoryBytes: 1 << 30,
      pidsMax: 99,
    });
    const s = path.join(tmp, "cocoon-x");
    const at = (f: string): Promise<string> => readFile(path.join(tmp!, f), "utf8");
    expect(await at("cgroup.subtree_control")).toBe("+cpu +cpuset +memory +pids +io");
    expect(await at("cocoon-x/cgroup.subtree_control")).toBe("+cpu +cpuset");
    expect(await at("cocoon-x/vcpus/cgroup.type")).toBe("threaded");
    expect(await at("cocoon-x/vcpus/cpu.max")).toBe("200000 100000");
    expect(await at("cocoon-x/vcpus/cpu.weight")).toBe("50");
    expect(await at("cocoon-x/vcpus/cpuset.cpus")).toBe("1");
    expect(await at("cocoon-x/memory.max")).toBe(String(1 << 30));
    expect(await at("cocoon-x/pids.max")).toBe("99");
    await joinVcpuThreads(p, [1234]);
    expect(await at("cocoon-x/vcpus/cgroup.threads")).toBe("1234");
    await applyLimits(p, { cpus: 0, periodUs: 100_000, memoryBytes: 5, pidsMax: 7 });
    expect(await at("cocoon-x/vcpus/cpu.max")).toBe("max 100000");
    await writeFile(path.join(s, "memory.current"), "4096\n");
    await writeFile(path.join(s, "cpu.stat"), "usage_usec 250\nuser_usec 1\n");
    await writeFile(path.join(s, "io.stat"), "8:0 rbytes=10 wbytes=20 rios=1\n8:16 rbytes=1 wbytes=2\n");
    expect(await readCgroupStats(p)).toMatchObject({
      cpuUsageNs: 250_000,
      memoryBytes: 4096,
      memoryLimitBytes: 5,
      pidsLimit: 7,
      blockReadBytes: 11,
      blockWriteBytes: 22,
    });
    // a plain directory with files is not removable like a cgroup; empty it as the kernel would
    for (const d of p.dirs) await rm(d, { recursive: true, force: true });
    await mkdir(s);
    await removeCgroups(p);
    await removeCgroups(p); // idempotent
  });

  it("refuses cgroups a VMM already runs in (a same-named sandbox of another state root)", async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), "cg-"));
    const layout = { version: 2 as const, mountPoint: tmp, ownDir: tmp, controllers: ["cpu", "pids"] };
    const p = planCgroups(layout, "twin", false);
    await checkCgroupsFree(p); // none yet
    await mkdir(path.join(tmp, "cocoon-twin", "overhead"), { recursive: true });
    await checkCgroupsFree(p); // left empty by a crash: taken over
    await writeFile(path.join(tmp, "cocoon-twin", "overhead", "cgroup.threads"), "4242\n");
    await expect(checkCgroupsFree(p)).rejects.toMatchObject({
      code: "ERR_CGROUP",
      message: `the host cgroup ${path.join(tmp, "cocoon-twin", "overhead")} is in use (tasks 4242)`,
    });
  });
});
