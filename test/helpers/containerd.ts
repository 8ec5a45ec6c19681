import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { busyboxRootfs } from "./rootfs.js";

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, "../..");

export interface Ctr {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/**
 * Debian's containerd on a private socket, root and state (CRI plugin off), with cocoon's shim
 * first on its PATH. Never the system containerd.
 */
export class PrivateContainerd {
  private constructor(
    readonly dir: string,
    readonly address: string,
    private readonly proc: ChildProcess,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  static async start(env: NodeJS.ProcessEnv): Promise<PrivateContainerd> {
    const dir = await mkdtemp(path.join(tmpdir(), "cocoon-ctd-"));
    const bin = path.join(dir, "bin");
    await mkdir(bin);
    await symlink(
      path.join(REPO, "bin/containerd-shim-cocoon-v1.js"),
      path.join(bin, "containerd-shim-cocoon-v1"),
    );
    const address = path.join(dir, "containerd.sock");
    await writeFile(
      path.join(dir, "config.toml"),
      [
        "version = 2",
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        `  address = "${address}"`,
        "",
      ].join("\n"),
    );
    const fullEnv = { ...process.env, ...env, PATH: `${bin}:${process.env.PATH ?? ""}` };
    const proc = spawn("containerd", ["--config", path.join(dir, "config.toml"), "--log-level", "debug"], {
      env: fullEnv,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const log: Buffer[] = [];
    proc.stderr?.on("data", (c: Buffer) => log.push(c));
    for (let i = 0; i < 200 && !existsSync(address); i++) await new Promise((r) => setTimeout(r, 50));
    if (!existsSync(address)) throw new Error(`containerd did not start: ${Buffer.concat(log).toString()}`);
    const ctd = new PrivateContainerd(dir, address, proc, fullEnv);
    ctd.log = log;
    return ctd;
  }

  log: Buffer[] = [];

  /** containerd's own pid (its command line names the test directory too). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  logText(): string {
    return Buffer.concat(this.log).toString();
  }

  /** Runs `ctr --address … args`; never throws on a non-zero exit. */
  ctr(args: string[], input?: Buffer | string): Promise<Ctr> {
    return new Promise((resolve) => {
      const child = spawn("ctr", ["--address", this.address, ...args], {
        env: this.env,
        stdio: ["pipe", "pipe", "pipe"],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (c: Buffer) => out.push(c));
      child.stderr.on("data", (c: Buffer) => err.push(c));
      child.stdin.on("error", () => undefined);
      child.stdin.end(input ?? "");
      child.on("close", (code) =>
        resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }),
      );
    });
  }

  /** Builds a busybox OCI image layout here and imports it as docker.io/library/bb:latest. */
  async importBusybox(): Promise<string> {
    const tar = await busyboxOciArchive(path.join(this.dir, "image"));
    const r = await this.ctr(["images", "import", "--base-name", "docker.io/library/bb", tar]);
    if (r.code !== 0) throw new Error(`image import failed: ${r.stderr}`);
    return "docker.io/library/bb:latest";
  }

  async stop(): Promise<void> {
    this.proc.kill("SIGTERM");
    await new Promise((r) => (this.proc.exitCode !== null ? r(null) : this.proc.once("exit", r)));
    // containerd leaves its snapshot mounts behind when stopped: unmount them before removing.
    const { stdout } = await run("findmnt", ["-rn", "-o", "TARGET"]);
    for (const m of stdout
      .split("\n")
      .filter((t) => t.startsWith(this.dir))
      .reverse()) {
      await run("umount", ["-l", m]).catch(() => undefined);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A one-layer OCI image of the test busybox rootfs, as an OCI archive (no registry). */
async function busyboxOciArchive(dir: string): Promise<string> {
  const rootfs = await busyboxRootfs(path.join(dir, "rootfs"));
  const layout = path.join(dir, "layout");
  const blobs = path.join(layout, "blobs/sha256");
  await mkdir(blobs, { recursive: true });
  const layerTar = (
    await run("tar", ["-cf", "-", "-C", rootfs, "."], { encoding: "buffer", maxBuffer: 64 << 20 })
  ).stdout;
  const put = async (data: Buffer): Promise<{ digest: string; size: number }> => {
    const hex = createHash("sha256").update(data).digest("hex");
    await writeFile(path.join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layer = await put(gzipSync(layerTar));
  const diffId = `sha256:${createHash("sha256").update(layerTar).digest("hex")}`;
  const config = await put(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["sh"] },
        rootfs: { type: "layers", diff_ids: [diffId] },
      }),
    ),
  );
  const manifest = await put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
      }),
    ),
  );
  await writeFile(path.join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    path.join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...manifest,
          annotations: { "org.opencontainers.image.ref.name": "latest" },
        },
      ],
    }),
  );
  const archive = path.join(dir, "bb.tar");
  await run("tar", ["-cf", archive, "-C", layout, "."]);
  return archive;
}
