/* utf8.h - incremental UTF-8 validation (RFC 3629) for text messages */
#ifndef MS_UTF8_H
#define MS_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum { UTF8_ACCEPT = 0, UTF8_REJECT = 1 };

/* Feed n bytes to the validator whose state is *state (start with
 * UTF8_ACCEPT).  Returns the new state: UTF8_ACCEPT at a character
 * boundary, UTF8_REJECT as soon as the bytes cannot be UTF-8 (the state
 * then stays rejected), anything else inside a character. */
uint32_t utf8_validate(uint32_t state, const uint8_t *p, size_t n);

#endif
