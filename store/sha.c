/*
 * sha.c - SHA-256 helpers over OpenSSL's EVP interface.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sha.h"

/* The digest is fetched from OpenSSL's provider once: a fetch per hash
 * costs allocations, and under memory pressure OpenSSL's implicit fetch
 * is where it is least careful. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	/* OpenSSL's own initialisation can fail for want of memory, and a
	 * fetch after that failure crashes inside OpenSSL: check it first. */
	if (OPENSSL_init_crypto(0, NULL) != 1)
		return;
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int sha_init(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md ? 0 : -ENOMEM;
}

struct sha_ctx *sha_new(void)
{
	EVP_MD_CTX *c;

	pthread_once(&sha256_once, sha256_fetch);
	if (!sha256_md)
		return NULL;
	c = EVP_MD_CTX_new();
	if (c && EVP_DigestInit_ex(c, sha256_md, NULL) != 1) {
		EVP_MD_CTX_free(c);
		c = NULL;
	}
	return (struct sha_ctx *)c;
}

void sha_update(struct sha_ctx *c, const void *p, size_t n)
{
	EVP_DigestUpdate((EVP_MD_CTX *)c, p, n);
}

void sha_final(struct sha_ctx *c, uint8_t out[SHA_LEN])
{
	unsigned int len = SHA_LEN;

	EVP_DigestFinal_ex((EVP_MD_CTX *)c, out, &len);
	EVP_MD_CTX_free((EVP_MD_CTX *)c);
}

int sha_buf(const void *p, size_t n, uint8_t out[SHA_LEN])
{
	unsigned int len = SHA_LEN;

	pthread_once(&sha256_once, sha256_fetch);
	if (!sha256_md || EVP_Digest(p, n, out, &len, sha256_md, NULL) != 1) {
		memset(out, 0, SHA_LEN);
		return -ENOMEM;
	}
	return 0;
}

int sha_fd(int fd, uint8_t out[SHA_LEN], uint64_t *size)
{
	enum { BUFSZ = 1 << 20 };
	struct sha_ctx *c;
	char *buf;
	uint64_t off = 0;
	int rc = 0;

	buf = malloc(BUFSZ);
	c = sha_new();
	if (!buf || !c) {
		rc = -ENOMEM;
		goto out;
	}
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
		sha_update(c, buf, (size_t)n);
		off += (uint64_t)n;
	}
	sha_final(c, out);
	c = NULL;
	*size = off;
out:
	if (c) {
		uint8_t junk[SHA_LEN];

		sha_final(c, junk);
	}
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
