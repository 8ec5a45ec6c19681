import os from "node:os";
import { ConfigError } from "../errors.js";
import type { Asset, AssetType } from "./assets.js";
import type { Param } from "./params.js";
import type { Accelerator, BlockDeviceDriver, SharedFsType } from "./types.js";
import { BLOCK_DEVICE_DRIVERS, SHARED_FS_TYPES } from "./types.js";

/** Defaults the seed fills in when a field is zero or empty. */
export const HYPERVISOR_DEFAULTS = {
  numVCPUs: 1,
  memorySize: 2048,
  defaultBridges: 1,
  blockDeviceDriver: "virtio-scsi" as BlockDeviceDriver,
  msize9p: 8192,
  /** QEMU's x86_64 ceiling; the host's CPU count is used when it is lower. */
  maxVCPUsCeiling: 240,
} as const;

/** Maximum vCPUs by default: the host's CPUs, capped by the VMM ceiling. */
export function defaultMaxVCPUs(hostCpus: number = os.cpus().length): number {
  return Math.max(1, Math.min(hostCpus, HYPERVISOR_DEFAULTS.maxVCPUsCeiling));
}

/**
 * Everything a hypervisor driver needs to build a VM. Field for field the seed's
 * HypervisorConfig, in camelCase, plus `accelerator`. Sizes are MiB; zero or empty means
 * "use the default" where a default exists (see validateHypervisorConfig).
 */
export interface HypervisorConfig {
  numVCPUs: number;
  defaultMaxVCPUs: number;
  memorySize: number;
  defaultBridges: number;
  msize9p: number;
  memSlots: number;
  memOffset: number;
  virtioFSCacheSize: number;
  kernelParams: Param[];
  hypervisorParams: Param[];
  kernelPath: string;
  imagePath: string;
  initrdPath: string;
  firmwarePath: string;
  machineAccelerators: string;
  hypervisorPath: string;
  hypervisorCtlPath: string;
  jailerPath: string;
  blockDeviceDriver: BlockDeviceDriver | "";
  hypervisorMachineType: string;
  memoryPath: string;
  devicesStatePath: string;
  entropySource: string;
  sharedFS: SharedFsType | "";
  virtioFSDaemon: string;
  virtioFSCache: string;
  /** Annotation-provided assets; each takes precedence over the configured path of its type. */
  customAssets: Partial<Record<AssetType, Asset>>;
  blockDeviceCacheSet: boolean;
  blockDeviceCacheDirect: boolean;
  blockDeviceCacheNoflush: boolean;
  disableBlockDeviceUse: boolean;
  enableIOThreads: boolean;
  debug: boolean;
  memPrealloc: boolean;
  hugePages: boolean;
  fileBackedMemRootDir: string;
  realtime: boolean;
  mlock: boolean;
  disableNestingChecks: boolean;
  useVSock: boolean;
  hotplugVFIOOnRootBus: boolean;
  bootToBeTemplate: boolean;
  bootFromTemplate: boolean;
  disableVhostNet: boolean;
  guestHookPath: string;
  vmId: string;
  accelerator: Accelerator;
}

/** A config with every field at its zero value, the starting point for builders and tests. */
export function emptyHypervisorConfig(): HypervisorConfig {
  return {
    numVCPUs: 0,
    defaultMaxVCPUs: 0,
    memorySize: 0,
    defaultBridges: 0,
    msize9p: 0,
    memSlots: 0,
    memOffset: 0,
    virtioFSCacheSize: 0,
    kernelParams: [],
    hypervisorParams: [],
    kernelPath: "",
    imagePath: "",
    initrdPath: "",
    firmwarePath: "",
    machineAccelerators: "",
    hypervisorPath: "",
    hypervisorCtlPath: "",
    jailerPath: "",
    blockDeviceDriver: "",
    hypervisorMachineType: "",
    memoryPath: "",
    devicesStatePath: "",
    entropySource: "",
    sharedFS: "",
    virtioFSDaemon: "",
    virtioFSCache: "",
    customAssets: {},
    blockDeviceCacheSet: false,
    blockDeviceCacheDirect: false,
    blockDeviceCacheNoflush: false,
    disableBlockDeviceUse: false,
    enableIOThreads: false,
    debug: false,
    memPrealloc: false,
    hugePages: false,
    fileBackedMemRootDir: "",
    realtime: false,
    mlock: false,
    disableNestingChecks: false,
    useVSock: false,
    hotplugVFIOOnRootBus: false,
    bootToBeTemplate: false,
    bootFromTemplate: false,
    disableVhostNet: false,
    guestHookPath: "",
    vmId: "",
    accelerator: "auto",
  };
}

function invalid(field: string, message: string): ConfigError {
  return new ConfigError("ERR_INVALID_CONFIG", message, { details: { field } });
}

