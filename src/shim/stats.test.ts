import { fromBinary } from "@bufbuild/protobuf";
import { expect, it } from "vitest";
import { MetricsSchema } from "../gen/shim/github.com/containerd/cgroups/v2/stats/metrics_pb.js";
import { CGROUPS_V2_METRICS_URL, metricsAny } from "./stats.js";

it("packs the guest cgroup figures as io.containerd.cgroups.v2.Metrics", () => {
  const any = metricsAny({ cpuUsageUsec: 1500, memoryBytes: 4096, memoryLimitBytes: 1 << 20, pids: 2 });
  expect(any.typeUrl).toBe(CGROUPS_V2_METRICS_URL);
  const m = fromBinary(MetricsSchema, any.value);
  expect(m.pids?.current).toBe(2n);
  expect(m.cpu?.usageUsec).toBe(1500n);
  expect(m.memory?.usage).toBe(4096n);
  expect(m.memory?.usageLimit).toBe(1048576n);
});

it("reports no memory limit as the largest uint64, as cgroup v2's max", () => {
  const m = fromBinary(MetricsSchema, metricsAny({ cpuUsageUsec: 0, memoryBytes: 1, pids: 1 }).value);
  expect(m.memory?.usageLimit).toBe(2n ** 64n - 1n);
});
