#include "scram.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"

/* No honest client-first or client-final message comes near this; the cap
 * bounds what one exchange can make the server allocate and hash. */
#define SCRAM_MESSAGE_MAX 4096
/* Clients send 18 to 32 characters; leaving room for the server's half
 * keeps the combined nonce inside struct scram_server. */
#define CLIENT_NONCE_MAX 64
/* 18 random bytes: 144 bits, 24 base64 characters (never a ','). */
#define SERVER_NONCE_BYTES 18

/* Where an exchange is; x->stage holds one of these. */
enum scram_stage {
  STAGE_CLIENT_FIRST,    /* waiting for the client-first-message */
  STAGE_NEED_CREDENTIAL, /* waiting for the caller to hand over the credential */
  STAGE_CLIENT_FINAL,    /* server-first sent, waiting for the client-final */
  STAGE_OVER             /* done or failed: nothing more is accepted */
};

/* ---- Credentials -------------------------------------------------------- */

static int errno_of_gnutls(int rc) {
  return rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EIO;
}

int scram_derive(const char *password, size_t password_len, const unsigned char *salt,
                 size_t salt_len, uint32_t iterations, struct scram_credential *out) {
  if (iterations < 1 || iterations > SCRAM_MAX_ITERATIONS || salt_len < 1 ||
      salt_len > SCRAM_SALT_MAX)
    return -EINVAL;
  unsigned char salted[SCRAM_KEY_SIZE], client_key[SCRAM_KEY_SIZE];
  unsigned char stored_key[SCRAM_KEY_SIZE], server_key[SCRAM_KEY_SIZE];
  gnutls_datum_t key = {(unsigned char *)password, (unsigned)password_len};
  gnutls_datum_t salt_datum = {(unsigned char *)salt, (unsigned)salt_len};
  int rc = gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &salt_datum, iterations, salted,
                         sizeof salted);
  if (rc >= 0)
    rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, salted, sizeof salted, "Client Key", 10,
                          client_key);
  if (rc >= 0)
    rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, client_key, sizeof client_key, stored_key);
  if (rc >= 0)
    rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, salted, sizeof salted, "Server Key", 10,
                          server_key);
  if (rc >= 0) {
    /* memmove: the salt may be the one already in out. */
    memmove(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->iterations = iterations;
    memcpy(out->stored_key, stored_key, sizeof stored_key);
    memcpy(out->server_key, server_key, sizeof server_key);
  }
  explicit_bzero(salted, sizeof salted);
  explicit_bzero(client_key, sizeof client_key);
  explicit_bzero(stored_key, sizeof stored_key);
  explicit_bzero(server_key, sizeof server_key);
  return rc < 0 ? errno_of_gnutls(rc) : 0;
}

/* Decodes the base64 field of len characters into out, which receives
 * between min and max bytes or the field is refused. Returns the number of
 * bytes or -EINVAL. */
static long decode_field(const char *field, size_t len, unsigned char *out, size_t min,
                         size_t max) {
  unsigned char buf[BASE64_DECODED_MAX(BASE64_ENCODED_SIZE(SCRAM_SALT_MAX))];
  if (len > BASE64_ENCODED_SIZE(max))
    return -EINVAL;
  long n = base64_decode(field, len, buf);
  if (n >= 0 && ((size_t)n < min || (size_t)n > max))
    n = -EINVAL;
  if (n > 0)
    memcpy(out, buf, (size_t)n);
  explicit_bzero(buf, sizeof buf);
  return n;
}

/* Digits only, no sign or space, within [1, SCRAM_MAX_ITERATIONS]. */
static bool parse_iterations(const char *text, size_t len, uint32_t *iterations_r) {
  uint64_t v = 0;
  if (len == 0 || len > 10)
    return false;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9')
      return false;
    v = v * 10 + (uint64_t)(text[i] - '0');
  }
  if (v < 1 || v > SCRAM_MAX_ITERATIONS)
    return false;
  *iterations_r = (uint32_t)v;
  return true;
}

