// Makes `newHypervisor("firecracker", ctx)` return the Firecracker driver (imported by src/hypervisor/drivers.ts).
import { registerHypervisor } from "../registry.js";
import { FirecrackerHypervisor } from "./driver.js";

registerHypervisor("firecracker", (ctx) => new FirecrackerHypervisor(ctx));
