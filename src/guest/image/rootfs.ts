import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { HostError, messageOf } from "../../errors.js";
import { COCOON_VERSION } from "../../package-root.js";
import { runChecked } from "../../host/process.js";
import { which } from "../../host/which.js";
import {
  AGENT_BUNDLE_FILE,
  AGENT_CODE_CACHE_FILE,
  AGENT_GUEST_DIR,
  WRITE_CODE_CACHE_FLAG,
} from "../agent/code-cache.js";
import { AGENT_SNAPSHOT_FILE, SNAPSHOT_CHECK_ENV, SNAPSHOT_CHECK_OUTPUT } from "../agent/snapshot.js";
import type { AssetCatalog } from "./catalog.js";
import {
  assetKey,
  checkRequirements,
  PACKAGE_ROOT,
  sha256,
  sha256File,
  type ProgressSink,
} from "./common.js";
import type { BuiltAsset } from "./kernel.js";

/** Bumped whenever the layout or init changes, so cached images are rebuilt. */
const ROOTFS_BUILDER_VERSION = 3;
/** Bumped whenever how the agent's code cache is produced changes (it is part of the key). */
const AGENT_CODE_CACHE_VERSION = 1;
/** Bumped whenever how the agent's startup snapshot is produced changes (it is part of the key). */
const AGENT_SNAPSHOT_VERSION = 1;
/**
 * The agent's startup snapshot is made only when this is "1" at image build. Node takes a blob
 * only on a CPU with the same features as the one that built it (V8's cached-data tag has the
 * CPU's features in it, CET shadow stacks included): one built on the host is refused in a TCG
 * guest (QEMU's "max" CPU has no CET), and then the agent pays for a failed node start before
 * its start from the bundle. For hosts whose guests see the host's CPU features.
 */
export const AGENT_SNAPSHOT_ENV = "COCOON_AGENT_SNAPSHOT";
const agentSnapshotWanted = (): boolean => process.env[AGENT_SNAPSHOT_ENV] === "1";

/** Where things live inside the guest. */
export const GUEST_AGENT_DIR = AGENT_GUEST_DIR;
/** The agent's entry: loads the bundle (AGENT_BUNDLE_FILE) with its code cache (code-cache.ts). */
export const GUEST_AGENT_PATH = `${GUEST_AGENT_DIR}/agent-loader.cjs`;
export const GUEST_AGENT_LAUNCHER = "/usr/bin/cocoon-agent";
export const GUEST_PTY_HELPER = "/usr/bin/cocoon-pty";
const PTY_SOURCE = path.join(PACKAGE_ROOT, "src/guest/pty/cocoon-pty.c");
/** VM templates: re-keys the guest CRNG and shifts its clock in a clone (see the source). */
export const GUEST_CTL_HELPER = "/usr/bin/cocoon-guestctl";
const GUESTCTL_SOURCE = path.join(PACKAGE_ROOT, "src/guest/guestctl/cocoon-guestctl.c");
/** Starts the agent's processes: cheaper than forking node for each (issue 14, see the source). */
export const GUEST_SPAWNER_HELPER = "/usr/bin/cocoon-spawner";
export const SPAWNER_SOURCE = path.join(PACKAGE_ROOT, "src/guest/spawner/cocoon-spawner.c");

/** Guest programs and the Debian packages that provide them on the host. */
const GUEST_PROGRAMS = [
  { program: "busybox", debianPackage: "busybox-static", guestPath: "/bin/busybox" },
  { program: "runc", debianPackage: "runc", guestPath: "/usr/sbin/runc" },
  { program: "socat", debianPackage: "socat", guestPath: "/usr/bin/socat" },
] as const;

const INITTAB = `# cocoon guest: busybox init runs rcS, then keeps the agent running.
::sysinit:/etc/init.d/rcS
::respawn:${GUEST_AGENT_LAUNCHER}
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/sync
`;

