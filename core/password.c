#include "password.h"

#include <crypt.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scram.h"

/* ---- Reading a stored secret ------------------------------------------- */

/* Dovecot scheme names whose payload is a crypt(3) string. They only name
 * the flavour; libxcrypt reads the flavour from the string itself. */
static const char *const crypt_aliases[] = {"CRYPT",     "YESCRYPT",     "SHA512-CRYPT",
                                            "BLF-CRYPT", "SHA256-CRYPT", "MD5-CRYPT"};

/* Splits "{NAME}payload": returns the payload and sets *name_r and
 * *name_len_r, or returns NULL when stored has no closing brace. Only
 * called for a stored secret that starts with '{'. */
static const char *brace_scheme(const char *stored, const char **name_r,
                                size_t *name_len_r) {
  const char *close = strchr(stored, '}');
  if (close == NULL)
    return NULL;
  *name_r = stored + 1;
  *name_len_r = (size_t)(close - stored - 1);
  return close + 1;
}

static bool scheme_is(const char *name, size_t len, const char *wanted) {
  return strlen(wanted) == len && strncasecmp(name, wanted, len) == 0;
}

static bool is_crypt_alias(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof crypt_aliases / sizeof crypt_aliases[0]; i++) {
    if (scheme_is(name, len, crypt_aliases[i]))
      return true;
  }
  return false;
}

/* A {PLAIN} secret may be any length, so there is no fixed buffer to pad
 * both sides to. Instead the loop runs over the password the client sent:
 * its time depends on the client's input only, never on how many leading
 * characters are right or on the secret's content. */
static bool plain_equal(const char *secret, const char *password) {
  size_t secret_len = strlen(secret);
  size_t password_len = strlen(password);
  unsigned char diff = password_len != secret_len;
  for (size_t i = 0; i < password_len; i++) {
    /* secret[secret_len] is its NUL, which no password byte equals. */
    size_t j = i < secret_len ? i : secret_len;
    diff |= (unsigned char)(password[i] ^ secret[j]);
  }
  /* The volatile read keeps the compiler from turning the loop into an
   * early-exit comparison. */
  volatile unsigned char result = diff;
  return result == 0;
}

/* Runs crypt_rn into a heap work area: struct crypt_data is 32 KiB, too
 * large for the stack of a thread-pool thread, and it must not be shared
 * between threads. Copies the result into output (CRYPT_OUTPUT_SIZE bytes,
 * zero-padded). Returns 0, -EINVAL when libxcrypt rejects the setting or
 * the phrase, or -ENOMEM. */
static int crypt_into(const char *phrase, const char *setting,
                      char output[CRYPT_OUTPUT_SIZE]) {
  struct crypt_data *data = calloc(1, sizeof *data);
  if (data == NULL)
    return -ENOMEM;
  const char *hashed = crypt_rn(phrase, setting, data, (int)sizeof *data);
  int rc = -EINVAL;
  memset(output, 0, CRYPT_OUTPUT_SIZE);
  if (hashed != NULL) {
    memcpy(output, hashed, strnlen(hashed, CRYPT_OUTPUT_SIZE - 1));
    rc = 0;
  }
  explicit_bzero(data, sizeof *data);
  free(data);
  return rc;
}

static int crypt_verify(const char *hash, const char *password) {
  size_t hash_len = strlen(hash);
  /* crypt never produces an output this long, and crypt_rn would read only
   * a prefix of it as the setting. */
  if (hash_len == 0 || hash_len >= CRYPT_OUTPUT_SIZE)
    return POPKIT_PASSWORD_UNUSABLE;
  /* libxcrypt refuses phrases this long: the password is wrong, the hash
   * may be fine. */
  if (strlen(password) >= CRYPT_MAX_PASSPHRASE_SIZE)
    return POPKIT_PASSWORD_MISMATCH;
  char computed[CRYPT_OUTPUT_SIZE];
  char expected[CRYPT_OUTPUT_SIZE] = {0};
  int rc = crypt_into(password, hash, computed);
  if (rc == -ENOMEM)
    return rc;
  if (rc < 0)
    return POPKIT_PASSWORD_UNUSABLE;
  memcpy(expected, hash, hash_len);
  /* Both buffers are zero-padded to the same fixed size, so the comparison
   * covers the whole hash whatever its length. */
  rc = gnutls_memcmp(computed, expected, CRYPT_OUTPUT_SIZE) == 0
           ? POPKIT_PASSWORD_MATCH
           : POPKIT_PASSWORD_MISMATCH;
  explicit_bzero(computed, sizeof computed);
  return rc;
}

