/* Tests for core/scram.c: SCRAM-SHA-256 credentials and the server side of
 * the exchange, replayed against RFC 7677 section 3. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "check_run.h"
#include "scram.h"

/* RFC 7677 section 3. */
#define RFC_PASSWORD "pencil"
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CLIENT_NONCE RFC_SERVER_NONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CLIENT_NONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096"
#define RFC_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void rfc_credential(const char *password, struct scram_credential *cred) {
  unsigned char salt[16];
  ck_assert_int_eq(base64_decode(RFC_SALT, strlen(RFC_SALT), salt), 16);
  ck_assert_int_eq(scram_derive(password, strlen(password), salt, 16, 4096, cred), 0);
}

static enum scram_result first(struct scram_server *x, const char *msg) {
  return scram_server_client_first(x, msg, strlen(msg));
}

static enum scram_result final(struct scram_server *x, const char *msg) {
  return scram_server_client_final(x, msg, strlen(msg));
}

/* Runs the RFC's exchange up to the server-first-message with the
 * credential of password. */
static void rfc_start(struct scram_server *x, const char *password) {
  struct scram_credential cred;
  rfc_credential(password, &cred);
  scram_server_init(x);
  ck_assert_int_eq(first(x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
  ck_assert_int_eq(scram_server_set_credential(x, &cred, RFC_SERVER_NONCE),
                   SCRAM_CONTINUE);
}

/* ---- The exchange ------------------------------------------------------- */

START_TEST(rfc7677_exchange) {
  struct scram_server x;
  struct scram_credential cred;
  rfc_credential(RFC_PASSWORD, &cred);
  scram_server_init(&x);
  ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
  ck_assert_str_eq(x.user, "user");
  ck_assert_int_eq(scram_server_set_credential(&x, &cred, RFC_SERVER_NONCE),
                   SCRAM_CONTINUE);
  ck_assert_str_eq(x.out, RFC_SERVER_FIRST);
  ck_assert_uint_eq(x.out_len, strlen(RFC_SERVER_FIRST));
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_DONE);
  ck_assert_str_eq(x.out, RFC_SERVER_FINAL);
  ck_assert_uint_eq(x.out_len, strlen(RFC_SERVER_FINAL));
  /* The exchange is over: a replayed message is refused. */
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);
}
END_TEST

START_TEST(wrong_password_is_bad_proof) {
  struct scram_server x;
  rfc_start(&x, "pencil2");
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_PROOF);
  ck_assert_str_eq(x.error, "Authentication failed.");
  scram_server_free(&x);
}
END_TEST

/* One changed bit of the proof, or of the signed text, breaks it. */
START_TEST(altered_proof_is_bad_proof) {
  static const char *const altered[] = {
      "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=",
      "c=biws,r=" RFC_NONCE ",x=extension,p=" RFC_PROOF,
  };
  for (size_t i = 0; i < 2; i++) {
    struct scram_server x;
    rfc_start(&x, RFC_PASSWORD);
    ck_assert_int_eq(final(&x, altered[i]), SCRAM_BAD_PROOF);
    scram_server_free(&x);
  }
}
END_TEST

START_TEST(random_server_nonce) {
  char nonces[2][128];
  struct scram_credential cred;
  rfc_credential(RFC_PASSWORD, &cred);
  for (int i = 0; i < 2; i++) {
    struct scram_server x;
    scram_server_init(&x);
    ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
    ck_assert_int_eq(scram_server_set_credential(&x, &cred, NULL), SCRAM_CONTINUE);
    /* "r=" client nonce, then the server's half, then the salt. */
    ck_assert_int_eq(strncmp(x.out, "r=" RFC_CLIENT_NONCE, 22), 0);
    const char *server_half = x.out + 22;
    size_t half_len = strcspn(server_half, ",");
    ck_assert_uint_ge(half_len, 16);
    for (size_t k = 0; k < half_len; k++)
      ck_assert(server_half[k] > 0x20 && server_half[k] < 0x7f);
    ck_assert_str_eq(server_half + half_len, ",s=" RFC_SALT ",i=4096");
    snprintf(nonces[i], sizeof nonces[i], "%.*s", (int)half_len, server_half);
    scram_server_free(&x);
  }
  ck_assert_str_ne(nonces[0], nonces[1]);
}
END_TEST

/* A client-first-message and what the server makes of it. */
struct first_case {
  const char *msg;
  enum scram_result result;
  const char *user; /* on SCRAM_CONTINUE */
};

