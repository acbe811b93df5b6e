/*
 * Encryption at rest for the daemon's state directory: AES-256-GCM (mbedTLS) under a
 * key file created 0600. Every sealed blob is bound to its purpose by the additional
 * data, so a sealed secret cannot be passed off as a sealed config.
 */
#ifndef AUTHPROXY_SEAL_H
#define AUTHPROXY_SEAL_H

#include <stddef.h>
#include <sys/types.h>

#define PROXY_SEAL_KEY_LEN 32

/*
 * Loads the key from path, creating it (32 random bytes, mode 0600) when it does not
 * exist. A new key is written to a temporary file beside path (PATH.tmp.XXXXXX),
 * fsynced, and linked to path, so that path is either absent or complete: a crash
 * while creating it leaves at most the temporary file, which is never read and may be
 * removed. When two processes create it at once, one key wins and both use it.
 * Refuses a key file of the wrong size or readable by group/others. Returns 0 or a
 * negative errno; err names the file and the fix.
 */
int proxy_seal_key_load(const char *path, unsigned char key[PROXY_SEAL_KEY_LEN],
                        char *err, size_t errsz);

/* Encrypts; *out is malloc'd ("APS1" | nonce | ciphertext | tag). */
int proxy_seal(const unsigned char key[PROXY_SEAL_KEY_LEN], const char *aad,
               const void *plain, size_t len, unsigned char **out, size_t *outlen);

/* Decrypts and authenticates; -EBADMSG when the blob was altered or the key or aad
 * differ. *plain is malloc'd with a NUL after the data; wipe it before freeing. */
int proxy_unseal(const unsigned char key[PROXY_SEAL_KEY_LEN], const char *aad,
                 const void *in, size_t len, unsigned char **plain, size_t *plainlen);

/* Writes a file atomically: temp file in the same directory with `mode`, rename. With
 * `durable`, the file and the directory are fsynced too (survives power loss). */
int proxy_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            int durable);

#endif
