/*
 * cocoon-acrn-platform-info: asks the ACRN VHM driver for its platform information and
 * prints the raw structure as hexadecimal on one line.
 *
 * Node.js cannot issue an ioctl, so cocoon runs this helper instead. It does the ioctl and
 * nothing else: the structure is decoded by cocoon (src/vmm/acrn/platform-info.ts), where
 * the decoding is unit-tested without the device.
 *
 * Usage: cocoon-acrn-platform-info [device]      (default /dev/acrn_vhm)
 * Exit status: 0 ok, 2 the device does not exist, 3 the device cannot be opened,
 *              4 the ioctl failed, 64 usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The VHM driver's IC_GET_PLATFORM_INFO request: _IC_ID(0x43, 0x03). */
#define ACRN_IOCTL_GET_PLATFORM_INFO 0x43000003UL
/* The size of struct platform_info in the VHM ABI. */
#define ACRN_PLATFORM_INFO_SIZE 256

int main(int argc, char **argv)
{
	const char *device = "/dev/acrn_vhm";
	/* 8-byte aligned: the structure holds a 64-bit field. */
	unsigned char info[ACRN_PLATFORM_INFO_SIZE] __attribute__((aligned(8)));
	int fd;
	int i;

	if (argc > 2) {
		fprintf(stderr, "usage: %s [device]\n", argv[0]);
		return 64;
	}
	if (argc == 2)
		device = argv[1];

	/*
	 * Zeroed on purpose: the structure carries a guest address (vm_configs_addr) where the
	 * hypervisor copies every VM configuration when it is not zero.
	 */
	memset(info, 0, sizeof(info));

	fd = open(device, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		fprintf(stderr, "cannot open %s: %s\n", device, strerror(err));
		return err == ENOENT ? 2 : 3;
	}
	if (ioctl(fd, ACRN_IOCTL_GET_PLATFORM_INFO, info) != 0) {
		int err = errno;
		fprintf(stderr, "ACRN platform info ioctl on %s failed: %s\n", device, strerror(err));
		close(fd);
		return 4;
	}
	close(fd);

	for (i = 0; i < ACRN_PLATFORM_INFO_SIZE; i++)
		printf("%02x", info[i]);
	printf("\n");
	return fflush(stdout) == 0 ? 0 : 4;
}
