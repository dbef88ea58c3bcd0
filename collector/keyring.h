/* The agents' HMAC keys: a file of lines
 *     agent <uuid> <hex key>      one key for one agent
 *     group <name> <hex key>      one key shared by an enrolment group
 * (blank lines and # comments allowed). A frame verifies against its
 * agent's own key, or else against a group key. Reloaded on SIGHUP:
 * a revoked line stops its agent at once. */
#ifndef ST_KEYRING_H
#define ST_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

#define ST_KEYRING_MAX 100000    /* lines in a keys file */
#define ST_KEYRING_MAX_GROUPS 16 /* group keys are tried one by one */
#define ST_KEYRING_FILE_MAX (16u << 20)

typedef struct st_keyring st_keyring;

/* Loads path. Errors name the line: "keys.txt:3: bad hex key". */
int st_keyring_load(const char *path, st_keyring **out, char *err, size_t errlen);
void st_keyring_free(st_keyring *k);
size_t st_keyring_size(const st_keyring *k);

/* Checks the envelope's signature: ST_OK, ST_EENV_UNSIGNED,
 * ST_EENV_UNKNOWN_AGENT (no key could apply) or ST_EENV_HMAC. */
int st_keyring_verify(const st_keyring *k, const uint8_t *buf, size_t len, const st_envelope *env);

#endif
