/* Tests for core/sasl.c: the PLAIN, LOGIN and SCRAM-SHA-256 exchanges as a
 * POP3 session drives them, line by line. The SCRAM client here computes
 * its proof with GnuTLS directly, not with core/scram.c. */
#include <check.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "check_run.h"
#include "sasl.h"

/* ---- Helpers ------------------------------------------------------------ */

/* base64 of len bytes; freed by the caller. */
static char *b64n(const void *data, size_t len) {
  char *text = malloc(BASE64_ENCODED_SIZE(len) + 1);
  ck_assert_ptr_nonnull(text);
  base64_encode(data, len, text);
  return text;
}

static char *b64(const char *text) {
  return b64n(text, strlen(text));
}

/* Decodes a challenge the server sent; NUL-terminated, freed by the
 * caller. */
static char *unb64(const char *text) {
  size_t len = strlen(text);
  char *data = malloc(BASE64_DECODED_MAX(len) + 1);
  long n = base64_decode(text, len, (unsigned char *)data);
  ck_assert_int_ge(n, 0);
  data[n] = '\0';
  return data;
}

static enum sasl_step start_with(struct sasl *x, enum sasl_mech mech, const void *data,
                                 size_t len) {
  char *text = b64n(data, len);
  enum sasl_step step = sasl_start(x, mech, text);
  free(text);
  return step;
}

static enum sasl_step continue_with(struct sasl *x, const void *data, size_t len) {
  char *text = b64n(data, len);
  enum sasl_step step = sasl_continue(x, text);
  free(text);
  return step;
}

static void assert_failed(struct sasl *x, enum sasl_step step, const char *error,
                          bool auth_failure) {
  ck_assert_int_eq(step, SASL_STEP_FAILED);
  ck_assert_str_eq(x->error, error);
  ck_assert(x->auth_failure == auth_failure);
  ck_assert(!x->temp_failure);
}

/* ---- Mechanism names ---------------------------------------------------- */

START_TEST(mechanism_names) {
  enum sasl_mech mech;
  ck_assert(sasl_mech_lookup("plain", &mech) && mech == SASL_PLAIN);
  ck_assert(sasl_mech_lookup("Login", &mech) && mech == SASL_LOGIN);
  ck_assert(sasl_mech_lookup("scram-sha-256", &mech) && mech == SASL_SCRAM_SHA_256);
  ck_assert(!sasl_mech_lookup("SCRAM-SHA-1", &mech));
  ck_assert(!sasl_mech_lookup("CRAM-MD5", &mech));
  ck_assert(!sasl_mech_lookup("PLAIN ", &mech));
  ck_assert(!sasl_mech_lookup("", &mech));
  ck_assert_str_eq(sasl_mech_name(SASL_PLAIN), "PLAIN");
  ck_assert_str_eq(sasl_mech_name(SASL_LOGIN), "LOGIN");
  ck_assert_str_eq(sasl_mech_name(SASL_SCRAM_SHA_256), "SCRAM-SHA-256");
  ck_assert(sasl_mech_is_plaintext(SASL_PLAIN));
  ck_assert(sasl_mech_is_plaintext(SASL_LOGIN));
  ck_assert(!sasl_mech_is_plaintext(SASL_SCRAM_SHA_256));
}
END_TEST

/* ---- PLAIN -------------------------------------------------------------- */

START_TEST(plain_without_initial_response) {
  struct sasl x;
  ck_assert_int_eq(sasl_start(&x, SASL_PLAIN, NULL), SASL_STEP_CHALLENGE);
  ck_assert_str_eq(x.challenge, "");
  ck_assert_int_eq(continue_with(&x, "\0user\0pencil", 12), SASL_STEP_VERIFY_PLAIN);
  ck_assert_str_eq(x.user, "user");
  ck_assert_str_eq(x.password, "pencil");
  sasl_free(&x);
}
END_TEST

START_TEST(plain_with_initial_response) {
  struct sasl x;
  ck_assert_int_eq(start_with(&x, SASL_PLAIN, "\0o'brien\0pen cil:", 17),
                   SASL_STEP_VERIFY_PLAIN);
  ck_assert_str_eq(x.user, "o'brien");
  ck_assert_str_eq(x.password, "pen cil:");
  /* The exchange is over: another line is a protocol error. */
  assert_failed(&x, sasl_continue(&x, ""), "Unexpected response.", false);
  sasl_free(&x);
}
END_TEST

