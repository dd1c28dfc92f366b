/*
 * A synchronous driver for module unit tests: loads one module .so with
 * dlopen, gives it a host table and a libuv loop, and runs one operation at
 * a time until the module completes it. It stands in for popkitd's core, not
 * for any server the module talks to.
 */
#ifndef POPKIT_TEST_MODULE_HARNESS_H
#define POPKIT_TEST_MODULE_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "popkit/module.h"

#define HARNESS_MAX_MESSAGES 4096

struct harness_result {
  enum popkit_result result;
  char log_text[512];
  char identity[512];   /* auth: set by auth_set_identity, "" if not */
  char credential[512]; /* auth: set by auth_set_credential, "" if not */
  int credential_set;
  size_t message_count; /* store open: the listing */
  char uids[HARNESS_MAX_MESSAGES][71];
  uint64_t sizes[HARNESS_MAX_MESSAGES];
  int bad_uid_seen; /* store_add_message refused a uid */
};

struct harness {
  void *dl;
  const struct popkit_module_descriptor *descriptor;
  void *instance;
  uv_loop_t loop;
  void *config;            /* struct harness_config */
  struct popkit_host host; /* the table the module was given */
  char logs[8192];         /* every line the module logged, for assertions */
};

/* One request handed to the module, and where its answer goes. */
struct harness_call {
  union {
    struct popkit_request base;
    struct popkit_auth_request auth;
    struct popkit_store_request store;
  } req; /* first: the host finds the call from the request */
  struct harness_result *out;
  int done; /* the module completed it (a second completion aborts) */
};

/* Loads the module at so_path and creates an instance from config_json
 * (relative paths resolve against base_dir). Returns 0, or nonzero with the
 * module's error in error. */
int harness_open(struct harness *h, const char *so_path, const char *config_json,
                 const char *base_dir, char *error, size_t error_size);
/* The same, with a host table that claims host_struct_size bytes, as an
 * older popkitd would hand out: for testing that a module refuses a host
 * without the functions it needs. */
int harness_open_host_size(struct harness *h, const char *so_path,
                           const char *config_json, const char *base_dir,
                           uint32_t host_struct_size, char *error, size_t error_size);
/* Destroys the instance, runs the loop dry and closes it. Returns
 * uv_loop_close()'s result: nonzero when the module left a handle open. */
int harness_close(struct harness *h);

/* Auth: kind is POPKIT_REQ_AUTH_LOOKUP, _VERIFY_PLAIN or _GET_CREDENTIAL. */
enum popkit_result harness_auth(struct harness *h, enum popkit_request_kind kind,
                                const char *user, const char *password,
                                struct harness_result *out);

/* Auth without waiting, for modules that answer later: several requests can
 * be in flight, and harness_cancel() asks the module to finish one early.
 * call and out must live until call->done; uv_run(&h->loop, ...) drives
 * them. */
void harness_auth_start(struct harness *h, struct harness_call *call,
                        enum popkit_request_kind kind, const char *user,
                        const char *password, struct harness_result *out);
void harness_cancel(struct harness *h, struct harness_call *call);

/* Store: fill the fields the kind needs in req (base is set here) and run
 * it. OPEN fills out's listing and leaves req->mailbox set. */
enum popkit_result harness_store(struct harness *h, enum popkit_request_kind kind,
                                 struct popkit_store_request *req,
                                 struct harness_result *out);

/* The store's read_nowait (ABI 1.3) on req: 1 when the module served it
 * (completed it, out holds the result), 0 when it declined and left the
 * request alone, -1 when it did one without the other, -2 when the module
 * has no read_nowait. */
int harness_read_nowait(struct harness *h, struct popkit_store_request *req,
                        struct harness_result *out);

/* Reads a whole message through READ in chunks of chunk_size into a
 * malloc'ed buffer. Returns the result; *data_r and *size_r on OK. */
enum popkit_result harness_read_all(struct harness *h, void *mailbox, uint64_t index,
                                    size_t chunk_size, char **data_r, size_t *size_r);

/* Delivers one message through APPEND_BEGIN/WRITE/FINISH in chunks. */
enum popkit_result harness_deliver(struct harness *h, const char *identity,
                                   const char *data, size_t size, size_t chunk_size);

#endif
