/* The wire dictionary of envelope codec 2 (zstd with a dictionary).
 *
 * A frame repeats every series' name, labels, unit and kind each time it is
 * sent; for a small agent (the host samplers: ~20 series, one frame every
 * 15 s) those strings are most of the compressed bytes. Codec 2 compresses
 * the frame with a raw-content zstd dictionary that both sides build from
 * the same frozen table: the catalog's series as a Frame carries them. Frames
 * stay independent of each other (no state shared between frames), so the
 * spool, resends and deduplication work exactly as with codec 1.
 *
 * The bytes of dictionary 1 are frozen: an agent and a collector of
 * different versions must agree on them. wiredict_test pins their length and
 * CRC32C. A different dictionary needs a new codec number. */
#ifndef ST_WIREDICT_H
#define ST_WIREDICT_H

#include <stddef.h>
#include <stdint.h>

/* The dictionary's bytes, built on first use (thread-safe) and kept for the
 * life of the process. NULL (and *len 0) only when memory ran out. */
const uint8_t *st_wiredict(size_t *len);

#endif