START_TEST(plain_authzid_equal_to_user) {
  struct sasl x;
  ck_assert_int_eq(start_with(&x, SASL_PLAIN, "user\0user\0pencil", 16),
                   SASL_STEP_VERIFY_PLAIN);
  ck_assert_str_eq(x.user, "user");
  ck_assert_str_eq(x.password, "pencil");
  sasl_free(&x);
}
END_TEST

static const struct {
  const char *data;
  size_t len;
  const char *error;
} plain_rejects[] = {
    {"admin\0user\0pencil", 17, "Authorization identity must match the user."},
    {"use\0user\0pencil", 15, "Authorization identity must match the user."},
    {"userx\0user\0pencil", 17, "Authorization identity must match the user."},
    {"", 0, "Invalid PLAIN response."},
    {"user", 4, "Invalid PLAIN response."},
    {"user\0pencil", 11, "Invalid PLAIN response."},
    {"\0user\0pen\0cil", 13, "Invalid PLAIN response."},
    {"\0user\0pencil\0", 13, "Invalid PLAIN response."},
    {"\0\0pencil", 8, "User name and password must not be empty."},
    {"\0user\0", 6, "User name and password must not be empty."},
    {"\0\0", 2, "User name and password must not be empty."},
};

START_TEST(plain_rejects_malformed) {
  struct sasl x;
  /* As the initial response, and as the answer to the empty challenge. */
  assert_failed(&x,
                start_with(&x, SASL_PLAIN, plain_rejects[_i].data, plain_rejects[_i].len),
                plain_rejects[_i].error, false);
  ck_assert_ptr_null(x.password);
  sasl_free(&x);
  ck_assert_int_eq(sasl_start(&x, SASL_PLAIN, NULL), SASL_STEP_CHALLENGE);
  assert_failed(&x, continue_with(&x, plain_rejects[_i].data, plain_rejects[_i].len),
                plain_rejects[_i].error, false);
  sasl_free(&x);
}
END_TEST

/* "=" is an empty initial response, which PLAIN cannot use. */
START_TEST(plain_empty_initial_response) {
  struct sasl x;
  assert_failed(&x, sasl_start(&x, SASL_PLAIN, "="), "Invalid PLAIN response.", false);
  sasl_free(&x);
}
END_TEST

/* ---- LOGIN -------------------------------------------------------------- */

START_TEST(login_without_initial_response) {
  struct sasl x;
  ck_assert_int_eq(sasl_start(&x, SASL_LOGIN, NULL), SASL_STEP_CHALLENGE);
  char *prompt = unb64(x.challenge);
  ck_assert_str_eq(prompt, "Username:");
  free(prompt);
  ck_assert_int_eq(continue_with(&x, "user", 4), SASL_STEP_CHALLENGE);
  prompt = unb64(x.challenge);
  ck_assert_str_eq(prompt, "Password:");
  free(prompt);
  ck_assert_int_eq(continue_with(&x, "pencil", 6), SASL_STEP_VERIFY_PLAIN);
  ck_assert_str_eq(x.user, "user");
  ck_assert_str_eq(x.password, "pencil");
  sasl_free(&x);
}
END_TEST

START_TEST(login_with_initial_response) {
  struct sasl x;
  ck_assert_int_eq(start_with(&x, SASL_LOGIN, "user", 4), SASL_STEP_CHALLENGE);
  ck_assert_str_eq(x.challenge, "UGFzc3dvcmQ6");
  ck_assert_int_eq(continue_with(&x, "pencil", 6), SASL_STEP_VERIFY_PLAIN);
  ck_assert_str_eq(x.user, "user");
  ck_assert_str_eq(x.password, "pencil");
  sasl_free(&x);
}
END_TEST

START_TEST(login_rejects) {
  struct sasl x;
  ck_assert_int_eq(sasl_start(&x, SASL_LOGIN, NULL), SASL_STEP_CHALLENGE);
  assert_failed(&x, continue_with(&x, "us\0er", 5),
                "The response must not contain NUL characters.", false);
  sasl_free(&x);

  ck_assert_int_eq(start_with(&x, SASL_LOGIN, "user", 4), SASL_STEP_CHALLENGE);
  assert_failed(&x, continue_with(&x, "pen\0cil", 7),
                "The response must not contain NUL characters.", false);
  ck_assert_ptr_null(x.password);
  sasl_free(&x);

  assert_failed(&x, sasl_start(&x, SASL_LOGIN, "="),
                "User name and password must not be empty.", false);
  sasl_free(&x);

  ck_assert_int_eq(start_with(&x, SASL_LOGIN, "user", 4), SASL_STEP_CHALLENGE);
  assert_failed(&x, sasl_continue(&x, ""), "User name and password must not be empty.",
                false);
  sasl_free(&x);
}
END_TEST

