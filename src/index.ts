// The public API of cocoon. Everything a library user needs is exported from here.
export * from "./errors.js";
export * from "./hypervisor/types.js";
export * from "./hypervisor/params.js";
export * from "./hypervisor/config.js";
export * from "./hypervisor/assets.js";
export * from "./hypervisor/devices.js";
export type * from "./hypervisor/hypervisor.js";
export { MockHypervisor } from "./hypervisor/mock.js";
export { newHypervisor, registerHypervisor, type DriverContext } from "./hypervisor/registry.js";
export { loadConfig, describeConfig, type LoadedConfig, type LoadOptions } from "./config/load.js";
export type { CocoonConfig } from "./config/schema.js";
export { hypervisorConfigFor, annotationPolicyFor } from "./config/hypervisor.js";
export { chooseAccelerator, type AccelChoice } from "./host/accel.js";
export { hostMemoryKb, runningOnVmm } from "./host/proc.js";
export { RuntimePaths, type RuntimeRoots } from "./store/paths.js";
export { Store } from "./store/store.js";
export { Runtime, type CreateSandboxOptions, type RuntimeOptions } from "./sandbox/runtime.js";
export {
  Sandbox,
  type SandboxStatus,
  type ExecOptions,
  type AttachOptions,
  type ContainerStatus,
} from "./sandbox/sandbox.js";
export { ProcessHandle } from "./sandbox/process.js";
export { SnapshotStore, type SnapshotProgress } from "./sandbox/snapshot/snapshots.js";
export type { SnapshotMeta, SnapshotInfo } from "./sandbox/snapshot/meta.js";
export type { SandboxConfig, ContainerConfig, ProcessConfig, RootfsSource } from "./sandbox/config.js";
export type { SandboxState } from "./sandbox/state.js";
export type { ProcessExit } from "./agent/protocol/methods.js";
export { AgentClient } from "./agent/client.js";
export { buildGuestImages } from "./guest/image/build.js";
export { AssetCatalog, type GuestAssets } from "./guest/image/catalog.js";
import "./hypervisor/drivers.js";