static const struct first_case first_cases[] = {
    {"n,,n=user,r=abc", SCRAM_CONTINUE, "user"},
    {"y,,n=user,r=abc", SCRAM_CONTINUE, "user"},
    {"n,a=user,n=user,r=abc", SCRAM_CONTINUE, "user"},
    {"n,,n=us=2Cer,r=abc", SCRAM_CONTINUE, "us,er"},
    {"n,,n=a=3Db=3D,r=abc", SCRAM_CONTINUE, "a=b="},
    {"n,a=a=2Cb,n=a=2Cb,r=abc", SCRAM_CONTINUE, "a,b"},
    {"n,,n=o'brien,r=!\"#$%&'()*+-./09:;<=>?@AZ[\\]^_`az{|}~", SCRAM_CONTINUE, "o'brien"},
    {"n,,n=user,r=abc,x=optional", SCRAM_CONTINUE, "user"},
    {"n,,n=user,r=abc,x=one,Y=two", SCRAM_CONTINUE, "user"},
    {"n,,n=user,r=" /* 64 characters, the most */
     "0123456789012345678901234567890123456789012345678901234567890123",
     SCRAM_CONTINUE, "user"},
    /* Channel binding and acting for another user are not offered. */
    {"p=tls-unique,,n=user,r=abc", SCRAM_UNSUPPORTED, NULL},
    {"p=tls-server-end-point,a=user,n=user,r=abc", SCRAM_UNSUPPORTED, NULL},
    {"n,a=admin,n=user,r=abc", SCRAM_UNSUPPORTED, NULL},
    {"n,a=User,n=user,r=abc", SCRAM_UNSUPPORTED, NULL},
    /* Malformed. */
    {"", SCRAM_BAD_MESSAGE, NULL},
    {"n", SCRAM_BAD_MESSAGE, NULL},
    {"n,", SCRAM_BAD_MESSAGE, NULL},
    {"n,,", SCRAM_BAD_MESSAGE, NULL},
    {"x,,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"nn,,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,b=user,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,a=,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,a=us=er,n=us=er,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,m=mandatory,n=user,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=a=2c,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=a=41,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=a=,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=a=2,r=abc", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=", SCRAM_BAD_MESSAGE, NULL},
    {"n,,r=abc,n=user", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=ab cd", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=ab\x7f", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=ab\xc3\xa9", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=abc,", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=abc,x=", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=abc,1=x", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=abc,xy", SCRAM_BAD_MESSAGE, NULL},
    {"n,,n=user,r=" /* 65 characters */
     "01234567890123456789012345678901234567890123456789012345678901234",
     SCRAM_BAD_MESSAGE, NULL},
};

START_TEST(client_first_cases) {
  const struct first_case *c = &first_cases[_i];
  struct scram_server x;
  scram_server_init(&x);
  enum scram_result r = first(&x, c->msg);
  ck_assert_msg(r == c->result, "\"%s\": got %d, expected %d", c->msg, r, c->result);
  if (r == SCRAM_CONTINUE) {
    ck_assert_str_eq(x.user, c->user);
  } else {
    ck_assert_ptr_nonnull(x.error);
    /* A failed exchange stays failed. */
    ck_assert_int_eq(first(&x, "n,,n=user,r=abc"), SCRAM_BAD_MESSAGE);
  }
  scram_server_free(&x);
}
END_TEST

/* The errors a client reads for the refusals it can act on. */
START_TEST(client_first_errors) {
  static const struct {
    const char *msg, *error;
  } cases[] = {
      {"p=tls-unique,,n=user,r=abc", "Channel binding is not supported."},
      {"n,a=admin,n=user,r=abc", "Authorization identity must match the user."},
      {"n,,m=mandatory,n=user,r=abc", "Unsupported SCRAM extension."},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct scram_server x;
    scram_server_init(&x);
    ck_assert_int_lt(first(&x, cases[i].msg), 0);
    ck_assert_str_eq(x.error, cases[i].error);
    scram_server_free(&x);
  }
}
END_TEST

START_TEST(client_first_nul_and_length) {
  struct scram_server x;
  scram_server_init(&x);
  ck_assert_int_eq(scram_server_client_first(&x, "n,,n=us\0er,r=abc", 16),
                   SCRAM_BAD_MESSAGE);
  scram_server_free(&x);

  /* A well-formed message longer than 4096 bytes (a long extension). */
  size_t len = 5000;
  char *msg = malloc(len + 1);
  int head = snprintf(msg, len + 1, "n,,n=user,r=abc,x=");
  memset(msg + head, 'a', len - (size_t)head);
  msg[len] = '\0';
  scram_server_init(&x);
  ck_assert_int_eq(first(&x, msg), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);
  free(msg);
}
END_TEST

static const char *const bad_finals[] = {
    "",
    "c=biws",
    "c=biws,r=" RFC_NONCE,
    "c=biws,r=" RFC_NONCE ",",
    "c=biws,r=" RFC_NONCE ",p=",
    "r=" RFC_NONCE ",c=biws,p=" RFC_PROOF,
    "c=eSws,r=" RFC_NONCE ",p=" RFC_PROOF,             /* "y,," but "n,," was sent */
    "c=bixhPXVzZXIsLA==,r=" RFC_NONCE ",p=" RFC_PROOF, /* an authzid added */
    "c=,r=" RFC_NONCE ",p=" RFC_PROOF,
    "c=biws,r=" RFC_CLIENT_NONCE ",p=" RFC_PROOF, /* the client's half only */
    "c=biws,r=" RFC_NONCE "x,p=" RFC_PROOF,
    "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF ",x=after", /* the proof is last */
    "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF ",",
    "c=biws,r=" RFC_NONCE
    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV",                     /* bad base64 */
    "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7An", /* 31 bytes */
    "c=biws,r=" RFC_NONCE
    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQA", /* 33 bytes */
    "c=biws,r=" RFC_NONCE ",1=x,p=" RFC_PROOF,
};

START_TEST(client_final_rejects_malformed) {
  struct scram_server x;
  rfc_start(&x, RFC_PASSWORD);
  enum scram_result r = final(&x, bad_finals[_i]);
  ck_assert_msg(r == SCRAM_BAD_MESSAGE, "\"%s\": got %d", bad_finals[_i], r);
  ck_assert_ptr_nonnull(x.error);
  /* Nothing more is accepted, not even the right answer. */
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);
}
END_TEST

