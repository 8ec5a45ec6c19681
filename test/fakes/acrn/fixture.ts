// A throw-away ACRN "host" for tests: a temp state root and Store, a kernel and an image file,
// the fake tools with their state directory and invocation log, and helpers to build a
// HypervisorConfig and drivers wired to all of it.
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { AcrnHypervisor, type AcrnDriverOptions } from "../../../src/hypervisor/acrn/acrn.js";
import { acrnSettingsToParams, type AcrnSettings } from "../../../src/hypervisor/acrn/settings.js";
import { emptyHypervisorConfig, type HypervisorConfig } from "../../../src/hypervisor/config.js";
import type { CreateVmOptions } from "../../../src/hypervisor/hypervisor.js";
import { RuntimePaths } from "../../../src/store/paths.js";
import { Store } from "../../../src/store/store.js";

export const FAKES_DIR = import.meta.dirname;
export const FAKE_ACRN_DM = path.join(FAKES_DIR, "acrn-dm");
export const FAKE_ACRNCTL = path.join(FAKES_DIR, "acrnctl");
export const FAKE_PLATFORM_INFO = path.join(FAKES_DIR, "platform-info");

export interface Invocation {
  tool: string;
  argv: string[];
  pid: number;
  cwd: string;
}

export interface AcrnFixture {
  dir: string;
  store: Store;
  paths: RuntimePaths;
  kernel: string;
  image: string;
  /** FAKE_ACRN_STATE: the fakes' stand-in for /run/acrn/mngr. */
  fakeState: string;
  /** A file standing in for /dev/acrn_vhm (the fake helper only checks that it exists). */
  vhmDevice: string;
  env: NodeJS.ProcessEnv;
  config(overrides?: Partial<HypervisorConfig>, settings?: Partial<AcrnSettings>): HypervisorConfig;
  driver(options?: AcrnDriverOptions): AcrnHypervisor;
  createOptions(id: string, config: HypervisorConfig, extra?: Partial<CreateVmOptions>): CreateVmOptions;
  /** Every recorded invocation of the fake tools, in order. */
  invocations(tool?: string): Promise<Invocation[]>;
  /** Writes a file of `size` bytes under the fixture and returns its path. */
  file(name: string, size?: number): Promise<string>;
  cleanup(): Promise<void>;
}

export async function acrnFixture(envOverrides: NodeJS.ProcessEnv = {}): Promise<AcrnFixture> {
  // Short: the VM directory's sockets must fit a unix socket path.
  const dir = await mkdtemp(path.join(os.tmpdir(), "cc-acrn-"));
  const paths = new RuntimePaths({
    stateRoot: path.join(dir, "run"),
    libRoot: path.join(dir, "lib"),
    assetsDir: path.join(dir, "assets"),
  });
  const store = new Store(paths);
  await mkdir(paths.assetsDir, { recursive: true });
  const kernel = path.join(paths.assetsDir, "vmlinuz");
  const image = path.join(paths.assetsDir, "rootfs.img");
  await writeFile(kernel, "fake kernel");
  await writeFile(image, Buffer.alloc(4096));
  const fakeState = path.join(dir, "acrn-mngr");
  await mkdir(fakeState);
  const vhmDevice = path.join(dir, "acrn_vhm");
  await writeFile(vhmDevice, "");
  const log = path.join(dir, "invocations.jsonl");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FAKE_ACRN_STATE: fakeState,
    FAKE_ACRN_LOG: log,
    ...envOverrides,
  };
  const logger = pino({ level: "silent" });

  return {
    dir,
    store,
    paths,
    kernel,
    image,
    fakeState,
    vhmDevice,
    env,
    config(overrides = {}, settings = {}) {
      const c = emptyHypervisorConfig();
      c.hypervisorPath = FAKE_ACRN_DM;
      c.hypervisorCtlPath = FAKE_ACRNCTL;
      c.kernelPath = kernel;
      c.imagePath = image;
      c.memorySize = 512;
      c.blockDeviceDriver = "virtio-blk";
      c.hypervisorParams = acrnSettingsToParams({ maxVms: 8, platformInfoHelper: "", ...settings });
      return { ...c, ...overrides };
    },
    driver(options = {}) {
      return new AcrnHypervisor({ logger, store }, { env, vhmDevice, pollMs: 10, ...options });
    },
    createOptions(id, config, extra = {}) {
      return { id, config, paths: { vmDir: paths.vmDir(id), jailerBase: paths.jailerBase }, ...extra };
    },
    async invocations(tool) {
      let text = "";
      try {
        text = await readFile(log, "utf8");
      } catch {
        return [];
      }
      const all = text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Invocation);
      return tool ? all.filter((i) => i.tool === tool) : all;
    },
    async file(name, size = 4096) {
      const p = path.join(dir, name);
      await writeFile(p, Buffer.alloc(size));
      return p;
    },
    async cleanup() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Files left in a directory (recursively), for leak checks; [] when it does not exist. */
export async function listTree(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true });
    return entries.map(String).sort();
  } catch {
    return [];
  }
}