/* ---- A SCRAM-SHA-256 client --------------------------------------------- */

#define CLIENT_NONCE "fyko+d2lbbFgONRv9qkxdawL"

struct scram_client {
  char first_bare[256];
  char gs2_header[64];
  /* What the server-final must carry if the server knows the password. */
  char expected_final[64];
  /* From the server-first-message: */
  unsigned char salt[64];
  long salt_len;
  unsigned iterations;
};

static void hmac(const unsigned char key[32], const void *text, size_t len,
                 unsigned char out[32]) {
  ck_assert_int_eq(gnutls_hmac_fast(GNUTLS_MAC_SHA256, key, 32, text, len, out), 0);
}

/* RFC 5802 section 3, the client's half, from server_first. Returns the
 * client-final-message, malloc'ed. */
static char *client_final(struct scram_client *c, const char *server_first,
                          const char *password) {
  char nonce[128], salt_b64[128];
  ck_assert_int_eq(
      sscanf(server_first, "r=%127[^,],s=%127[^,],i=%u", nonce, salt_b64, &c->iterations),
      3);
  ck_assert_int_eq(strncmp(nonce, CLIENT_NONCE, strlen(CLIENT_NONCE)), 0);
  c->salt_len = base64_decode(salt_b64, strlen(salt_b64), c->salt);
  ck_assert_int_gt(c->salt_len, 0);

  unsigned char salted[32], client_key[32], stored_key[32], server_key[32];
  gnutls_datum_t key = {(unsigned char *)password, (unsigned)strlen(password)};
  gnutls_datum_t salt = {c->salt, (unsigned)c->salt_len};
  ck_assert_int_eq(
      gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &salt, c->iterations, salted, 32), 0);
  hmac(salted, "Client Key", 10, client_key);
  ck_assert_int_eq(gnutls_hash_fast(GNUTLS_DIG_SHA256, client_key, 32, stored_key), 0);
  hmac(salted, "Server Key", 10, server_key);

  char *binding = b64(c->gs2_header);
  char without_proof[512], auth[1024];
  snprintf(without_proof, sizeof without_proof, "c=%s,r=%s", binding, nonce);
  free(binding);
  snprintf(auth, sizeof auth, "%s,%s,%s", c->first_bare, server_first, without_proof);

  unsigned char signature[32], proof[32];
  hmac(stored_key, auth, strlen(auth), signature);
  for (int i = 0; i < 32; i++)
    proof[i] = client_key[i] ^ signature[i];
  hmac(server_key, auth, strlen(auth), signature);
  char *text = b64n(signature, 32);
  snprintf(c->expected_final, sizeof c->expected_final, "v=%s", text);
  free(text);

  char *proof_text = b64n(proof, 32);
  char *final = malloc(strlen(without_proof) + 4 + strlen(proof_text) + 1);
  sprintf(final, "%s,p=%s", without_proof, proof_text);
  free(proof_text);
  return final;
}

/* Sends the client-first-message "GS2n=NAME,r=..." (as the initial response
 * or after the empty challenge). Returns the step. */
static enum sasl_step scram_begin(struct sasl *x, struct scram_client *c, const char *gs2,
                                  const char *name, bool initial_response) {
  memset(c, 0, sizeof *c);
  snprintf(c->gs2_header, sizeof c->gs2_header, "%s", gs2);
  snprintf(c->first_bare, sizeof c->first_bare, "n=%s,r=" CLIENT_NONCE, name);
  char first[320];
  snprintf(first, sizeof first, "%s%s", gs2, c->first_bare);
  if (initial_response)
    return start_with(x, SASL_SCRAM_SHA_256, first, strlen(first));
  ck_assert_int_eq(sasl_start(x, SASL_SCRAM_SHA_256, NULL), SASL_STEP_CHALLENGE);
  ck_assert_str_eq(x->challenge, "");
  return continue_with(x, first, strlen(first));
}

/* Hands the credential over and answers the server-first-message with the
 * proof for password. Returns the step after the client-final. */
static enum sasl_step scram_prove(struct sasl *x, struct scram_client *c,
                                  const char *credential, const char *password) {
  enum sasl_step step = sasl_credential(x, credential);
  if (step != SASL_STEP_CHALLENGE)
    return step;
  char *server_first = unb64(x->challenge);
  char *final = client_final(c, server_first, password);
  step = continue_with(x, final, strlen(final));
  free(final);
  free(server_first);
  return step;
}

