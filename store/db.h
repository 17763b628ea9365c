/*
 * db.h - the durable state of every job, in one LMDB environment.
 *
 * This is the only module that includes lmdb.h. It owns the schema:
 *
 *   meta     "version" -> u32, "next_job_id" -> u64
 *   jobs     job name -> struct job_rec followed by the spec text
 *   chunks   (job id u64 BE, chunk number u32 BE) -> struct chunk_rec
 *            followed by the last error text (no NUL)
 *   objects  SHA-256 of an output -> struct obj_rec (reference count, size),
 *            followed by the output's bytes when it is kept inline
 *
 * Keys are big-endian so that a cursor walks one job's chunks in order.
 * Chunk numbers start at 1 as everywhere a user sees them.
 *
 * Every function that can fail returns 0 or a negative errno; LMDB's own
 * codes are translated in one place (db_err()): MDB_NOTFOUND -> -ENOENT,
 * MDB_MAP_FULL -> -ENOSPC, MDB_KEYEXIST -> -EEXIST, other MDB_* -> -EIO.
 *
 * A transaction is LMDB's: after any failed write, only db_abort() is
 * allowed. Pointers into the map (db_chunk_iter's rec) are valid only
 * until the transaction ends.
 */
#ifndef JOBFS_DB_H
#define JOBFS_DB_H

#include <stddef.h>
#include <stdint.h>

#include "sha.h"

/* Store formats: 1, then 2 (objects records may hold an output's bytes,
 * db_obj_inline). A version-1 store is a valid version-2 one and is marked
 * 2 when opened for writing. */
#define DB_VERSION 2
#define DB_VERSION_OLDEST 1
#define DB_ERR_MAX 240   /* bytes of last error kept per chunk */

struct db;
struct db_txn;

/* Durable job run modes. What status calls the job's state is derived from
 * the mode and the chunk counts (see fs/engine.c). */
enum job_mode {
	JOB_MODE_IDLE = 0,  /* never started, or reset */
	JOB_MODE_RUN,       /* run every chunk that is not done */
	JOB_MODE_PAUSE,     /* start nothing new */
	JOB_MODE_STOP,      /* cancelled */
	JOB_MODE_SELECTED,  /* run only chunks flagged CHUNK_F_QUEUED */
};

struct job_rec {
	uint32_t version;
	uint32_t mode;          /* enum job_mode */
	uint32_t after_selected; /* mode to return to when SELECTED ends */
	uint32_t has_input;
	uint64_t id;
	int64_t created_ms, updated_ms;
	int64_t run_started_ms;  /* when the current run began, 0 = never */
	uint64_t input_len;
	uint8_t input_sha[SHA_LEN];
	uint32_t nchunks;
	uint32_t plan_reused;    /* chunks reused by the last re-plan */
	uint32_t plan_new;       /* ... whose text is new */
	uint32_t plan_changed;   /* ... whose text was done under another
				  * command or params */
	/* audio jobs with "output": "flac" or "ogg": the encoded output,
	 * valid while enc_key matches the joined chunks (fs/encode.c) */
	uint8_t enc_key[SHA_LEN];
	uint8_t enc_obj[SHA_LEN];
	uint64_t enc_size;
	uint32_t has_enc;
	uint32_t reserved;
};

enum chunk_state {
	CHUNK_PENDING = 0,
	CHUNK_DONE = 1,
	CHUNK_FAILED = 2,    /* out of attempts, or a no_retry exit code */
};

#define CHUNK_F_QUEUED 0x01  /* selected by retry / retry-failed / rm */
#define CHUNK_F_REUSED 0x02  /* output taken from an earlier plan */

struct chunk_rec {
	uint8_t state;       /* enum chunk_state */
	uint8_t flags;       /* CHUNK_F_* */
	uint16_t reserved;
	uint32_t attempts;   /* attempts that ended (failed or done) */
	uint32_t fails;      /* failures against the current budget */
	int32_t last_code;   /* last exit code, or -signal; 0 if none */
	uint64_t start, end; /* byte range in the input */
	uint8_t text_sha[SHA_LEN];
	uint8_t obj[SHA_LEN];   /* output object when done */
	uint64_t obj_size;
	uint32_t duration_ms;   /* of the attempt that produced the output */
	uint32_t rate;          /* audio chunks: sample rate, else 0 */
	int64_t done_ms;        /* when it became done */
	uint64_t frames;        /* audio chunks: frames in the object */
	uint16_t channels;      /* audio chunks */
	uint16_t enc;           /* audio chunks: enum audio_enc */
	uint32_t reserved2;
};

struct obj_rec {
	uint64_t refs;
	uint64_t size;
};

/*
 * Open (creating if needed) the environment in directory dir, which must
 * exist. The environment is opened with LMDB's default synchronous
 * commits and MDB_NOTLS (read transactions are used from many FUSE
 * threads). Stale reader slots left by dead processes are cleared.
 * Returns 0 and sets *out, or a negative errno with a message in err.
 */
int db_open(const char *dir, int readonly, struct db **out,
	    char *err, size_t errlen);
