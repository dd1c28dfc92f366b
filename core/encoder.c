#include "encoder.h"

#include <string.h>

/* x86-64 always has SSE2: there the encoder works 64 bytes at a time (see
 * encode_blocks). POPKIT_ENCODER_SCALAR forces the portable loop alone,
 * which other machines use and the tests build too, so both are tested. */
#if defined(__SSE2__) && !defined(POPKIT_ENCODER_SCALAR)
#define ENCODER_BLOCKS 1
#include <emmintrin.h>
#else
#define ENCODER_BLOCKS 0
#endif

void encoder_init(struct encoder *e, bool top, uint64_t top_lines) {
  memset(e, 0, sizeof *e);
  e->top = top;
  e->top_lines = top_lines;
  e->at_line_start = true;
}

#if ENCODER_BLOCKS
/* Mail lines are short (most wrap near 78 columns), so a loop that stops at
 * every line end pays a mispredicted branch and two library calls per line,
 * more than the line's bytes cost. Here 64 bytes at a time yield one bit
 * per byte for LF, CR and '.', and the bytes that need one inserted before
 * them come out of a few shifts: an LF not after a CR (CR), a '.' that
 * starts a line (a second '.'). The block is then copied in up to 64-byte
 * pieces between insertions. */
#define BLOCK_BYTES 64
/* A block may read 64 bytes past its own end (the copy after its last
 * insertion) and write 192 bytes from where it starts (64 bytes, as many
 * insertions, and a 64-byte copy past them). */
#define BLOCK_INPUT_NEEDED (2 * BLOCK_BYTES)
#define BLOCK_ROOM_NEEDED (3 * BLOCK_BYTES)

/* Bit i is set when p[i] == c, for i in 0..63. (Written out: GCC at -O2
 * leaves a loop of four rolled.) */
static inline uint64_t byte_mask(const char *p, char c) {
  const __m128i want = _mm_set1_epi8(c);
#define MASK16(i)                                                                        \
  ((uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(                                 \
       _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * (i))), want))            \
   << (16 * (i)))
  return MASK16(0) | MASK16(1) | MASK16(2) | MASK16(3);
#undef MASK16
}

static inline void copy_block(char *o, const char *p) {
  memcpy(o, p, BLOCK_BYTES); /* four 16-byte moves */
}

/* Encodes whole blocks from *p while input and room last, then leaves the
 * rest to the line loop. Returns the bytes written at o. */
static size_t encode_blocks(const char **p_io, const char *end, char *o,
                            const char *o_end, bool *at_line_start, bool *prev_cr) {
  const char *p = *p_io;
  char *start = o;
  uint64_t line_start_carry = *at_line_start;
  uint64_t cr_carry = *prev_cr;
  while (end - p >= BLOCK_INPUT_NEEDED && o_end - o >= BLOCK_ROOM_NEEDED) {
    uint64_t lf = byte_mask(p, '\n');
    uint64_t cr = byte_mask(p, '\r');
    uint64_t dot = byte_mask(p, '.');
    uint64_t after_cr = cr << 1 | cr_carry;
    uint64_t line_starts = lf << 1 | line_start_carry;
    uint64_t insert_before = (lf & ~after_cr) | (dot & line_starts);
    cr_carry = cr >> 63;
    line_start_carry = lf >> 63;
    unsigned copied = 0;
    while (insert_before != 0) {
      unsigned at = (unsigned)__builtin_ctzll(insert_before);
      insert_before &= insert_before - 1;
      copy_block(o, p + copied);
      o += at - copied;
      *o++ = (dot >> at) & 1 ? '.' : '\r';
      copied = at;
    }
    copy_block(o, p + copied);
    o += BLOCK_BYTES - copied;
    p += BLOCK_BYTES;
  }
  *p_io = p;
  *at_line_start = line_start_carry != 0;
  *prev_cr = cr_carry != 0;
  return (size_t)(o - start);
}
#endif

/* Called at each line end of TOP: decides whether it has all it wants. */
static void top_line_end(struct encoder *e, bool blank) {
  if (!e->in_body) {
    if (blank) {
      e->in_body = true;
      if (e->top_lines == 0)
        e->done = true;
    }
  } else if (--e->top_lines == 0) {
    e->done = true;
  }
}

size_t encoder_feed(struct encoder *e, const char *in, size_t len, char *out, size_t room,
                    size_t *taken) {
  const char *p = in;
  const char *end = in + len;
  char *o = out;
  char *o_end = out + room;
  /* The state lives in locals while bytes are copied: a store through a
   * char pointer may alias *e, so the compiler would reload it. */
  bool at_line_start = e->at_line_start;
  bool prev_cr = e->prev_cr;
  bool done = e->done;
#if ENCODER_BLOCKS
  if (!e->top) /* TOP counts lines one by one below */
    o += encode_blocks(&p, end, o, o_end, &at_line_start, &prev_cr);
#endif
  const char *line_begin = p; /* where this call's part of the line starts */
  while (p < end && !done) {
    if (at_line_start) {
      if (*p == '.') {
        if (o_end - o < 2)
          break;
        *o++ = '.';
      }
      at_line_start = false;
    }
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    size_t run = (size_t)((lf != NULL ? lf : end) - p);
    if (run > (size_t)(o_end - o))
      run = (size_t)(o_end - o);
    memcpy(o, p, run);
    o += run;
    p += run;
    if (p != lf)
      break; /* out of input, or out of room */
    bool after_cr = p > in ? p[-1] == '\r' : prev_cr;
    if (o_end - o < (after_cr ? 1 : 2))
      break;
    if (!after_cr)
      *o++ = '\r';
    *o++ = '\n';
    if (e->top) {
      uint64_t line_bytes = e->line_bytes + (uint64_t)(p - line_begin);
      e->line_bytes = 0;
      top_line_end(e, line_bytes == 0 || (line_bytes == 1 && after_cr));
      done = e->done;
    }
    p++;
    line_begin = p;
    at_line_start = true;
  }
  if (p > in)
    prev_cr = p[-1] == '\r';
  e->at_line_start = at_line_start;
  e->prev_cr = prev_cr;
  if (e->top)
    e->line_bytes += (uint64_t)(p - line_begin);
  *taken = done ? len : (size_t)(p - in);
  return (size_t)(o - out);
}

size_t encoder_finish(struct encoder *e, char *out) {
  char *o = out;
  if (!e->at_line_start) {
    /* The message did not end with a line end: close the last line. */
    *o++ = '\r';
    *o++ = '\n';
  }
  memcpy(o, ".\r\n", 3);
  o += 3;
  return (size_t)(o - out);
}
