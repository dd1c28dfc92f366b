#include "password_verify.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Dovecot scheme names whose payload is a crypt(3) string. */
static const char *const crypt_schemes[] = {"CRYPT", "SHA512-CRYPT", "SHA256-CRYPT",
                                            "BLF-CRYPT", "MD5-CRYPT"};

/* The dummy for a user that is not in the file. Nobody learns anything from
 * knowing it: the outcome of a check against a dummy is always thrown away. */
static const char dummy_password[] = "popkit passwd-file dummy password";

/* Splits "{NAME}payload": returns the payload and sets *name_r and
 * *name_len_r, or returns NULL when stored does not start with a brace
 * scheme. */
static const char *brace_scheme(const char *stored, const char **name_r,
                                size_t *name_len_r) {
  if (stored[0] != '{')
    return NULL;
  const char *close = strchr(stored, '}');
  if (close == NULL)
    return NULL;
  *name_r = stored + 1;
  *name_len_r = (size_t)(close - stored - 1);
  return close + 1;
}

static int scheme_is(const char *name, size_t len, const char *wanted) {
  return strlen(wanted) == len && strncasecmp(name, wanted, len) == 0;
}

const char *password_crypt_string(const char *stored) {
  const char *name;
  size_t name_len;
  const char *payload = brace_scheme(stored, &name, &name_len);
  if (payload == NULL)
    return stored[0] == '{' ? NULL : stored;
  for (size_t i = 0; i < sizeof crypt_schemes / sizeof crypt_schemes[0]; i++) {
    if (scheme_is(name, name_len, crypt_schemes[i]))
      return payload;
  }
  return NULL;
}

static const char *plain_secret(const char *stored) {
  const char *name;
  size_t name_len;
  const char *payload = brace_scheme(stored, &name, &name_len);
  if (payload != NULL && scheme_is(name, name_len, "PLAIN"))
    return payload;
  return NULL;
}

/* Compares two buffers of the same fixed size without stopping at the first
 * difference, so the time taken says nothing about where they differ. */
static int equal_fixed(const unsigned char *a, const unsigned char *b, size_t size) {
  unsigned char diff = 0;
  for (size_t i = 0; i < size; i++)
    diff |= (unsigned char)(a[i] ^ b[i]);
  /* The volatile read keeps the compiler from turning the loop into an
   * early-exit memcmp. */
  volatile unsigned char result = diff;
  return result == 0;
}

/* A {PLAIN} secret may be any length, so there is no fixed buffer to pad
 * both sides to. Instead the loop runs over the password the client sent:
 * its time depends on the client's input only, never on how many leading
 * characters are right or on the secret's content. */
static int plain_equal(const char *secret, const char *password) {
  size_t secret_len = strlen(secret);
  size_t password_len = strlen(password);
  unsigned char diff = password_len != secret_len;
  for (size_t i = 0; i < password_len; i++) {
    /* secret[secret_len] is its NUL, which no password byte equals. */
    size_t j = i < secret_len ? i : secret_len;
    diff |= (unsigned char)(password[i] ^ secret[j]);
  }
  volatile unsigned char result = diff;
  return result == 0;
}

/* Runs crypt_rn and copies the result into output (CRYPT_OUTPUT_SIZE bytes,
 * zero-padded). Returns 0, -EINVAL when libxcrypt rejects the setting or the
 * phrase, or -ENOMEM. */
static int crypt_into(const char *phrase, const char *setting,
                      unsigned char output[CRYPT_OUTPUT_SIZE]) {
  /* struct crypt_data is 32 KiB: too large for the stack of a thread-pool
   * thread, and it must not be shared between threads. */
  struct crypt_data *data = calloc(1, sizeof *data);
  if (data == NULL)
    return -ENOMEM;
  const char *hashed = crypt_rn(phrase, setting, data, (int)sizeof *data);
  int rc = -EINVAL;
  memset(output, 0, CRYPT_OUTPUT_SIZE);
  if (hashed != NULL) {
    size_t len = strnlen(hashed, CRYPT_OUTPUT_SIZE - 1);
    memcpy(output, hashed, len);
    rc = 0;
  }
  explicit_bzero(data, sizeof *data);
  free(data);
  return rc;
}

static int crypt_verify(const char *hash, const char *password,
                        enum password_check *check_r) {
  size_t hash_len = strlen(hash);
  /* crypt never produces an output this long, and crypt_rn would read only
   * a prefix of it as the setting. */
  if (hash_len == 0 || hash_len >= CRYPT_OUTPUT_SIZE) {
    *check_r = PASSWORD_UNUSABLE;
    return 0;
  }
  /* libxcrypt refuses phrases this long; the password is wrong, the hash
   * may be fine. */
  if (strlen(password) >= CRYPT_MAX_PASSPHRASE_SIZE) {
    *check_r = PASSWORD_MISMATCH;
    return 0;
  }
  unsigned char computed[CRYPT_OUTPUT_SIZE];
  unsigned char expected[CRYPT_OUTPUT_SIZE] = {0};
  int rc = crypt_into(password, hash, computed);
  if (rc == -ENOMEM)
    return rc;
  if (rc < 0) {
    *check_r = PASSWORD_UNUSABLE;
    return 0;
  }
  memcpy(expected, hash, hash_len);
  *check_r = equal_fixed(computed, expected, CRYPT_OUTPUT_SIZE) ? PASSWORD_MATCH
                                                                : PASSWORD_MISMATCH;
  explicit_bzero(computed, sizeof computed);
  return 0;
}

int password_verify(const char *stored, const char *password,
                    enum password_check *check_r) {
  const char *secret = plain_secret(stored);
  if (secret != NULL) {
    *check_r = plain_equal(secret, password) ? PASSWORD_MATCH : PASSWORD_MISMATCH;
    return 0;
  }
  const char *hash = password_crypt_string(stored);
  if (hash == NULL) {
    *check_r = PASSWORD_UNUSABLE;
    return 0;
  }
  return crypt_verify(hash, password, check_r);
}

int password_make_dummy(const char *model, char **dummy_r) {
  if (model == NULL) {
    char *dummy = malloc(sizeof "{PLAIN}" + sizeof dummy_password);
    if (dummy == NULL)
      return -ENOMEM;
    strcpy(dummy, "{PLAIN}");
    strcat(dummy, dummy_password);
    *dummy_r = dummy;
    return 0;
  }
  if (strlen(model) >= CRYPT_OUTPUT_SIZE)
    return -EINVAL;
  unsigned char output[CRYPT_OUTPUT_SIZE];
  int rc = crypt_into(dummy_password, model, output);
  if (rc < 0)
    return rc;
  char *dummy = strdup((const char *)output);
  if (dummy == NULL)
    return -ENOMEM;
  *dummy_r = dummy;
  return 0;
}
