/*
 * popkit module ABI.
 *
 * A module is a shared object that exports one const data symbol,
 * `popkit_module`, of type struct popkit_module_descriptor. popkitd reads
 * the leading fields of that descriptor straight from the file before it
 * runs any code of the module, and accepts the module only when:
 *
 *   - magic is POPKIT_MODULE_MAGIC,
 *   - abi_major equals the host's POPKIT_ABI_MAJOR,
 *   - abi_minor is at most the host's POPKIT_ABI_MINOR,
 *   - struct_size is at least POPKIT_MODULE_DESCRIPTOR_V1_SIZE.
 *
 * Rules for changing this file (as Apache's ap_mmn.h and Varnish's vrt.h
 * keep them):
 *   - Adding a field at the end of a struct that carries struct_size, adding
 *     a function at the end of struct popkit_host, or adding an enum value is
 *     a minor bump. Old modules keep working with a newer popkitd.
 *   - Anything else (reordering, removing, changing a type or a meaning) is
 *     a major bump, and every module must be rebuilt.
 *   - Every bump adds one line to the changelog below.
 *
 * ABI changelog:
 *   1.0  first ABI: descriptor, host table, auth and store roles.
 *   1.1  host->password_verify: every password scheme popkitd reads.
 *   1.2  decorators: POPKIT_MODULE_DECORATOR, host->pass_to_next,
 *        host->next_request and the host functions that read outputs.
 *   1.3  store->read_nowait: a blocking store's READ tried on the loop thread.
 *
 * Threads: every function of a module is called on the thread of the worker
 * that created the instance, unless the module sets POPKIT_MODULE_BLOCKING,
 * in which case operations (not create/destroy) run on libuv's thread pool
 * and may run concurrently for different sessions of one instance (a
 * blocking store's read_nowait is the one exception: it runs on the loop
 * thread). Every function of struct popkit_host may be called from any
 * thread, except pass_to_next, which belongs to the loop thread.
 */
#ifndef POPKIT_MODULE_H
#define POPKIT_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POPKIT_MODULE_MAGIC 0x444d4b50u  /* "PKMD" in little-endian bytes */
#define POPKIT_REQUEST_MAGIC 0x51524b50u /* "PKRQ" */
#define POPKIT_ABI_MAJOR 1
#define POPKIT_ABI_MINOR 3

/* The name of the data symbol every module exports. */
#define POPKIT_MODULE_SYMBOL "popkit_module"

#define POPKIT_STRINGIFY_(x) #x
#define POPKIT_STRINGIFY(x) POPKIT_STRINGIFY_(x)

/* A human-readable note of what the module was built against; the loader
 * prints it when it refuses a module, so an operator sees at once which
 * SDK a stray .so came from. */
#define POPKIT_BUILD_SIGNATURE                                                           \
  "popkit-sdk abi " POPKIT_STRINGIFY(POPKIT_ABI_MAJOR) "." POPKIT_STRINGIFY(             \
      POPKIT_ABI_MINOR) " " __DATE__

#if defined(__GNUC__)
#define POPKIT_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define POPKIT_MODULE_EXPORT
#endif

/* Outcome of every operation. The text passed with a result goes to the
 * log, never to the client. */
enum popkit_result {
  POPKIT_OK = 0,        /* done */
  POPKIT_FAIL = 1,      /* wrong password or credential */
  POPKIT_NOT_FOUND = 2, /* no such user: an auth chain moves on */
  POPKIT_TEMPFAIL = 3,  /* backend unreachable or busy: -ERR [SYS/TEMP] */
  POPKIT_PERMFAIL = 4,  /* broken mailbox or permissions: -ERR [SYS/PERM] */
  POPKIT_IN_USE = 5     /* mailbox locked by another session: [IN-USE] */
};

