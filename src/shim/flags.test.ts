import { describe, expect, it } from "vitest";
import { SandboxError } from "../errors.js";
import { toStatus } from "./errors.js";
import { parseFlags } from "./flags.js";
import { groupIdFor, socketPathFor } from "./group.js";
import { parseExecSpec } from "./spec.js";
import { Code, TtrpcError } from "./ttrpc/status.js";

describe("shim flags", () => {
  it("parses what containerd 1.6 passes to start and delete", () => {
    const start = parseFlags(
      "-namespace default -address /c/containerd.sock -publish-binary /usr/bin/containerd -id t2 -debug start".split(
        " ",
      ),
    );
    expect(start).toMatchObject({
      namespace: "default",
      address: "/c/containerd.sock",
      publishBinary: "/usr/bin/containerd",
      id: "t2",
      debug: true,
      command: "start",
    });
    const del = parseFlags(["-namespace=k8s.io", "-id", "x", "-bundle", "/b", "delete"]);
    expect(del).toMatchObject({
      namespace: "k8s.io",
      id: "x",
      bundle: "/b",
      debug: false,
      command: "delete",
    });
  });

  it("skips flags a newer containerd may add, with or without a value", () => {
    const f = parseFlags(["-id", "a", "-new-flag", "v", "-other", "start"]);
    expect(f).toMatchObject({ id: "a", command: "start" });
  });

  it("refuses a flag without its value and a second command", () => {
    expect(() => parseFlags(["-id"])).toThrow(/needs a value/);
    expect(() => parseFlags(["start", "delete"])).toThrow(/unexpected argument/);
  });

  it("knows -v and -info", () => {
    expect(parseFlags(["-v"]).version).toBe(true);
    expect(parseFlags(["-info"]).info).toBe(true);
  });
});

describe("pod grouping", () => {
  it("sends a pod's containers to the sandbox's shim and keeps everything else on its own", () => {
    expect(groupIdFor("c1", {})).toBe("c1");
    expect(
      groupIdFor("pod", {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": "pod",
      }),
    ).toBe("pod");
    expect(
      groupIdFor("c1", {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "pod",
      }),
    ).toBe("pod");
    expect(
      groupIdFor("c2", {
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": "p2",
      }),
    ).toBe("p2");
    expect(
      groupIdFor("c3", { "io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "p3" }),
    ).toBe("p3");
  });

  it("derives a short, stable socket path per (address, namespace, group)", () => {
    const a = socketPathFor("/run/containerd/containerd.sock", "k8s.io", "pod");
    expect(a).toBe(socketPathFor("/run/containerd/containerd.sock", "k8s.io", "pod"));
    expect(a).not.toBe(socketPathFor("/run/containerd/containerd.sock", "default", "pod"));
    expect(Buffer.byteLength(a)).toBeLessThan(106);
  });
});

describe("error mapping", () => {
  it("maps cocoon codes to the gRPC codes containerd's errdefs understands", () => {
    expect(toStatus(new SandboxError("ERR_NOT_FOUND", "x")).code).toBe(Code.notFound);
    expect(toStatus(new SandboxError("ERR_ALREADY_EXISTS", "x")).code).toBe(Code.alreadyExists);
    expect(toStatus(new SandboxError("ERR_INVALID_STATE", "x")).code).toBe(Code.failedPrecondition);
    expect(toStatus(new SandboxError("ERR_NOT_SUPPORTED", "x")).code).toBe(Code.unimplemented);
    expect(toStatus(new SandboxError("ERR_INTERNAL", "boom"))).toEqual({
      code: Code.unknown,
      message: "ERR_INTERNAL: boom",
    });
    expect(toStatus(new TtrpcError(Code.failedPrecondition, "no"))).toEqual({
      code: Code.failedPrecondition,
      message: "no",
    });
    expect(toStatus(new Error("plain")).code).toBe(Code.unknown);
  });
});

describe("exec spec", () => {
  it("reads the OCI process JSON containerd puts in the Any", () => {
    const spec = Buffer.from(
      JSON.stringify({
        args: ["sh", "-c", "true"],
        env: ["A=1", "junk"],
        cwd: "/tmp",
        user: { uid: 5, gid: 6 },
      }),
    );
    expect(parseExecSpec(spec)).toMatchObject({
      args: ["sh", "-c", "true"],
      env: ["A=1"],
      cwd: "/tmp",
      user: { uid: 5, gid: 6 },
    });
  });

  it("refuses a missing, non-JSON or argument-less spec with InvalidArgument", () => {
    for (const bad of [undefined, Buffer.from("{"), Buffer.from(JSON.stringify({ args: [] }))]) {
      expect(() => parseExecSpec(bad)).toThrow(
        expect.objectContaining({ code: Code.invalidArgument }) as Error,
      );
    }
  });
});