int scram_credential_parse(const char *text, struct scram_credential *out) {
  size_t prefix_len = strlen(SCRAM_CREDENTIAL_PREFIX);
  if (strncasecmp(text, SCRAM_CREDENTIAL_PREFIX, prefix_len) != 0)
    return -EINVAL;
  /* Exactly four comma-separated fields, none of them empty. */
  const char *field[4];
  size_t len[4];
  const char *p = text + prefix_len;
  for (size_t i = 0; i < 4; i++) {
    const char *comma = strchr(p, ',');
    if ((i < 3) != (comma != NULL))
      return -EINVAL;
    field[i] = p;
    len[i] = comma != NULL ? (size_t)(comma - p) : strlen(p);
    p = comma != NULL ? comma + 1 : p + len[i];
  }
  struct scram_credential c;
  memset(&c, 0, sizeof c);
  long salt_len = -EINVAL;
  int rc = -EINVAL;
  if (parse_iterations(field[0], len[0], &c.iterations) &&
      (salt_len = decode_field(field[1], len[1], c.salt, 1, SCRAM_SALT_MAX)) > 0 &&
      decode_field(field[2], len[2], c.stored_key, SCRAM_KEY_SIZE, SCRAM_KEY_SIZE) > 0 &&
      decode_field(field[3], len[3], c.server_key, SCRAM_KEY_SIZE, SCRAM_KEY_SIZE) > 0) {
    c.salt_len = (size_t)salt_len;
    *out = c;
    rc = 0;
  }
  explicit_bzero(&c, sizeof c);
  return rc;
}

int scram_credential_format(const struct scram_credential *cred, char *out,
                            size_t out_size) {
  if (cred->salt_len > SCRAM_SALT_MAX)
    return -EINVAL;
  char salt[BASE64_ENCODED_SIZE(SCRAM_SALT_MAX) + 1];
  char stored[BASE64_ENCODED_SIZE(SCRAM_KEY_SIZE) + 1];
  char server[BASE64_ENCODED_SIZE(SCRAM_KEY_SIZE) + 1];
  base64_encode(cred->salt, cred->salt_len, salt);
  base64_encode(cred->stored_key, SCRAM_KEY_SIZE, stored);
  base64_encode(cred->server_key, SCRAM_KEY_SIZE, server);
  int n = snprintf(out, out_size, "%s%u,%s,%s,%s", SCRAM_CREDENTIAL_PREFIX,
                   (unsigned)cred->iterations, salt, stored, server);
  explicit_bzero(stored, sizeof stored);
  explicit_bzero(server, sizeof server);
  if (n < 0)
    return -EINVAL;
  if ((size_t)n >= out_size) {
    if (out_size > 0) /* no half credential left behind */
      explicit_bzero(out, out_size);
    return -ENOSPC;
  }
  return n;
}

bool scram_credential_matches(const struct scram_credential *cred, const char *password) {
  struct scram_credential derived;
  bool same = false;
  if (scram_derive(password, strlen(password), cred->salt, cred->salt_len,
                   cred->iterations, &derived) == 0)
    same = gnutls_memcmp(derived.stored_key, cred->stored_key, SCRAM_KEY_SIZE) == 0;
  explicit_bzero(&derived, sizeof derived);
  return same;
}

/* ---- Message syntax (RFC 5802 section 7) -------------------------------- */

/* A cursor over one client message, which holds no NUL. */
struct cursor {
  const char *p;
  const char *end;
};

/* Takes the value of the attribute `name` ("n" takes "n=VALUE") up to the
 * next ',' or the end. Returns false when the attribute is not next. */
static bool take_attr(struct cursor *c, char name, const char **value_r, size_t *len_r) {
  if (c->end - c->p < 2 || c->p[0] != name || c->p[1] != '=')
    return false;
  const char *value = c->p + 2;
  const char *comma = memchr(value, ',', (size_t)(c->end - value));
  const char *stop = comma != NULL ? comma : c->end;
  *value_r = value;
  *len_r = (size_t)(stop - value);
  c->p = stop;
  return true;
}

/* Takes one ','. */
static bool take_comma(struct cursor *c) {
  if (c->p == c->end || *c->p != ',')
    return false;
  c->p++;
  return true;
}

/* An extension attribute the server does not know: ALPHA "=" 1*value-char.
 * Optional extensions are ignored (RFC 5802 section 5); the mandatory
 * one, "m", is refused by the callers before they get here. */
static bool take_extension(struct cursor *c) {
  const char *value;
  size_t len;
  char name = c->p < c->end ? *c->p : '\0';
  bool alpha = (name >= 'a' && name <= 'z') || (name >= 'A' && name <= 'Z');
  return alpha && take_attr(c, name, &value, &len) && len > 0;
}

/* RFC 5802 "printable": %x21-2B / %x2D-7E. */
static bool nonce_is_printable(const char *nonce, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (nonce[i] < 0x21 || nonce[i] > 0x7e || nonce[i] == ',')
      return false;
  return len > 0;
}

/* Decodes a saslname: "=2C" is ',' and "=3D" is '=', any other '=' is an
 * error, and the name is not empty. *name_r is malloc'ed. Returns 0,
 * -EINVAL or -ENOMEM. */
