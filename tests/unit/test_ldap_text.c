/* Tests for modules/ldap-auth/ldap_text.c: user names escaped into LDAP
 * search filters (RFC 4515) and DNs (RFC 4514), and the placeholders of
 * the filter and dn_template settings.
 *
 * The expected strings come from the RFCs. RFC 4515 section 3 lets a
 * filter value write any octet as \XX in either case of hex digits, and
 * requires it for NUL, '(', ')', '*' and '\'. RFC 4514 section 2.4 puts a
 * backslash before '"', '+', ',', ';', '<', '>' and '\' anywhere, before a
 * leading space or '#' and a trailing space, and writes NUL as \00; it
 * allows '=' to be escaped too, which popkit does (old parsers misread a
 * bare one). Every DN is also parsed back with libldap's own RFC 4514
 * parser, which must find the user name, untouched, as one value. */
#include <check.h>
#include <errno.h>
#include <ldap.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "ldap_text.h"

/* ---- Helpers ------------------------------------------------------------ */

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Whether got is expected, with the two hex digits of every \XX compared
 * as numbers: RFC 4515 and 4514 allow either case. */
static int same_escaped(const char *got, const char *expected) {
  while (*got != '\0' && *expected != '\0') {
    if (*got == '\\' && *expected == '\\' && hex_value(got[1]) >= 0 &&
        hex_value(got[2]) >= 0 && hex_value(expected[1]) >= 0 &&
        hex_value(expected[2]) >= 0) {
      if (hex_value(got[1]) != hex_value(expected[1]) ||
          hex_value(got[2]) != hex_value(expected[2]))
        return 0;
      got += 3;
      expected += 3;
      continue;
    }
    if (*got++ != *expected++)
      return 0;
  }
  return *got == *expected;
}

#define ck_assert_escaped(got, expected)                                                 \
  ck_assert_msg(same_escaped((got), (expected)), "got \"%s\", expected \"%s\"", (got),   \
                (expected))

/* value (length bytes) escaped for escape, in a malloc'd string; checks
 * that the returned length is the string's. */
static char *escape(const char *value, size_t length, enum ldap_text_escape escape) {
  size_t need = ldap_text_escape_value(NULL, 0, value, length, escape);
  char *out = malloc(need + 1);
  ck_assert_ptr_nonnull(out);
  ck_assert_uint_eq(ldap_text_escape_value(out, need + 1, value, length, escape), need);
  ck_assert_uint_eq(strlen(out), need);
  return out;
}

static void assert_filter_value(const char *value, size_t length, const char *expected) {
  char *got = escape(value, length, LDAP_TEXT_FILTER);
  ck_assert_escaped(got, expected);
  free(got);
}

static void assert_dn_value(const char *value, size_t length, const char *expected) {
  char *got = escape(value, length, LDAP_TEXT_DN);
  ck_assert_escaped(got, expected);
  free(got);
}

static char *expand(const char *template, const char *user,
                    enum ldap_text_escape escape) {
  char why[200];
  ck_assert_msg(ldap_text_check_template(template, why, sizeof why) == 0, "%s: %s",
                template, why);
  char *out = ldap_text_expand(template, user, escape);
  ck_assert_ptr_nonnull(out);
  return out;
}

static void assert_filter(const char *template, const char *user, const char *expected) {
  char *got = expand(template, user, LDAP_TEXT_FILTER);
  ck_assert_escaped(got, expected);
  free(got);
}

/* dn_template "uid=%u,ou=people,dc=example,dc=test" (or with %n) filled
 * in: the exact string, and libldap reads it back as four RDNs whose first
 * is one uid whose value is exactly rdn_value. */
static void assert_user_dn(const char *template, const char *user, const char *expected,
                           const char *rdn_value) {
  char *got = expand(template, user, LDAP_TEXT_DN);
  ck_assert_escaped(got, expected);
  LDAPDN dn = NULL;
  int rc = ldap_str2dn(got, &dn, LDAP_DN_FORMAT_LDAPV3);
  ck_assert_msg(rc == LDAP_SUCCESS, "%s: %s", got, ldap_err2string(rc));
  size_t rdns = 0;
  while (dn[rdns] != NULL)
    rdns++;
  ck_assert_msg(rdns == 4, "%s: %zu RDNs", got, rdns);
  ck_assert_msg(dn[0][0] != NULL && dn[0][1] == NULL, "%s: a multi-valued RDN", got);
  LDAPAVA *ava = dn[0][0];
  ck_assert_uint_eq(ava->la_attr.bv_len, 3);
  ck_assert(memcmp(ava->la_attr.bv_val, "uid", 3) == 0);
  ck_assert_msg(ava->la_value.bv_len == strlen(rdn_value) &&
                    memcmp(ava->la_value.bv_val, rdn_value, strlen(rdn_value)) == 0,
                "%s: the value is \"%.*s\", not \"%s\"", got, (int)ava->la_value.bv_len,
                ava->la_value.bv_val, rdn_value);
  ldap_dnfree(dn);
  free(got);
}