void db_close(struct db *db);

/* Descriptor of the data file, for fsync audits and the tests. */
int db_fd(struct db *db);

/* Set the map size (bytes) while no transaction is open. A write
 * transaction doubles the map first when it is three quarters used. */
int db_set_mapsize(struct db *db, uint64_t bytes);

/* Whether the last -ENOSPC of this thread came from a full map (and not a
 * full disk); reading it clears it. db_grow() doubles the map, again only
 * with no transaction open: a transaction that ran out of map is aborted,
 * the map grown, and the transaction done again. */
int db_map_was_full(void);
int db_grow(struct db *db);

int db_begin(struct db *db, int write, struct db_txn **out);
/* A write transaction that never resizes the map, so it may run while
 * other threads have read transactions open; db_begin() may resize, and
 * its caller must make sure no other transaction is open. Write
 * transactions of either kind run one at a time. */
int db_begin_nogrow(struct db *db, struct db_txn **out);
int db_commit(struct db_txn *t);   /* frees t even on failure */
void db_abort(struct db_txn *t);   /* frees t; NULL is fine */

/* meta */
int db_next_job_id(struct db_txn *t, uint64_t *out);

/* jobs: spec/speclen may be NULL/0. db_job_get returns the spec text
 * (NUL-terminated, malloc'ed, NULL if none) through spec_out if asked. */
int db_job_get(struct db_txn *t, const char *name, struct job_rec *out,
	       char **spec_out, size_t *speclen_out);
int db_job_put(struct db_txn *t, const char *name, const struct job_rec *r,
	       const char *spec, size_t speclen);
int db_job_del(struct db_txn *t, const char *name);
typedef int (*db_job_fn)(void *arg, const char *name, const struct job_rec *r,
			 const char *spec, size_t speclen);
int db_job_iter(struct db_txn *t, db_job_fn fn, void *arg);

/* chunks. err/errlen: the last error text; err_out gets up to
 * DB_ERR_MAX + 1 bytes, NUL-terminated (may be NULL). */
int db_chunk_get(struct db_txn *t, uint64_t job, uint32_t n,
		 struct chunk_rec *out, char *err_out);
int db_chunk_put(struct db_txn *t, uint64_t job, uint32_t n,
		 const struct chunk_rec *r, const char *err);
typedef int (*db_chunk_fn)(void *arg, uint32_t n, const struct chunk_rec *r,
			   const char *err, size_t errlen);
/* Call fn for chunks from..last of a job, in order; a non-zero return
 * from fn stops the walk and is returned. */
int db_chunk_iter(struct db_txn *t, uint64_t job, uint32_t from,
		  db_chunk_fn fn, void *arg);
/* Delete every chunk record of a job. */
int db_chunk_del_all(struct db_txn *t, uint64_t job);

/*
 * Give back every page of data.mdb that this process has mapped: each
 * commit walks the B-tree through LMDB's read-only map, so over a
 * million-chunk run the whole file becomes part of the daemon's resident
 * size. Only the page table entries go (the map is shared and never
 * writable); the pages stay in the page cache and fault back in when
 * read. Safe beside open read transactions; waits for a write
 * transaction to end. Uses /proc/self/maps to find the map.
 */
void db_drop_map(struct db *db);

/* objects. db_obj_ref adds delta (+1/-1) to an object's reference count,
 * creating the record at +1 and deleting it when it reaches 0; *refs_out
 * (may be NULL) gets the count after. A count change keeps the record's
 * inline bytes. */
int db_obj_get(struct db_txn *t, const uint8_t sha[SHA_LEN],
	       struct obj_rec *out);
int db_obj_ref(struct db_txn *t, const uint8_t sha[SHA_LEN], uint64_t size,
	       int delta, uint64_t *refs_out);

/*
 * Small outputs are kept inside their objects record instead of as a file
 * in objects/: the record's value is the obj_rec followed by the size
 * bytes. DB_INLINE_MAX keeps record, key and LMDB's node header within
 * one node of a 4 KiB page (no overflow pages).
 *
 * db_obj_ref_inline adds delta like db_obj_ref; when it creates the
 * record (delta +1 on an unknown object), the size bytes at data become
 * part of it. An existing record is left as it is: the same hash means
 * the same bytes, whether they are inline or in a file.
 *
 * db_obj_inline points *data at an object's inline bytes (valid until the
 * transaction ends; *len is their length): 0, -ENOENT without a record,
 * -ENODATA when the object is a file. An empty object is always inline.
 */
#define DB_INLINE_MAX 1984
int db_obj_ref_inline(struct db_txn *t, const uint8_t sha[SHA_LEN],
		      uint64_t size, const void *data, int delta,
		      uint64_t *refs_out);
int db_obj_inline(struct db_txn *t, const uint8_t sha[SHA_LEN],
		  const void **data, size_t *len);

/* Bytes used by the map, and the number of chunk records (for status and
 * benchmarks). */
int db_stat(struct db *db, uint64_t *map_bytes, uint64_t *chunk_records);

#endif
