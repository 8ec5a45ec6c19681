/** Vitest hooks shared by test files that boot VMs (kept apart from env.ts, which benches import too). */
import { afterEach, beforeAll, beforeEach, expect } from "vitest";
import { guestAssets, processesMentioning, testRoot } from "./env.js";

/**
 * The hooks of a test file whose tests each boot VMs under a fresh root: the guest assets
 * first, a new root per test, and after each test no process may still mention the root.
 * Returns the current test's root.
 */
export function rootPerTest(): () => string {
  let current: { root: string; cleanup: () => Promise<void> } | undefined;
  beforeAll(async () => {
    await guestAssets();
  }, 20 * 60_000);
  beforeEach(async () => {
    current = await testRoot();
  });
  afterEach(async () => {
    expect(await processesMentioning(current!.root)).toEqual([]);
    await current!.cleanup();
  });
  return () => current!.root;
}