START_TEST(client_final_nul) {
  struct scram_server x;
  rfc_start(&x, RFC_PASSWORD);
  char msg[] = RFC_CLIENT_FINAL "\0";
  ck_assert_int_eq(scram_server_client_final(&x, msg, sizeof msg - 1), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);
}
END_TEST

/* With "y,," the client-final must carry base64("y,,"), and "n,," is then
 * a downgrade the server refuses. */
START_TEST(client_final_binds_the_gs2_header) {
  struct scram_server x;
  struct scram_credential cred;
  rfc_credential(RFC_PASSWORD, &cred);
  scram_server_init(&x);
  ck_assert_int_eq(first(&x, "y,,n=user,r=" RFC_CLIENT_NONCE), SCRAM_CONTINUE);
  ck_assert_int_eq(scram_server_set_credential(&x, &cred, RFC_SERVER_NONCE),
                   SCRAM_CONTINUE);
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);

  /* Same messages with c=eSws: the binding passes and the proof, made by
   * the RFC for other messages, is checked and found wrong. */
  scram_server_init(&x);
  ck_assert_int_eq(first(&x, "y,,n=user,r=" RFC_CLIENT_NONCE), SCRAM_CONTINUE);
  ck_assert_int_eq(scram_server_set_credential(&x, &cred, RFC_SERVER_NONCE),
                   SCRAM_CONTINUE);
  ck_assert_int_eq(final(&x, "c=eSws,r=" RFC_NONCE ",p=" RFC_PROOF), SCRAM_BAD_PROOF);
  scram_server_free(&x);
}
END_TEST

START_TEST(steps_out_of_order) {
  struct scram_server x;
  struct scram_credential cred;
  rfc_credential(RFC_PASSWORD, &cred);

  scram_server_init(&x);
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);

  scram_server_init(&x);
  ck_assert_int_eq(scram_server_set_credential(&x, &cred, RFC_SERVER_NONCE),
                   SCRAM_BAD_MESSAGE);
  scram_server_free(&x);

  scram_server_init(&x);
  ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);

  scram_server_init(&x);
  ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
  ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_BAD_MESSAGE);
  scram_server_free(&x);
}
END_TEST

/* ---- Credentials -------------------------------------------------------- */