/* What host->password_verify says of a password. */
enum popkit_password_check {
  POPKIT_PASSWORD_MATCH = 0,    /* the password is right */
  POPKIT_PASSWORD_MISMATCH = 1, /* the password is wrong */
  POPKIT_PASSWORD_UNUSABLE = 2  /* no password can match: a locked entry
                                   ("!", "*") or a scheme popkitd does not know */
};

/* Roles a module can play; a module may set both bits. */
#define POPKIT_ROLE_AUTH (1u << 0)
#define POPKIT_ROLE_STORE (1u << 1)

/* The module can only block: popkitd runs each of its operations on the
 * libuv thread pool, and the operation must have called
 * popkit_host.complete by the time it returns. */
#define POPKIT_MODULE_BLOCKING (1u << 0)

/* The module wraps another module of the same role (ABI 1.2): its config
 * object must have a "next" module object, whose instance popkitd creates
 * and hands each request on to when the decorator calls
 * popkit_host.pass_to_next. A decorator cannot be BLOCKING. */
#define POPKIT_MODULE_DECORATOR (1u << 1)

/* Log levels for popkit_host.log. */
enum popkit_log_level {
  POPKIT_LOG_DEBUG = 0,
  POPKIT_LOG_INFO = 1,
  POPKIT_LOG_WARNING = 2,
  POPKIT_LOG_ERROR = 3
};

/* ---- Configuration ------------------------------------------------------ */

/* The module's own JSON object from the config, opaque to the module. */
struct popkit_config_object;

enum popkit_config_type {
  POPKIT_CONFIG_STRING = 1,
  POPKIT_CONFIG_INTEGER = 2,
  POPKIT_CONFIG_BOOLEAN = 3,
  POPKIT_CONFIG_PATH = 4 /* a string; relative paths resolve against the
                            config file's directory */
};

/* One key a module accepts. A module lists its keys in its descriptor,
 * ending with an entry whose name is NULL; popkitd checks types, required
 * keys and unknown keys (naming the JSON path) before create is called.
 * "module" is always accepted. */
struct popkit_config_key {
  const char *name;
  uint32_t type;     /* enum popkit_config_type */
  uint32_t required; /* nonzero: the key must be present */
};

/* ---- Requests ----------------------------------------------------------- */

enum popkit_request_kind {
  POPKIT_REQ_AUTH_LOOKUP = 1,
  POPKIT_REQ_AUTH_VERIFY_PLAIN = 2,
  POPKIT_REQ_AUTH_GET_CREDENTIAL = 3,
  POPKIT_REQ_STORE_OPEN = 16,
  POPKIT_REQ_STORE_READ = 17,
  POPKIT_REQ_STORE_EXPUNGE = 18,
  POPKIT_REQ_STORE_CLOSE = 19,
  POPKIT_REQ_STORE_APPEND_BEGIN = 20,
  POPKIT_REQ_STORE_APPEND_WRITE = 21,
  POPKIT_REQ_STORE_APPEND_FINISH = 22
};

/* The head of every request. A request is owned by popkitd: it stays valid
 * from the call that hands it to the module until the module calls
 * popkit_host.complete on it, and must not be touched after that. */
struct popkit_request {
  uint32_t magic;      /* POPKIT_REQUEST_MAGIC, checked on completion */
  uint32_t kind;       /* enum popkit_request_kind */
  void *module_data;   /* free for the module while the request is its own */
  uint64_t session_id; /* the connection id, for log lines; 0 outside one */
};

/* Auth requests. Outputs go through popkit_host.auth_set_identity and
 * popkit_host.auth_set_credential, which copy their argument. */
struct popkit_auth_request {
  struct popkit_request base;
  const char *user;           /* as the client sent it; never NULL, may hold
                                 any byte but NUL */
  const char *password;       /* VERIFY_PLAIN: the plaintext; NULL otherwise */
  const char *client_address; /* "" when there is no client */
};

