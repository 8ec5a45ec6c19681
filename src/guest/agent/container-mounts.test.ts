import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { containerMountSchema } from "../../agent/protocol/container-setup.js";
import { tempDir } from "../../../test/helpers/tmp.js";
import { containerMounts } from "./container-mounts.js";
import { ociSpec, type OciMount } from "./oci.js";

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

const base = {
  containerId: "c1",
  rootfs: "/run/cocoon/containers/c1/rootfs",
  readonlyRootfs: false,
  hostname: "h",
  args: ["sh"],
  env: [],
  cwd: "/",
  uid: 0,
  gid: 0,
  etcFiles: { hosts: "/b/hosts", hostname: "/b/hostname" },
};

describe("an OCI runtime's mounts and rlimits in the guest's container spec", () => {
  it("writes copied files into the bundle with their mode and binds them; filesystems pass through", async () => {
    const requested = [
      { kind: "filesystem", destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] },
      {
        kind: "file",
        destination: "/etc/hosts",
        content: Buffer.from("1.2.3.4 x\n").toString("base64"),
        mode: 0o600,
      },
      { kind: "file", destination: "/etc/ro", content: "", readOnly: true },
    ].map((m) => containerMountSchema().parse(m));
    const mounts = await containerMounts(dir, requested);
    expect(mounts).toEqual([
      { destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] },
      {
        destination: "/etc/hosts",
        type: "bind",
        source: path.join(dir, "files/1"),
        options: expect.arrayContaining(["rw"]),
      },
      {
        destination: "/etc/ro",
        type: "bind",
        source: path.join(dir, "files/2"),
        options: expect.arrayContaining(["ro"]),
      },
    ]);
    expect(await readFile(path.join(dir, "files/1"), "utf8")).toBe("1.2.3.4 x\n");
    expect((await stat(path.join(dir, "files/1"))).mode & 0o7777).toBe(0o600);
    expect((await stat(path.join(dir, "files/2"))).mode & 0o7777).toBe(0o644);
  });

  it("a mount at a default's destination takes its place; others follow the defaults", () => {
    const extra: OciMount[] = [
      { destination: "/etc/hosts", type: "bind", source: "/b/files/0", options: ["rbind", "rw"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["size=1m"] },
      { destination: "/scratch", type: "tmpfs", source: "tmpfs", options: [] },
    ];
    const spec = ociSpec({ ...base, extraMounts: extra }) as { mounts: OciMount[] };
    const at = (d: string) => spec.mounts.filter((m) => m.destination === d);
    expect(at("/etc/hosts")).toEqual([extra[0]]);
    expect(at("/dev/shm")).toEqual([extra[1]]);
    // /dev/shm stays after /dev (runc mounts in order), /scratch comes last.
    const order = spec.mounts.map((m) => m.destination);
    expect(order.indexOf("/dev/shm")).toBeGreaterThan(order.indexOf("/dev"));
    expect(order.at(-1)).toBe("/scratch");
  });

  it("rlimits replace the default high RLIMIT_NOFILE only when given", () => {
    const rlimitsOf = (s: Record<string, unknown>) => (s["process"] as { rlimits: unknown }).rlimits;
    expect(rlimitsOf(ociSpec(base))).toEqual([{ type: "RLIMIT_NOFILE", hard: 1048576, soft: 1048576 }]);
    const mine = [{ type: "RLIMIT_NPROC", hard: 10, soft: 5 }];
    expect(rlimitsOf(ociSpec({ ...base, rlimits: mine }))).toEqual(mine);
  });
});
