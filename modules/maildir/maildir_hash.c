#include "maildir_hash.h"

/* The 128-bit state is kept in four 32-bit limbs, least significant first,
 * so the code needs no 128-bit integer type and gives the same ids on
 * every platform. */

/* state = state * (2^88 + 0x13b) mod 2^128, the FNV-128 prime. */
static void multiply_by_prime(uint32_t state[4]) {
  uint32_t product[4];
  uint64_t carry = 0;
  for (int i = 0; i < 4; i++) {
    uint64_t part = (uint64_t)state[i] * 0x13bu + carry;
    product[i] = (uint32_t)part;
    carry = part >> 32;
  }
  /* state << 88: limbs move up by two, then the bits by 24. */
  uint32_t shifted[4] = {0, 0, state[0] << 24, (state[1] << 24) | (state[0] >> 8)};
  carry = 0;
  for (int i = 0; i < 4; i++) {
    uint64_t sum = (uint64_t)product[i] + shifted[i] + carry;
    state[i] = (uint32_t)sum;
    carry = sum >> 32;
  }
}

void maildir_fnv1a128_hex(const void *data, size_t len, char hex[33]) {
  static const char digits[] = "0123456789abcdef";
  /* The FNV-128 offset basis 0x6c62272e07bb014262b821756295c58d. */
  uint32_t state[4] = {0x6295c58du, 0x62b82175u, 0x07bb0142u, 0x6c62272eu};
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    state[0] ^= p[i];
    multiply_by_prime(state);
  }
  for (int limb = 3, at = 0; limb >= 0; limb--) {
    for (int shift = 28; shift >= 0; shift -= 4)
      hex[at++] = digits[(state[limb] >> shift) & 0xf];
  }
  hex[32] = '\0';
}