/* Checks that the last challenge is the server-final-message that proves
 * the server knows the keys. */
static void assert_server_final(struct sasl *x, const struct scram_client *c) {
  char *server_final = unb64(x->challenge);
  ck_assert_str_eq(server_final, c->expected_final);
  free(server_final);
}

static char *derived_credential(const char *password) {
  static const unsigned char salt[12] = "popkit-salt!";
  struct scram_credential cred;
  ck_assert_int_eq(
      scram_derive(password, strlen(password), salt, sizeof salt, 4096, &cred), 0);
  char *text = malloc(256);
  ck_assert_int_gt(scram_credential_format(&cred, text, 256), 0);
  return text;
}

/* ---- SCRAM-SHA-256 ------------------------------------------------------ */

START_TEST(scram_with_derived_credential) {
  bool initial_response = _i == 1;
  char *cred = derived_credential("pencil");
  struct sasl x;
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", initial_response),
                   SASL_STEP_NEED_CREDENTIAL);
  ck_assert_str_eq(x.user, "user");
  ck_assert_int_eq(scram_prove(&x, &c, cred, "pencil"), SASL_STEP_CHALLENGE);
  ck_assert_uint_eq(c.iterations, 4096);
  ck_assert_int_eq(c.salt_len, 12);
  assert_server_final(&x, &c);
  ck_assert_int_eq(sasl_continue(&x, ""), SASL_STEP_SUCCESS);
  ck_assert_str_eq(x.user, "user");
  ck_assert_ptr_null(x.password);
  sasl_free(&x);
  free(cred);
}
END_TEST

START_TEST(scram_wrong_password) {
  char *cred = derived_credential("pencil");
  struct sasl x;
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  assert_failed(&x, scram_prove(&x, &c, cred, "pencil2"), "Authentication failed.", true);
  sasl_free(&x);
  free(cred);
}
END_TEST

START_TEST(scram_final_answer_must_be_empty) {
  char *cred = derived_credential("pencil");
  struct sasl x;
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  ck_assert_int_eq(scram_prove(&x, &c, cred, "pencil"), SASL_STEP_CHALLENGE);
  assert_failed(&x, sasl_continue(&x, "dGVzdA=="), "Expected an empty response.", false);
  sasl_free(&x);
  free(cred);
}
END_TEST

/* A password kept in the clear serves SCRAM too, with keys made for the
 * exchange; the salt depends on the user only, so it looks like a stored
 * credential's. */
START_TEST(scram_with_plain_credential) {
  unsigned char salts[2][64];
  for (int i = 0; i < 2; i++) {
    struct sasl x;
    struct scram_client c;
    ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", i == 0),
                     SASL_STEP_NEED_CREDENTIAL);
    ck_assert_int_eq(
        scram_prove(&x, &c, i == 0 ? "{PLAIN}pencil" : "{plain}pencil", "pencil"),
        SASL_STEP_CHALLENGE);
    ck_assert_uint_eq(c.iterations, 4096);
    ck_assert_int_eq(c.salt_len, 16);
    memcpy(salts[i], c.salt, 16);
    assert_server_final(&x, &c);
    ck_assert_int_eq(sasl_continue(&x, ""), SASL_STEP_SUCCESS);
    sasl_free(&x);
  }
  ck_assert_int_eq(memcmp(salts[0], salts[1], 16), 0);

  struct sasl x;
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  assert_failed(&x, scram_prove(&x, &c, "{PLAIN}pencil", "Pencil"),
                "Authentication failed.", true);
  sasl_free(&x);
}
END_TEST

/* What SCRAM cannot use: hashes that keep neither the password nor the
 * keys, a broken SCRAM credential, no credential at all. */
static const char *const unusable_credentials[] = {
    "$6$rounds=5000$saltsalt$hash",
    "{CRYPT}$y$j9T$salt$hash",
    "{SHA512-CRYPT}$6$salt$hash",
    "{SCRAM-SHA-256}4096,broken",
    "pencil",
    "",
    NULL,
};

/* They, and a user that does not exist (NULL), get a server-first like
 * anyone else, with the salt a {PLAIN} user of that name would have, and
 * fail at the proof: SCRAM does not tell who exists. */
