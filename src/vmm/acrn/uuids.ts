/**
 * The VM UUIDs an ACRN service VM accepts for post-launched (Kata-style) VMs.
 *
 * ACRN only launches VMs whose UUID is on a list compiled into the hypervisor (a functional
 * safety requirement: the UUID feeds the VM's virtual seed, it does not identify an image).
 * Any other UUID makes `acrn-dm` fail at VM creation. The list and its order are ACRN's; the
 * position of a UUID is its index in the availability pool.
 */
export const ACRN_UUIDS = [
  "a7ada506-1ab0-4b6b-a0da-e513ca9b8c2f",
  "dbeae168-26e4-4084-9227-622193e56325",
  "18ed60cd-e9ea-4bf4-8f87-8523fc8347a3",
  "3f90b6f8-449a-4e72-b99c-063a889fc422",
  "1ae8587b-e599-4b59-8260-6d14ac166a55",
  "75f3b94b-49ed-48fc-b019-577ef45adf2b",
  "ca62cf3c-8359-47e8-a3f7-de2d682dfb02",
  "e3189497-c3f6-4b97-9e2c-18ac0ab9064d",
] as const;

export type AcrnUuid = (typeof ACRN_UUIDS)[number];

/** How many VMs cocoon can ever run on one ACRN host, whatever the platform reports. */
export const ACRN_MAX_UUIDS = ACRN_UUIDS.length;

export function isAcrnUuid(value: string): value is AcrnUuid {
  return (ACRN_UUIDS as readonly string[]).includes(value);
}
