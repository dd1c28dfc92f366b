/*
 * popkit-passwd: prints a stored secret for a password, in any scheme
 * popkitd reads, for a passwd-file or an SQL table (like `doveadm pw`); or,
 * with -t, checks a password against a stored secret.
 *
 * The password comes from -p, or from the terminal (asked twice, without
 * echo) when standard input is one, or else from the first line of standard
 * input, so scripts can pipe it in.
 */
#include <crypt.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include "password.h"

/* -t answers with these, as a test(1)-style verdict a script can branch on. */
enum check_exit { CHECK_MATCH = 0, CHECK_MISMATCH = 1, CHECK_UNUSABLE = 2 };

struct options {
  enum password_scheme scheme;
  const char *scheme_name;
  unsigned long cost;
  const char *password; /* -p */
  const char *user;     /* -u */
  const char *stored;   /* -t */
};

static void usage(FILE *out) {
  fputs("Usage: popkit-passwd [-s SCHEME] [-r COST] [-p PASSWORD] [-u USER]\n"
        "       popkit-passwd -t STORED [-p PASSWORD]\n"
        "\n"
        "Prints the stored form of a password, for a passwd-file or an SQL table.\n"
        "The password is asked twice on the terminal (not echoed), or read as one\n"
        "line from standard input when that is not a terminal.\n"
        "\n"
        "  -s SCHEME    the scheme to make (names are case-insensitive):\n"
        "                 SCRAM-SHA-256  the default: popkitd checks it for USER/PASS\n"
        "                                and AUTH PLAIN/LOGIN, and it is what AUTH\n"
        "                                SCRAM-SHA-256 needs; no password is kept\n"
        "                 CRYPT          yescrypt, written {CRYPT}$y$... (YESCRYPT\n"
        "                                is the same)\n"
        "                 BLF-CRYPT      bcrypt, written {BLF-CRYPT}$2b$...\n"
        "                 SHA512-CRYPT   written {SHA512-CRYPT}$6$...\n"
        "                 SHA256-CRYPT   written {SHA256-CRYPT}$5$...\n"
        "                 PLAIN          the password itself, written {PLAIN}...;\n"
        "                                only APOP needs it\n"
        "               crypt hashes serve USER/PASS and AUTH PLAIN/LOGIN only.\n"
        "  -r COST      the work factor, 0 or absent for the default:\n"
        "                 SCRAM-SHA-256  iterations, 4096 (the default) to 10000000\n"
        "                 CRYPT          1 to 11, default 5\n"
        "                 BLF-CRYPT      4 to 31 (log2 of the rounds), default 10\n"
        "                 SHA512-CRYPT, SHA256-CRYPT\n"
        "                                rounds, 1000 to 999999999, default 5000\n"
        "                 PLAIN          none\n"
        "  -p PASSWORD  the password (other users can see it in the process list;\n"
        "               prefer the prompt or a pipe)\n"
        "  -u USER      print USER:SECRET, a ready passwd-file line\n"
        "  -t STORED    check the password against STORED instead: exit 0 when it\n"
        "               matches, 1 when it does not, 2 when no password can match\n"
        "               (a locked entry or an unknown scheme)\n"
        "  -h, --help   this text\n"
        "  -V, --version\n"
        "\n"
        "Exit status: 0 done, 1 error, 64 wrong usage.\n",
        out);
}

static int usage_error(const char *fmt, const char *arg) {
  fputs("popkit-passwd: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\nTry 'popkit-passwd --help'.\n", stderr);
  return EX_USAGE;
}

/* A cost is a plain decimal number: strtoul alone would take "-1", " 5"
 * or "0x10". */
static bool parse_cost(const char *text, unsigned long *cost_r) {
  if (text[0] < '0' || text[0] > '9')
    return false;
  char *end;
  errno = 0;
  unsigned long value = strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  *cost_r = value;
  return true;
}

/* Whether name can start a passwd-file line and be read back as that very
 * user: the user ends at the first ':', a line at a line break, and a line
 * whose first non-blank character is '#' is a comment. */
static bool user_fits_a_line(const char *name) {
  if (name[0] == '\0' || strpbrk(name, ":\r\n") != NULL)
    return false;
  size_t blanks = strspn(name, " \t");
  return name[blanks] != '#';
}