START_TEST(scram_with_unusable_credential) {
  unsigned char plain_salt[16];
  struct sasl x;
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  ck_assert_int_eq(scram_prove(&x, &c, "{PLAIN}pencil", "pencil"), SASL_STEP_CHALLENGE);
  memcpy(plain_salt, c.salt, sizeof plain_salt);
  sasl_free(&x);

  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  assert_failed(&x, scram_prove(&x, &c, unusable_credentials[_i], "pencil"),
                "no SCRAM-SHA-256 credential (unknown user, or a crypt hash)", true);
  ck_assert(x.decoy);
  ck_assert_uint_eq(c.iterations, 4096);
  ck_assert_int_eq(c.salt_len, 16);
  ck_assert_int_eq(memcmp(c.salt, plain_salt, sizeof plain_salt), 0);
  sasl_free(&x);
}
END_TEST

/* The gs2 headers a client without channel binding may send, and a user
 * name with escapes. */
START_TEST(scram_header_variants) {
  static const struct {
    const char *gs2, *name, *user;
  } cases[] = {
      {"y,,", "user", "user"},
      {"n,a=user,", "user", "user"},
      {"n,a=us=2Cer,", "us=2Cer", "us,er"},
      {"n,,", "a=3Db", "a=b"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *cred = derived_credential("pencil");
    struct sasl x;
    struct scram_client c;
    ck_assert_int_eq(scram_begin(&x, &c, cases[i].gs2, cases[i].name, true),
                     SASL_STEP_NEED_CREDENTIAL);
    ck_assert_str_eq(x.user, cases[i].user);
    ck_assert_int_eq(scram_prove(&x, &c, cred, "pencil"), SASL_STEP_CHALLENGE);
    assert_server_final(&x, &c);
    ck_assert_int_eq(sasl_continue(&x, ""), SASL_STEP_SUCCESS);
    sasl_free(&x);
    free(cred);
  }
}
END_TEST

START_TEST(scram_rejects_client_first) {
  struct sasl x;
  struct scram_client c;
  assert_failed(&x, scram_begin(&x, &c, "n,a=admin,", "user", true),
                "Authorization identity must match the user.", false);
  sasl_free(&x);

  ck_assert_int_eq(scram_begin(&x, &c, "p=tls-unique,,", "user", false),
                   SASL_STEP_FAILED);
  ck_assert(!x.auth_failure);
  ck_assert_ptr_nonnull(x.error);
  sasl_free(&x);

  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "a=2Xb", true), SASL_STEP_FAILED);
  ck_assert(!x.auth_failure);
  sasl_free(&x);

  /* "=" is an empty client-first-message. */
  ck_assert_int_eq(sasl_start(&x, SASL_SCRAM_SHA_256, "="), SASL_STEP_FAILED);
  ck_assert(!x.auth_failure);
  ck_assert_ptr_null(x.user);
  sasl_free(&x);

  /* A NUL inside the message. */
  ck_assert_int_eq(start_with(&x, SASL_SCRAM_SHA_256, "n,,n=us\0er,r=abc", 16),
                   SASL_STEP_FAILED);
  ck_assert(!x.auth_failure);
  sasl_free(&x);
}
END_TEST

