/*
 * popkit-deliver: appends one message from standard input to a user's
 * mailbox through the configured auth chain (does the user exist, which
 * mailbox) and store. Built for Postfix's mailbox_command; exit codes come
 * from sysexits.h so the MTA knows whether to bounce or retry:
 *   0 delivered, 67 no such user, 75 temporary failure, 65 bad input,
 *   64 bad usage, 74 cannot read the input, 78 bad config.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>
#include <uv.h>

#include "chain.h"
#include "config.h"
#include "loader.h"
#include "log.h"

#define INPUT_CHUNK 65536

struct delivery {
  uv_loop_t loop;
  struct chain chain;
  struct core_request *done; /* the request whose callback ran last */
};

static void on_done(struct core_request *req) {
  struct delivery *d = req->data;
  d->done = req;
}

/* Runs the loop until the request's callback has run. */
static struct core_request *wait_for(struct delivery *d) {
  d->done = NULL;
  while (d->done == NULL)
    uv_run(&d->loop, UV_RUN_ONCE);
  return d->done;
}

static int exit_code_for(enum popkit_result r) {
  switch (r) {
  case POPKIT_OK:
    return EX_OK;
  case POPKIT_NOT_FOUND:
  case POPKIT_FAIL:
    return EX_NOUSER;
  case POPKIT_PERMFAIL:
    return EX_UNAVAILABLE;
  default:
    return EX_TEMPFAIL;
  }
}

static enum popkit_result store_call(struct delivery *d, enum popkit_request_kind kind,
                                     struct popkit_store_request *fields,
                                     void **mailbox_r, char *why, size_t why_size) {
  struct core_request *req = chain_store_request(&d->chain, kind, 0, on_done, d);
  if (req == NULL) {
    snprintf(why, why_size, "out of memory");
    return POPKIT_TEMPFAIL;
  }
  /* The caller's fields, under the header the chain gave the request. */
  fields->base = req->pub.base;
  req->pub.store = *fields;
  chain_submit(req);
  wait_for(d);
  enum popkit_result r = req->result;
  if (mailbox_r != NULL)
    *mailbox_r = req->pub.store.mailbox;
  snprintf(why, why_size, "%s", req->log_text != NULL ? req->log_text : result_name(r));
  core_request_free(req);
  return r;
}

/* Streams stdin into the mailbox; returns a sysexits code. */
static int deliver(struct delivery *d, const char *identity, const char *user) {
  char why[512];
  struct popkit_store_request f;
  void *handle = NULL;
  memset(&f, 0, sizeof f);
  f.identity = identity;
  enum popkit_result r =
      store_call(d, POPKIT_REQ_STORE_APPEND_BEGIN, &f, &handle, why, sizeof why);
  if (r != POPKIT_OK) {
    fprintf(stderr, "popkit-deliver: %s: cannot start delivery: %s\n", user, why);
    return exit_code_for(r == POPKIT_NOT_FOUND ? POPKIT_TEMPFAIL : r);
  }
  char *chunk = malloc(INPUT_CHUNK);
  size_t total = 0;
  int code = EX_OK;
  while (chunk != NULL) {
    ssize_t n = read(STDIN_FILENO, chunk, INPUT_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      fprintf(stderr, "popkit-deliver: reading the message: %s\n", strerror(errno));
      code = EX_IOERR;
      break;
    }
    if (n == 0)
      break;
    memset(&f, 0, sizeof f);
    f.mailbox = handle;
    f.data = chunk;
    f.data_size = (size_t)n;
    r = store_call(d, POPKIT_REQ_STORE_APPEND_WRITE, &f, NULL, why, sizeof why);
    if (r != POPKIT_OK) {
      fprintf(stderr, "popkit-deliver: %s: writing the message: %s\n", user, why);
      code = exit_code_for(r == POPKIT_NOT_FOUND ? POPKIT_TEMPFAIL : r);
      break;
    }
    total += (size_t)n;
  }
  if (chunk == NULL)
    code = EX_TEMPFAIL;
  free(chunk);
  if (code == EX_OK && total == 0) {
    fprintf(stderr, "popkit-deliver: the message is empty: nothing delivered\n");
    code = EX_DATAERR;
  }
  memset(&f, 0, sizeof f);
  f.mailbox = handle;
  f.commit = code == EX_OK;
  r = store_call(d, POPKIT_REQ_STORE_APPEND_FINISH, &f, NULL, why, sizeof why);
  if (code == EX_OK && r != POPKIT_OK) {
    fprintf(stderr, "popkit-deliver: %s: committing the message: %s\n", user, why);
    code = exit_code_for(r == POPKIT_NOT_FOUND ? POPKIT_TEMPFAIL : r);
  }
  if (code == EX_OK)
    log_info("delivered %zu octets to \"%s\"", total, user);
  return code;
}

