#include "sasl.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "password.h"

/* What an exchange waits for; x->stage holds one of these. */
enum sasl_stage {
  WAIT_PLAIN,          /* PLAIN: the empty challenge is out, waiting for the response */
  WAIT_LOGIN_USER,     /* LOGIN: "Username:" is out */
  WAIT_LOGIN_PASSWORD, /* LOGIN: "Password:" is out */
  WAIT_CLIENT_FIRST,   /* SCRAM: the empty challenge is out, waiting for client-first */
  WAIT_CREDENTIAL,     /* SCRAM: waiting for the caller's sasl_credential() */
  WAIT_CLIENT_FINAL,   /* SCRAM: server-first is out */
  WAIT_FINAL_ACK,      /* SCRAM: server-final is out, waiting for the empty line */
  OVER                 /* verify, success, failure or cancel: nothing more */
};

/* base64 of "Username:" and "Password:", the prompts every LOGIN client
 * expects (some compare them). */
#define LOGIN_USER_PROMPT "VXNlcm5hbWU6"
#define LOGIN_PASSWORD_PROMPT "UGFzc3dvcmQ6"

/* A {PLAIN} secret is turned into SCRAM keys for one exchange; the salt is
 * fresh each time, and the count is RFC 7677's minimum since the derived
 * keys are never stored. */
#define PLAIN_SCRAM_SALT_BYTES 16
#define PLAIN_SCRAM_ITERATIONS SCRAM_MIN_ITERATIONS

static const char err_base64[] = "Invalid base64 data.";
static const char err_empty[] = "User name and password must not be empty.";
static const char err_authzid[] = "Authorization identity must match the user.";
static const char err_unexpected[] = "Unexpected response.";

static const struct {
  const char *name;
  bool plaintext;
} mechs[SASL_MECH_COUNT] = {
    [SASL_PLAIN] = {"PLAIN", true},
    [SASL_LOGIN] = {"LOGIN", true},
    [SASL_SCRAM_SHA_256] = {"SCRAM-SHA-256", false},
};

bool sasl_mech_lookup(const char *name, enum sasl_mech *mech_r) {
  for (int i = 0; i < SASL_MECH_COUNT; i++) {
    if (strcasecmp(name, mechs[i].name) == 0) {
      *mech_r = (enum sasl_mech)i;
      return true;
    }
  }
  return false;
}

const char *sasl_mech_name(enum sasl_mech mech) {
  return (unsigned)mech < SASL_MECH_COUNT ? mechs[mech].name : NULL;
}

bool sasl_mech_is_plaintext(enum sasl_mech mech) {
  return (unsigned)mech < SASL_MECH_COUNT && mechs[mech].plaintext;
}

/* ---- Outcomes ----------------------------------------------------------- */

static enum sasl_step failed(struct sasl *x, const char *error, bool auth_failure) {
  x->stage = OVER;
  x->error = error;
  x->auth_failure = auth_failure;
  return SASL_STEP_FAILED;
}

static enum sasl_step temp_failed(struct sasl *x) {
  x->temp_failure = true;
  return failed(x, "Temporary server failure, try again later.", false);
}

/* Sends challenge (base64 text already) and waits in stage next. */
static enum sasl_step challenge(struct sasl *x, const char *text, enum sasl_stage next) {
  free(x->challenge);
  x->challenge = strdup(text);
  if (x->challenge == NULL)
    return temp_failed(x);
  x->stage = next;
  return SASL_STEP_CHALLENGE;
}

/* Sends len bytes of data, base64-encoded, and waits in stage next. */
static enum sasl_step challenge_data(struct sasl *x, const char *data, size_t len,
                                     enum sasl_stage next) {
  free(x->challenge);
  x->challenge = malloc(BASE64_ENCODED_SIZE(len) + 1);
  if (x->challenge == NULL)
    return temp_failed(x);
  base64_encode(data, len, x->challenge);
  x->stage = next;
  return SASL_STEP_CHALLENGE;
}

static enum sasl_step verify_plain(struct sasl *x, const char *user, size_t user_len,
                                   const char *password, size_t password_len) {
  if (user_len == 0 || password_len == 0)
    return failed(x, err_empty, false);
  x->user = strndup(user, user_len);
  x->password = strndup(password, password_len);
  if (x->user == NULL || x->password == NULL)
    return temp_failed(x);
  x->stage = OVER;
  return SASL_STEP_VERIFY_PLAIN;
}

/* ---- PLAIN (RFC 4616) --------------------------------------------------- */

