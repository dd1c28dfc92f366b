#!/usr/bin/env python3
"""popkitd's command line: --version, --check-config, and refusing to start
with a config error or a broken module, with one line that says where."""

import json
import os
import re
import shutil
import subprocess
import unittest

from popkit_harness import (MODULES_DIR, POPKITD, TEST_MODULES_DIR,
                            PopkitServer, run_tests)

# Modules built broken on purpose in tests/modules.
BROKEN_MODULES = ["wrong_major", "newer_minor", "short_struct", "bad_magic",
                  "no_descriptor", "not_elf", "libforeign"]


class CommandLine(unittest.TestCase):
    def setUp(self):
        self.server = PopkitServer()
        self.addCleanup(self.server.cleanup)
        self.server.add_user("alice", "pw")

    def run_popkitd(self, *args, config=None):
        argv = [POPKITD]
        if config is not None:
            argv += ["-c", config]
        argv += list(args)
        return subprocess.run(argv, capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def error_line(self, result, *needles, single=True) -> str:
        """The error line of a refusal: with --check-config the only line
        on stderr; on a real start, the line that holds every needle (log
        lines may come before it)."""
        text = result.stderr.decode("utf-8", "replace")
        for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
            self.assertNotIn(marker, text)
        lines = [l for l in text.splitlines() if l.strip()]
        if single:
            self.assertEqual(len(lines), 1, "expected one error line, got:\n" + text)
        matching = [l for l in lines if all(n in l for n in needles)]
        self.assertTrue(matching, "no line of stderr holds %r:\n%s" % (needles, text))
        return matching[-1]

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.server.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_version(self):
        result = self.run_popkitd("--version")
        self.assertEqual(result.returncode, 0)
        # The ABI the SDK header declares, so a minor bump needs no test edit.
        header = os.path.join(os.path.dirname(__file__), "..", "..", "include", "popkit",
                              "module.h")
        with open(header) as f:
            text = f.read()
        major = re.search(r"#define POPKIT_ABI_MAJOR (\d+)", text).group(1)
        minor = re.search(r"#define POPKIT_ABI_MINOR (\d+)", text).group(1)
        self.assertEqual(result.stdout.decode().strip(),
                         f"popkitd 0.1.0 (module ABI {major}.{minor})")

    def test_check_config_good(self):
        path = self.server.write_config()
        result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                  config=path)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        out = result.stdout.decode()
        # It says what it would serve: at least the listener.
        self.assertIn(str(self.server.port), out)
        self.assertIn("127.0.0.1", out)

    def test_check_config_does_not_listen(self):
        path = self.server.write_config()
        result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                  config=path)
        self.assertEqual(result.returncode, 0)
        # It exited, and the port is still free for a real start.
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.server.port))

    def test_bad_json_names_file_line_and_column(self):
        path = self.write("bad.json", '{\n  "hostname": "x",\n  "workers": 2\n  "apop": false\n}\n')
        result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                  config=path)
        self.assertEqual(result.returncode, 1)
        line = self.error_line(result)
        self.assertRegex(line, r"%s:4:\d+" % path.replace(".", r"\."))

    def test_bad_json_refuses_to_start(self):
        path = self.write("bad.json", '{"hostname": "x",,}')
        result = self.run_popkitd("--modules-dir", MODULES_DIR, config=path)
        self.assertEqual(result.returncode, 1)
        self.assertRegex(self.error_line(result, path + ":1:", single=False),
                         r"%s:1:\d+" % path.replace(".", r"\."))

    def check_unknown_key(self, overrides, json_path):
        config = dict(self.server.config)
        config.update(overrides)
        path = self.write("unknown.json", json.dumps(config, indent=2))
        for extra in (["--check-config"], []):
            with self.subTest(args=extra):
                result = self.run_popkitd(*extra, "--modules-dir", MODULES_DIR,
                                          config=path)
                self.assertEqual(result.returncode, 1)
                self.error_line(result, path, json_path, single=bool(extra))

    def test_unknown_top_level_key_names_json_path(self):
        self.check_unknown_key({"hostnmae": "x"}, "$.hostnmae")

    def test_unknown_limits_key_names_json_path(self):
        limits = dict(self.server.config["limits"], idle_timeot_s=5)
        self.check_unknown_key({"limits": limits}, "$.limits.idle_timeot_s")

    def test_unknown_module_key_names_json_path(self):
        auth = [{"module": "passwd-file", "path": self.server.users_path, "paht": "x"}]
        self.check_unknown_key({"auth": auth}, "$.auth[0].paht")

    def test_wrong_type_names_json_path(self):
        limits = dict(self.server.config["limits"], max_bad_commands="ten")
        self.check_unknown_key({"limits": limits}, "$.limits.max_bad_commands")

    def test_missing_module_file(self):
        config = dict(self.server.config, auth=[{"module": "no-such-module"}])
        path = self.write("missing.json", json.dumps(config))
        result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                  config=path)
        self.assertEqual(result.returncode, 1)
        self.error_line(result, os.path.join(MODULES_DIR, "no-such-module.so"))

    def test_module_name_cannot_walk_out_of_modules_dir(self):
        config = dict(self.server.config, auth=[{"module": "../modules/passwd-file",
                                                 "path": self.server.users_path}])
        path = self.write("walk.json", json.dumps(config))
        result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                  config=path)
        self.assertEqual(result.returncode, 1)
        self.error_line(result, path, "$.auth[0].module")

    def test_broken_modules_refused_with_their_file_named(self):
        modules = os.path.join(self.server.dir, "modules")
        os.mkdir(modules)
        for name in ("maildir.so", "passwd-file.so"):
            shutil.copy(os.path.join(MODULES_DIR, name), modules)
        marker = os.path.join(self.server.dir, "constructor-ran")
        env = dict(os.environ, POPKIT_TEST_MARKER=marker)
        for name in BROKEN_MODULES:
            shutil.copy(os.path.join(TEST_MODULES_DIR, name + ".so"), modules)
            config = dict(self.server.config,
                          auth=[{"module": name}] + self.server.config["auth"])
            path = self.write("broken-%s.json" % name, json.dumps(config))
            for extra in (["--check-config"], []):
                with self.subTest(module=name, args=extra):
                    result = subprocess.run(
                        [POPKITD, "-c", path, "--modules-dir", modules] + extra,
                        capture_output=True, timeout=60, env=env,
                        stdin=subprocess.DEVNULL)
                    self.assertEqual(result.returncode, 1)
                    self.error_line(result, os.path.join(modules, name + ".so"),
                                    single=bool(extra))
                    # A refused module never ran any of its code.
                    self.assertFalse(os.path.exists(marker),
                                     "%s's constructor ran" % name)

    def test_shipped_examples_pass_once_adapted_to_the_machine(self):
        """Every config/*.example.json is a valid config: with only its
        machine-specific parts (TLS files, the user to run as, paths under
        /etc and /var) pointed at this test's directory, --check-config
        accepts it. Modules that talk to a server (postgres, ldap-auth)
        check their settings without connecting."""
        config_dir = os.path.join(os.path.dirname(__file__), "..", "..", "config")
        examples = sorted(n for n in os.listdir(config_dir) if n.endswith(".example.json"))
        self.assertIn("ldap-auth.example.json", examples)
        self.server.write_config()  # the test's TLS certificate and users file
        tls = PopkitServer(tls=True)
        self.addCleanup(tls.cleanup)
        for name in examples:
            with self.subTest(example=name), open(os.path.join(config_dir, name)) as f:
                config = json.load(f)
                config.pop("user", None)
                config["tls"] = dict(config.get("tls", {}), certificate=tls.certificate,
                                     key=tls.key)
                for entry in config["auth"] + [config["store"]]:
                    if entry["module"] == "passwd-file":
                        entry["path"] = self.server.users_path
                    if entry["module"] == "maildir":
                        entry["path"] = os.path.join(self.server.mail_root, "%u")
                    if "ca_file" in entry:
                        entry["ca_file"] = tls.certificate
                path = self.write(name, json.dumps(config))
                result = self.run_popkitd("--check-config", "--modules-dir", MODULES_DIR,
                                          config=path)
                self.assertEqual(result.returncode, 0, result.stderr.decode())


if __name__ == "__main__":
    run_tests()
