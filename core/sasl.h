/*
 * SASL mechanisms for POP3 AUTH (RFC 5034): PLAIN (RFC 4616), LOGIN (the
 * de-facto draft) and SCRAM-SHA-256 (RFC 7677). Socket-free and
 * chain-free: the session hands in each client line and acts on what comes
 * back (send a challenge, verify a password, fetch a credential, succeed,
 * fail). Lines in and challenges out are base64, as on the wire.
 */
#ifndef POPKIT_CORE_SASL_H
#define POPKIT_CORE_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "scram.h"

enum sasl_mech { SASL_PLAIN, SASL_LOGIN, SASL_SCRAM_SHA_256, SASL_MECH_COUNT };

enum sasl_step {
  /* Send "+ " x->challenge and pass the client's next line to
   * sasl_continue(). */
  SASL_STEP_CHALLENGE,
  /* PLAIN, LOGIN: x->user and x->password are ready; verify them. */
  SASL_STEP_VERIFY_PLAIN,
  /* SCRAM: fetch the stored credential of x->user and pass it to
   * sasl_credential(). */
  SASL_STEP_NEED_CREDENTIAL,
  /* SCRAM: the proof is good; x->user is authenticated. (The server's
   * final message was already sent as the last challenge, RFC 5034
   * section 4: additional data with success goes in a challenge answered
   * by an empty line.) */
  SASL_STEP_SUCCESS,
  /* The exchange is over without success; x->error says why in words fit
   * for the client ("Invalid base64 data.") and x->auth_failure tells a
   * failed authentication (wrong proof: delayed, logged for fail2ban) from
   * a protocol error. */
  SASL_STEP_FAILED,
  /* The client sent "*". */
  SASL_STEP_CANCELED
};

struct sasl {
  enum sasl_mech mech;
  int stage;
  char *user;      /* authentication identity */
  char *password;  /* PLAIN, LOGIN; wiped by sasl_free */
  char *challenge; /* base64 text to send after "+ " ("" for an empty one) */
  const char *error;
  bool auth_failure;
  /* With SASL_STEP_FAILED: the server failed (out of memory, a crypto
   * error), not the client; answer -ERR [SYS/TEMP]. */
  bool temp_failure;
  /* SCRAM: the user has no usable credential and the exchange runs on
   * decoy keys, to fail at the proof like a wrong password. */
  bool decoy;
  struct scram_server scram;
};

/* Case-insensitive mechanism name; false for an unknown one. */
bool sasl_mech_lookup(const char *name, enum sasl_mech *mech_r);
const char *sasl_mech_name(enum sasl_mech mech);
/* PLAIN and LOGIN reveal the password to anyone who sees the connection,
 * so the plaintext policy applies to them. */
bool sasl_mech_is_plaintext(enum sasl_mech mech);

/* Starts an exchange; x needs no preparation, and every sasl_start is
 * followed by one sasl_free. initial_response is the base64 text after the
 * mechanism name on the AUTH line (RFC 4959 style; "=" is an empty
 * response), or NULL when there was none. */
enum sasl_step sasl_start(struct sasl *x, enum sasl_mech mech,
                          const char *initial_response);
/* A client line while a challenge is outstanding: base64, "" for an empty
 * response, or "*" to cancel. */
enum sasl_step sasl_continue(struct sasl *x, const char *line);
/* SCRAM: the stored credential of x->user ("{SCRAM-SHA-256}..." or
 * "{PLAIN}..."; any other scheme, or NULL for none, fails the exchange as
 * an authentication failure). */
enum sasl_step sasl_credential(struct sasl *x, const char *credential);

void sasl_free(struct sasl *x);

#endif
