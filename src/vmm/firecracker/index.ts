// The Firecracker SDK: everything about Firecracker and its jailer, nothing about sandboxes.
export * from "./api-model.js";
export * from "./client.js";
export * from "./errors.js";
export * from "./jail.js";
export * from "./jailer.js";
export * from "./launch.js";
export * from "./microvm.js";
export * from "./mmds.js";
export * from "./snapshot.js";
export * from "./telemetry.js";
export * from "./threads.js";
export * from "./version.js";
export * from "./vsock.js";
export type * as FirecrackerApi from "../../gen/firecracker/types.js";