const RCS = `#!/bin/sh
# Mounts the API filesystems; the root is a read-only image, so everything writable is tmpfs.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q ' /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts -o gid=5,mode=620,ptmxmode=666
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=755 varlib /var/lib
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
echo "127.0.0.1 localhost" > /run/hosts
: > /run/resolv.conf
hostname cocoon
ip link set lo up 2>/dev/null
`;

/**
 * The agent's launcher (init respawns it). It starts the agent from its V8 startup snapshot
 * (../agent/snapshot.ts) when the image has one; when node fails with it (it refuses a blob
 * made by another node binary or for another CPU, dies on a damaged one), and when there is no
 * snapshot, from the bundle with its code cache (../agent/loader.ts). `node` and `dir` are
 * parameters for the tests, which run it on the host.
 */
export function agentLauncherScript(node = "/usr/bin/node", dir = GUEST_AGENT_DIR): string {
  const blob = path.posix.join(dir, AGENT_SNAPSHOT_FILE);
  return `#!/bin/sh
# Blocking reads of virtio-serial ports hold libuv threadpool threads: give it room.
export UV_THREADPOOL_SIZE=16
export HOME=/root
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ -s ${blob} ]; then
  ${node} --snapshot-blob ${blob} && exit 0
  echo "cocoon-agent: node did not start the agent from its startup snapshot (exit $?): starting it from its bundle" >&2
fi
exec ${node} ${path.posix.join(dir, path.posix.basename(GUEST_AGENT_PATH))}
`;
}
const AGENT_LAUNCHER = agentLauncherScript();

const STATIC_FILES: Record<string, { content: string; mode: number }> = {
  "/etc/inittab": { content: INITTAB, mode: 0o644 },
  "/etc/init.d/rcS": { content: RCS, mode: 0o755 },
  [GUEST_AGENT_LAUNCHER]: { content: AGENT_LAUNCHER, mode: 0o755 },
  "/etc/passwd": {
    content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    mode: 0o644,
  },
  "/etc/group": { content: "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n", mode: 0o644 },
  "/etc/os-release": { content: 'NAME="cocoon guest"\nID=cocoon\n', mode: 0o644 },
  // Networking: /etc/hosts (--add-host) before DNS; glibc's default without this file asks DNS
  // first and stops at its "not found".
  "/etc/nsswitch.conf": { content: "hosts: files dns\n", mode: 0o644 },
};
const SYMLINKS: Record<string, string> = {
  "/etc/hosts": "/run/hosts",
  "/etc/resolv.conf": "/run/resolv.conf",
  "/etc/mtab": "/proc/self/mounts",
};
const DIRS = [
  "/proc",
  "/sys",
  "/dev",
  "/run",
  "/tmp",
  "/root",
  "/var/lib",
  "/var/log",
  "/mnt",
  "/sys/fs/cgroup",
];

export interface RootfsBuildOptions {
  catalog: AssetCatalog;
  onProgress?: ProgressSink;
  force?: boolean;
  /** The node binary to put in the guest (default: the one running cocoon). */
  nodeBinary?: string;
}

/** The agent as it goes into the guest: the loader node runs and the bundle it loads. */
export interface AgentFiles {
  /** src/guest/agent/loader.ts, bundled. */
  loader: string;
  /** The agent itself (src/guest/agent/main.ts and all it imports) as one CommonJS module. */
  bundle: string;
}

/**
 * Bundles the guest agent. Always from the TypeScript sources (shipped in the package), so the
 * bundle, and with it the rootfs key, is the same whether cocoon runs from dist/ or from src/.
 * CommonJS, not an ES module: node's code cache API (vm.Script `cachedData`) takes a classic
 * script, and the bundle needs nothing of ESM (it imports only node's built-in modules).
 */
export async function bundleAgent(): Promise<AgentFiles> {
  const [loader, bundle] = await Promise.all([
    bundleOne("src/guest/agent/loader.ts"),
    bundleOne("src/guest/agent/main.ts"),
  ]);
  return { loader, bundle };
}