static int decode_saslname(const char *text, size_t len, char **name_r) {
  if (len == 0)
    return -EINVAL;
  char *name = malloc(len + 1);
  if (name == NULL)
    return -ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] != '=') {
      name[n++] = text[i];
    } else if (len - i >= 3 && text[i + 1] == '2' && text[i + 2] == 'C') {
      name[n++] = ',';
      i += 2;
    } else if (len - i >= 3 && text[i + 1] == '3' && text[i + 2] == 'D') {
      name[n++] = '=';
      i += 2;
    } else {
      free(name);
      return -EINVAL;
    }
  }
  name[n] = '\0';
  *name_r = name;
  return 0;
}

/* ---- The exchange ------------------------------------------------------- */

void scram_server_init(struct scram_server *x) {
  memset(x, 0, sizeof *x);
  x->stage = STAGE_CLIENT_FIRST;
}

void scram_server_free(struct scram_server *x) {
  free(x->user);
  free(x->client_first_bare);
  free(x->server_first);
  free(x->gs2_header);
  free(x->out);
  explicit_bzero(x, sizeof *x);
}

static enum scram_result fail(struct scram_server *x, enum scram_result result,
                              const char *error) {
  x->stage = STAGE_OVER;
  x->error = error;
  return result;
}

static enum scram_result fail_errno(struct scram_server *x, int rc,
                                    const char *malformed_error) {
  if (rc == -EINVAL)
    return fail(x, SCRAM_BAD_MESSAGE, malformed_error);
  return fail(x, SCRAM_INTERNAL_ERROR, "Temporary server failure.");
}

/* Checks what every client message must be: in order, short, no NUL. */
static enum scram_result check_message(struct scram_server *x, enum scram_stage expected,
                                       const char *msg, size_t len) {
  if (x->stage != (int)expected)
    return fail(x, SCRAM_BAD_MESSAGE, "Unexpected SCRAM message.");
  if (len > SCRAM_MESSAGE_MAX)
    return fail(x, SCRAM_BAD_MESSAGE, "SCRAM message too long.");
  if (memchr(msg, '\0', len) != NULL)
    return fail(x, SCRAM_BAD_MESSAGE, "Invalid SCRAM message.");
  return SCRAM_CONTINUE;
}

/* Replaces x->out with a copy of text. */
static int set_out(struct scram_server *x, const char *text) {
  char *copy = strdup(text);
  if (copy == NULL)
    return -ENOMEM;
  free(x->out);
  x->out = copy;
  x->out_len = strlen(copy);
  return 0;
}

enum scram_result scram_server_client_first(struct scram_server *x, const char *msg,
                                            size_t len) {
  static const char malformed[] = "Invalid SCRAM client-first message.";
  enum scram_result r = check_message(x, STAGE_CLIENT_FIRST, msg, len);
  if (r != SCRAM_CONTINUE)
    return r;
  struct cursor c = {msg, msg + len};

  /* gs2-header: "n" or "y" (the client does not use channel binding), an
   * optional authzid, and two commas. */
  if (len > 0 && msg[0] == 'p')
    return fail(x, SCRAM_UNSUPPORTED, "Channel binding is not supported.");
  if (len == 0 || (msg[0] != 'n' && msg[0] != 'y'))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  c.p++;
  if (!take_comma(&c))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  const char *authzid = NULL;
  size_t authzid_len = 0;
  if (c.p < c.end && *c.p != ',' && !take_attr(&c, 'a', &authzid, &authzid_len))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  if (!take_comma(&c))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  size_t gs2_len = (size_t)(c.p - msg);
  const char *bare = c.p;

  /* client-first-message-bare: [reserved-mext ","] username "," nonce
   * ["," extensions]. */
  if (c.end - c.p >= 2 && c.p[0] == 'm' && c.p[1] == '=')
    return fail(x, SCRAM_BAD_MESSAGE, "Unsupported SCRAM extension.");
  const char *username, *nonce;
  size_t username_len, nonce_len;
  if (!take_attr(&c, 'n', &username, &username_len) || !take_comma(&c) ||
      !take_attr(&c, 'r', &nonce, &nonce_len))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  while (c.p < c.end)
    if (!take_comma(&c) || !take_extension(&c))
      return fail(x, SCRAM_BAD_MESSAGE, malformed);
  if (nonce_len > CLIENT_NONCE_MAX || !nonce_is_printable(nonce, nonce_len))
    return fail(x, SCRAM_BAD_MESSAGE, "Invalid SCRAM nonce.");

  char *user = NULL, *authz = NULL;
  int rc = decode_saslname(username, username_len, &user);
  if (rc < 0)
    return fail_errno(x, rc, "Invalid user name in SCRAM message.");
  if (authzid != NULL) {
    rc = decode_saslname(authzid, authzid_len, &authz);
    bool same = rc == 0 && strcmp(authz, user) == 0;
    free(authz);
    if (!same) {
      free(user);
      if (rc < 0)
        return fail_errno(x, rc, "Invalid authorization identity in SCRAM message.");
      return fail(x, SCRAM_UNSUPPORTED, "Authorization identity must match the user.");
    }
  }
  x->user = user;
  x->gs2_header = strndup(msg, gs2_len);
  x->client_first_bare = strndup(bare, (size_t)(c.end - bare));
  if (x->gs2_header == NULL || x->client_first_bare == NULL)
    return fail_errno(x, -ENOMEM, NULL);
  memcpy(x->nonce, nonce, nonce_len);
  x->nonce[nonce_len] = '\0';
  x->stage = STAGE_NEED_CREDENTIAL;
  return SCRAM_CONTINUE;
}

