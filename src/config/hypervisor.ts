import type { AnnotationPolicy } from "../hypervisor/assets.js";
import { emptyHypervisorConfig, type HypervisorConfig } from "../hypervisor/config.js";
import { acrnSettingsToParams } from "../hypervisor/acrn/settings.js";
import { firecrackerSettingsToParams } from "../hypervisor/firecracker/settings.js";
import { parseKernelCmdline } from "../hypervisor/params.js";
import type { HypervisorType } from "../hypervisor/types.js";
import type { CocoonConfig } from "./schema.js";

/**
 * Turns a `[hypervisor.<type>]` section into a HypervisorConfig. Kernel and image may still
 * be empty here: the sandbox fills them from the built assets when the file does not set them.
 */
export function hypervisorConfigFor(config: CocoonConfig, type: HypervisorType): HypervisorConfig {
  const s = config.hypervisor[type];
  const hc = emptyHypervisorConfig();
  hc.hypervisorPath = s.path;
  hc.kernelPath = s.kernel;
  hc.imagePath = s.image;
  hc.initrdPath = s.initrd;
  hc.firmwarePath = s.firmware;
  hc.kernelParams = parseKernelCmdline(s.kernel_params);
  hc.numVCPUs = s.default_vcpus;
  hc.defaultMaxVCPUs = s.default_maxvcpus;
  hc.memorySize = s.default_memory;
  hc.memSlots = s.memory_slots;
  hc.memOffset = s.memory_offset;
  hc.debug = s.enable_debug || config.runtime.log_level === "debug" || config.runtime.log_level === "trace";
  hc.disableNestingChecks = s.disable_nesting_checks;
  hc.memPrealloc = s.enable_mem_prealloc;
  hc.hugePages = s.enable_hugepages;
  hc.entropySource = s.entropy_source;
  hc.guestHookPath = s.guest_hook_path;
  hc.blockDeviceDriver = s.block_device_driver;
  hc.blockDeviceCacheSet = s.block_device_cache_set;
  hc.blockDeviceCacheDirect = s.block_device_cache_direct;
  hc.blockDeviceCacheNoflush = s.block_device_cache_noflush;
  hc.disableBlockDeviceUse = s.disable_block_device_use;
  if (type === "qemu") {
    const q = config.hypervisor.qemu;
    hc.hypervisorMachineType = q.machine_type;
    hc.accelerator = q.accelerator;
    hc.machineAccelerators = q.machine_accelerators;
    hc.hypervisorParams = parseKernelCmdline(q.hypervisor_params);
    hc.defaultBridges = q.default_bridges;
    hc.msize9p = q.msize_9p;
    hc.sharedFS = q.shared_fs;
    hc.virtioFSDaemon = q.virtio_fs_daemon;
    hc.virtioFSCache = q.virtio_fs_cache;
    hc.virtioFSCacheSize = q.virtio_fs_cache_size;
    hc.enableIOThreads = q.enable_iothreads;
    hc.fileBackedMemRootDir = q.file_mem_backend;
    hc.realtime = q.realtime;
    hc.mlock = q.mlock;
    hc.useVSock = q.use_vsock;
    hc.hotplugVFIOOnRootBus = q.hotplug_vfio_on_root_bus;
    hc.disableVhostNet = q.disable_vhost_net;
  } else if (type === "firecracker") {
    const f = config.hypervisor.firecracker;
    hc.jailerPath = f.jailer_path;
    hc.sharedFS = "none";
    hc.useVSock = true;
    // HypervisorConfig has no jailer fields: the driver reads these back from hypervisorParams.
    hc.hypervisorParams = firecrackerSettingsToParams({
      jailerUid: f.jailer_uid,
      jailerGid: f.jailer_gid,
      jailerCgroupVersion: f.jailer_cgroup_version,
      jailResources: f.jail_resources,
      balloon: f.balloon,
    });
  } else if (type === "acrn") {
    const a = config.hypervisor.acrn;
    hc.hypervisorCtlPath = a.ctlpath;
    hc.defaultBridges = a.default_bridges;
    hc.sharedFS = "none";
    // HypervisorConfig has no ACRN fields: the driver reads these back from hypervisorParams.
    hc.hypervisorParams = acrnSettingsToParams({
      maxVms: a.max_vms,
      platformInfoHelper: a.platform_info_helper,
    });
  } else {
    hc.sharedFS = "none";
  }
  return hc;
}

/** What annotations a sandbox on this hypervisor may use. */
export function annotationPolicyFor(config: CocoonConfig, type: HypervisorType): AnnotationPolicy {
  const s = config.hypervisor[type];
  return {
    enableAnnotations: s.enable_annotations,
    validHypervisorPaths: s.valid_hypervisor_paths,
    validCtlPaths: type === "acrn" ? config.hypervisor.acrn.valid_ctlpaths : [],
    validJailerPaths: type === "firecracker" ? config.hypervisor.firecracker.valid_jailer_paths : [],
  };
}