/** Template flags: exclusive, and each needs the files it maps or restores. */
export function checkTemplateConfig(conf: HypervisorConfig): void {
  if (conf.bootToBeTemplate && conf.bootFromTemplate) {
    throw invalid("bootToBeTemplate", "boot-to-be-template and boot-from-template cannot both be set");
  }
  if (conf.bootToBeTemplate || conf.bootFromTemplate) {
    if (conf.memoryPath === "") {
      throw invalid("memoryPath", "a VM template needs a memory path (memoryPath)");
    }
    if (conf.bootFromTemplate && conf.devicesStatePath === "") {
      throw invalid(
        "devicesStatePath",
        "booting from a VM template needs a devices state path (devicesStatePath)",
      );
    }
  }
}

export interface ValidateOptions {
  /** Host CPU count used for the default max vCPUs (injectable for tests). */
  hostCpus?: number;
}

/**
 * Checks a hypervisor config the way the seed does and returns a copy with defaults filled
 * in. The kernel comes from the config or a custom asset; exactly one of image and initrd must
 * be given.
 */
export function validateHypervisorConfig(
  input: HypervisorConfig,
  options: ValidateOptions = {},
): HypervisorConfig {
  const conf: HypervisorConfig = {
    ...input,
    kernelParams: [...input.kernelParams],
    hypervisorParams: [...input.hypervisorParams],
    customAssets: { ...input.customAssets },
  };
  const kernel = conf.customAssets.kernel?.path ?? conf.kernelPath;
  const image = conf.customAssets.image?.path ?? conf.imagePath;
  const initrd = conf.customAssets.initrd?.path ?? conf.initrdPath;
  if (kernel === "") throw invalid("kernelPath", "missing kernel path: set the hypervisor's kernel");
  if (image === "" && initrd === "") {
    throw invalid("imagePath", "missing image and initrd path: set one of image or initrd");
  }
  if (image !== "" && initrd !== "") {
    throw invalid("initrdPath", `image and initrd cannot both be set (image ${image}, initrd ${initrd})`);
  }
  checkTemplateConfig(conf);
  for (const [field, value] of [
    ["numVCPUs", conf.numVCPUs],
    ["defaultMaxVCPUs", conf.defaultMaxVCPUs],
    ["memorySize", conf.memorySize],
    ["defaultBridges", conf.defaultBridges],
    ["msize9p", conf.msize9p],
    ["memSlots", conf.memSlots],
    ["memOffset", conf.memOffset],
    ["virtioFSCacheSize", conf.virtioFSCacheSize],
  ] as const) {
    if (!Number.isInteger(value) || value < 0) {
      throw invalid(field, `${field} must be a non-negative integer, got ${String(value)}`);
    }
  }
  if (conf.blockDeviceDriver !== "" && !BLOCK_DEVICE_DRIVERS.includes(conf.blockDeviceDriver)) {
    throw invalid(
      "blockDeviceDriver",
      `unknown block device driver "${String(conf.blockDeviceDriver)}": valid drivers are ${BLOCK_DEVICE_DRIVERS.join(", ")}`,
    );
  }
  if (conf.sharedFS !== "" && !SHARED_FS_TYPES.includes(conf.sharedFS)) {
    throw invalid(
      "sharedFS",
      `unknown shared fs "${String(conf.sharedFS)}": valid values are ${SHARED_FS_TYPES.join(", ")}`,
    );
  }
  if (conf.numVCPUs === 0) conf.numVCPUs = HYPERVISOR_DEFAULTS.numVCPUs;
  if (conf.memorySize === 0) conf.memorySize = HYPERVISOR_DEFAULTS.memorySize;
  if (conf.defaultBridges === 0) conf.defaultBridges = HYPERVISOR_DEFAULTS.defaultBridges;
  if (conf.blockDeviceDriver === "") conf.blockDeviceDriver = HYPERVISOR_DEFAULTS.blockDeviceDriver;
  if (conf.defaultMaxVCPUs === 0) conf.defaultMaxVCPUs = defaultMaxVCPUs(options.hostCpus);
  if (conf.msize9p === 0) conf.msize9p = HYPERVISOR_DEFAULTS.msize9p;
  if (conf.numVCPUs > conf.defaultMaxVCPUs) {
    throw invalid(
      "numVCPUs",
      `numVCPUs (${conf.numVCPUs}) is larger than the maximum vCPUs (${conf.defaultMaxVCPUs})`,
    );
  }
  return conf;
}

/** The path for an asset type: a custom (annotation) asset wins over the configured path. */
export function assetPath(conf: HypervisorConfig, type: AssetType): string {
  const custom = conf.customAssets[type];
  if (custom) return custom.path;
  switch (type) {
    case "kernel":
      return conf.kernelPath;
    case "image":
      return conf.imagePath;
    case "initrd":
      return conf.initrdPath;
    case "hypervisor":
      return conf.hypervisorPath;
    case "hypervisorCtl":
      return conf.hypervisorCtlPath;
    case "jailer":
      return conf.jailerPath;
    case "firmware":
      return conf.firmwarePath;
  }
}

export function isCustomAsset(conf: HypervisorConfig, type: AssetType): boolean {
  return conf.customAssets[type] !== undefined;
}
