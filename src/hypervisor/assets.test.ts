import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/helpers/tmp.js";
import {
  ANNOTATION_PREFIX,
  assetsFromAnnotations,
  DEFAULT_ANNOTATION_POLICY,
  verifyAsset,
  type AnnotationPolicy,
} from "./assets.js";

// Kata's test vector: this content has this SHA-512.
const FAKE_CONTENT = "FakeAsset fake asset FAKE ASSET";
const FAKE_SHA512 =
  "92549f8d2018a95a294d28a65e795ed7d1a9d150009a28cea108ae10101178676f04ab82a6950d0099e4924f9c5e41dcba8ece56b75fc8b4e0a7492cb2a8c880";

const allowAll: AnnotationPolicy = {
  enableAnnotations: [".*"],
  validHypervisorPaths: ["/usr/bin/qemu-*"],
  validCtlPaths: ["/usr/bin/acrnctl"],
  validJailerPaths: ["/usr/bin/jailer"],
};

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => ({ dir, cleanup } = await tempDir()));
afterEach(() => cleanup());

describe("asset annotations", () => {
  it("reads path and hash per asset type", () => {
    const assets = assetsFromAnnotations(
      {
        [`${ANNOTATION_PREFIX}kernel`]: "/boot/vmlinux",
        [`${ANNOTATION_PREFIX}kernel_hash`]: FAKE_SHA512.toUpperCase(),
        [`${ANNOTATION_PREFIX}image`]: "/img/rootfs.ext4",
        [`${ANNOTATION_PREFIX}path`]: "/usr/bin/qemu-system-x86_64",
        "unrelated.annotation": "x",
      },
      allowAll,
    );
    expect(assets.kernel).toEqual({ type: "kernel", path: "/boot/vmlinux", hash: FAKE_SHA512 });
    expect(assets.image).toEqual({ type: "image", path: "/img/rootfs.ext4" });
    expect(assets.hypervisor?.path).toBe("/usr/bin/qemu-system-x86_64");
    expect(assets.initrd).toBeUndefined();
  });

  it("refuses every override by default (only kernel_params is enabled)", () => {
    expect(() =>
      assetsFromAnnotations({ [`${ANNOTATION_PREFIX}kernel`]: "/boot/vmlinux" }, DEFAULT_ANNOTATION_POLICY),
    ).toThrow(
      expect.objectContaining({
        code: "ERR_ANNOTATION_FORBIDDEN",
        message: expect.stringContaining(`annotation ${ANNOTATION_PREFIX}kernel is not enabled`),
      }),
    );
    expect(assetsFromAnnotations({ [`${ANNOTATION_PREFIX}kernel_params`]: "quiet" })).toEqual({});
  });

  it("matches enable_annotations regexps against the whole name", () => {
    const policy = { ...DEFAULT_ANNOTATION_POLICY, enableAnnotations: ["kernel"] };
    expect(() => assetsFromAnnotations({ [`${ANNOTATION_PREFIX}kernel_hash`]: "x" }, policy)).toThrow(
      /not enabled/,
    );
  });

  it("refuses a binary override outside the allow-list even when the annotation is enabled", () => {
    const policy: AnnotationPolicy = { ...allowAll, validHypervisorPaths: [] };
    expect(() => assetsFromAnnotations({ [`${ANNOTATION_PREFIX}path`]: "/tmp/evil" }, policy)).toThrow(
      expect.objectContaining({
        code: "ERR_ANNOTATION_FORBIDDEN",
        message:
          "hypervisor path /tmp/evil from annotation io.cocoon.config.hypervisor.path is not in valid_hypervisor_paths",
      }),
    );
    expect(() =>
      assetsFromAnnotations({ [`${ANNOTATION_PREFIX}jailer_path`]: "/tmp/jailer" }, allowAll),
    ).toThrow(/not in valid_jailer_paths/);
    expect(() =>
      assetsFromAnnotations({ [`${ANNOTATION_PREFIX}ctlpath`]: "/opt/acrnctl" }, allowAll),
    ).toThrow(/not in valid_ctlpaths/);
  });

  it("refuses relative paths, image with initrd, and unknown hash types", () => {
    expect(() => assetsFromAnnotations({ [`${ANNOTATION_PREFIX}kernel`]: "vmlinux" }, allowAll)).toThrow(
      expect.objectContaining({
        code: "ERR_ASSET_INVALID",
        message: expect.stringContaining("must be absolute"),
      }),
    );
    expect(() =>
      assetsFromAnnotations(
        { [`${ANNOTATION_PREFIX}image`]: "/a", [`${ANNOTATION_PREFIX}initrd`]: "/b" },
        allowAll,
      ),
    ).toThrow(/conflicting annotations/);
    expect(() => assetsFromAnnotations({ "io.cocoon.config.asset_hash_type": "md5" }, allowAll)).toThrow(
      /only sha512/,
    );
  });
});

describe("verifyAsset", () => {
  it("accepts content matching the hash", async () => {
    const file = path.join(dir, "fake");
    await writeFile(file, FAKE_CONTENT);
    await expect(verifyAsset({ type: "kernel", path: file, hash: FAKE_SHA512 })).resolves.toBeUndefined();
  });

  it("refuses a hash that differs in the last digit, naming type and path", async () => {
    const file = path.join(dir, "fake");
    await writeFile(file, FAKE_CONTENT);
    const wrong = FAKE_SHA512.slice(0, -1) + "1";
    await expect(verifyAsset({ type: "image", path: file, hash: wrong })).rejects.toMatchObject({
      code: "ERR_ASSET_HASH_MISMATCH",
      message: expect.stringContaining(`image asset ${file}`),
      details: { computed: FAKE_SHA512, expected: wrong },
    });
  });

  it("refuses a missing file, a directory and an empty file with a hash", async () => {
    await expect(verifyAsset({ type: "kernel", path: path.join(dir, "nope") })).rejects.toMatchObject({
      code: "ERR_ASSET_INVALID",
      message: `invalid kernel asset at ${path.join(dir, "nope")}: no such file`,
    });
    await expect(verifyAsset({ type: "kernel", path: dir })).rejects.toMatchObject({
      code: "ERR_ASSET_INVALID",
    });
    const empty = path.join(dir, "empty");
    await writeFile(empty, "");
    await expect(verifyAsset({ type: "initrd", path: empty, hash: FAKE_SHA512 })).rejects.toMatchObject({
      message: expect.stringContaining("the file is empty"),
    });
    await expect(verifyAsset({ type: "initrd", path: empty })).resolves.toBeUndefined();
  });
});
