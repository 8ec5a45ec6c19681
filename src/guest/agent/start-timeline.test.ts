import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { markStart, resetStartMarks, startTimeline, writeStartTimeline } from "./start-timeline.js";

describe("agent start timeline", () => {
  afterEach(() => resetStartMarks());

  it("keeps the marks in order on the monotonic clock, after node's own phases", () => {
    resetStartMarks();
    markStart("a");
    markStart("b");
    const t = startTimeline();
    expect(t.marks.map((m) => m.name)).toEqual(["a", "b"]);
    expect(t.marks[1]!.at).toBeGreaterThanOrEqual(t.marks[0]!.at);
    expect(t.node.bootstrapComplete).toBeGreaterThan(t.timeOrigin);
    expect(t.marks[0]!.at).toBeGreaterThan(t.node.bootstrapComplete!);
    // CLOCK_MONOTONIC, as process.hrtime
    expect(Math.abs(t.marks[1]!.at - Number(process.hrtime.bigint()) / 1e9)).toBeLessThan(60);
  });

  it("shares the marks between copies of the module (the loader's and the bundle's)", async () => {
    resetStartMarks();
    markStart("here");
    const key = Symbol.for("cocoon.agent.startMarks");
    expect((globalThis as Record<symbol, unknown>)[key]).toEqual([expect.objectContaining({ name: "here" })]);
  });

  it("reads when the process was forked from /proc/self/stat (a name with spaces too)", () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[19] = "1234"; // field 22, starttime
    const t = startTimeline(`42 (a b) ${fields.join(" ")}`);
    expect(t.forked).toBe(12.34);
    expect(startTimeline("garbage").forked).toBeUndefined();
  });

  it("writes the timeline as JSON", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "cocoon-timeline-"));
    try {
      markStart("x");
      await writeStartTimeline(path.join(dir, "sub", "t.json"));
      const t = JSON.parse(await readFile(path.join(dir, "sub", "t.json"), "utf8")) as {
        marks: { name: string }[];
      };
      expect(t.marks.map((m) => m.name)).toContain("x");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