async function bundleOne(source: string): Promise<string> {
  const entry = path.join(PACKAGE_ROOT, source);
  // Loaded here, not at the top: only an image build needs esbuild (and its service process).
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    write: false,
    minify: false,
    legalComments: "none",
    define: { __COCOON_VERSION__: JSON.stringify(COCOON_VERSION) },
    logLevel: "silent",
  });
  const out = result.outputFiles[0];
  if (!out) throw new HostError("ERR_IMAGE_BUILD", `bundling ${source} produced no output`);
  return out.text;
}

/** Shared libraries of a dynamically linked program, as `ldd` resolves them. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await runChecked("ldd", [binary]).catch((err: unknown) => {
    // `ldd` of a static binary exits 1 with "not a dynamic executable".
    if (/not a dynamic executable/.test(messageOf(err))) return { stdout: "" };
    throw err;
  });
  const libs: string[] = [];
  for (const line of stdout.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  return [...new Set(libs)];
}

interface Inputs {
  files: Map<string, string>; // guest path → host path
  agent: AgentFiles;
  /** The C compiler that builds cocoon-pty, for the cache key. */
  compiler: string;
}

async function collectInputs(nodeBinary: string): Promise<Inputs> {
  const files = new Map<string, string>();
  const hostPaths: Record<string, string> = {};
  for (const p of GUEST_PROGRAMS) {
    const found = await which(p.program, `${process.env.PATH ?? ""}:/usr/sbin:/sbin`);
    if (!found) throw new Error(`unreachable: ${p.program} checked`);
    hostPaths[p.program] = found;
    files.set(p.guestPath, found);
  }
  files.set("/usr/bin/node", nodeBinary);
  for (const binary of [nodeBinary, hostPaths.runc!, hostPaths.socat!]) {
    for (const lib of await sharedLibraries(binary)) files.set(lib, lib);
  }
  const cc = await runChecked("gcc", ["--version"]);
  return { files, agent: await bundleAgent(), compiler: cc.stdout.split("\n")[0] ?? "" };
}

export async function rootfsInputs(
  nodeBinary = process.execPath,
): Promise<{ inputs: Inputs; description: Record<string, unknown> }> {
  await checkRequirements("guest rootfs", [
    ...GUEST_PROGRAMS.map((p) => ({ program: p.program, debianPackage: p.debianPackage })),
    { program: "mkfs.ext4", debianPackage: "e2fsprogs" },
    { program: "ldd", debianPackage: "libc-bin" },
    { program: "gcc", debianPackage: "gcc" },
    { program: "/usr/lib/x86_64-linux-gnu/libc.a", debianPackage: "libc6-dev" },
  ]);
  const inputs = await collectInputs(nodeBinary);
  const fileHashes: Record<string, string> = {};
  for (const [guest, host] of [...inputs.files].sort(([a], [b]) => a.localeCompare(b))) {
    fileHashes[guest] = await sha256File(host);
  }
  const description = {
    builder: ROOTFS_BUILDER_VERSION,
    files: fileHashes,
    agent: sha256(inputs.agent.bundle),
    agentLoader: sha256(inputs.agent.loader),
    // The code cache is not byte-for-byte reproducible: its key is what it is made from (the
    // bundle and loader above, the node binary hashed as /usr/bin/node, and this version).
    agentCodeCache: AGENT_CODE_CACHE_VERSION,
    agentSnapshot: agentSnapshotWanted() ? AGENT_SNAPSHOT_VERSION : "none",
    pty: sha256(await readFile(PTY_SOURCE)),
    guestctl: sha256(await readFile(GUESTCTL_SOURCE)),
    spawner: sha256(await readFile(SPAWNER_SOURCE)),
    compiler: inputs.compiler,
    static: sha256(JSON.stringify([STATIC_FILES, SYMLINKS, DIRS])),
  };
  return { inputs, description };
}