START_TEST(scram_credential_out_of_turn) {
  struct sasl x;
  ck_assert_int_eq(sasl_start(&x, SASL_SCRAM_SHA_256, NULL), SASL_STEP_CHALLENGE);
  assert_failed(&x, sasl_credential(&x, "{PLAIN}pencil"), "Unexpected response.", false);
  sasl_free(&x);

  /* And no client line is taken while the credential is awaited. */
  struct scram_client c;
  ck_assert_int_eq(scram_begin(&x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
  assert_failed(&x, sasl_continue(&x, ""), "Unexpected response.", false);
  sasl_free(&x);
}
END_TEST

/* ---- Cancel and bad base64, at every step ------------------------------- */

/* Brings a fresh exchange to its step-th challenge (0 = the first). Returns
 * false when the mechanism has fewer steps. */
static bool reach_step(struct sasl *x, enum sasl_mech mech, int step, char **cred_r) {
  *cred_r = NULL;
  struct scram_client c;
  switch (mech) {
  case SASL_PLAIN:
    if (step > 0)
      return false;
    ck_assert_int_eq(sasl_start(x, mech, NULL), SASL_STEP_CHALLENGE);
    return true;
  case SASL_LOGIN:
    if (step > 1)
      return false;
    ck_assert_int_eq(sasl_start(x, mech, NULL), SASL_STEP_CHALLENGE);
    if (step == 1)
      ck_assert_int_eq(continue_with(x, "user", 4), SASL_STEP_CHALLENGE);
    return true;
  case SASL_SCRAM_SHA_256:
    if (step > 2)
      return false;
    if (step == 0) {
      ck_assert_int_eq(sasl_start(x, mech, NULL), SASL_STEP_CHALLENGE);
      return true;
    }
    *cred_r = derived_credential("pencil");
    ck_assert_int_eq(scram_begin(x, &c, "n,,", "user", true), SASL_STEP_NEED_CREDENTIAL);
    ck_assert_int_eq(sasl_credential(x, *cred_r), SASL_STEP_CHALLENGE);
    if (step == 2) {
      char *server_first = unb64(x->challenge);
      char *final = client_final(&c, server_first, "pencil");
      ck_assert_int_eq(continue_with(x, final, strlen(final)), SASL_STEP_CHALLENGE);
      free(final);
      free(server_first);
    }
    return true;
  default:
    return false;
  }
}

START_TEST(cancel_at_every_step) {
  int tried = 0;
  for (int mech = 0; mech < SASL_MECH_COUNT; mech++) {
    for (int step = 0;; step++) {
      struct sasl x;
      char *cred;
      if (!reach_step(&x, (enum sasl_mech)mech, step, &cred))
        break;
      ck_assert_int_eq(sasl_continue(&x, "*"), SASL_STEP_CANCELED);
      ck_assert_ptr_null(x.password);
      /* Canceled is over. */
      ck_assert_int_eq(sasl_continue(&x, ""), SASL_STEP_FAILED);
      sasl_free(&x);
      free(cred);
      tried++;
    }
    /* "*" as the initial response cancels too. */
    struct sasl x;
    ck_assert_int_eq(sasl_start(&x, (enum sasl_mech)mech, "*"), SASL_STEP_CANCELED);
    sasl_free(&x);
  }
  ck_assert_int_eq(tried, 6); /* PLAIN 1, LOGIN 2, SCRAM 3 */
}
END_TEST

static const char *const bad_base64[] = {"dXNlcg", "dXNl cg==", "dXNlcg==\r", "**",
                                         "dXNlcg==="};

START_TEST(bad_base64_at_every_step) {
  for (size_t b = 0; b < sizeof bad_base64 / sizeof bad_base64[0]; b++) {
    for (int mech = 0; mech < SASL_MECH_COUNT; mech++) {
      for (int step = 0;; step++) {
        struct sasl x;
        char *cred;
        if (!reach_step(&x, (enum sasl_mech)mech, step, &cred))
          break;
        assert_failed(&x, sasl_continue(&x, bad_base64[b]), "Invalid base64 data.",
                      false);
        sasl_free(&x);
        free(cred);
      }
      struct sasl x;
      assert_failed(&x, sasl_start(&x, (enum sasl_mech)mech, bad_base64[b]),
                    "Invalid base64 data.", false);
      sasl_free(&x);
    }
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("sasl");
  TCase *tc = tcase_create("plain-login");
  tcase_add_test(tc, mechanism_names);
  tcase_add_test(tc, plain_without_initial_response);
  tcase_add_test(tc, plain_with_initial_response);
  tcase_add_test(tc, plain_authzid_equal_to_user);
  tcase_add_loop_test(tc, plain_rejects_malformed, 0,
                      (int)(sizeof plain_rejects / sizeof plain_rejects[0]));
  tcase_add_test(tc, plain_empty_initial_response);
  tcase_add_test(tc, login_without_initial_response);
  tcase_add_test(tc, login_with_initial_response);
  tcase_add_test(tc, login_rejects);
  suite_add_tcase(s, tc);

  tc = tcase_create("scram");
  tcase_add_loop_test(tc, scram_with_derived_credential, 0, 2);
  tcase_add_test(tc, scram_wrong_password);
  tcase_add_test(tc, scram_final_answer_must_be_empty);
  tcase_add_test(tc, scram_with_plain_credential);
  tcase_add_loop_test(
      tc, scram_with_unusable_credential, 0,
      (int)(sizeof unusable_credentials / sizeof unusable_credentials[0]));
  tcase_add_test(tc, scram_header_variants);
  tcase_add_test(tc, scram_rejects_client_first);
  tcase_add_test(tc, scram_credential_out_of_turn);
  suite_add_tcase(s, tc);

  tc = tcase_create("every-step");
  tcase_add_test(tc, cancel_at_every_step);
  tcase_add_test(tc, bad_base64_at_every_step);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