/* Parses the command line; returns -1 to go on, or an exit status. */
static int parse_options(int argc, char **argv, struct options *o) {
  static const struct option long_options[] = {
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  const char *cost_text = NULL;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":s:r:p:u:t:hV", long_options, NULL)) != -1) {
    switch (c) {
    case 's':
      o->scheme_name = optarg;
      break;
    case 'r':
      cost_text = optarg;
      break;
    case 'p':
      o->password = optarg;
      break;
    case 'u':
      o->user = optarg;
      break;
    case 't':
      o->stored = optarg;
      break;
    case 'h':
      usage(stdout);
      return EX_OK;
    case 'V':
      printf("popkit-passwd %s\n", POPKIT_VERSION);
      return EX_OK;
    case ':':
      return usage_error("option -%s needs an argument", (char[]){(char)optopt, '\0'});
    default:
      if (optopt != 0)
        return usage_error("unknown option -%s", (char[]){(char)optopt, '\0'});
      return usage_error("unknown option %s", argv[optind - 1]);
    }
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (o->stored != NULL && (o->scheme_name || cost_text || o->user))
    return usage_error("%s", "-t checks a password; it takes no -s, -r or -u");
  if (o->scheme_name != NULL && password_scheme_lookup(o->scheme_name, &o->scheme) < 0)
    return usage_error("unknown scheme '%s' (see --help for the list)", o->scheme_name);
  if (cost_text != NULL && !parse_cost(cost_text, &o->cost))
    return usage_error("-r %s: the cost must be a decimal number", cost_text);
  if (o->user != NULL && !user_fits_a_line(o->user))
    return usage_error("-u '%s': a passwd-file user cannot be empty, hold ':' or a "
                       "line break, or start with '#'",
                       o->user);
  return -1;
}

/* ---- Reading the password ---------------------------------------------- */

/* The terminal's settings while echo is off, to put back if a signal ends
 * the program in the middle of a prompt. */
static struct termios saved_termios;
static volatile sig_atomic_t echo_is_off;

static void restore_echo(void) {
  if (echo_is_off) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
    echo_is_off = 0;
  }
}

static void restore_echo_and_die(int signo) {
  restore_echo();
  signal(signo, SIG_DFL);
  raise(signo);
}

/* Reads one line from stdin into a malloc'ed string without its line
 * break. Returns 0, -ENODATA at end of input before any byte, or -errno. */
static int read_line(char **line_r) {
  char *line = NULL;
  size_t capacity = 0;
  errno = 0;
  ssize_t len = getline(&line, &capacity, stdin);
  if (len < 0) {
    int rc = errno != 0 ? -errno : -ENODATA;
    free(line);
    return rc;
  }
  if (len > 0 && line[len - 1] == '\n')
    line[--len] = '\0';
  *line_r = line;
  return 0;
}

static void free_secret(char *secret) {
  if (secret != NULL) {
    explicit_bzero(secret, strlen(secret));
    free(secret);
  }
}

static int prompt_without_echo(const char *prompt, char **line_r) {
  fputs(prompt, stderr);
  fflush(stderr);
  int rc = read_line(line_r);
  /* The user's Enter was not echoed either. */
  fputc('\n', stderr);
  return rc;
}

/* Asks for the password on the terminal, twice unless once is enough (for
 * -t, a typo only makes the check fail). */
static int read_from_terminal(bool twice, char **password_r) {
  if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
    return -errno;
  struct termios quiet = saved_termios;
  quiet.c_lflag &= ~(tcflag_t)ECHO;
  int signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    signal(signals[i], restore_echo_and_die);
  echo_is_off = 1;
  if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0) {
    echo_is_off = 0;
    return -errno;
  }
  char *first = NULL, *second = NULL;
  int rc = prompt_without_echo(twice ? "New password: " : "Password: ", &first);
  if (rc == 0 && twice)
    rc = prompt_without_echo("Retype new password: ", &second);
  restore_echo();
  if (rc == 0 && twice && strcmp(first, second) != 0)
    rc = -EAGAIN;
  free_secret(second);
  if (rc < 0) {
    free_secret(first);
    return rc;
  }
  *password_r = first;
  return 0;
}