async function stage(root: string, inputs: Inputs, progress: ProgressSink): Promise<number> {
  let bytes = 0;
  const place = async (guestPath: string): Promise<string> => {
    const dest = path.join(root, guestPath);
    await mkdir(path.dirname(dest), { recursive: true });
    return dest;
  };
  for (const dir of DIRS) await mkdir(path.join(root, dir), { recursive: true });
  for (const [guest, host] of inputs.files) {
    const dest = await place(guest);
    await copyFile(await realpath(host), dest);
    const st = await stat(host);
    await chmod(dest, st.mode & 0o7777);
    bytes += st.size;
  }
  for (const [guest, file] of Object.entries(STATIC_FILES)) {
    const dest = await place(guest);
    await writeFile(dest, file.content, { mode: file.mode });
  }
  for (const [guest, target] of Object.entries(SYMLINKS)) await symlink(target, await place(guest));
  // cocoon-pty: Node cannot allocate a pseudo-terminal, so a small static C helper does.
  await runChecked("gcc", ["-O2", "-static", "-Wall", "-o", await place(GUEST_PTY_HELPER), PTY_SOURCE], {
    timeoutMs: 120_000,
  });
  await runChecked("gcc", ["-O2", "-static", "-Wall", "-o", await place(GUEST_CTL_HELPER), GUESTCTL_SOURCE], {
    timeoutMs: 120_000,
  });
  await runChecked(
    "gcc",
    ["-O2", "-static", "-Wall", "-o", await place(GUEST_SPAWNER_HELPER), SPAWNER_SOURCE],
    {
      timeoutMs: 120_000,
    },
  );
  const loaderDest = await place(GUEST_AGENT_PATH);
  await writeFile(loaderDest, inputs.agent.loader, { mode: 0o644 });
  await writeFile(path.join(root, GUEST_AGENT_DIR, AGENT_BUNDLE_FILE), inputs.agent.bundle, { mode: 0o644 });
  bytes += inputs.agent.loader.length + inputs.agent.bundle.length;
  bytes += await writeAgentCodeCache(inputs.files.get("/usr/bin/node"), path.join(root, GUEST_AGENT_DIR));
  if (agentSnapshotWanted())
    bytes += await writeAgentSnapshot(
      inputs.files.get("/usr/bin/node"),
      path.join(root, GUEST_AGENT_DIR),
      (m) => progress({ asset: "rootfs", step: "stage", message: `rootfs: ${m}` }),
    );
  // busybox applets as symlinks at their usual paths (/bin/sh, /sbin/poweroff, ...)
  const busybox = path.join(root, "bin/busybox");
  const { stdout } = await runChecked(busybox, ["--list-full"]);
  for (const applet of stdout.split("\n").filter(Boolean)) {
    const dest = await place(`/${applet}`);
    const exists = await lstat(dest).catch(() => undefined);
    if (!exists) await symlink("/bin/busybox", dest);
  }
  await symlink("/bin/busybox", path.join(root, "sbin/init")).catch(() => undefined);
  return bytes;
}

/**
 * Writes the agent's code cache into `dir` (the staged /usr/lib/cocoon) by running the loader
 * there with the guest's own node binary: V8 accepts a cache only from the same V8 with the same
 * flags. Returns its size.
 */
async function writeAgentCodeCache(guestNode: string | undefined, dir: string): Promise<number> {
  if (!guestNode) throw new Error("unreachable: the guest's node is an input");
  await runChecked(guestNode, [path.join(dir, path.basename(GUEST_AGENT_PATH)), WRITE_CODE_CACHE_FLAG], {
    timeoutMs: 120_000,
    // As the guest runs it: no NODE_OPTIONS from the host (a test runner's loader, say), whose
    // V8 flags would make the guest's V8 refuse the cache.
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
  });
  return (await stat(path.join(dir, AGENT_CODE_CACHE_FILE))).size;
}

/**
 * Writes the agent's startup snapshot into `dir` (the staged /usr/lib/cocoon) with the guest's
 * own node binary (node takes a blob only from the same binary), and checks that node starts
 * from it. A node that cannot build it, or start from it, leaves it out: the agent then starts
 * from its bundle (see agentLauncherScript). Returns its size (0 when left out).
 */
