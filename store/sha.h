/*
 * sha.h - SHA-256 through nettle.
 */
#ifndef JOBFS_SHA_H
#define JOBFS_SHA_H

#include <stddef.h>
#include <stdint.h>

#define SHA_LEN 32
#define SHA_HEX_LEN 64

struct sha_ctx;

/* Kept for callers that prepare hashing at start; nettle needs nothing. */
int sha_init(void);

/* Incremental hashing. sha_new() returns NULL on ENOMEM. sha_final()
 * writes the digest and frees the context. */
struct sha_ctx *sha_new(void);
void sha_update(struct sha_ctx *c, const void *p, size_t n);
void sha_final(struct sha_ctx *c, uint8_t out[SHA_LEN]);

/* One-shot digest of a buffer; always 0 (an int for callers' sake). */
int sha_buf(const void *p, size_t n, uint8_t out[SHA_LEN]);

/* Digest of everything fd holds from offset 0 (read with pread, so the
 * file offset is untouched); sets *size to the bytes read. Returns 0 or a
 * negative errno. */
int sha_fd(int fd, uint8_t out[SHA_LEN], uint64_t *size);

/* Lowercase hex of a digest into out (SHA_HEX_LEN + 1 bytes). */
void sha_hex(const uint8_t d[SHA_LEN], char out[SHA_HEX_LEN + 1]);

/* Parse 64 hex digits; returns 0 or -EINVAL. */
int sha_unhex(const char *hex, uint8_t out[SHA_LEN]);

#endif