enum scram_result scram_server_set_credential(struct scram_server *x,
                                              const struct scram_credential *cred,
                                              const char *server_nonce) {
  if (x->stage != STAGE_NEED_CREDENTIAL)
    return fail(x, SCRAM_BAD_MESSAGE, "Unexpected SCRAM message.");
  /* A credential with a bad salt or count is the caller's bug (parse and
   * derive never make one), not the client's. */
  if (cred->iterations < 1 || cred->iterations > SCRAM_MAX_ITERATIONS ||
      cred->salt_len < 1 || cred->salt_len > SCRAM_SALT_MAX)
    return fail(x, SCRAM_INTERNAL_ERROR, "Temporary server failure.");
  size_t client_len = strlen(x->nonce);
  if (server_nonce != NULL) {
    size_t server_len = strlen(server_nonce);
    if (!nonce_is_printable(server_nonce, server_len) ||
        server_len >= sizeof x->nonce - client_len)
      return fail(x, SCRAM_INTERNAL_ERROR, "Temporary server failure.");
    memcpy(x->nonce + client_len, server_nonce, server_len + 1);
  } else {
    unsigned char random[SERVER_NONCE_BYTES];
    if (gnutls_rnd(GNUTLS_RND_NONCE, random, sizeof random) < 0)
      return fail(x, SCRAM_INTERNAL_ERROR, "Temporary server failure.");
    base64_encode(random, sizeof random, x->nonce + client_len);
  }
  x->cred = *cred;

  char salt[BASE64_ENCODED_SIZE(SCRAM_SALT_MAX) + 1];
  base64_encode(cred->salt, cred->salt_len, salt);
  int n = snprintf(NULL, 0, "r=%s,s=%s,i=%u", x->nonce, salt, (unsigned)cred->iterations);
  x->server_first = malloc((size_t)n + 1);
  if (x->server_first == NULL)
    return fail_errno(x, -ENOMEM, NULL);
  snprintf(x->server_first, (size_t)n + 1, "r=%s,s=%s,i=%u", x->nonce, salt,
           (unsigned)cred->iterations);
  if (set_out(x, x->server_first) < 0)
    return fail_errno(x, -ENOMEM, NULL);
  x->stage = STAGE_CLIENT_FINAL;
  return SCRAM_CONTINUE;
}

/* Checks the ClientProof against the StoredKey and, when it is right,
 * computes the ServerSignature (RFC 5802 section 3). Returns SCRAM_DONE,
 * SCRAM_BAD_PROOF or SCRAM_INTERNAL_ERROR. */
static enum scram_result verify_proof(const struct scram_server *x,
                                      const char *auth_message, size_t auth_len,
                                      const unsigned char proof[SCRAM_KEY_SIZE],
                                      unsigned char server_signature[SCRAM_KEY_SIZE]) {
  unsigned char signature[SCRAM_KEY_SIZE], client_key[SCRAM_KEY_SIZE];
  unsigned char stored_key[SCRAM_KEY_SIZE];
  enum scram_result r = SCRAM_INTERNAL_ERROR;
  if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, x->cred.stored_key, SCRAM_KEY_SIZE,
                       auth_message, auth_len, signature) >= 0) {
    for (size_t i = 0; i < SCRAM_KEY_SIZE; i++)
      client_key[i] = proof[i] ^ signature[i];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, client_key, SCRAM_KEY_SIZE, stored_key) >= 0)
      r = gnutls_memcmp(stored_key, x->cred.stored_key, SCRAM_KEY_SIZE) == 0
              ? SCRAM_DONE
              : SCRAM_BAD_PROOF;
  }
  if (r == SCRAM_DONE &&
      gnutls_hmac_fast(GNUTLS_MAC_SHA256, x->cred.server_key, SCRAM_KEY_SIZE,
                       auth_message, auth_len, server_signature) < 0)
    r = SCRAM_INTERNAL_ERROR;
  explicit_bzero(signature, sizeof signature);
  explicit_bzero(client_key, sizeof client_key);
  explicit_bzero(stored_key, sizeof stored_key);
  return r;
}

