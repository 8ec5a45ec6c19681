import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { containerMountSchema, MAX_COPIED_FILE_BYTES } from "../agent/protocol/container-setup.js";
import { CocoonError } from "../errors.js";
import { guestMounts } from "./mounts.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "cocoon-oci-mounts-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function refusal(p: Promise<unknown>): Promise<CocoonError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CocoonError);
  return err as CocoonError;
}

describe("config.json mounts for a VM", () => {
  it("passes guest filesystems through and copies bound host files with their mode", async () => {
    const hosts = path.join(dir, "hosts");
    await writeFile(hosts, "10.0.0.1 peer\n");
    await chmod(hosts, 0o640);
    const out = await guestMounts([
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid"] },
      { destination: "/scratch", type: "tmpfs", options: ["size=1m"] },
      { destination: "/etc/hosts", type: "bind", source: hosts, options: ["bind", "rprivate"] },
      { destination: "/etc/ro", source: hosts, options: ["rbind", "ro"] },
    ]);
    expect(out).toEqual([
      {
        kind: "filesystem",
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid"],
      },
      { kind: "filesystem", destination: "/scratch", type: "tmpfs", source: "tmpfs", options: ["size=1m"] },
      {
        kind: "file",
        destination: "/etc/hosts",
        content: Buffer.from("10.0.0.1 peer\n").toString("base64"),
        mode: 0o640,
        readOnly: false,
      },
      expect.objectContaining({ kind: "file", destination: "/etc/ro", readOnly: true }),
    ]);
    // What goes to the agent passes the protocol's own schema.
    for (const m of out) expect(containerMountSchema().safeParse(m).success).toBe(true);
  });

  it("a host directory at /dev/shm becomes the guest's own shm; elsewhere it is refused", async () => {
    const shm = path.join(dir, "shm");
    await mkdir(shm);
    expect(await guestMounts([{ destination: "/dev/shm", type: "bind", source: shm }])).toEqual([]);
    const err = await refusal(guestMounts([{ destination: "/data", type: "bind", source: shm }]));
    expect(err.code).toBe("ERR_NOT_SUPPORTED");
    expect(err.message).toContain(`${shm} at /data`);
  });

  it("refuses what a VM cannot do, with the reason", async () => {
    const big = path.join(dir, "big");
    await writeFile(big, Buffer.alloc(MAX_COPIED_FILE_BYTES + 1));
    type Mount = Parameters<typeof guestMounts>[0][number];
    const cases: [Mount, string, string][] = [
      [
        { destination: "/x", type: "bind", source: path.join(dir, "missing") },
        "ERR_INVALID_CONFIG",
        "does not exist",
      ],
      [{ destination: "/x", type: "nfs", source: "server:/export" }, "ERR_NOT_SUPPORTED", 'type "nfs"'],
      [{ destination: "/x", type: "bind", source: big }, "ERR_NOT_SUPPORTED", "more than"],
      [{ destination: "/x", type: "bind", source: "/dev/null" }, "ERR_NOT_SUPPORTED", "only regular files"],
      [{ destination: "relative", type: "tmpfs" }, "ERR_INVALID_CONFIG", "not absolute"],
    ];
    for (const [mount, code, words] of cases) {
      const err = await refusal(guestMounts([mount]));
      expect(err.code, JSON.stringify(mount)).toBe(code);
      expect(err.message).toContain(words);
    }
  });
});