export async function writeAgentSnapshot(
  guestNode: string | undefined,
  dir: string,
  warn: (message: string) => void,
): Promise<number> {
  if (!guestNode) throw new Error("unreachable: the guest's node is an input");
  const blob = path.join(dir, AGENT_SNAPSHOT_FILE);
  // As the guest runs it: no NODE_OPTIONS (V8 flags) from the host; see writeAgentCodeCache.
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  try {
    await runChecked(
      guestNode,
      ["--snapshot-blob", blob, "--build-snapshot", path.join(dir, path.basename(GUEST_AGENT_PATH))],
      { timeoutMs: 120_000, env, cwd: dir },
    );
    const check = await runChecked(guestNode, ["--snapshot-blob", blob], {
      timeoutMs: 60_000,
      env: { ...env, [SNAPSHOT_CHECK_ENV]: "1" },
    });
    if (!check.stdout.includes(SNAPSHOT_CHECK_OUTPUT)) throw new Error(`unexpected output: ${check.stdout}`);
    return (await stat(blob)).size;
  } catch (err) {
    warn(`no startup snapshot for the agent (${messageOf(err)}): it will start from its bundle, more slowly`);
    await rm(blob, { force: true });
    return 0;
  }
}

export async function buildRootfs(options: RootfsBuildOptions): Promise<BuiltAsset> {
  const progress = options.onProgress ?? (() => undefined);
  const { catalog } = options;
  progress({
    asset: "rootfs",
    step: "inputs",
    message: "rootfs: hashing inputs (node, busybox, runc, socat, agent)",
  });
  const { inputs, description } = await rootfsInputs(options.nodeBinary ?? process.execPath);
  const key = assetKey(description);
  const dir = catalog.assetDir("rootfs", key);
  if (!options.force && (await catalog.has("rootfs", key))) {
    progress({ asset: "rootfs", step: "cached", message: `rootfs ${key} is already built` });
    return { key, dir, built: false };
  }
  const started = Date.now();
  const work = `${dir}.partial`;
  await rm(work, { recursive: true, force: true });
  const root = path.join(work, "root");
  try {
    progress({ asset: "rootfs", step: "stage", message: `rootfs ${key}: staging files` });
    const bytes = await stage(root, inputs, progress);
    // Room for metadata and the small files; the image is read-only, so no slack is needed beyond that.
    const sizeMiB = Math.ceil((bytes * 1.1) / (1024 * 1024)) + 16;
    const image = path.join(work, "rootfs.ext4");
    progress({ asset: "rootfs", step: "mkfs", message: `rootfs ${key}: mkfs.ext4 (${sizeMiB} MiB)` });
    await runChecked(
      "mkfs.ext4",
      [
        "-q",
        "-F",
        "-L",
        "cocoon-root",
        "-O",
        "^has_journal",
        "-m",
        "0",
        "-E",
        "root_owner=0:0",
        "-d",
        root,
        image,
        `${sizeMiB}M`,
      ],
      {
        timeoutMs: 300_000,
      },
    );
    await rm(root, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    await mkdir(path.dirname(dir), { recursive: true });
    await rename(work, dir);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err instanceof HostError
      ? new HostError("ERR_IMAGE_BUILD", `building the rootfs failed: ${err.message}`, { cause: err })
      : err;
  }
  const file = path.join(dir, "rootfs.ext4");
  const files = { "rootfs.ext4": { size: (await stat(file)).size, sha256: await sha256File(file) } };
  const buildSeconds = Math.round((Date.now() - started) / 1000);
  await catalog.writeManifest({
    kind: "rootfs",
    key,
    createdAt: new Date().toISOString(),
    inputs: description,
    files,
    buildSeconds,
  });
  progress({ asset: "rootfs", step: "done", message: `rootfs ${key} built in ${buildSeconds}s` });
  return { key, dir, built: true };
}
