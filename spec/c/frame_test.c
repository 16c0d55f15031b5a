/* frame_test.c - TAP tests for csrc/frame.c's masking and csrc/utf8.c's
 * validator: their fast paths (16-byte lanes, words, ASCII runs)
 * against byte-at-a-time references, at every length, key offset and
 * alignment near the lanes' edges */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "utf8.h"
#include "tap.h"

#define MAXN 700          /* past 256: the 32-byte lanes, where there */

static void test_masking(struct run *r) {
  static const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
  uint8_t src[MAXN + 64], buf[MAXN + 64], want[MAXN + 64];
  int in_place = 1, copied = 1, masked = 1, untouched = 1;
  for (size_t n = 0; n <= MAXN; n++) {
    for (size_t off = 0; off < 4; off++) {
      for (size_t align = 0; align < 16; align++) {
        for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)rnd();
        for (size_t i = 0; i < n; i++)
          want[i] = src[align + i] ^ key[(off + i) & 3];
        memcpy(buf, src, sizeof buf);
        frame_unmask(buf + align, n, key, off);
        in_place &= memcmp(buf + align, want, n) == 0;
        untouched &= memcmp(buf, src, align) == 0 &&
                     memcmp(buf + align + n, src + align + n,
                            sizeof buf - align - n) == 0;
        memset(buf, 0xAA, sizeof buf);
        frame_unmask_copy(buf + (15 - align), src + align, n, key, off);
        copied &= memcmp(buf + (15 - align), want, n) == 0;
        untouched &= buf[15 - align + n] == 0xAA;
        if (off == 0) {
          frame_mask_copy(buf, src + align, n, key);
          masked &= memcmp(buf, want, n) == 0;
        }
      }
    }
  }
  check(r, in_place, "frame_unmask: every length to %d, offset, alignment",
        MAXN);
  check(r, copied, "frame_unmask_copy: the same, to another buffer");
  check(r, masked, "frame_mask_copy: the same, from key byte 0");
  check(r, untouched, "masking writes nothing outside its n bytes");
}

/* UTF-8 text: ASCII runs of every length with multibyte characters and
 * now and then a bad byte between them. */
static size_t make_text(uint8_t *p, size_t max, int bad) {
  static const char *const pieces[] = { "\xc3\xa9", "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80", "\xed\x9f\xbf" };
  size_t n = 0;
  for (;;) {
    /* mostly short runs; some past 128 bytes, for the AVX2 blocks */
    size_t run = rnd() % 4 ? rnd() % 40 : rnd() % 400;
    if (n + run + 4 > max) break;   /* the run and a piece fit */
    for (size_t i = 0; i < run; i++) p[n++] = (uint8_t)(' ' + rnd() % 90);
    if (bad && rnd() % 8 == 0) {
      p[n++] = (uint8_t)(0x80 + rnd() % 0x80);     /* often invalid */
    } else {
      const char *s = pieces[rnd() % 4];
      memcpy(p + n, s, strlen(s));
      n += strlen(s);
    }
  }
  return n;
}

static void test_utf8(struct run *r) {
  uint8_t text[2048];
  int same = 1, split = 1;
  for (int t = 0; t < 2000; t++) {
    size_t n = make_text(text, sizeof text, t & 1);
    /* the reference: a byte per call never takes the fast paths */
    uint32_t want = UTF8_ACCEPT;
    for (size_t i = 0; i < n; i++) want = utf8_validate(want, text + i, 1);
    same &= utf8_validate(UTF8_ACCEPT, text, n) == want;
    size_t cut = rnd() % (n + 1);
    uint32_t st = utf8_validate(UTF8_ACCEPT, text, cut);
    split &= utf8_validate(st, text + cut, n - cut) == want;
  }
  check(r, same, "utf8_validate: whole texts as byte by byte");
  check(r, split, "utf8_validate: texts cut anywhere");
}

int main(void) {
  struct run r = { 0, 0 };
  printf("1..6\n");
  test_masking(&r);
  test_utf8(&r);
  printf("frame_test: %d passed, %d failed\n", r.count - r.failed,
         r.failed);
  return r.failed != 0;
}
