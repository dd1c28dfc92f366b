/*
 * A POP3 session (RFC 1939, 2449): the state machine between the bytes of
 * a connection and the auth and store chains. It knows nothing of sockets:
 * the connection feeds it input and drains its output through the small
 * table in struct session_io, which is what lets the unit tests drive a
 * session without a network.
 *
 * One command is in flight at a time. While a backend call is pending, or
 * while queued output is past the high-water mark, the session parses
 * nothing; pipelined commands wait in the line buffer.
 */
#ifndef POPKIT_CORE_POP3_SESSION_H
#define POPKIT_CORE_POP3_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "config.h"
#include "encoder.h"
#include "line_parser.h"
#include "login_guard.h"
#include "outbuf.h"
#include "sasl.h"

enum session_state {
  SESSION_TLS_WAIT,      /* implicit TLS or STLS: the handshake runs */
  SESSION_AUTHORIZATION, /* greeted; waiting for USER/PASS, APOP, AUTH, CAPA... */
  SESSION_SASL,          /* AUTH: a challenge is out, the client's line is due */
  SESSION_AUTH_WAIT,     /* a login is with the auth chain, or waits out the
                            address's penalty */
  SESSION_OPEN_WAIT,     /* authenticated; the store is locking and listing */
  SESSION_TRANSACTION,   /* mailbox open; reading commands */
  SESSION_SENDING,       /* a multi-line reply is being produced */
  SESSION_EXPUNGE_WAIT,  /* UPDATE: the store is deleting, QUIT waits */
  SESSION_CLOSE_WAIT,    /* the store is unlocking the mailbox */
  SESSION_LOGOUT         /* final reply queued; the connection closes */
};

/* What a multi-line reply in SESSION_SENDING is producing. */
enum session_sender {
  SEND_NONE,
  SEND_MESSAGE, /* RETR or TOP: chunks from the store through the encoder */
  SEND_LIST,    /* LIST without argument */
  SEND_UIDL     /* UIDL without argument */
};

/* What the connection does for its session. */
struct session_io {
  /* Output was appended: start writing it. */
  void (*flush)(void *ctx);
  /* Stop / restart reading from the socket (the line buffer is full). */
  void (*pause_input)(void *ctx);
  void (*resume_input)(void *ctx);
  /* Write what is queued, then close the connection. The connection later
   * calls session_finish(). */
  void (*close)(void *ctx);
  /* The session holds nothing any more (no backend call, mailbox closed):
   * the connection may free it. Called once, from or after
   * session_finish(). */
  void (*release)(void *ctx);
  /* STLS was answered: send what is queued in clear, then run the TLS
   * handshake; session_tls_ready() follows. */
  void (*start_tls)(void *ctx);
  /* Call session_wait_over() in ms milliseconds (login penalties). */
  void (*wait)(void *ctx, uint64_t ms);
};

/* What a session waits for in SESSION_AUTH_WAIT when no backend call is
 * pending. */
enum session_waiting {
  WAIT_NONE,
  WAIT_BEFORE_ATTEMPT, /* the address's penalty runs; then the login starts */
  WAIT_BEFORE_REPLY    /* a failed login's -ERR is held for its penalty */
};

/* What sessions of one worker share. */
struct session_env {
  const struct config *config;
  struct chain *chain;
  struct login_guard *guard; /* shared by every worker */
};

struct session {
  enum session_state state;
  uint64_t id;
  const struct session_env *env;
  const struct session_io *io;
  void *io_ctx;

  char client_ip[INET6_ADDRSTRLEN];
  struct guard_addr addr; /* the client's address as the login guard sees it */
  bool loopback;          /* the client connected over a loopback address */
  bool secured;           /* TLS is on */
  bool tls_offered;       /* a STARTTLS listener, TLS not started yet */

  struct line_parser parser;
  struct outbuf out;
  unsigned bad_commands; /* consecutive -ERR replies */

  char *user;              /* from USER, and after login the user logged in */
  char user_log[128];      /* user, escaped for log lines */
  char apop_timestamp[96]; /* "<...@host>" when APOP is offered, else "" */

  /* The login in progress (pop3_login.c). */
  enum popkit_request_kind login_kind;
  char *login_secret; /* password or APOP digest; wiped when freed */
  enum session_waiting waiting;
  char delayed_reply[160]; /* the -ERR a penalty holds back */
  struct sasl *sasl;       /* AUTH in progress */
  char *login_identity;    /* SCRAM: the mailbox the chain named */
  char *user_counted;      /* the identity counted in the login guard */

  struct core_request *pending; /* the backend call in flight, if any */
  void *mailbox;                /* the store's handle while open */
  struct listing listing;       /* snapshot taken at login */
  uint64_t live_count;          /* messages not marked deleted */
  uint64_t live_octets;

