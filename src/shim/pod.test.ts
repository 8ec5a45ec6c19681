import { describe, expect, it } from "vitest";
import { podRoleOf, podVmSize } from "./pod.js";

describe("podRoleOf", () => {
  it("reads containerd's, CRI-O's and dockershim's keys", () => {
    expect(
      podRoleOf("p", { "io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "p" }),
    ).toEqual({ role: "sandbox", sandboxId: "p" });
    expect(
      podRoleOf("c", {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "p",
      }),
    ).toEqual({ role: "container", sandboxId: "p" });
    expect(
      podRoleOf("c", {
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": "p",
      }),
    ).toEqual({ role: "container", sandboxId: "p" });
    expect(podRoleOf("s", { "io.kubernetes.docker.type": "podsandbox" })).toEqual({
      role: "sandbox",
      sandboxId: "s",
    });
  });

  it("is a plain task without annotations, or a container that names no pod", () => {
    expect(podRoleOf("t", {})).toBeUndefined();
    expect(podRoleOf("t", { "io.kubernetes.cri.container-type": "container" })).toBeUndefined();
    expect(podRoleOf("t", { "io.kubernetes.cri.container-type": "something" })).toBeUndefined();
  });
});

describe("podVmSize", () => {
  const defaults = { vcpus: 1, memoryMB: 512 };
  it("adds the pod's limits to the defaults", () => {
    expect(
      podVmSize(
        {
          "io.kubernetes.cri.sandbox-cpu-quota": "150000",
          "io.kubernetes.cri.sandbox-cpu-period": "100000",
          "io.kubernetes.cri.sandbox-memory": String(256 * 2 ** 20 + 1),
        },
        defaults,
      ),
    ).toEqual({ cpus: 3, memoryMB: 512 + 257 });
  });

  it("ignores absent, zero, negative and malformed figures", () => {
    expect(podVmSize({}, defaults)).toEqual({});
    expect(
      podVmSize(
        {
          "io.kubernetes.cri.sandbox-cpu-quota": "-1",
          "io.kubernetes.cri.sandbox-cpu-period": "100000",
          "io.kubernetes.cri.sandbox-memory": "0",
        },
        defaults,
      ),
    ).toEqual({});
    expect(podVmSize({ "io.kubernetes.cri.sandbox-memory": "1e9" }, defaults)).toEqual({});
    expect(podVmSize({ "io.kubernetes.cri.sandbox-cpu-quota": "100000" }, defaults)).toEqual({});
  });
});