static const char user_dn[] = "uid=%u,ou=people,dc=example,dc=test";
static const char local_dn[] = "uid=%n,ou=people,dc=example,dc=test";
#define PEOPLE ",ou=people,dc=example,dc=test"

/* ---- RFC 4515: filter values -------------------------------------------- */

START_TEST(filter_escapes_what_rfc_4515_reserves) {
  assert_filter_value("*", 1, "\\2a");
  assert_filter_value("(", 1, "\\28");
  assert_filter_value(")", 1, "\\29");
  assert_filter_value("\\", 1, "\\5c");
  assert_filter_value("a\0b", 3, "a\\00b"); /* NUL, counted by length */
  assert_filter_value("\0", 1, "\\00");
  assert_filter_value("", 0, "");
  /* Characters a DN reserves mean nothing in a filter value. */
  assert_filter_value("o'hara, jr. +=<>;#\" x", 21, "o'hara, jr. +=<>;#\" x");
  assert_filter_value(" lead", 5, " lead");
}
END_TEST

START_TEST(filter_passes_utf8_through) {
  const char *names[] = {"m\xc3\xbcller", "\xe2\x82\xac", "\xf0\x9f\x93\xac",
                         "\xe5\xbc\xa0\xe4\xbc\x9f"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    assert_filter_value(names[i], strlen(names[i]), names[i]);
  assert_filter_value("m\xc3\xbcller*", 8, "m\xc3\xbcller\\2a");
}
END_TEST

/* ---- RFC 4514: DN values ------------------------------------------------ */

START_TEST(dn_escapes_what_rfc_4514_reserves) {
  assert_dn_value(",", 1, "\\,");
  assert_dn_value("+", 1, "\\+");
  assert_dn_value("\"", 1, "\\\"");
  assert_dn_value("\\", 1, "\\\\");
  assert_dn_value("<", 1, "\\<");
  assert_dn_value(">", 1, "\\>");
  assert_dn_value(";", 1, "\\;");
  assert_dn_value("=", 1, "\\=");
  assert_dn_value("a,b+c\"d\\e<f>g;h=i", 17, "a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\=i");
  /* What a filter reserves means nothing in a DN. */
  assert_dn_value("*()", 3, "*()");
}
END_TEST

START_TEST(dn_escapes_leading_and_trailing_only_where_rfc_4514_says) {
  assert_dn_value("#hash", 5, "\\#hash");
  assert_dn_value("a#b#", 4, "a#b#"); /* '#' only leading */
  assert_dn_value(" lead", 5, "\\ lead");
  assert_dn_value("trail ", 6, "trail\\ ");
  assert_dn_value("in side", 7, "in side");
  assert_dn_value(" ", 1, "\\ "); /* leading and trailing: one escape */
  assert_dn_value("  ", 2, "\\ \\ ");
  assert_dn_value("   ", 3, "\\  \\ "); /* the middle one is neither */
  assert_dn_value("# x ", 4, "\\# x\\ ");
}
END_TEST

START_TEST(dn_writes_nul_as_hex) {
  assert_dn_value("a\0b", 3, "a\\00b");
  assert_dn_value("\0", 1, "\\00");
  assert_dn_value("", 0, "");
}
END_TEST

START_TEST(dn_passes_utf8_through) {
  const char *names[] = {"m\xc3\xbcller", "\xe2\x82\xac", "\xf0\x9f\x93\xac",
                         "\xe5\xbc\xa0\xe4\xbc\x9f"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    assert_dn_value(names[i], strlen(names[i]), names[i]);
}
END_TEST

/* ---- The snprintf-like contract ----------------------------------------- */

START_TEST(escape_value_counts_like_snprintf) {
  /* "a*b(" needs "a\2ab\28": 8 characters. */
  char out[16];
  memset(out, 'Z', sizeof out);
  ck_assert_uint_eq(ldap_text_escape_value(out, sizeof out, "a*b(", 4, LDAP_TEXT_FILTER),
                    8);
  ck_assert_escaped(out, "a\\2ab\\28");
  /* Exactly enough room: all of it and the NUL. */
  memset(out, 'Z', sizeof out);
  ck_assert_uint_eq(ldap_text_escape_value(out, 9, "a*b(", 4, LDAP_TEXT_FILTER), 8);
  ck_assert_escaped(out, "a\\2ab\\28");
  /* One short: cut, still terminated, and the full length returned. */
  memset(out, 'Z', sizeof out);
  ck_assert_uint_eq(ldap_text_escape_value(out, 8, "a*b(", 4, LDAP_TEXT_FILTER), 8);
  ck_assert_uint_eq(strlen(out), 7);
  ck_assert(memcmp(out, "a\\2ab\\2", 7) == 0 || memcmp(out, "a\\2Ab\\2", 7) == 0);
  ck_assert_int_eq(out[8], 'Z'); /* nothing past size */
  memset(out, 'Z', sizeof out);
  ck_assert_uint_eq(ldap_text_escape_value(out, 1, "a*b(", 4, LDAP_TEXT_FILTER), 8);
  ck_assert_str_eq(out, "");
  ck_assert_int_eq(out[1], 'Z');
  /* Size 0 writes nothing at all. */
  memset(out, 'Z', sizeof out);
  ck_assert_uint_eq(ldap_text_escape_value(out, 0, "a*b(", 4, LDAP_TEXT_FILTER), 8);
  ck_assert_int_eq(out[0], 'Z');
  ck_assert_uint_eq(ldap_text_escape_value(NULL, 0, " x,", 3, LDAP_TEXT_DN), 5);
  /* length, not the NUL, ends the value; bytes past it are not read. */
  ck_assert_uint_eq(ldap_text_escape_value(out, sizeof out, "ab*", 2, LDAP_TEXT_FILTER),
                    2);
  ck_assert_str_eq(out, "ab");
  /* The DN's trailing space is the last of length, not of the string. */
  ck_assert_uint_eq(ldap_text_escape_value(out, sizeof out, "a b", 2, LDAP_TEXT_DN), 3);
  ck_assert_str_eq(out, "a\\ ");
}
END_TEST

/* ---- Templates ---------------------------------------------------------- */

START_TEST(check_template_takes_the_four_placeholders) {
  char why[200];
  const char *good[] = {"",
                        "(uid=%u)",
                        "(&(uid=%n)(dc=%d))",
                        "100%%",
                        "%u%n%d%%",
                        "%%u",
                        "uid=%n,ou=people,dc=example,dc=test"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    ck_assert_msg(ldap_text_check_template(good[i], why, sizeof why) == 0, "%s: %s",
                  good[i], why);
}
END_TEST

START_TEST(check_template_refuses_other_percents) {
  char why[200];
  why[0] = '\0';
  ck_assert_int_eq(ldap_text_check_template("(uid=%x)", why, sizeof why), -EINVAL);
  ck_assert_msg(strstr(why, "%x") != NULL, "%s", why);
  ck_assert_int_eq(ldap_text_check_template("(uid=%U)", why, sizeof why), -EINVAL);
  ck_assert_msg(strstr(why, "%U") != NULL, "%s", why);
  why[0] = '\0';
  ck_assert_int_eq(ldap_text_check_template("(uid=%u)%", why, sizeof why), -EINVAL);
  ck_assert_msg(why[0] != '\0', "no reason given");
  ck_assert_int_eq(ldap_text_check_template("%", why, sizeof why), -EINVAL);
  /* "%%" then a lone '%'. */
  ck_assert_int_eq(ldap_text_check_template("%%%", why, sizeof why), -EINVAL);
  ck_assert_int_eq(ldap_text_check_template("uid=%1", why, sizeof why), -EINVAL);
}
END_TEST

START_TEST(placeholders_split_at_the_last_at) {
  const char t[] = "(&(u=%u)(n=%n)(d=%d))";
  assert_filter(t, "alice", "(&(u=alice)(n=alice)(d=))");
  assert_filter(t, "alice@example.test",
                "(&(u=alice@example.test)(n=alice)(d=example.test))");
  assert_filter(t, "a@b@example.test", "(&(u=a@b@example.test)(n=a@b)(d=example.test))");
  assert_filter(t, "@example.test", "(&(u=@example.test)(n=)(d=example.test))");
  assert_filter(t, "alice@", "(&(u=alice@)(n=alice)(d=))");
  assert_filter(t, "", "(&(u=)(n=)(d=))");
  assert_filter(
      t, "m\xc3\xbcller@ex\xc3\xa4mple.test",
      "(&(u=m\xc3\xbcller@ex\xc3\xa4mple.test)(n=m\xc3\xbcller)(d=ex\xc3\xa4mple."
      "test))");
  /* Each part is escaped on its own. */
  assert_filter(t, "*@(x)", "(&(u=\\2a@\\28x\\29)(n=\\2a)(d=\\28x\\29))");
}
END_TEST

START_TEST(percent_percent_is_one_percent) {
  assert_filter("(cn=100%%)", "alice", "(cn=100%)");
  assert_filter("(cn=%%u%u)", "alice", "(cn=%ualice)");
  assert_filter("%%%u%%", "x", "%x%");
  /* A '%' in the user name is data, never a placeholder. */
  assert_filter("(uid=%u)", "%u%%", "(uid=%u%%)");
  char *dn = expand("uid=%%n%n,dc=test", "a%d", LDAP_TEXT_DN);
  ck_assert_str_eq(dn, "uid=%na%d,dc=test");
  free(dn);
}
END_TEST

START_TEST(filter_injections_stay_values) {
  const char t[] = "(uid=%u)";
  assert_filter(t, "*", "(uid=\\2a)");
  assert_filter(t, "x*", "(uid=x\\2a)");
  assert_filter(t, "o'hara", "(uid=o'hara)");
  assert_filter(t, "a)(uid=*", "(uid=a\\29\\28uid=\\2a)");
  assert_filter(t, "*)(|(uid=*", "(uid=\\2a\\29\\28|\\28uid=\\2a)");
  assert_filter(t, "x\\2a", "(uid=x\\5c2a)");
  /* In a template that has wildcards of its own, only the user's are
   * escaped. */
  assert_filter("(|(uid=%u)(mail=%n@*))", "*@x", "(|(uid=\\2a@x)(mail=\\2a@*))");
}
END_TEST

START_TEST(dn_injections_stay_one_value) {
  assert_user_dn(user_dn, "alice", "uid=alice" PEOPLE, "alice");
  assert_user_dn(user_dn, "alice,ou=admins", "uid=alice\\,ou\\=admins" PEOPLE,
                 "alice,ou=admins");
  assert_user_dn(user_dn, "x+cn=y", "uid=x\\+cn\\=y" PEOPLE, "x+cn=y");
  assert_user_dn(user_dn, " lead", "uid=\\ lead" PEOPLE, " lead");
  assert_user_dn(user_dn, "trail ", "uid=trail\\ " PEOPLE, "trail ");
  assert_user_dn(user_dn, "#hash", "uid=\\#hash" PEOPLE, "#hash");
  assert_user_dn(user_dn, " ", "uid=\\ " PEOPLE, " ");
  assert_user_dn(user_dn, "o'hara", "uid=o'hara" PEOPLE, "o'hara");
  assert_user_dn(user_dn, "a\\,b", "uid=a\\\\\\,b" PEOPLE, "a\\,b");
  assert_user_dn(user_dn, "\"q\"<>;", "uid=\\\"q\\\"\\<\\>\\;" PEOPLE, "\"q\"<>;");
  assert_user_dn(user_dn, "m\xc3\xbcller", "uid=m\xc3\xbcller" PEOPLE, "m\xc3\xbcller");
  /* %n of a name with an '@' in the local part. */
  assert_user_dn(local_dn, "alice,ou=admins@example.test",
                 "uid=alice\\,ou\\=admins" PEOPLE, "alice,ou=admins");
  assert_user_dn(local_dn, " a@b @example.test", "uid=\\ a@b\\ " PEOPLE, " a@b ");
  assert_user_dn(local_dn, "bob", "uid=bob" PEOPLE, "bob");
}
END_TEST

START_TEST(one_line_joins_libldap_messages) {
  char buf[64];
  ldap_text_one_line(buf, sizeof buf, "Can't contact LDAP server\nerror:0A000086\r\n");
  ck_assert_str_eq(buf, "Can't contact LDAP server error:0A000086");
  char small[6];
  ldap_text_one_line(small, sizeof small, "abcdefgh");
  ck_assert_str_eq(small, "abcde");
  ldap_text_one_line(buf, sizeof buf, "");
  ck_assert_str_eq(buf, "");
}
END_TEST

int main(void) {
  Suite *s = suite_create("ldap_text");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, filter_escapes_what_rfc_4515_reserves);
  tcase_add_test(tc, filter_passes_utf8_through);
  tcase_add_test(tc, dn_escapes_what_rfc_4514_reserves);
  tcase_add_test(tc, dn_escapes_leading_and_trailing_only_where_rfc_4514_says);
  tcase_add_test(tc, dn_writes_nul_as_hex);
  tcase_add_test(tc, dn_passes_utf8_through);
  tcase_add_test(tc, escape_value_counts_like_snprintf);
  tcase_add_test(tc, check_template_takes_the_four_placeholders);
  tcase_add_test(tc, check_template_refuses_other_percents);
  tcase_add_test(tc, placeholders_split_at_the_last_at);
  tcase_add_test(tc, percent_percent_is_one_percent);
  tcase_add_test(tc, filter_injections_stay_values);
  tcase_add_test(tc, dn_injections_stay_one_value);
  tcase_add_test(tc, one_line_joins_libldap_messages);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
