import { HypervisorError } from "../../errors.js";
import { ACRN_BLOCK_POOL_SIZE } from "../../vmm/acrn/argv.js";

/**
 * The placeholder drives of one ACRN VM. Index 0 is the VM image; indexes 1..size are
 * "nodisk" placeholders that `acrnctl blkrescan` can give a backing file, once each: acrn-dm
 * refuses to replace a live backing file, so an index stays taken until the VM stops.
 */
export class PlaceholderPool {
  private readonly taken = new Set<number>();

  constructor(
    readonly size: number = ACRN_BLOCK_POOL_SIZE,
    used: readonly number[] = [],
  ) {
    for (const i of used) this.taken.add(this.checkIndex(i));
  }

  /** Indexes handed out, ascending (persisted as the hypervisor state's blockIndexMap). */
  used(): number[] {
    return [...this.taken].sort((a, b) => a - b);
  }

  /** All placeholder indexes, 1..size. */
  indexes(): number[] {
    return Array.from({ length: this.size }, (_, i) => i + 1);
  }

  private checkIndex(index: number): number {
    if (!Number.isInteger(index)) {
      throw new HypervisorError(
        "ERR_INVALID_ARGUMENT",
        `block device index must be an integer, got ${String(index)}`,
        {
          details: { index },
        },
      );
    }
    if (index === 0) {
      throw new HypervisorError(
        "ERR_INVALID_ARGUMENT",
        "block device index 0 is the VM image, not a hotplug slot",
        {
          details: { index },
        },
      );
    }
    if (index < 0 || index > this.size) {
      throw new HypervisorError(
        "ERR_INVALID_ARGUMENT",
        `block device index ${index} is past ACRN's pool of ${this.size} placeholder drives (indexes 1-${this.size})`,
        { details: { index, poolSize: this.size } },
      );
    }
    return index;
  }

  /** Takes `requested` (validated) or the lowest free index. */
  take(requested?: number): number {
    if (requested !== undefined) {
      const index = this.checkIndex(requested);
      if (this.taken.has(index)) {
        throw new HypervisorError(
          "ERR_INVALID_STATE",
          `placeholder drive ${index} already has a backing file, and ACRN cannot replace one`,
          { details: { index } },
        );
      }
      this.taken.add(index);
      return index;
    }
    const free = this.indexes().find((i) => !this.taken.has(i));
    if (free === undefined) {
      throw new HypervisorError(
        "ERR_RESOURCE_EXHAUSTED",
        `all ${this.size} ACRN placeholder drives of this VM are used (a drive cannot be reused until the VM restarts)`,
        { details: { poolSize: this.size } },
      );
    }
    this.taken.add(free);
    return free;
  }

  /** Gives an index back (only when the backing file was never attached). */
  putBack(index: number): void {
    this.taken.delete(index);
  }

  has(index: number): boolean {
    return this.taken.has(index);
  }
}

/** The guest's name for the virtio-blk disk at `index`: vda, vdb, ... vdz, vdaa, ... */
export function guestDiskPath(index: number): string {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`invalid disk index ${index}`);
  let name = "";
  let n = index;
  do {
    name = String.fromCharCode(97 + (n % 26)) + name;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `/dev/vd${name}`;
}