static int scram_verify(const char *stored, const char *password) {
  struct scram_credential cred;
  int rc;
  if (scram_credential_parse(stored, &cred) < 0)
    rc = POPKIT_PASSWORD_UNUSABLE;
  else
    rc = scram_credential_matches(&cred, password) ? POPKIT_PASSWORD_MATCH
                                                   : POPKIT_PASSWORD_MISMATCH;
  /* The keys let anyone log in with SCRAM: they are as secret as a
   * password. */
  explicit_bzero(&cred, sizeof cred);
  return rc;
}

const char *password_plain_secret(const char *stored) {
  const char *name;
  size_t name_len;
  const char *payload = brace_scheme(stored, &name, &name_len);
  return payload != NULL && scheme_is(name, name_len, "PLAIN") ? payload : NULL;
}

int password_verify(const char *stored, const char *password) {
  if (stored[0] != '{')
    return crypt_verify(stored, password);
  const char *name;
  size_t name_len;
  const char *payload = brace_scheme(stored, &name, &name_len);
  if (payload == NULL)
    return POPKIT_PASSWORD_UNUSABLE;
  if (scheme_is(name, name_len, "PLAIN"))
    return plain_equal(payload, password) ? POPKIT_PASSWORD_MATCH
                                          : POPKIT_PASSWORD_MISMATCH;
  if (scheme_is(name, name_len, "SCRAM-SHA-256"))
    return scram_verify(stored, password);
  if (is_crypt_alias(name, name_len))
    return crypt_verify(payload, password);
  return POPKIT_PASSWORD_UNUSABLE;
}

/* ---- Making a stored secret -------------------------------------------- */

/* One scheme popkit-passwd can produce. The cost range is checked here
 * rather than left to libxcrypt, which silently clamps SHA-crypt rounds to
 * its limits. */
struct scheme_info {
  enum password_scheme scheme;
  const char *name;
  const char *label;          /* the Dovecot name written in front; SCRAM's
                                 is written by scram_credential_format */
  const char *setting_prefix; /* what crypt_gensalt_rn takes; NULL: not a
                                 crypt scheme */
  unsigned long cost_min, cost_max, cost_default;
};

static const struct scheme_info schemes[] = {
    {PASSWORD_SCRAM_SHA_256, "SCRAM-SHA-256", NULL, NULL, SCRAM_MIN_ITERATIONS,
     SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS},
    /* yescrypt's cost is libxcrypt's 1..11 scale; 5 is its own default. */
    {PASSWORD_YESCRYPT, "YESCRYPT", "{CRYPT}", "$y$", 1, 11, 5},
    /* bcrypt's cost is log2 of the rounds. libxcrypt and Dovecot default to
     * 5, which is too cheap for a hash that leaks today; 10 costs tens of
     * milliseconds per login. */
    {PASSWORD_BLF_CRYPT, "BLF-CRYPT", "{BLF-CRYPT}", "$2b$", 4, 31, 10},
    /* SHA-crypt rounds: 5000 is the default of the specification. */
    {PASSWORD_SHA512_CRYPT, "SHA512-CRYPT", "{SHA512-CRYPT}", "$6$", 1000, 999999999,
     5000},
    {PASSWORD_SHA256_CRYPT, "SHA256-CRYPT", "{SHA256-CRYPT}", "$5$", 1000, 999999999,
     5000},
    {PASSWORD_PLAIN, "PLAIN", "{PLAIN}", NULL, 0, 0, 0},
};

#define SCHEME_COUNT (sizeof schemes / sizeof schemes[0])

/* Bytes of randomness for a salt: what libxcrypt needs for a bcrypt or
 * yescrypt setting (SHA-crypt uses 12 of them), and the SCRAM salt length
 * of RFC 7677's example and of Dovecot. */
