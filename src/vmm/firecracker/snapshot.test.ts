import { describe, expect, it } from "vitest";
import { snapshotCreateBody, snapshotLoadBody } from "./snapshot.js";
import { parseVersion } from "./version.js";

describe("snapshot request bodies per version", () => {
  it("uses mem_file_path on 1.0 and mem_backend from 1.1", () => {
    expect(
      snapshotLoadBody(parseVersion("1.0.0"), {
        snapshotPath: "/s",
        backend: "File",
        backendPath: "/m",
        resume: true,
        trackDirtyPages: true,
      }),
    ).toEqual({
      snapshot_path: "/s",
      mem_file_path: "/m",
      enable_diff_snapshots: true,
      resume_vm: true,
    });
    expect(
      snapshotLoadBody(parseVersion("1.16.1"), {
        snapshotPath: "/s",
        backend: "Uffd",
        backendPath: "/uffd.sock",
        trackDirtyPages: true,
      }),
    ).toEqual({
      snapshot_path: "/s",
      mem_backend: { backend_type: "Uffd", backend_path: "/uffd.sock" },
      track_dirty_pages: true,
    });
    expect(
      snapshotLoadBody(parseVersion("1.5.0"), {
        snapshotPath: "/s",
        backend: "File",
        backendPath: "/m",
        trackDirtyPages: true,
      }),
    ).toMatchObject({
      enable_diff_snapshots: true,
    });
  });

  it("refuses what the version cannot do", () => {
    expect(() =>
      snapshotLoadBody(parseVersion("1.0.0"), { snapshotPath: "/s", backend: "Uffd", backendPath: "/u" }),
    ).toThrow(/Uffd backend was added in 1\.1\.0/);
    expect(() =>
      snapshotCreateBody(parseVersion("1.6.0"), {
        snapshotPath: "/s",
        memFilePath: "/m",
        targetVersion: "1.5.0",
      }),
    ).toThrow(/removed in 1\.6\.0/);
    expect(
      snapshotCreateBody(parseVersion("1.0.0"), {
        type: "Diff",
        snapshotPath: "/s",
        memFilePath: "/m",
        targetVersion: "0.25.0",
      }),
    ).toEqual({
      snapshot_type: "Diff",
      snapshot_path: "/s",
      mem_file_path: "/m",
      version: "0.25.0",
    });
  });
});
