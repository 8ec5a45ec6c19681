import type { Logger } from "pino";
import { HypervisorError } from "../errors.js";
import type { Store } from "../store/store.js";
import type { Hypervisor } from "./hypervisor.js";
import { MockHypervisor } from "./mock.js";
import type { HypervisorType } from "./types.js";

/** What a driver may use besides its config: logging and the store (for global pools). */
export interface DriverContext {
  logger: Logger;
  store: Store;
}

type DriverFactory = (ctx: DriverContext) => Hypervisor;

const factories = new Map<HypervisorType, DriverFactory>([["mock", () => new MockHypervisor()]]);

/** Drivers register themselves here (see src/hypervisor/drivers.ts). */
export function registerHypervisor(type: HypervisorType, factory: DriverFactory): void {
  factories.set(type, factory);
}

/** A new, unconfigured driver for `type`. */
export function newHypervisor(type: HypervisorType, ctx: DriverContext): Hypervisor {
  const factory = factories.get(type);
  if (!factory) {
    throw new HypervisorError(
      "ERR_NOT_SUPPORTED",
      `the ${type} hypervisor driver is not available in this build`,
      {
        details: { type },
      },
    );
  }
  return factory(ctx);
}