/* Store requests share one struct; each kind names the fields it uses. */
struct popkit_store_request {
  struct popkit_request base;
  /* The module's handle: set by the module on OPEN (an open, locked mailbox)
   * and APPEND_BEGIN (a delivery in progress); passed back on the calls
   * that follow. */
  void *mailbox;
  /* OPEN, APPEND_BEGIN: the mailbox identity the auth chain settled on. */
  const char *identity;
  /* READ: message `index` (0-based, in listing order) from raw byte
   * `offset`; the module stores up to `buffer_size` raw bytes into `buffer`
   * and sets `length`. A length of 0 means the message has ended. */
  uint64_t index;
  uint64_t offset;
  char *buffer;
  size_t buffer_size;
  size_t length;
  /* EXPUNGE: delete these messages (0-based indexes of the listing) all or
   * none; complete with POPKIT_OK only once the deletion is durable. */
  const uint64_t *indexes;
  size_t index_count;
  /* APPEND_WRITE: the next raw bytes of the message. */
  const char *data;
  size_t data_size;
  /* APPEND_FINISH: nonzero to make the message durable and visible, zero to
   * throw it away. */
  int commit;
};

/* What a decorator hears when the next module has finished a request it
 * passed on (popkit_host.pass_to_next): the result and log text of next
 * (the text is valid during the call only). The request's outputs are as
 * next left them, and the decorator may read and change them; it then
 * completes the request with popkit_host.complete, now or later, with
 * next's result or another. Runs on the loop thread. */
typedef void (*popkit_next_done)(void *instance, struct popkit_request *req,
                                 enum popkit_result result, const char *log_text);

/* ---- The host table ----------------------------------------------------- */

/* Opaque handle that names the module instance in log lines. */
struct popkit_module_handle;

struct popkit_host {
  /* Size of this struct as the host built it; functions are only ever
   * appended, so a module checks struct_size before using a newer one. */
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;

  /* Writes one log line, prefixed with the module instance and, when req
   * is not NULL, the session. Never pass a password. */
  void (*log)(struct popkit_module_handle *self, const struct popkit_request *req,
              enum popkit_log_level level, const char *fmt, ...)
      __attribute__((format(printf, 4, 5)));

  /* Finishes a request. log_text (may be NULL) explains a result other
   * than POPKIT_OK in the log; it is copied before complete returns, so a
   * stack buffer will do. */
  void (*complete)(struct popkit_request *req, enum popkit_result result,
                   const char *log_text);

  /* Auth outputs. identity is the mailbox name the store opens (defaults to
   * the user name); credential is the stored secret ("{PLAIN}...",
   * "{SCRAM-SHA-256}...", or a crypt(3) string). Return 0 or -ENOMEM. */
  int (*auth_set_identity)(struct popkit_auth_request *req, const char *identity);
  int (*auth_set_credential)(struct popkit_auth_request *req, const char *credential);

  /* OPEN output: appends one message to the listing. uid must be 1 to 70
   * characters in 0x21..0x7e (RFC 1939 UIDL); size is the octet count of
   * the message with every line ending as CRLF (see popkit/crlf.h).
   * Returns 0, -EINVAL for a bad uid, or -ENOMEM. */
  int (*store_add_message)(struct popkit_store_request *req, const char *uid,
                           uint64_t size);

  /* Config access for create(). Types were checked against the module's
   * config_keys before create runs. config_string returns NULL for an absent
   * key; config_path returns an absolute path (relative ones resolve against
   * the config file's directory) in a string that lives as long as the
   * config. */
  const char *(*config_string)(const struct popkit_config_object *cfg, const char *key);
  const char *(*config_path)(const struct popkit_config_object *cfg, const char *key);
  int64_t (*config_integer)(const struct popkit_config_object *cfg, const char *key,
                            int64_t fallback);
  int (*config_boolean)(const struct popkit_config_object *cfg, const char *key,
                        int fallback);