#define SALT_BYTES 16

int password_scheme_lookup(const char *name, enum password_scheme *scheme_r) {
  /* "CRYPT" is Dovecot's name for "whatever crypt(3) string", and the
   * yescrypt one is what it means on a current system. */
  if (strcasecmp(name, "CRYPT") == 0) {
    *scheme_r = PASSWORD_YESCRYPT;
    return 0;
  }
  for (size_t i = 0; i < SCHEME_COUNT; i++) {
    if (strcasecmp(name, schemes[i].name) == 0) {
      *scheme_r = schemes[i].scheme;
      return 0;
    }
  }
  return -EINVAL;
}

static const struct scheme_info *scheme_info(enum password_scheme scheme) {
  for (size_t i = 0; i < SCHEME_COUNT; i++) {
    if (schemes[i].scheme == scheme)
      return &schemes[i];
  }
  return NULL;
}

static int random_salt(unsigned char salt[SALT_BYTES]) {
  /* A salt must be unique, not secret: the nonce level is the right one. */
  return gnutls_rnd(GNUTLS_RND_NONCE, salt, SALT_BYTES) < 0 ? -EIO : 0;
}

/* Joins label and secret into one malloc'ed string. */
static int labelled(const char *label, const char *secret, char **stored_r) {
  size_t label_len = strlen(label);
  size_t secret_len = strlen(secret);
  char *stored = malloc(label_len + secret_len + 1);
  if (stored == NULL)
    return -ENOMEM;
  memcpy(stored, label, label_len);
  memcpy(stored + label_len, secret, secret_len + 1);
  *stored_r = stored;
  return 0;
}

static int make_plain(const struct scheme_info *info, const char *password,
                      char **stored_r) {
  /* A passwd-file line ends at a line break and its hash at a ':'; a
   * secret holding either would be cut there and never match. */
  if (strpbrk(password, ":\r\n") != NULL)
    return -EINVAL;
  return labelled(info->label, password, stored_r);
}

static int make_crypt(const struct scheme_info *info, const char *password,
                      unsigned long cost, char **stored_r) {
  unsigned char salt[SALT_BYTES];
  int rc = random_salt(salt);
  if (rc < 0)
    return rc;
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(info->setting_prefix, cost, (const char *)salt, SALT_BYTES,
                       setting, (int)sizeof setting) == NULL)
    return -EINVAL;
  char hash[CRYPT_OUTPUT_SIZE];
  rc = crypt_into(password, setting, hash);
  if (rc == 0)
    rc = labelled(info->label, hash, stored_r);
  explicit_bzero(hash, sizeof hash);
  return rc;
}

static int make_scram(const char *password, unsigned long iterations, char **stored_r) {
  unsigned char salt[SALT_BYTES];
  int rc = random_salt(salt);
  if (rc < 0)
    return rc;
  struct scram_credential cred;
  char text[256]; /* scram.h: 256 bytes always suffice */
  rc = scram_derive(password, strlen(password), salt, sizeof salt, (uint32_t)iterations,
                    &cred);
  if (rc == 0) {
    int len = scram_credential_format(&cred, text, sizeof text);
    if (len < 0)
      rc = len;
    else if ((*stored_r = strdup(text)) == NULL)
      rc = -ENOMEM;
  }
  explicit_bzero(&cred, sizeof cred);
  explicit_bzero(text, sizeof text);
  return rc;
}

int password_make(enum password_scheme scheme, const char *password, unsigned long cost,
                  char **stored_r) {
  const struct scheme_info *info = scheme_info(scheme);
  if (info == NULL)
    return -EINVAL;
  if (cost == 0)
    cost = info->cost_default;
  if (cost < info->cost_min || cost > info->cost_max)
    return -EINVAL;
  switch (scheme) {
  case PASSWORD_PLAIN:
    return make_plain(info, password, stored_r);
  case PASSWORD_SCRAM_SHA_256:
    return make_scram(password, cost, stored_r);
  default:
    return make_crypt(info, password, cost, stored_r);
  }
}