/* Gets the password from -p, the terminal or a pipe; prints why not. */
static int get_password(const struct options *o, char **password_r) {
  int rc;
  if (o->password != NULL) {
    *password_r = strdup(o->password);
    rc = *password_r != NULL ? 0 : -ENOMEM;
  } else if (isatty(STDIN_FILENO)) {
    rc = read_from_terminal(o->stored == NULL, password_r);
  } else {
    rc = read_line(password_r);
  }
  if (rc == -EAGAIN)
    fprintf(stderr, "popkit-passwd: the passwords do not match\n");
  else if (rc == -ENODATA)
    fprintf(stderr, "popkit-passwd: no password on standard input\n");
  else if (rc < 0)
    fprintf(stderr, "popkit-passwd: cannot read the password: %s\n", strerror(-rc));
  return rc;
}

/* ---- The two jobs ------------------------------------------------------ */

static int check(const struct options *o, const char *password) {
  int rc = password_verify(o->stored, password);
  switch (rc) {
  case POPKIT_PASSWORD_MATCH:
    return CHECK_MATCH;
  case POPKIT_PASSWORD_MISMATCH:
    fprintf(stderr, "popkit-passwd: the password does not match\n");
    return CHECK_MISMATCH;
  case POPKIT_PASSWORD_UNUSABLE:
    fprintf(stderr, "popkit-passwd: no password can match this stored secret (a "
                    "locked entry, an unknown scheme or a malformed secret)\n");
    return CHECK_UNUSABLE;
  default:
    fprintf(stderr, "popkit-passwd: cannot check the password: %s\n", strerror(-rc));
    return EXIT_FAILURE;
  }
}

static bool is_crypt_scheme(enum password_scheme scheme) {
  return scheme != PASSWORD_SCRAM_SHA_256 && scheme != PASSWORD_PLAIN;
}

static int make(const struct options *o, const char *password) {
  const char *scheme = o->scheme_name != NULL ? o->scheme_name : "SCRAM-SHA-256";
  if (password[0] == '\0') {
    fprintf(stderr, "popkit-passwd: the password is empty\n");
    return EXIT_FAILURE;
  }
  /* Said here because password_make only answers -EINVAL, as it does for
   * a bad cost. */
  if (is_crypt_scheme(o->scheme) && strlen(password) >= CRYPT_MAX_PASSPHRASE_SIZE) {
    fprintf(stderr,
            "popkit-passwd: libxcrypt takes passwords of at most %d bytes; "
            "use SCRAM-SHA-256 for a longer one\n",
            CRYPT_MAX_PASSPHRASE_SIZE - 1);
    return EXIT_FAILURE;
  }
  char *stored = NULL;
  int rc = password_make(o->scheme, password, o->cost, &stored);
  if (rc == -EINVAL && o->scheme == PASSWORD_PLAIN && o->cost == 0) {
    fprintf(stderr, "popkit-passwd: a PLAIN password cannot hold ':' or a line break "
                    "(a passwd-file line could not carry it); use another scheme\n");
    return EXIT_FAILURE;
  }
  if (rc == -EINVAL) {
    fprintf(stderr, "popkit-passwd: %s does not take the cost %lu (see --help)\n", scheme,
            o->cost);
    return EX_USAGE;
  }
  if (rc < 0) {
    fprintf(stderr, "popkit-passwd: cannot make the %s secret: %s\n", scheme,
            strerror(-rc));
    return EXIT_FAILURE;
  }
  if (o->user != NULL)
    printf("%s:%s\n", o->user, stored);
  else
    printf("%s\n", stored);
  free_secret(stored);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "popkit-passwd: cannot write the result: %s\n", strerror(errno));
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
  struct options o = {.scheme = PASSWORD_SCRAM_SHA_256};
  int rc = parse_options(argc, argv, &o);
  if (rc >= 0)
    return rc;
  char *password = NULL;
  if (get_password(&o, &password) < 0)
    return EXIT_FAILURE;
  rc = o.stored != NULL ? check(&o, password) : make(&o, password);
  free_secret(password);
  return rc;
}