START_TEST(credential_round_trip) {
  struct scram_credential cred, parsed;
  rfc_credential(RFC_PASSWORD, &cred);
  char text[256];
  int n = scram_credential_format(&cred, text, sizeof text);
  ck_assert_int_eq(n, (int)strlen(text));
  static const char head[] = "{SCRAM-SHA-256}4096," RFC_SALT ",";
  ck_assert_int_eq(strncmp(text, head, sizeof head - 1), 0);
  ck_assert_int_eq(scram_credential_parse(text, &parsed), 0);
  ck_assert_uint_eq(parsed.iterations, 4096);
  ck_assert_uint_eq(parsed.salt_len, 16);
  ck_assert_int_eq(memcmp(parsed.salt, cred.salt, 16), 0);
  ck_assert_int_eq(memcmp(parsed.stored_key, cred.stored_key, SCRAM_KEY_SIZE), 0);
  ck_assert_int_eq(memcmp(parsed.server_key, cred.server_key, SCRAM_KEY_SIZE), 0);

  /* The prefix is case-insensitive, as Dovecot's scheme names are. */
  text[1] = 's';
  text[5] = 'm';
  ck_assert_int_eq(scram_credential_parse(text, &parsed), 0);

  /* The parsed credential runs the RFC's exchange. */
  struct scram_server x;
  scram_server_init(&x);
  ck_assert_int_eq(first(&x, RFC_CLIENT_FIRST), SCRAM_CONTINUE);
  ck_assert_int_eq(scram_server_set_credential(&x, &parsed, RFC_SERVER_NONCE),
                   SCRAM_CONTINUE);
  ck_assert_int_eq(final(&x, RFC_CLIENT_FINAL), SCRAM_DONE);
  ck_assert_str_eq(x.out, RFC_SERVER_FINAL);
  scram_server_free(&x);
}
END_TEST

START_TEST(credential_largest_fields) {
  struct scram_credential cred, parsed;
  unsigned char salt[SCRAM_SALT_MAX];
  memset(salt, 0xa5, sizeof salt);
  ck_assert_int_eq(scram_derive("", 0, salt, sizeof salt, 1, &cred), 0);
  cred.iterations = SCRAM_MAX_ITERATIONS; /* formatting does not derive */
  char text[256];
  int n = scram_credential_format(&cred, text, sizeof text);
  ck_assert_int_gt(n, 0);
  ck_assert_int_eq(scram_credential_parse(text, &parsed), 0);
  ck_assert_uint_eq(parsed.iterations, SCRAM_MAX_ITERATIONS);
  ck_assert_uint_eq(parsed.salt_len, SCRAM_SALT_MAX);

  /* Exactly n + 1 bytes are enough, n are not. */
  char *exact = malloc((size_t)n + 1);
  ck_assert_int_eq(scram_credential_format(&cred, exact, (size_t)n + 1), n);
  ck_assert_str_eq(exact, text);
  ck_assert_int_eq(scram_credential_format(&cred, exact, (size_t)n), -ENOSPC);
  free(exact);
  ck_assert_int_eq(scram_credential_format(&cred, NULL, 0), -ENOSPC);
}
END_TEST

/* The fields of a good credential, to break one at a time. */
#define GOOD_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define GOOD_KEY "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define KEY_31 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
#define KEY_33 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static const char *const bad_credentials[] = {
    "",
    "{SCRAM-SHA-256}",
    "SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-1}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{PLAIN}pencil",
    "$6$salt$hash",
    "{SCRAM-SHA-256}0," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}10000001," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}99999999999," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}-1," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}+4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256} 4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}40a6," GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096",
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY ",",
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096,," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gR==," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096," /* 65-byte salt */
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAA=," GOOD_KEY "," GOOD_KEY,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," KEY_31 "," GOOD_KEY,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," KEY_33 "," GOOD_KEY,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," KEY_31,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," KEY_33,
    "{SCRAM-SHA-256}4096," GOOD_SALT ",," GOOD_KEY,
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY ",",
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY "\n",
    "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY " ",
    "{SCRAM-SHA-256}4096, " GOOD_SALT "," GOOD_KEY "," GOOD_KEY,
};

START_TEST(credential_parse_rejects_malformed) {
  struct scram_credential cred;
  memset(&cred, 0x5a, sizeof cred);
  ck_assert_msg(scram_credential_parse(bad_credentials[_i], &cred) == -EINVAL,
                "accepted \"%s\"", bad_credentials[_i]);
}
END_TEST