static enum sasl_step plain_response(struct sasl *x, const char *data, size_t len) {
  /* authzid NUL authcid NUL passwd: exactly two NULs. */
  const char *end = data + len;
  const char *nul1 = memchr(data, '\0', len);
  const char *nul2 =
      nul1 != NULL ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1)) : NULL;
  if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
    return failed(x, "Invalid PLAIN response.", false);
  const char *authcid = nul1 + 1, *password = nul2 + 1;
  size_t authzid_len = (size_t)(nul1 - data), authcid_len = (size_t)(nul2 - authcid);
  if (authcid_len == 0 || end == password)
    return failed(x, err_empty, false);
  /* Acting as another user is not offered; naming oneself is harmless. */
  if (authzid_len > 0 &&
      (authzid_len != authcid_len || memcmp(data, authcid, authcid_len) != 0))
    return failed(x, err_authzid, false);
  return verify_plain(x, authcid, authcid_len, password, (size_t)(end - password));
}

/* ---- LOGIN -------------------------------------------------------------- */

static enum sasl_step login_response(struct sasl *x, const char *data, size_t len) {
  if (memchr(data, '\0', len) != NULL)
    return failed(x, "The response must not contain NUL characters.", false);
  if (len == 0)
    return failed(x, err_empty, false);
  if (x->stage == WAIT_LOGIN_USER) {
    x->user = strndup(data, len);
    if (x->user == NULL)
      return temp_failed(x);
    return challenge(x, LOGIN_PASSWORD_PROMPT, WAIT_LOGIN_PASSWORD);
  }
  char *user = x->user;
  x->user = NULL; /* verify_plain sets it again */
  enum sasl_step step = verify_plain(x, user, strlen(user), data, len);
  free(user);
  return step;
}

/* ---- SCRAM-SHA-256 (RFC 7677) ------------------------------------------- */

/* Maps a failed SCRAM step to the exchange's failure. */
static enum sasl_step scram_failed(struct sasl *x, enum scram_result r) {
  switch (r) {
  case SCRAM_BAD_PROOF:
    return failed(x, "Authentication failed.", true);
  case SCRAM_INTERNAL_ERROR:
    return temp_failed(x);
  default: /* a malformed message or an option not offered */
    return failed(x, x->scram.error, false);
  }
}

static enum sasl_step scram_client_first(struct sasl *x, const char *data, size_t len) {
  enum scram_result r = scram_server_client_first(&x->scram, data, len);
  if (r != SCRAM_CONTINUE)
    return scram_failed(x, r);
  x->user = strdup(x->scram.user);
  if (x->user == NULL)
    return temp_failed(x);
  x->stage = WAIT_CREDENTIAL;
  return SASL_STEP_NEED_CREDENTIAL;
}

static enum sasl_step scram_client_final(struct sasl *x, const char *data, size_t len) {
  enum scram_result r = scram_server_client_final(&x->scram, data, len);
  if (r == SCRAM_BAD_PROOF && x->decoy)
    return failed(x, "no SCRAM-SHA-256 credential (unknown user, or a crypt hash)", true);
  if (r != SCRAM_DONE)
    return scram_failed(x, r);
  return challenge_data(x, x->scram.out, x->scram.out_len, WAIT_FINAL_ACK);
}

/* The salt of a user whose keys are made here ({PLAIN} secrets, decoys):
 * HMAC of the name under a key drawn once per process. It stays the same
 * from one attempt to the next, as a stored credential's salt does, so the
 * salt does not tell which kind of secret (if any) a user has. */
static unsigned char salt_key[32];
static bool salt_key_ready;
static pthread_once_t salt_key_once = PTHREAD_ONCE_INIT;

static void draw_salt_key(void) {
  salt_key_ready = gnutls_rnd(GNUTLS_RND_KEY, salt_key, sizeof salt_key) == 0;
}

static int stable_salt(const char *user, unsigned char salt[PLAIN_SCRAM_SALT_BYTES]) {
  unsigned char mac[32];
  pthread_once(&salt_key_once, draw_salt_key);
  if (!salt_key_ready || gnutls_hmac_fast(GNUTLS_MAC_SHA256, salt_key, sizeof salt_key,
                                          user, strlen(user), mac) < 0)
    return -EIO;
  memcpy(salt, mac, PLAIN_SCRAM_SALT_BYTES);
  return 0;
}

/* Turns a stored secret into SCRAM keys. Returns 0, -EINVAL for a secret
 * SCRAM cannot use (a crypt hash keeps no password and no SCRAM keys), or
 * another negative errno code. */
static int scram_keys_of(const char *user, const char *stored,
                         struct scram_credential *cred) {
  if (stored == NULL)
    return -EINVAL;
  if (strncasecmp(stored, SCRAM_CREDENTIAL_PREFIX, strlen(SCRAM_CREDENTIAL_PREFIX)) == 0)
    return scram_credential_parse(stored, cred);
  const char *password = password_plain_secret(stored);
  if (password == NULL)
    return -EINVAL;
  unsigned char salt[PLAIN_SCRAM_SALT_BYTES];
  if (stable_salt(user, salt) < 0)
    return -EIO;
  return scram_derive(password, strlen(password), salt, sizeof salt,
                      PLAIN_SCRAM_ITERATIONS, cred);
}

