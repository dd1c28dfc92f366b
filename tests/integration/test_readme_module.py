"""README's "Writing a module" example is real: the C block between the
readme-module markers is compiled against include/popkit alone, loaded by
popkitd in an auth chain in front of passwd-file, and used by a client."""
import os
import poplib
import re
import shutil
import subprocess
import tempfile
import unittest

from popkit_harness import MODULES_DIR, PopkitTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_module_source() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- readme-module:begin -->\s*```c\n(.*?)```\s*<!-- readme-module:end -->",
                  text, re.S)
    if m is None:
        raise AssertionError("README.md has no readme-module block")
    return m.group(1)


class ReadmeModuleTest(PopkitTestCase):
    def setUp(self):
        self.modules = tempfile.mkdtemp(prefix="popkit-readme-")
        self.addCleanup(shutil.rmtree, self.modules, True)
        src = os.path.join(self.modules, "hello-auth.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write(readme_module_source())
        # Only the SDK directory, as a module author outside the tree has.
        subprocess.run(["cc", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror",
                        "-I", os.path.join(ROOT, "include"), "-o",
                        os.path.join(self.modules, "hello-auth.so"), src], check=True)
        for name in ("passwd-file.so", "maildir.so"):
            os.symlink(os.path.join(MODULES_DIR, name), os.path.join(self.modules, name))

    def test_readme_module_in_an_auth_chain(self):
        server = self.make_server(start=False, modules_dir=self.modules)
        server.config["auth"].insert(0, {"module": "hello-auth", "user": "ana",
                                         "password": "s3cret"})
        server.add_user("bob", "bobpw")
        server.add_message("ana", b"Subject: for ana\n\nhi\n")
        server.add_message("bob", b"Subject: for bob\n\nhello\n")
        server.start()

        ana = poplib.POP3(server.host, server.port, timeout=10)
        ana.user("ana")
        ana.pass_("s3cret")
        self.assertEqual(ana.retr(1)[1], [b"Subject: for ana", b"", b"hi"])
        ana.quit()

        # hello-auth answers NOT_FOUND for bob: the chain moves on.
        bob = poplib.POP3(server.host, server.port, timeout=10)
        bob.user("bob")
        bob.pass_("bobpw")
        self.assertEqual(bob.stat()[0], 1)
        bob.quit()

        wrong = poplib.POP3(server.host, server.port, timeout=10)
        wrong.user("ana")
        with self.assertRaises(poplib.error_proto) as err:
            wrong.pass_("nope")
        self.assertTrue(str(err.exception).startswith("b'-ERR [AUTH]"), err.exception)
        wrong.quit()


if __name__ == "__main__":
    unittest.main()
