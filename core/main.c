/*
 * popkitd: reads the config, loads modules, binds ports, drops privileges,
 * starts the workers and waits for signals.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "chain.h"
#include "config.h"
#include "listener.h"
#include "loader.h"
#include "log.h"
#include "worker.h"

struct options {
  const char *config_file;
  const char *modules_dir;
  int check_config;
};

static void usage(FILE *out) {
  fprintf(out, "usage: popkitd -c FILE [--modules-dir DIR] [--check-config]\n"
               "       popkitd --version\n"
               "\n"
               "  -c, --config FILE     the JSON config file\n"
               "  --modules-dir DIR     load modules from DIR (overrides modules_dir)\n"
               "  --check-config        check the config and modules, then exit\n");
}

static int parse_options(int argc, char **argv, struct options *o) {
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
      printf("popkitd %s (module ABI %d.%d)\n", POPKIT_VERSION, POPKIT_ABI_MAJOR,
             POPKIT_ABI_MINOR);
      exit(0);
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      exit(0);
    } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
      o->config_file = argv[++i];
    } else if (strcmp(a, "--modules-dir") == 0 && i + 1 < argc) {
      o->modules_dir = argv[++i];
    } else if (strcmp(a, "--check-config") == 0) {
      o->check_config = 1;
    } else {
      fprintf(stderr, "popkitd: unknown or incomplete option: %s\n", a);
      usage(stderr);
      return -1;
    }
  }
  if (o->config_file == NULL) {
    fprintf(stderr, "popkitd: no config file: use -c FILE\n");
    usage(stderr);
    return -1;
  }
  return 0;
}

/* Binding ports below 1024 needs root; serving mail should not. */
static int drop_privileges(const char *user, char *error, size_t error_size) {
  if (user == NULL)
    return 0;
  struct passwd *pw = getpwnam(user);
  if (pw == NULL) {
    snprintf(error, error_size, "user \"%s\" does not exist", user);
    return -ENOENT;
  }
  if (geteuid() != 0) {
    if (geteuid() == pw->pw_uid)
      return 0;
    snprintf(error, error_size, "cannot switch to user \"%s\": popkitd is not root",
             user);
    return -EPERM;
  }
  if (initgroups(user, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
      setuid(pw->pw_uid) < 0) {
    snprintf(error, error_size, "cannot switch to user \"%s\": %s", user,
             strerror(errno));
    return -errno;
  }
  return 0;
}

/* Loads every module and creates one instance of each, as a worker would,
 * so a broken module or module config is found before any port is bound. */
static int check_modules(const struct config *config, char *error, size_t error_size) {
  uv_loop_t loop;
  struct chain chain;
  uv_loop_init(&loop);
  int rc = chain_init(&chain, &loop, config, 0, error, error_size);
  if (rc == 0 && config->apop && !chain.can_get_credential) {
    snprintf(error, error_size,
             "%s: $.apop: APOP needs an auth module that can hand back credentials, "
             "and none in $.auth can",
             config->file);
    rc = -EINVAL;
  }
  if (rc == 0)
    chain_close(&chain);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}

static void print_summary(const struct config *config) {
  printf("popkitd %s: config %s is valid\n", POPKIT_VERSION, config->file);
  for (size_t i = 0; i < config->listen_count; i++) {
    char where[80];
    listener_format(&config->listen[i], where, sizeof where);
    printf("  listen %s (%s)\n", where,
           (const char *[]){"plain", "STLS", "implicit TLS"}[config->listen[i].tls]);
  }
  printf("  workers %u, modules from %s\n", config->workers, config->modules_dir);
  for (size_t i = 0; i < config->auth_count; i++)
    printf("  auth[%zu] %s\n", i, config->auth[i].name);
  printf("  store %s\n", config->store.name);
}

static struct worker *workers;
static unsigned worker_count;
static const struct config *running_config;
static struct tls_store tls_store;

/* SIGHUP: new certificates for new connections; running sessions keep the
 * generation they started with. A bad file keeps the old generation. */
static void reload_certificates(void) {
  if (running_config->tls.certificate == NULL) {
    log_info("SIGHUP: no TLS certificate configured, nothing to reload");
    return;
  }
  char error[1024];
  struct tls_context *ctx;
  if (tls_context_new(running_config, &ctx, error, sizeof error) < 0) {
    log_error("SIGHUP: keeping the current certificates: %s", error);
    return;
  }
  tls_store_replace(&tls_store, ctx);
  log_info("SIGHUP: reloaded %s for new connections (other settings need a restart)",
           running_config->tls.certificate);
}

static void on_signal(uv_signal_t *sig, int signum) {
  if (signum == SIGHUP) {
    reload_certificates();
    return;
  }
  log_info("%s: stopping: no new connections, sessions may finish",
           signum == SIGTERM ? "SIGTERM" : "SIGINT");
  for (unsigned i = 0; i < worker_count; i++)
    worker_request_stop(&workers[i]);
  uv_stop(sig->loop);
}

static int unsupported_features(const struct config *config, char *error,
                                size_t error_size) {
  for (size_t i = 0; i < config->listen_count; i++) {
    if (config->listen[i].proxy_protocol) {
      snprintf(error, error_size,
               "%s: $.listen[%zu].proxy_protocol: the PROXY protocol is not "
               "supported by this build yet",
               config->file, i);
      return -ENOTSUP;
    }
  }
  if (config->metrics.address != NULL) {
    snprintf(error, error_size,
             "%s: $.metrics: the metrics endpoint is not supported by this build yet",
             config->file);
    return -ENOTSUP;
  }
  return 0;
}

int main(int argc, char **argv) {
  struct options opt;
  char error[1024] = "";
  if (parse_options(argc, argv, &opt) < 0)
    return 1;
  signal(SIGPIPE, SIG_IGN);

  struct config *config;
  if (config_load(opt.config_file, &config, error, sizeof error) < 0) {
    fprintf(stderr, "popkitd: %s\n", error);
    return 1;
  }
  if (opt.modules_dir != NULL) {
    free(config->modules_dir);
    config->modules_dir = realpath(opt.modules_dir, NULL);
    if (config->modules_dir == NULL) {
      fprintf(stderr, "popkitd: --modules-dir %s: %s\n", opt.modules_dir,
              strerror(errno));
      return 1;
    }
  }
  log_set_level(config->log_level);
  /* libuv's thread pool runs blocking modules; its default of 4 threads
   * would let a few slow password hashes hold up every worker. */
  if (getenv("UV_THREADPOOL_SIZE") == NULL) {
    char size[16];
    unsigned n = config->workers * 4 < 8 ? 8 : config->workers * 4;
    snprintf(size, sizeof size, "%u", n > 128 ? 128 : n);
    setenv("UV_THREADPOOL_SIZE", size, 1);
  }

  /* Certificates are read before privileges drop, so the key may stay
   * readable by root only (a SIGHUP reload then needs it readable by
   * "user"; README says so). */
  struct tls_context *tls = NULL;
  int rc = unsupported_features(config, error, sizeof error);
  if (rc == 0)
    rc = check_modules(config, error, sizeof error);
  if (rc == 0 && config->tls.certificate != NULL)
    rc = tls_context_new(config, &tls, error, sizeof error);
  if (rc < 0) {
    fprintf(stderr, "popkitd: %s\n", error);
    config_free(config);
    loader_unload_all();
    return 1;
  }
  if (opt.check_config) {
    tls_context_unref(tls);
    print_summary(config);
    config_free(config);
    loader_unload_all();
    return 0;
  }

  worker_count = config->workers;
  size_t nfds = (size_t)worker_count * config->listen_count;
  int *fds = calloc(nfds ? nfds : 1, sizeof *fds);
  workers = calloc(worker_count, sizeof *workers);
  if (fds == NULL || workers == NULL) {
    fprintf(stderr, "popkitd: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < nfds; i++) {
    fds[i] =
        listener_bind(&config->listen[i % config->listen_count], error, sizeof error);
    if (fds[i] < 0) {
      fprintf(stderr, "popkitd: %s\n", error);
      return 1;
    }
  }
  if (drop_privileges(config->user, error, sizeof error) < 0) {
    fprintf(stderr, "popkitd: %s\n", error);
    return 1;
  }
  if (geteuid() == 0)
    log_warning("popkitd runs as root: set \"user\" in the config so sessions do not");
  running_config = config;
  tls_store_init(&tls_store, tls);
  struct login_guard *guard;
  if (login_guard_new(&config->limits, &guard) < 0) {
    fprintf(stderr, "popkitd: out of memory\n");
    return 1;
  }
  const struct worker_shared shared = {.guard = guard, .tls = &tls_store};
  for (unsigned i = 0; i < worker_count; i++) {
    if (worker_init(&workers[i], i, config, &shared,
                    fds + (size_t)i * config->listen_count, error, sizeof error) < 0) {
      fprintf(stderr, "popkitd: %s\n", error);
      return 1;
    }
  }
  free(fds);

  uv_loop_t *main_loop = uv_default_loop();
  uv_signal_t sigterm, sigint, sighup;
  uv_signal_init(main_loop, &sigterm);
  uv_signal_init(main_loop, &sigint);
  uv_signal_init(main_loop, &sighup);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sighup, on_signal, SIGHUP);

  for (unsigned i = 0; i < worker_count; i++) {
    if (worker_start(&workers[i]) < 0) {
      fprintf(stderr, "popkitd: cannot start worker thread %u\n", i);
      return 1;
    }
  }
  for (size_t i = 0; i < config->listen_count; i++) {
    char where[80];
    listener_format(&config->listen[i], where, sizeof where);
    log_info("popkitd %s listening on %s with %u workers", POPKIT_VERSION, where,
             worker_count);
  }

  uv_run(main_loop, UV_RUN_DEFAULT);
  for (unsigned i = 0; i < worker_count; i++)
    worker_join(&workers[i]);
  log_info("popkitd stopped");

  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sighup, NULL);
  uv_run(main_loop, UV_RUN_DEFAULT);
  uv_loop_close(main_loop);
  free(workers);
  login_guard_free(guard);
  tls_store_destroy(&tls_store);
  config_free(config);
  loader_unload_all();
  return 0;
}