/* The good fields above do parse, so each case fails for its own flaw. */
START_TEST(credential_parse_accepts_the_good_fields) {
  struct scram_credential cred;
  ck_assert_int_eq(scram_credential_parse(
                       "{SCRAM-SHA-256}4096," GOOD_SALT "," GOOD_KEY "," GOOD_KEY, &cred),
                   0);
  ck_assert_int_eq(scram_credential_parse(
                       "{SCRAM-SHA-256}1," GOOD_SALT "," GOOD_KEY "," GOOD_KEY, &cred),
                   0);
  ck_assert_uint_eq(cred.iterations, 1);
}
END_TEST

START_TEST(credential_matches_password) {
  struct scram_credential cred;
  rfc_credential(RFC_PASSWORD, &cred);
  ck_assert(scram_credential_matches(&cred, RFC_PASSWORD));
  ck_assert(!scram_credential_matches(&cred, "pencil "));
  ck_assert(!scram_credential_matches(&cred, "Pencil"));
  ck_assert(!scram_credential_matches(&cred, "pencil\xc3\xa9"));
  ck_assert(!scram_credential_matches(&cred, ""));

  /* The empty password is a password like any other. */
  unsigned char salt[4] = {1, 2, 3, 4};
  ck_assert_int_eq(scram_derive("", 0, salt, sizeof salt, 4096, &cred), 0);
  ck_assert(scram_credential_matches(&cred, ""));
  ck_assert(!scram_credential_matches(&cred, "x"));
}
END_TEST

START_TEST(derive_rejects_bad_parameters) {
  struct scram_credential cred;
  unsigned char salt[SCRAM_SALT_MAX + 1] = {0};
  ck_assert_int_eq(scram_derive("pw", 2, salt, 0, 4096, &cred), -EINVAL);
  ck_assert_int_eq(scram_derive("pw", 2, salt, SCRAM_SALT_MAX + 1, 4096, &cred), -EINVAL);
  ck_assert_int_eq(scram_derive("pw", 2, salt, 16, 0, &cred), -EINVAL);
  ck_assert_int_eq(scram_derive("pw", 2, salt, 16, SCRAM_MAX_ITERATIONS + 1, &cred),
                   -EINVAL);
  /* Different salts and counts give different keys. */
  struct scram_credential a, b, c;
  ck_assert_int_eq(scram_derive("pw", 2, salt, 16, 4096, &a), 0);
  salt[0] = 1;
  ck_assert_int_eq(scram_derive("pw", 2, salt, 16, 4096, &b), 0);
  ck_assert_int_eq(scram_derive("pw", 2, salt, 16, 4097, &c), 0);
  ck_assert_int_ne(memcmp(a.stored_key, b.stored_key, SCRAM_KEY_SIZE), 0);
  ck_assert_int_ne(memcmp(b.stored_key, c.stored_key, SCRAM_KEY_SIZE), 0);
  ck_assert_int_ne(memcmp(a.stored_key, a.server_key, SCRAM_KEY_SIZE), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("scram");
  TCase *tc = tcase_create("exchange");
  tcase_add_test(tc, rfc7677_exchange);
  tcase_add_test(tc, wrong_password_is_bad_proof);
  tcase_add_test(tc, altered_proof_is_bad_proof);
  tcase_add_test(tc, random_server_nonce);
  tcase_add_loop_test(tc, client_first_cases, 0,
                      (int)(sizeof first_cases / sizeof first_cases[0]));
  tcase_add_test(tc, client_first_errors);
  tcase_add_test(tc, client_first_nul_and_length);
  tcase_add_loop_test(tc, client_final_rejects_malformed, 0,
                      (int)(sizeof bad_finals / sizeof bad_finals[0]));
  tcase_add_test(tc, client_final_nul);
  tcase_add_test(tc, client_final_binds_the_gs2_header);
  tcase_add_test(tc, steps_out_of_order);
  suite_add_tcase(s, tc);

  tc = tcase_create("credential");
  tcase_add_test(tc, credential_round_trip);
  tcase_add_test(tc, credential_largest_fields);
  tcase_add_loop_test(tc, credential_parse_rejects_malformed, 0,
                      (int)(sizeof bad_credentials / sizeof bad_credentials[0]));
  tcase_add_test(tc, credential_parse_accepts_the_good_fields);
  tcase_add_test(tc, credential_matches_password);
  tcase_add_test(tc, derive_rejects_bad_parameters);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
