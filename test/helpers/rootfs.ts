import { execFileSync } from "node:child_process";
import { copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";

/** A minimal container rootfs: static busybox and its applets, the usual directories. */
export async function busyboxRootfs(dir: string): Promise<string> {
  for (const d of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
    "var",
    "run",
  ]) {
    await mkdir(path.join(dir, d), { recursive: true });
  }
  await copyFile("/bin/busybox", path.join(dir, "bin/busybox"));
  const applets = execFileSync("/bin/busybox", ["--list-full"], { encoding: "utf8" })
    .split("\n")
    .filter(Boolean);
  for (const a of applets) {
    if (a === "bin/busybox") continue;
    await mkdir(path.join(dir, path.dirname(a)), { recursive: true });
    await symlink("/bin/busybox", path.join(dir, a)).catch(() => undefined);
  }
  await writeFile(path.join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  await writeFile(path.join(dir, "etc/group"), "root:x:0:\n");
  await writeFile(path.join(dir, "etc/container-marker"), "this file is only in the container rootfs\n");
  return dir;
}

/** The same rootfs as a tarball. */
export async function busyboxTarball(dir: string, tarball: string): Promise<string> {
  await busyboxRootfs(dir);
  execFileSync("tar", ["-cf", tarball, "-C", dir, "."]);
  return tarball;
}
