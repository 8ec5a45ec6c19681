import { create, toBinary } from "@bufbuild/protobuf";
import { AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { MetricsSchema } from "../gen/shim/github.com/containerd/cgroups/v2/stats/metrics_pb.js";

/** A container's cgroup figures as the guest agent reads them (`container.stats`). */
export interface ContainerCgroupStats {
  cpuUsageUsec: number;
  memoryBytes: number;
  memoryLimitBytes?: number;
  pids: number;
}

/**
 * containerd's typeurl looks the message up by its bare proto name (gogo registration), not by
 * a `type.googleapis.com/` URL: `ctr task metrics` decodes exactly this.
 */
export const CGROUPS_V2_METRICS_URL = "io.containerd.cgroups.v2.Metrics";

/** cgroup v2 reads "max" as the largest uint64, as containerd's cgroups package does. */
const UNLIMITED = 0xffff_ffff_ffff_ffffn;

/** Stats for containerd: the guest cgroup's figures as io.containerd.cgroups.v2.Metrics in an Any. */
export function metricsAny(s: ContainerCgroupStats): Any {
  const metrics = create(MetricsSchema, {
    pids: { current: BigInt(s.pids) },
    cpu: { usageUsec: BigInt(s.cpuUsageUsec) },
    memory: {
      usage: BigInt(s.memoryBytes),
      usageLimit: s.memoryLimitBytes === undefined ? UNLIMITED : BigInt(s.memoryLimitBytes),
    },
  });
  return create(AnySchema, { typeUrl: CGROUPS_V2_METRICS_URL, value: toBinary(MetricsSchema, metrics) });
}