static void usage(void) {
  fprintf(stderr, "usage: popkit-deliver -c FILE [--modules-dir DIR] USER < message\n");
}

int main(int argc, char **argv) {
  const char *config_file = NULL, *modules_dir = NULL, *user = NULL;
  for (int i = 1; i < argc; i++) {
    if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
      config_file = argv[++i];
    else if (strcmp(argv[i], "--modules-dir") == 0 && i + 1 < argc)
      modules_dir = argv[++i];
    else if (strcmp(argv[i], "--version") == 0) {
      printf("popkit-deliver %s (module ABI %d.%d)\n", POPKIT_VERSION, POPKIT_ABI_MAJOR,
             POPKIT_ABI_MINOR);
      return EX_OK;
    } else if (user == NULL && argv[i][0] != '-')
      user = argv[i];
    else {
      usage();
      return EX_USAGE;
    }
  }
  if (config_file == NULL || user == NULL) {
    usage();
    return EX_USAGE;
  }
  char error[1024];
  struct config *config;
  if (config_load(config_file, &config, error, sizeof error) < 0) {
    fprintf(stderr, "popkit-deliver: %s\n", error);
    return EX_CONFIG;
  }
  if (modules_dir != NULL) {
    free(config->modules_dir);
    config->modules_dir = realpath(modules_dir, NULL);
    if (config->modules_dir == NULL) {
      fprintf(stderr, "popkit-deliver: --modules-dir %s: %s\n", modules_dir,
              strerror(errno));
      return EX_CONFIG;
    }
  }
  log_set_level(config->log_level);

  struct delivery d;
  memset(&d, 0, sizeof d);
  uv_loop_init(&d.loop);
  int code;
  if (chain_init(&d.chain, &d.loop, config, 0, error, sizeof error) < 0) {
    fprintf(stderr, "popkit-deliver: %s\n", error);
    code = EX_CONFIG;
  } else {
    /* The auth chain says whether the user exists and which mailbox is
     * theirs; no password is involved. */
    struct core_request *req =
        chain_auth(&d.chain, POPKIT_REQ_AUTH_LOOKUP, user, NULL, "", 0, on_done, &d);
    if (req == NULL) {
      code = EX_TEMPFAIL;
    } else {
      wait_for(&d);
      if (req->result == POPKIT_OK) {
        char *identity = strdup(
            req->identity != NULL && req->identity[0] != '\0' ? req->identity : user);
        core_request_free(req);
        code = identity != NULL ? deliver(&d, identity, user) : EX_TEMPFAIL;
        free(identity);
      } else {
        code = req->result == POPKIT_NOT_FOUND ? EX_NOUSER : exit_code_for(req->result);
        fprintf(stderr, "popkit-deliver: %s: %s\n", user,
                req->result == POPKIT_NOT_FOUND
                    ? "no such user"
                    : (req->log_text != NULL ? req->log_text : result_name(req->result)));
        core_request_free(req);
      }
    }
    chain_close(&d.chain);
  }
  uv_run(&d.loop, UV_RUN_DEFAULT);
  uv_loop_close(&d.loop);
  config_free(config);
  loader_unload_all();
  return code;
}