enum scram_result scram_server_client_final(struct scram_server *x, const char *msg,
                                            size_t len) {
  static const char malformed[] = "Invalid SCRAM client-final message.";
  enum scram_result r = check_message(x, STAGE_CLIENT_FINAL, msg, len);
  if (r != SCRAM_CONTINUE)
    return r;
  struct cursor c = {msg, msg + len};

  /* client-final-message: "c=" base64(gs2-header) "," "r=" nonce
   * ["," extensions] "," "p=" proof. Without channel binding the c= data
   * is the gs2 header itself, so the client cannot drop an authzid or
   * switch "y" for "n" between its two messages. */
  const char *binding, *nonce, *proof_text = NULL;
  size_t binding_len, nonce_len, proof_len = 0;
  if (!take_attr(&c, 'c', &binding, &binding_len) || !take_comma(&c) ||
      !take_attr(&c, 'r', &nonce, &nonce_len))
    return fail(x, SCRAM_BAD_MESSAGE, malformed);
  const char *without_proof_end = c.p;
  while (proof_text == NULL) {
    without_proof_end = c.p;
    if (!take_comma(&c))
      return fail(x, SCRAM_BAD_MESSAGE, malformed);
    if (take_attr(&c, 'p', &proof_text, &proof_len))
      break;
    if (!take_extension(&c))
      return fail(x, SCRAM_BAD_MESSAGE, malformed);
  }
  if (c.p != c.end) /* the proof is the last attribute */
    return fail(x, SCRAM_BAD_MESSAGE, malformed);

  size_t gs2_len = strlen(x->gs2_header);
  char *expected = malloc(BASE64_ENCODED_SIZE(gs2_len) + 1);
  if (expected == NULL)
    return fail_errno(x, -ENOMEM, NULL);
  size_t expected_len = base64_encode(x->gs2_header, gs2_len, expected);
  bool binding_ok =
      binding_len == expected_len && memcmp(binding, expected, expected_len) == 0;
  free(expected);
  if (!binding_ok)
    return fail(x, SCRAM_BAD_MESSAGE, "SCRAM channel binding data does not match.");
  if (nonce_len != strlen(x->nonce) || memcmp(nonce, x->nonce, nonce_len) != 0)
    return fail(x, SCRAM_BAD_MESSAGE, "SCRAM nonce does not match.");
  unsigned char proof[SCRAM_KEY_SIZE];
  if (decode_field(proof_text, proof_len, proof, SCRAM_KEY_SIZE, SCRAM_KEY_SIZE) < 0)
    return fail(x, SCRAM_BAD_MESSAGE, malformed);

  /* AuthMessage = client-first-message-bare "," server-first-message ","
   *               client-final-message-without-proof */
  size_t bare_len = strlen(x->client_first_bare);
  size_t first_len = strlen(x->server_first);
  size_t final_len = (size_t)(without_proof_end - msg);
  size_t auth_len = bare_len + 1 + first_len + 1 + final_len;
  char *auth = malloc(auth_len);
  if (auth == NULL)
    return fail_errno(x, -ENOMEM, NULL);
  memcpy(auth, x->client_first_bare, bare_len);
  auth[bare_len] = ',';
  memcpy(auth + bare_len + 1, x->server_first, first_len);
  auth[bare_len + 1 + first_len] = ',';
  memcpy(auth + bare_len + 1 + first_len + 1, msg, final_len);

  unsigned char server_signature[SCRAM_KEY_SIZE];
  r = verify_proof(x, auth, auth_len, proof, server_signature);
  free(auth);
  explicit_bzero(proof, sizeof proof);
  if (r == SCRAM_BAD_PROOF)
    return fail(x, r, "Authentication failed.");
  if (r != SCRAM_DONE)
    return fail_errno(x, -EIO, NULL);

  char final[2 + BASE64_ENCODED_SIZE(SCRAM_KEY_SIZE) + 1] = "v=";
  base64_encode(server_signature, sizeof server_signature, final + 2);
  if (set_out(x, final) < 0)
    return fail_errno(x, -ENOMEM, NULL);
  x->stage = STAGE_OVER;
  return SCRAM_DONE;
}
