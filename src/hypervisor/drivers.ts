// Registers every hypervisor driver with the registry. Importing this module (the CLI and the
// sandbox layer do) makes `newHypervisor(type)` work for each type below.
// One line per driver; keep them independent so drivers can land separately.
import { QemuHypervisor } from "./qemu/driver.js";
import { registerHypervisor } from "./registry.js";
registerHypervisor("qemu", () => new QemuHypervisor());
import "./firecracker/register.js";
import "./acrn/register.js";
export {};