  enum session_sender sender;
  uint64_t send_index; /* message being sent, or LIST/UIDL cursor */
  uint64_t send_offset;
  struct encoder encoder;
  char *raw; /* chunk buffer for RETR, only while sending */
  /* RETR and TOP hold their +OK until the store has read the first chunk,
   * so a store that cannot read (its database is down) gets an -ERR and
   * the session goes on, instead of a reply cut short. */
  bool reply_held;
  bool send_top; /* the held reply is TOP's */

  uint64_t retrieved, retrieved_octets, expunged; /* for the log */
  const char *end_reason;                         /* why the session ended, for the log */
  char final_reply[96]; /* QUIT's answer, sent once the mailbox is unlocked */
  bool input_closed;    /* the client sent EOF */
  bool finishing;       /* the connection is gone or going */
  bool closing;         /* io->close was called */
  bool released;
};

/* Sets up a session; returns 0 or -ENOMEM. */
int session_init(struct session *s, const struct session_env *env,
                 const struct session_io *io, void *io_ctx, uint64_t id,
                 const struct sockaddr *peer);
/* Sends the greeting. */
void session_start(struct session *s);

/* Input: bytes go into the space returned by session_input_space(), then
 * session_input_received() says how many arrived. */
char *session_input_space(struct session *s, size_t *size_r);
void session_input_received(struct session *s, size_t n);

/* The client will send nothing more (it shut down its side). Commands
 * already received still run; the session ends when it would wait for
 * more. */
void session_input_eof(struct session *s);

/* Queued output dropped below the low-water mark. */
void session_output_drained(struct session *s);

/* The inactivity timer fired (see session_timeout_ms). */
void session_timed_out(struct session *s);
/* Milliseconds of client silence allowed in the current state; 0 while the
 * session waits on a backend (a slow backend is not the client's fault). */
uint64_t session_timeout_ms(const struct session *s);

/* The server is shutting down and the grace period is over. */
void session_shutdown(struct session *s);

/* The TLS handshake is done (implicit TLS or after STLS); description
 * names the protocol and cipher for the log. After STLS the session
 * forgets what the client said in clear (RFC 2595 section 4). */
void session_tls_ready(struct session *s, const char *description);

/* The time asked for with io->wait has passed (pop3_login.c: only logins
 * wait). */
void session_wait_over(struct session *s);

/* The connection is closed: cancel, unlock, and io->release when done. */
void session_finish(struct session *s);
void session_free(struct session *s);

/* Used by the command handlers (pop3_commands.c). */
void session_reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void session_error(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void session_logout(struct session *s, const char *reason);
void session_set_user(struct session *s, const char *user);
void session_pump(struct session *s);
void session_maybe_release(struct session *s);
void session_close_mailbox(struct session *s);
bool session_plaintext_allowed(const struct session *s);
void session_begin_sending(struct session *s, enum session_sender what, uint64_t index,
                           bool top, uint64_t top_lines);
void session_begin_update(struct session *s);
void session_log(const struct session *s, enum popkit_log_level level, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));

/* pop3_commands.c: runs one command line in the current state. */
void pop3_dispatch(struct session *s, char *line, size_t len);
/* pop3_commands.c: the CAPA reply. */
void pop3_write_capa(struct session *s);
/* pop3_commands.c: -ERR for a plaintext login where it is not allowed. */
void pop3_refuse_plaintext(struct session *s);

/* pop3_login.c: every way in (USER/PASS, APOP, AUTH) ends in these. */
/* Checks user and secret (a password for VERIFY_PLAIN, the client's digest
 * for APOP's GET_CREDENTIAL, NULL for SCRAM's GET_CREDENTIAL), after the
 * address's penalty if it has one. */
void login_begin(struct session *s, enum popkit_request_kind kind, const char *user,
                 const char *secret);
/* The identity is authenticated: count the session and open the mailbox. */
void login_succeeded(struct session *s, const char *identity);
/* A login failed: result FAIL is the client's (penalised, logged for
 * fail2ban), TEMPFAIL and PERMFAIL are the backend's. */
void login_failed(struct session *s, enum popkit_result result, const char *log_text);
/* Back to AUTHORIZATION: the login in progress is dropped (secret wiped,
 * SASL exchange ended, user forgotten). */
void login_reset(struct session *s);
/* Frees the login state (secret wiped, SASL exchange, guard count). */
void login_free(struct session *s);

/* pop3_auth.c: the AUTH command (RFC 5034) and its exchange. */
void pop3_auth_command(struct session *s, char *args);
/* A client line while s->state is SESSION_SASL; too_long when the line
 * passed the limit (the exchange is aborted). */
void pop3_auth_line(struct session *s, char *line, bool too_long);
/* SCRAM: the chain's answer to the credential request. */
void pop3_auth_credential(struct session *s, const char *credential,
                          const char *identity);
/* The mechanisms this connection may use now, for CAPA and AUTH alone. */
bool pop3_auth_mech_offered(const struct session *s, enum sasl_mech mech);

#endif
