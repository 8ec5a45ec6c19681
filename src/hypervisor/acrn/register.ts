// Makes `newHypervisor("acrn", ctx)` return the ACRN driver (imported by src/hypervisor/drivers.ts).
import { registerHypervisor } from "../registry.js";
import { AcrnHypervisor } from "./acrn.js";

registerHypervisor("acrn", (ctx) => new AcrnHypervisor(ctx));