/* Keys no password matches, for a user SCRAM cannot serve (unknown, or
 * only a crypt hash): the exchange goes on to the proof and fails there,
 * as a wrong password would, so SCRAM does not tell who exists. */
static int decoy_keys(const char *user, struct scram_credential *cred) {
  memset(cred, 0, sizeof *cred);
  cred->iterations = PLAIN_SCRAM_ITERATIONS;
  cred->salt_len = PLAIN_SCRAM_SALT_BYTES;
  if (stable_salt(user, cred->salt) < 0 ||
      gnutls_rnd(GNUTLS_RND_NONCE, cred->stored_key, sizeof cred->stored_key) < 0 ||
      gnutls_rnd(GNUTLS_RND_NONCE, cred->server_key, sizeof cred->server_key) < 0)
    return -EIO;
  return 0;
}

enum sasl_step sasl_credential(struct sasl *x, const char *credential) {
  if (x->stage != WAIT_CREDENTIAL)
    return failed(x, err_unexpected, false);
  struct scram_credential cred;
  int rc = scram_keys_of(x->user, credential, &cred);
  if (rc == -EINVAL) {
    x->decoy = true;
    rc = decoy_keys(x->user, &cred);
  }
  enum scram_result r = SCRAM_INTERNAL_ERROR;
  if (rc == 0)
    r = scram_server_set_credential(&x->scram, &cred, NULL);
  explicit_bzero(&cred, sizeof cred);
  if (r != SCRAM_CONTINUE)
    return scram_failed(x, r);
  return challenge_data(x, x->scram.out, x->scram.out_len, WAIT_CLIENT_FINAL);
}

/* ---- Client lines ------------------------------------------------------- */

/* Hands one decoded response to the step that waits for it. */
static enum sasl_step dispatch(struct sasl *x, const char *data, size_t len) {
  switch ((enum sasl_stage)x->stage) {
  case WAIT_PLAIN:
    return plain_response(x, data, len);
  case WAIT_LOGIN_USER:
  case WAIT_LOGIN_PASSWORD:
    return login_response(x, data, len);
  case WAIT_CLIENT_FIRST:
    return scram_client_first(x, data, len);
  case WAIT_CLIENT_FINAL:
    return scram_client_final(x, data, len);
  case WAIT_FINAL_ACK:
    /* RFC 5034 section 4: the client acknowledges the server's additional
     * data with an empty response. */
    if (len != 0)
      return failed(x, "Expected an empty response.", false);
    x->stage = OVER;
    return SASL_STEP_SUCCESS;
  default:
    return failed(x, err_unexpected, false);
  }
}

static enum sasl_step respond(struct sasl *x, const char *line) {
  free(x->challenge); /* it was sent */
  x->challenge = NULL;
  if (x->stage == WAIT_CREDENTIAL || x->stage == OVER)
    return failed(x, err_unexpected, false);
  if (strcmp(line, "*") == 0) {
    x->stage = OVER;
    return SASL_STEP_CANCELED;
  }
  size_t len = strlen(line);
  /* One byte more than the data, so a short response is never a zero-size
   * allocation. */
  char *data = malloc(BASE64_DECODED_MAX(len) + 1);
  if (data == NULL)
    return temp_failed(x);
  long n = base64_decode(line, len, (unsigned char *)data);
  enum sasl_step step =
      n < 0 ? failed(x, err_base64, false) : dispatch(x, data, (size_t)n);
  /* The data may be a password. */
  explicit_bzero(data, BASE64_DECODED_MAX(len) + 1);
  free(data);
  return step;
}

enum sasl_step sasl_start(struct sasl *x, enum sasl_mech mech,
                          const char *initial_response) {
  memset(x, 0, sizeof *x);
  scram_server_init(&x->scram);
  x->mech = mech;
  enum sasl_stage first;
  const char *prompt = "";
  switch (mech) {
  case SASL_PLAIN:
    first = WAIT_PLAIN;
    break;
  case SASL_LOGIN:
    first = WAIT_LOGIN_USER;
    prompt = LOGIN_USER_PROMPT;
    break;
  case SASL_SCRAM_SHA_256:
    first = WAIT_CLIENT_FIRST;
    break;
  default:
    return failed(x, "Unknown authentication mechanism.", false);
  }
  if (initial_response == NULL)
    return challenge(x, prompt, first);
  /* An initial response answers the first challenge, which is then never
   * sent; "=" stands for an empty one, since the AUTH line cannot end in
   * an empty argument. */
  x->stage = first;
  return respond(x, strcmp(initial_response, "=") == 0 ? "" : initial_response);
}

enum sasl_step sasl_continue(struct sasl *x, const char *line) {
  return respond(x, line);
}

void sasl_free(struct sasl *x) {
  free(x->user);
  if (x->password != NULL) {
    explicit_bzero(x->password, strlen(x->password));
    free(x->password);
  }
  free(x->challenge);
  scram_server_free(&x->scram);
  explicit_bzero(x, sizeof *x);
}
