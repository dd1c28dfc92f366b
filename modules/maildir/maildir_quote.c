#include "maildir_quote.h"

const char *maildir_quote(const char *in, size_t len, char *out, size_t out_size) {
  static const char hex[] = "0123456789abcdef";
  size_t used = 0;
  if (out_size == 0)
    return out;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    char piece[5];
    size_t piece_len;
    if (c == '"' || c == '\\') {
      piece[0] = '\\';
      piece[1] = (char)c;
      piece_len = 2;
    } else if (c >= 0x20 && c < 0x7f) {
      piece[0] = (char)c;
      piece_len = 1;
    } else {
      piece[0] = '\\';
      piece[1] = 'x';
      piece[2] = hex[c >> 4];
      piece[3] = hex[c & 0xf];
      piece_len = 4;
    }
    /* Whole pieces only, so a truncated line never ends in half an escape. */
    if (used + piece_len >= out_size)
      break;
    for (size_t k = 0; k < piece_len; k++)
      out[used++] = piece[k];
  }
  out[used] = '\0';
  return out;
}