  /* ABI 1.1. Checks a plaintext password against a stored secret in any
   * scheme popkitd reads: crypt(3) strings ("$y$", "$2b$", "$6$", "$5$",
   * bare or as {CRYPT}, {SHA512-CRYPT}...), {PLAIN} and {SCRAM-SHA-256}.
   * Takes the same time however much of the password is right. Returns an
   * enum popkit_password_check value, or -ENOMEM. May cost milliseconds
   * (that is the point of a slow hash): call it from a blocking module. */
  int (*password_verify)(const char *stored, const char *password);

  /* ABI 1.2, for decorators. Hands req, as it is, to the next module,
   * which runs the same operation on it; when next completes, done runs
   * instead of the request's completion. Call it on the loop thread, once
   * per step of a request that is the decorator's own, and touch nothing
   * of the request until done runs. req->module_data is the decorator's
   * again when done runs. A store request's mailbox is handed over as it
   * is: a decorator that wraps next's mailbox handles (OPEN, APPEND_BEGIN)
   * puts next's handle in req->mailbox before passing, and its own back in
   * done. */
  void (*pass_to_next)(struct popkit_request *req, popkit_next_done done);
  /* The outputs of an auth request so far: the identity and the
   * credential (NULL when none was set). */
  const char *(*auth_identity)(const struct popkit_auth_request *req);
  const char *(*auth_credential)(const struct popkit_auth_request *req);
  /* The listing of an OPEN so far: the number of messages, and one of
   * them (0 or -ERANGE). The strings live as long as the request. */
  size_t (*store_message_count)(const struct popkit_store_request *req);
  int (*store_message)(const struct popkit_store_request *req, size_t index,
                       const char **uid_r, uint64_t *size_r);
  /* A request of the decorator's own for its next module, so it can run
   * an operation the client did not ask for (open a mailbox late, close
   * one it will not use): of `kind`, for the session of req (a request the
   * decorator holds), its fields zeroed. The decorator fills the fields
   * (strings stay its own), hands it on with pass_to_next, reads next's
   * outputs in done, and ends it with complete (any result), which frees
   * it. NULL on allocation failure. */
  struct popkit_request *(*next_request)(struct popkit_request *req, uint32_t kind);
};

/* Whether a host table reaches far enough to hold member: a module built
 * for a newer minor ABI checks this in create() before it calls a host
 * function that an older popkitd may not have. */
#define POPKIT_HOST_HAS(host, member)                                                    \
  ((host)->struct_size >= offsetof(struct popkit_host, member) + sizeof((host)->member))

/* ---- Roles -------------------------------------------------------------- */

/* Every operation finishes by calling host->complete on its request, once,
 * on the worker's loop thread (or, for a blocking module, before returning),
 * possibly before the operation itself returns. */
struct popkit_auth_ops {
  uint32_t struct_size;
  /* Does the user exist? OK (optionally with an identity) or NOT_FOUND. */
  void (*lookup)(void *instance, struct popkit_auth_request *req);
  /* Checks req->password: OK, FAIL, NOT_FOUND or TEMPFAIL. An unknown user
   * should cost the same time as a known one. */
  void (*verify_plain)(void *instance, struct popkit_auth_request *req);
  /* Hands back the stored credential so popkitd can run challenge
   * mechanisms (APOP, SCRAM). NULL when the backend cannot: popkitd then
   * calls lookup instead, and a user the module knows gets FAIL, so a
   * later module's secret cannot open that user's account. */
  void (*get_credential)(void *instance, struct popkit_auth_request *req);
};

