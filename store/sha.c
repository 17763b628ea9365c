/*
 * sha.c - SHA-256 through nettle.
 *
 * nettle's SHA-256 keeps its whole state in a caller-owned struct and
 * never allocates, so hashing cannot fail for want of memory at a bad
 * moment (in the middle of a commit); it uses the CPU's SHA instructions
 * where there are some.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include "sha.h"

struct sha_ctx {
	struct sha256_ctx c;
};

int sha_init(void)
{
	return 0;
}

struct sha_ctx *sha_new(void)
{
	struct sha_ctx *c = malloc(sizeof(*c));

	if (c)
		sha256_init(&c->c);
	return c;
}

void sha_update(struct sha_ctx *c, const void *p, size_t n)
{
	sha256_update(&c->c, n, p);
}

void sha_final(struct sha_ctx *c, uint8_t out[SHA_LEN])
{
	sha256_digest(&c->c, SHA_LEN, out);
	free(c);
}

int sha_buf(const void *p, size_t n, uint8_t out[SHA_LEN])
{
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, n, p);
	sha256_digest(&c, SHA_LEN, out);
	return 0;
}

int sha_fd(int fd, uint8_t out[SHA_LEN], uint64_t *size)
{
	enum { BUFSZ = 256 * 1024 };
	struct sha256_ctx c;
	char *buf;
	uint64_t off = 0;
	int rc = 0;

	buf = malloc(BUFSZ);
	if (!buf)
		return -ENOMEM;
	sha256_init(&c);
	for (;;) {
		ssize_t n = pread(fd, buf, BUFSZ, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		sha256_update(&c, (size_t)n, (const uint8_t *)buf);
		off += (uint64_t)n;
	}
	sha256_digest(&c, SHA_LEN, out);
	*size = off;
out:
	free(buf);
	return rc;
}

void sha_hex(const uint8_t d[SHA_LEN], char out[SHA_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < SHA_LEN; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[SHA_HEX_LEN] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sha_unhex(const char *hex, uint8_t out[SHA_LEN])
{
	for (int i = 0; i < SHA_LEN; i++) {
		int hi = hexval(hex[2 * i]), lo;

		if (hi < 0)
			return -EINVAL;
		lo = hexval(hex[2 * i + 1]);
		if (lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return hex[SHA_HEX_LEN] == '\0' ? 0 : -EINVAL;
}
