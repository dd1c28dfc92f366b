/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding.
 *
 * Two parts: the stored credential and the exchange.
 *
 * A credential is what a password file keeps instead of the password:
 *   {SCRAM-SHA-256}ITERATIONS,SALT,STOREDKEY,SERVERKEY
 * with SALT, STOREDKEY and SERVERKEY in base64 (the format Dovecot writes,
 * so existing files keep working). popkit-passwd prints it; passwd-file and
 * the host's password check read it.
 *
 * The exchange is socket-free: the session feeds it the decoded client
 * messages and sends what it produces, and a unit test replays RFC 7677's
 * example through it.
 */
#ifndef POPKIT_CORE_SCRAM_H
#define POPKIT_CORE_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_SIZE 32         /* SHA-256 */
#define SCRAM_SALT_MAX 64         /* bytes, decoded */
#define SCRAM_MIN_ITERATIONS 4096 /* RFC 7677 section 4 */
#define SCRAM_MAX_ITERATIONS 10000000
#define SCRAM_CREDENTIAL_PREFIX "{SCRAM-SHA-256}"

struct scram_credential {
  uint32_t iterations;
  unsigned char salt[SCRAM_SALT_MAX];
  size_t salt_len;
  unsigned char stored_key[SCRAM_KEY_SIZE];
  unsigned char server_key[SCRAM_KEY_SIZE];
};

/* Derives the keys of a credential from a password (PBKDF2-HMAC-SHA-256,
 * then ClientKey/StoredKey/ServerKey). Returns 0 or a negative errno code. */
int scram_derive(const char *password, size_t password_len, const unsigned char *salt,
                 size_t salt_len, uint32_t iterations, struct scram_credential *out);

/* Parses "{SCRAM-SHA-256}..." (the prefix is required; its case is not).
 * Returns 0 or -EINVAL for anything malformed (iterations outside
 * [1, SCRAM_MAX_ITERATIONS], bad base64, wrong key sizes). */
int scram_credential_parse(const char *text, struct scram_credential *out);

/* Formats a credential with its prefix into out. Returns the length, or
 * -ENOSPC when out_size is too small (256 bytes always suffice), or -EINVAL
 * for a salt_len above SCRAM_SALT_MAX. */
int scram_credential_format(const struct scram_credential *cred, char *out,
                            size_t out_size);

/* Checks a plaintext password against a credential (for USER/PASS and AUTH
 * PLAIN when the file holds only SCRAM keys): derives and compares the
 * StoredKey in constant time. */
bool scram_credential_matches(const struct scram_credential *cred, const char *password);

/* ---- The exchange ----------------------------------------------------- */

enum scram_result {
  SCRAM_CONTINUE = 0,       /* send the produced message and wait */
  SCRAM_DONE = 1,           /* proof checked: send the produced server-final */
  SCRAM_BAD_MESSAGE = -1,   /* malformed client message: protocol error */
  SCRAM_BAD_PROOF = -2,     /* the client does not know the password */
  SCRAM_UNSUPPORTED = -3,   /* channel binding required, or an authzid that
                                differs from the user (not offered) */
  SCRAM_INTERNAL_ERROR = -4 /* out of memory or a crypto failure: not the
                               client's fault, try again later */
};

struct scram_server {
  int stage;
  char *user;              /* the authcid, unescaped (=2C, =3D) */
  char *client_first_bare; /* kept for the AuthMessage */
  char *server_first;
  char *gs2_header; /* as sent ("n,," or "y,," and maybe "a=USER"), checked again in c= */
  char nonce[128];  /* client nonce + server nonce */
  struct scram_credential cred;
  char *out; /* the last produced message (not base64) */
  size_t out_len;
  const char *error; /* after a negative result: why, in words fit
                        for the client (a static string) */
};

/* Every exchange begins with init and ends with free. A negative result
 * ends the exchange: any later call returns SCRAM_BAD_MESSAGE. */
void scram_server_init(struct scram_server *x);
void scram_server_free(struct scram_server *x); /* wipes keys */

/* Step 1: the client-first-message (decoded). On SCRAM_CONTINUE, x->user
 * names the user whose credential the caller must fetch and hand over with
 * scram_server_set_credential(). */
enum scram_result scram_server_client_first(struct scram_server *x, const char *msg,
                                            size_t len);

/* Step 2: the credential is known; produces the server-first-message in
 * x->out. server_nonce may be NULL (a random one is made); tests pass the
 * RFC's. Returns SCRAM_CONTINUE or a negative result. */
enum scram_result scram_server_set_credential(struct scram_server *x,
                                              const struct scram_credential *cred,
                                              const char *server_nonce);

/* Step 3: the client-final-message (decoded). On SCRAM_DONE, x->out holds
 * the server-final-message ("v=..."). */
enum scram_result scram_server_client_final(struct scram_server *x, const char *msg,
                                            size_t len);

#endif
