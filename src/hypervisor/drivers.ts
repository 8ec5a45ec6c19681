// Registers every hypervisor driver with the registry. Importing this module (the CLI and the
// sandbox layer do) makes `newHypervisor(type)` work for each type below.
// One line per driver; keep them independent so drivers can land separately.
// qemu: (lands with the QEMU backend)
// firecracker: (lands with the Firecracker backend)
import "./acrn/register.js";
export {};