struct popkit_store_ops {
  uint32_t struct_size;
  /* Locks the mailbox named by req->identity and lists it with
   * host->store_add_message; sets req->mailbox. IN_USE when another session
   * holds the lock. */
  void (*open)(void *instance, struct popkit_store_request *req);
  /* Reads raw bytes of one message (see struct popkit_store_request). */
  void (*read)(void *instance, struct popkit_store_request *req);
  /* Deletes req->indexes atomically and durably. */
  void (*expunge)(void *instance, struct popkit_store_request *req);
  /* Unlocks and frees req->mailbox. Must complete, even when the backend is
   * gone; popkitd calls it exactly once per successful open. */
  void (*close)(void *instance, struct popkit_store_request *req);
  /* Delivery: begin (req->identity), write chunks, finish (req->commit).
   * append_finish is called exactly once per successful append_begin. */
  void (*append_begin)(void *instance, struct popkit_store_request *req);
  void (*append_write)(void *instance, struct popkit_store_request *req);
  void (*append_finish)(void *instance, struct popkit_store_request *req);
  /* ABI 1.3, optional, for a BLOCKING store. A READ that must not block,
   * tried on the loop thread before read goes to the thread pool: it either
   * completes req as read would and returns 1, or returns 0 without
   * completing it (the bytes are not in memory), and popkitd then runs read
   * on the pool. A file store can serve what the page cache holds with
   * preadv2(RWF_NOWAIT). Each pool trip costs two thread switches, which a
   * large RETR pays once per chunk; this is how it avoids them. It runs
   * while other sessions' operations of the instance run on the pool. */
  int (*read_nowait)(void *instance, struct popkit_store_request *req);
};

/* ---- Creation ----------------------------------------------------------- */

struct popkit_module_args {
  uint32_t struct_size;
  uint32_t worker_id; /* 0..workers-1; popkit-deliver uses 0 */
  const struct popkit_host *host;
  struct popkit_module_handle *self; /* for host->log */
  const struct popkit_config_object *config;
  struct uv_loop_s *loop; /* the worker's libuv loop */
};

/* The descriptor. The first six fields never change in any ABI. */
struct popkit_module_descriptor {
  uint32_t magic;              /* POPKIT_MODULE_MAGIC */
  uint16_t abi_major;          /* POPKIT_ABI_MAJOR the module was built with */
  uint16_t abi_minor;          /* POPKIT_ABI_MINOR the module was built with */
  uint32_t struct_size;        /* sizeof(struct popkit_module_descriptor) */
  uint32_t reserved;           /* zero */
  const char *name;            /* e.g. "maildir" */
  const char *build_signature; /* POPKIT_BUILD_SIGNATURE */

  /* ABI 1.0 */
  uint32_t roles; /* POPKIT_ROLE_* */
  uint32_t flags; /* POPKIT_MODULE_* */
  const struct popkit_config_key *config_keys;
  /* Builds one instance per worker. Returns 0, or a negative errno-style
   * code with a message in error (which names the offending key). */
  int (*create)(const struct popkit_module_args *args, void **instance_r, char *error,
                size_t error_size);
  /* Frees an instance once no request of it is in flight. */
  void (*destroy)(void *instance);
  const struct popkit_auth_ops *auth;   /* non-NULL for POPKIT_ROLE_AUTH */
  const struct popkit_store_ops *store; /* non-NULL for POPKIT_ROLE_STORE */
  /* Optional. Asks the module to finish a request early because its client
   * went away; the module still completes it (any result will do), as libuv
   * does with uv_cancel. */
  void (*cancel)(void *instance, struct popkit_request *req);
};

#define POPKIT_MODULE_DESCRIPTOR_V1_SIZE                                                 \
  (offsetof(struct popkit_module_descriptor, cancel) + sizeof(void (*)(void)))

/* Fills the fields that never change; use as the first line of a
 * descriptor initializer. */
#define POPKIT_MODULE_HEADER(module_name)                                                \
  .magic = POPKIT_MODULE_MAGIC, .abi_major = POPKIT_ABI_MAJOR,                           \
  .abi_minor = POPKIT_ABI_MINOR, .struct_size = sizeof(struct popkit_module_descriptor), \
  .reserved = 0, .name = (module_name), .build_signature = POPKIT_BUILD_SIGNATURE

#ifdef __cplusplus
}
#endif

#endif /* POPKIT_MODULE_H */
